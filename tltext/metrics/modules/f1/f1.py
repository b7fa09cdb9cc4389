"""F1 score, the harmonic mean of precision and recall (van Rijsbergen 1979).

Per class: F1 = 2 * precision * recall / (precision + recall) = 2TP / (2TP + FP + FN).
Averages: "binary" (class pos_label only), "macro" (unweighted mean over classes), "micro" (from global
counts), "weighted" (mean weighted by class support), None (one value per class).
"""
import evaluate
from sklearn.metrics import f1_score
from tltext.metrics.sklearn_info import AVERAGED_KWARGS, averaged, metric_info

_DESCRIPTION = "Per class: F1 = 2 * precision * recall / (precision + recall) = 2TP / (2TP + FP + FN) (sklearn.metrics.f1_score)."
_KWARGS_DESCRIPTION = AVERAGED_KWARGS.format(name="f1")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "f1_score")

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None,
                 zero_division="warn"):
        return averaged(f1_score, "f1", predictions, references, labels, pos_label, average, sample_weight,
                        zero_division)
