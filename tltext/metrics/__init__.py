"""Classification metrics as ``evaluate`` modules, bundled for offline use (see ``compute``)."""
from .compute import BUNDLED, check_metric, compute_metrics, load_metric

__all__ = ["BUNDLED", "check_metric", "compute_metrics", "load_metric"]
