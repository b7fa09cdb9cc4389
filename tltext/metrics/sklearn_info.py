"""What the bundled metric modules share: their ``MetricInfo`` over an sklearn function and the
precision/recall/F1 averaging arguments."""
from typing import Callable, Optional

import datasets
import evaluate

CLASS_IDS = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})

AVERAGED_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int): the classes to include (and their order when average=None); default: sorted labels seen.
    pos_label (int): the positive class when average="binary".
    average ("binary" | "micro" | "macro" | "weighted" | None): how per-class values are combined.
    sample_weight (list of float): per-example weights.
    zero_division ("warn" | 0 | 1 | nan): the value for a 0/0 class (with "warn", 0 and a warning).
Returns:
    {name} (float, or numpy array [n_labels] when average=None)
"""


def metric_info(description: str, kwargs_description: str, sklearn_fn: str, citation: str = "",
                features: Optional[datasets.Features] = None, fmt: Optional[str] = "numpy") -> evaluate.MetricInfo:
    """The module's ``MetricInfo``: class-id features unless given, a link to ``sklearn.metrics.<sklearn_fn>``."""
    return evaluate.MetricInfo(
        description=description, citation=citation, inputs_description=kwargs_description,
        features=features if features is not None else CLASS_IDS, format=fmt,
        reference_urls=[f"https://scikit-learn.org/stable/modules/generated/sklearn.metrics.{sklearn_fn}.html"])


def averaged(score_fn: Callable, name: str, predictions, references, labels=None, pos_label=1, average="binary",
             sample_weight=None, zero_division="warn") -> dict:
    """``{name: score_fn(references, predictions, ...)}``; a float unless average=None (one value per class)."""
    score = score_fn(references, predictions, labels=labels, pos_label=pos_label, average=average,
                     sample_weight=sample_weight, zero_division=zero_division)
    return {name: float(score) if average is not None else score}
