"""Objective registry: every module in this package that defines an :class:`Objective`
subclass with ``@register`` is an ``--objective`` value. Adding an objective is one
file here (plus its test); nothing else is edited.

``--objective`` takes one name or several joined by ``+``, each with an optional
weight: ``mmd:0.5+mcc`` is CE + 0.5 * MK-MMD + 1 * MCC (see :class:`ObjectiveSet`).
"""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from .base import Objective, ObjectiveSetup, Step, TermOutput, as_float, cross_entropy

_REGISTRY: Dict[str, Type[Objective]] = {}
_LOADED = False


def register(cls: Type[Objective]) -> Type[Objective]:
    """Class decorator: make ``cls`` available as ``--objective cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: an objective needs a non-empty ``name``")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"objective name {cls.name!r} registered twice ({other.__module__}, {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def names() -> List[str]:
    """Registered objective names, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Type[Objective]:
    _load_all()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"--objective {name!r}: unknown{hint}; registered objectives: {', '.join(names())}")
    return _REGISTRY[name]


def parse_spec(spec: str) -> List[Tuple[str, Optional[float]]]:
    """``"mmd:0.5+mcc"`` -> ``[("mmd", 0.5), ("mcc", None)]``; raises ValueError (one line)."""
    if not spec or not str(spec).strip():
        raise ValueError(f"--objective is empty; registered objectives: {', '.join(names())}")
    out: List[Tuple[str, Optional[float]]] = []
    for part in str(spec).split("+"):
        name, _, w = part.strip().partition(":")
        if not name.strip():
            raise ValueError(f"--objective {spec!r}: an empty term; expected NAME[:WEIGHT] joined by '+' "
                             f"(registered: {', '.join(names())})")
        get(name.strip())
        weight = None
        if w.strip():
            try:
                weight = float(w)
            except ValueError:
                raise ValueError(f"--objective {spec!r}: weight {w!r} of {name!r} is not a number (expected NAME:WEIGHT)") from None
            if weight < 0:
                raise ValueError(f"--objective {spec!r}: weight of {name!r} must be >= 0; got {weight}")
        if any(n == name.strip() for n, _ in out):
            raise ValueError(f"--objective {spec!r}: {name.strip()!r} appears twice")
        out.append((name.strip(), weight))
    return out


def classes(spec: str) -> List[Type[Objective]]:
    return [get(n) for n, _ in parse_spec(spec)]


def check(spec: str, tuning: str, has_target: bool, modality: Optional[str] = None) -> None:
    """Raise a one-line ValueError when ``spec`` cannot run with these flags (and modality)."""
    for cls in classes(spec):
        err = cls.check(tuning, has_target, modality)
        if err:
            raise ValueError(err)


def needs_target(spec: str) -> bool:
    return any(c.needs_target for c in classes(spec))


def lp_ft_head(spec: str) -> bool:
    """Whether a term of ``spec`` starts a trainable encoder's head from the linear probe
    (``Objective.lp_ft_head``)."""
    return any(c.lp_ft_head for c in classes(spec))


def builds_head(spec: str) -> bool:
    """Whether a term of ``spec`` computes the head from the training features after training."""
    return any(c.head_from_features is not Objective.head_from_features for c in classes(spec))


def adapts_head(spec: str) -> bool:
    """Whether a term of ``spec`` re-expresses the head for the target after training (``Objective.adapt_head``)."""
    return any(c.adapt_head is not Objective.adapt_head for c in classes(spec))


def replaces_cross_entropy(spec: str) -> bool:
    return any(c.replaces_cross_entropy for c in classes(spec))


def applied_options(spec: str, args) -> Dict[str, object]:
    """``{flag: value}``: the ``ModelArguments`` fields that the terms of ``spec`` read in a
    run with ``args`` (what the card shows and a resumed checkpoint must match)."""
    return {o: getattr(args, o, None) for c in classes(spec) for o in c.applied_options(args)}


def all_options() -> set:
    """Every ``ModelArguments`` field some registered objective reads."""
    return {o for n in names() for o in get(n).options}


def unread_options(spec: str, args, read_elsewhere: Sequence[str] = ()) -> set:
    """Objective flags that no term of ``spec`` reads with ``args`` (nor anything outside the
    objectives: ``read_elsewhere``)."""
    return all_options() - set(applied_options(spec, args)) - set(read_elsewhere)


def ignored_options(spec: str, args, defaults: Dict[str, object], read_elsewhere: Sequence[str] = ()) -> List[str]:
    """Objective flags of ``args`` set away from ``defaults`` that no term of ``spec`` reads
    (and that nothing outside the objectives reads: ``read_elsewhere``), sorted."""
    return sorted(o for o in unread_options(spec, args, read_elsewhere)
                  if o in defaults and getattr(args, o, defaults[o]) != defaults[o])


def trains_classifier(spec: str) -> bool:
    return all(c.trains_classifier for c in classes(spec))


def pretraining_recipe(spec: str) -> Optional[str]:
    """The recipe of a label-free pretraining term in ``spec`` (None when every term classifies)."""
    return next((c.pretraining_recipe for c in classes(spec) if c.pretraining_recipe), None)


def frozen_adapter_dim(spec: str) -> int:
    return max(c.frozen_adapter_dim for c in classes(spec))


def describe(spec: str, da_weight: Optional[float] = None, tuning: Optional[str] = None,
             modality: Optional[str] = None) -> List[Dict[str, object]]:
    """One record per term: name, the weight it ran with (``NAME:WEIGHT``, else ``da_weight``
    (``--da_weight``), else the objective's default for ``tuning`` and ``modality``; None for
    plain cross-entropy, which adds no term), paper, description (card, results.json)."""
    return [{"name": n, "weight": term_weight(n, w, da_weight, tuning, modality) if get(n).adds_term else None,
             "paper": get(n).paper, "description": get(n).description} for n, w in parse_spec(spec)]


def term_weight(name: str, given: Optional[float], da_weight: Optional[float] = None,
                tuning: Optional[str] = None, modality: Optional[str] = None) -> float:
    """The weight a term runs with: ``NAME:WEIGHT`` as ``given``, else ``da_weight``
    (``--da_weight``), else the objective's default: ``tuning_weights["MODALITY/TUNING"]``, else
    ``tuning_weights["TUNING"]``, else ``default_weight``."""
    if given is not None:
        return given
    if da_weight is not None:
        return da_weight
    cls = get(name)
    if tuning is None:
        return cls.default_weight
    return cls.tuning_weights.get(f"{modality}/{tuning}", cls.tuning_weights.get(tuning, cls.default_weight))


def weights_help() -> str:
    """The default weight of every objective that adds a term, per ``--tuning`` where it depends
    on it (the ``--da_weight`` help)."""
    parts = []
    for n in names():
        c = get(n)
        if not c.adds_term:
            continue
        by = {t: c.tuning_weights.get(t, c.default_weight) for t in ("frozen", "partial", "full")}
        by.update({k: w for k, w in c.tuning_weights.items() if "/" in k})  # modality-specific: "text/full"
        if len(set(by.values())) == 1:
            parts.append(f"{n} {c.default_weight:g}")
        else:
            groups: Dict[float, List[str]] = {}
            for t, w in by.items():
                groups.setdefault(w, []).append(t)
            parts.append(f"{n} " + ", ".join(f"{w:g} ({'/'.join(ts)})" for w, ts in groups.items()))
    return "; ".join(parts)


def help_text() -> str:
    """Every registered objective, one clause each; those not for every modality say which."""
    every = set(Objective.modalities)

    def only(n: str) -> str:
        mods = get(n).modalities
        return "" if set(mods) == every else f" [{'/'.join(mods)} only]"

    return "; ".join(f"{n}{only(n)}: {get(n).description}" for n in names())


class ObjectiveSet(nn.Module):
    """The objective of one run: ``ce_weight * CE(source) + sum_i term_i``.

    ``forward(step) -> (loss, logs)``: logs hold ``ce`` and each term's values as
    ``"<name>"`` (the weighted term) and ``"<name>/<key>"``; ``coefficient`` the
    terms' weights at ``progress`` (``"<name>/coeff"``).
    """

    def __init__(self, spec: str, setup: ObjectiveSetup, default_weight: Optional[float] = None,
                 class_weights: Optional[Tensor] = None):
        super().__init__()
        self.spec = spec
        terms = []
        for name, w in parse_spec(spec):
            cls = get(name)
            if w is not None and not cls.adds_term:
                warnings.warn(f"--objective {spec}: the weight of {name!r} is ignored (it adds no loss term)",
                              UserWarning, stacklevel=2)
            weight = term_weight(name, w, default_weight, setup.tuning, setup.modality)
            s = ObjectiveSetup(**{**setup.__dict__, "weight": float(weight)})
            terms.append(cls(s))
        self.terms = nn.ModuleList(terms)
        #: ``{flag: value}`` of the options the terms read (a resumed checkpoint must match them)
        self.options = applied_options(spec, setup.args) if setup.args is not None else {}
        self.use_ce = not any(t.replaces_cross_entropy for t in terms)
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float(), persistent=False)
        else:
            self.class_weights = None

    @property
    def needs_target(self) -> bool:
        return any(t.needs_target for t in self.terms)

    @property
    def needs_target_batches(self) -> bool:
        """Whether a term trains on target batches (not only reads the target after training)."""
        return any(t.needs_target and t.target_batches for t in self.terms)

    @property
    def plain_cross_entropy(self) -> bool:
        """Only the source CE is minimised (ERM): a frozen head is then a linear probe."""
        return self.use_ce and not any(t.adds_term for t in self.terms)

    def coefficients(self, progress: float) -> Dict[str, float]:
        return {f"{t.name}/coeff": float(t.coefficient(progress)) for t in self.terms if t.name != "erm"}

    def forward(self, step: Step) -> Tuple[Tensor, Dict[str, float]]:
        logs: Dict[str, float] = {}
        loss = None
        if self.use_ce:
            ce = cross_entropy(step.source_logits, step.labels[: step.n_source], self.class_weights)
            logs["ce"] = as_float(ce)
            loss = ce
        for term in self.terms:
            out: TermOutput = term(step)
            loss = out.loss if loss is None else loss + out.loss
            if term.adds_term:
                logs[term.name] = as_float(out.loss)
            for k, v in out.logs.items():
                logs[f"{term.name}/{k}"] = as_float(v)
        return loss, logs

    def batch_sampler(self, labels: Sequence[int], seed: int):
        for t in self.terms:
            s = t.batch_sampler(labels, seed)
            if s is not None:
                return s
        return None

    def settings(self) -> List[Dict[str, object]]:
        """Each term's ``Objective.settings()`` (the values it resolved for unset flags), in order."""
        return [dict(t.settings()) for t in self.terms]

    def head_from_features(self, features: Tensor, labels: Tensor, num_classes: int):
        for t in self.terms:
            h = t.head_from_features(features, labels, num_classes)
            if h is not None:
                return h
        return None

    @property
    def builds_head(self) -> bool:
        return builds_head(self.spec)

    @property
    def adapts_head(self) -> bool:
        return adapts_head(self.spec)

    def adapt_head(self, weight: Tensor, bias: Tensor, source: Tensor, target: Tensor):
        """Every term's ``adapt_head`` in turn (None when none changes the head)."""
        out = None
        for t in self.terms:
            h = t.adapt_head(weight, bias, source, target)
            if h is not None:
                out = weight, bias = h
        return out

    def adaptation_description(self, n_source: int, n_target: int) -> Optional[str]:
        return "; ".join(t.adaptation_description(n_source, n_target) for t in self.terms
                         if type(t).adapt_head is not Objective.adapt_head) or None

    def head_description(self) -> Optional[str]:
        """How the first term that computes the head from features computes it (None: none does)."""
        return next((t.head_description() for t in self.terms
                     if type(t).head_from_features is not Objective.head_from_features), None)


__all__ = ["Objective", "ObjectiveSetup", "ObjectiveSet", "Step", "TermOutput", "register", "names", "get",
           "parse_spec", "check", "describe", "help_text", "needs_target", "lp_ft_head", "frozen_adapter_dim",
           "replaces_cross_entropy", "trains_classifier", "adapts_head", "torch"]
