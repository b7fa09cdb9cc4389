"""Empirical risk minimisation: cross-entropy on the labelled source data only
(Vapnik 1992). The source-only baseline of every adaptation objective."""
from __future__ import annotations

from . import register
from .base import Objective, Step, TermOutput, zero_like


@register
class ERM(Objective):
    name = "erm"
    paper = "Vapnik, Principles of Risk Minimization for Learning Theory, NeurIPS 1992"
    description = "cross-entropy on the labelled source data only (source-only baseline)"
    tags = ()
    adds_term = False

    def forward(self, step: Step) -> TermOutput:
        """No term beyond the source cross-entropy that every CE-based objective adds."""
        return TermOutput(zero_like(step.labels))
