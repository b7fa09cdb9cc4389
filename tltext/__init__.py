"""tltext: transfer learning for NLP and speech (and images) on Hugging Face Accelerate."""
from .modeling import TltextConfig, TltextModel, register_auto_classes

__version__ = "0.1.0"

register_auto_classes()


def __getattr__(name: str):  # the Trainer API loads accelerate/datasets only when used
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    if name in ("TrainArguments", "ModelArguments", "DataArguments"):
        from . import args

        return getattr(args, name)
    raise AttributeError(f"module 'tltext' has no attribute {name!r}")


__all__ = ["TltextConfig", "TltextModel", "Trainer", "TrainArguments", "ModelArguments", "DataArguments",
           "__version__"]
