"""Domain-alignment objectives added to the source cross-entropy."""
from .dann import DomainAdversarialLoss, DomainDiscriminator, GradientReverseFunction, GradientReverseLayer, dann_coefficient, grad_reverse
from .mkmmd import MultipleKernelMMD, mk_mmd2, mmd_warmup_weight
