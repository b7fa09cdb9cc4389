"""Precision, the fraction of predictions of a class that are correct.

Per class: precision = TP / (TP + FP).
Averages: "binary" (class pos_label only), "macro" (unweighted mean over classes), "micro" (from global
counts), "weighted" (mean weighted by class support), None (one value per class).
"""
import evaluate
from sklearn.metrics import precision_score
from tltext.metrics.sklearn_info import AVERAGED_KWARGS, averaged, metric_info

_DESCRIPTION = "Per class: precision = TP / (TP + FP) (sklearn.metrics.precision_score)."
_KWARGS_DESCRIPTION = AVERAGED_KWARGS.format(name="precision")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Precision(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "precision_score")

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None,
                 zero_division="warn"):
        return averaged(precision_score, "precision", predictions, references, labels, pos_label, average, sample_weight,
                        zero_division)
