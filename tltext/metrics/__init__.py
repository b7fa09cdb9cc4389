"""Classification metrics as ``evaluate`` modules, bundled for offline use (see ``compute``)."""
from .compute import BUNDLED, compute_metrics, load_metric

__all__ = ["BUNDLED", "compute_metrics", "load_metric"]
