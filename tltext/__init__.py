"""tltext: transfer learning for NLP and speech (and images) on Hugging Face Accelerate."""
from .modeling import TltextConfig, TltextModel, register_auto_classes

__version__ = "0.1.0"

register_auto_classes()

__all__ = ["TltextConfig", "TltextModel", "__version__"]
