"""Data loading: every modality returns ``Examples`` (raw inputs + raw labels)."""
from .examples import DataError, Examples
from .labels import build_label_maps, encode_labels
from .tables import load_table

__all__ = ["DataError", "Examples", "build_label_maps", "encode_labels", "load_table"]
