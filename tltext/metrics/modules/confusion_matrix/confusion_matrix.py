"""Confusion matrix C with C[i, j] = number of examples of true class i predicted as class j."""
import evaluate
from sklearn.metrics import confusion_matrix
from tltext.metrics.sklearn_info import metric_info

_DESCRIPTION = "Confusion matrix, rows = true labels, columns = predicted labels (sklearn.metrics.confusion_matrix)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int): the classes indexing the rows/columns, in order; default: sorted labels seen.
    sample_weight (list of float): per-example weights.
    normalize ("true" | "pred" | "all" | None): normalise over rows, columns or everything.
Returns:
    confusion_matrix (numpy array [n_labels, n_labels])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "confusion_matrix")

    def _compute(self, predictions, references, labels=None, sample_weight=None, normalize=None):
        return {"confusion_matrix": confusion_matrix(references, predictions, labels=labels,
                                                     sample_weight=sample_weight, normalize=normalize)}
