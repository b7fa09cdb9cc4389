"""Precision, the fraction of predictions of a class that are correct.

Per class: precision = TP / (TP + FP).
Averages: "binary" (class pos_label only), "macro" (unweighted mean over classes), "micro" (from global
counts), "weighted" (mean weighted by class support), None (one value per class).
"""
import datasets
import evaluate
from sklearn.metrics import precision_score

_DESCRIPTION = "Per class: precision = TP / (TP + FP) (sklearn.metrics.precision_score)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int): the classes to include (and their order when average=None); default: sorted labels seen.
    pos_label (int): the positive class when average="binary".
    average ("binary" | "micro" | "macro" | "weighted" | None): how per-class values are combined.
    sample_weight (list of float): per-example weights.
    zero_division ("warn" | 0 | 1 | nan): the value for a 0/0 class (with "warn", 0 and a warning).
Returns:
    precision (float, or numpy array [n_labels] when average=None)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Precision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.precision_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None,
                 zero_division="warn"):
        score = precision_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                   sample_weight=sample_weight, zero_division=zero_division)
        return {"precision": float(score) if average is not None else score}
