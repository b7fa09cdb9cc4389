"""Matthews correlation coefficient (Matthews 1975; multiclass form by Gorodkin 2004).

MCC = (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)), with c correct predictions,
s samples, p_k / t_k the times class k is predicted / true; binary case = (TP*TN - FP*FN) / sqrt(...).
"""
import evaluate
from sklearn.metrics import matthews_corrcoef
from tltext.metrics.sklearn_info import metric_info

_DESCRIPTION = "Matthews correlation coefficient in [-1, 1] (sklearn.metrics.matthews_corrcoef); 0 = chance level."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    sample_weight (list of float): per-example weights.
Returns:
    matthews_correlation (float)
"""
_CITATION = "Matthews, B. W. (1975). Comparison of the predicted and observed secondary structure of T4 phage lysozyme."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "matthews_corrcoef", citation=_CITATION)

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}
