"""Recall, the fraction of examples of a class that are found.

Per class: recall = TP / (TP + FN).
Averages: "binary" (class pos_label only), "macro" (unweighted mean over classes), "micro" (from global
counts), "weighted" (mean weighted by class support), None (one value per class).
"""
import evaluate
from sklearn.metrics import recall_score
from tltext.metrics.sklearn_info import AVERAGED_KWARGS, averaged, metric_info

_DESCRIPTION = "Per class: recall = TP / (TP + FN) (sklearn.metrics.recall_score)."
_KWARGS_DESCRIPTION = AVERAGED_KWARGS.format(name="recall")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Recall(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "recall_score")

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None,
                 zero_division="warn"):
        return averaged(recall_score, "recall", predictions, references, labels, pos_label, average, sample_weight,
                        zero_division)
