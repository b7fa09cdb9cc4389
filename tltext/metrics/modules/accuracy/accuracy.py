"""Accuracy: the fraction of predictions equal to the reference, (1/N) sum_i [y_hat_i = y_i]."""
import evaluate
from sklearn.metrics import accuracy_score
from tltext.metrics.sklearn_info import metric_info

_DESCRIPTION = "Accuracy = (1/N) * sum_i [prediction_i == reference_i] (sklearn.metrics.accuracy_score)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    normalize (bool): if False, return the number of correct predictions instead of the fraction.
    sample_weight (list of float): per-example weights.
Returns:
    accuracy (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "accuracy_score")

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))}
