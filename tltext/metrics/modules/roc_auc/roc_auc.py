"""Area under the ROC curve (Hanley & McNeil 1982; multiclass one-vs-rest: Provost & Domingos 2000).

AUC = P(s(x+) > s(x-)) + 0.5 P(s(x+) = s(x-)) for a random positive x+ and negative x-, i.e. the
Mann-Whitney U statistic of the scores divided by n+ n-. Configurations:
"binary" (default): one score per example (the positive-class probability);
"multiclass": a row of class probabilities per example (rows must sum to 1), one-vs-rest or one-vs-one;
"multilabel": a 0/1 row of references and a row of scores per example.
"""
import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score
from tltext.metrics.sklearn_info import metric_info

_DESCRIPTION = "Area under the receiver operating characteristic curve (sklearn.metrics.roc_auc_score)."
_KWARGS_DESCRIPTION = """
Args:
    references (list of int, or list of list of int for "multilabel"): true classes.
    prediction_scores (list of float, or list of list of float for "multiclass"/"multilabel"): scores.
    average ("micro" | "macro" | "samples" | "weighted" | None): how per-class AUCs are combined.
    sample_weight (list of float): per-example weights.
    max_fpr (float): binary only, the standardised partial AUC over [0, max_fpr].
    multi_class ("raise" | "ovr" | "ovo"): multiclass only, one-vs-rest or one-vs-one.
    labels (list of int): multiclass only, the classes indexing the columns of prediction_scores.
Returns:
    roc_auc (float, or numpy array per class when average=None)
"""
_CITATION = ("Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a receiver operating "
             "characteristic (ROC) curve. Radiology 143(1).")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ROCAUC(evaluate.Metric):
    def _info(self):
        if self.config_name == "multiclass":
            features = {"references": datasets.Value("int64"),
                        "prediction_scores": datasets.Sequence(datasets.Value("float64"))}
        elif self.config_name == "multilabel":
            features = {"references": datasets.Sequence(datasets.Value("int64")),
                        "prediction_scores": datasets.Sequence(datasets.Value("float64"))}
        elif self.config_name in ("binary", "default"):
            features = {"references": datasets.Value("int64"), "prediction_scores": datasets.Value("float64")}
        else:
            raise ValueError(f"roc_auc: unknown configuration {self.config_name!r}; "
                             "expected 'binary', 'multiclass' or 'multilabel'")
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "roc_auc_score", citation=_CITATION,
                           features=datasets.Features(features), fmt=None)

    def _compute(self, references, prediction_scores, average="macro", sample_weight=None, max_fpr=None,
                 multi_class="raise", labels=None):
        score = roc_auc_score(np.asarray(references), np.asarray(prediction_scores, dtype=np.float64),
                              average=average, sample_weight=sample_weight, max_fpr=max_fpr,
                              multi_class=multi_class, labels=labels)
        return {"roc_auc": float(score) if np.ndim(score) == 0 else score}
