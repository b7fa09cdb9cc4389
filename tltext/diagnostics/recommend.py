"""Which tuning and objective to try first, from the domain gap and the label budget.

Decision table (first matching row wins; n = labelled source examples of the
rarest class, d_A = proxy A-distance of the frozen embeddings):

    n <= FEW_SHOT_PER_CLASS                            -> the best MEASURED few-shot configuration for this
                                                          modality (``evidence.json`` ``few_shot_rows``), else
                                                          a frozen linear probe (erm)
    d_A >= LARGE_GAP_A_DISTANCE and unlabelled target  -> the best MEASURED label-free configuration for
                                                          this modality and label budget (``evidence.json``:
                                                          mean target accuracy over seeds and domain pairs),
                                                          source-only when no adaptation beat it there
    n < SMALL_DATA_PER_CLASS and d_A < SIMILAR_A_DISTANCE -> frozen probe (erm)
    n >= LARGE_DATA_PER_CLASS                          -> full fine-tuning (erm)
    otherwise (more data, or dissimilar domains)       -> partial fine-tuning (erm)

Thresholds are rules of thumb, not fitted values:

* FEW_SHOT_PER_CLASS = 10: the few-shot regime (SetFit, prototypical networks). On
  BANKING77 at K = 5 and 10 a logistic-regression probe on frozen features beat the
  nearest prototype by 2-5 points, hence the rule when nothing was measured.
* SMALL_DATA_PER_CLASS = 200: below it, updating transformer layers tends to
  overfit; a probe on frozen features is cheap and strong when domains are close.
* LARGE_DATA_PER_CLASS = 2000: enough labels to update every layer.
* SIMILAR_A_DISTANCE = 1.0: a linear domain classifier errs >= 25 % of the time.
* LARGE_GAP_A_DISTANCE = 1.5: it errs <= 12.5 %, domains are nearly separable and
  explicit alignment (Ganin et al. 2016; Long et al. 2015) is worth trying.
  Sentence embeddings of different topics are often this far apart: check the
  source-only baseline too (``--compare_source_only``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

EVIDENCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evidence.json")

FEW_SHOT_PER_CLASS = 10
SMALL_DATA_PER_CLASS = 200
LARGE_DATA_PER_CLASS = 2000
SIMILAR_A_DISTANCE = 1.0
LARGE_GAP_A_DISTANCE = 1.5

THRESHOLDS = {
    "few_shot_per_class": FEW_SHOT_PER_CLASS,
    "small_data_per_class": SMALL_DATA_PER_CLASS,
    "large_data_per_class": LARGE_DATA_PER_CLASS,
    "similar_a_distance": SIMILAR_A_DISTANCE,
    "large_gap_a_distance": LARGE_GAP_A_DISTANCE,
}


@dataclass
class Recommendation:
    tuning: str
    objective: str
    reasons: List[str] = field(default_factory=list)
    alternatives: List[str] = field(default_factory=list)

    @property
    def flags(self) -> str:
        return f"--tuning {self.tuning} --objective {self.objective}"

    def to_dict(self) -> Dict:
        return {**asdict(self), "flags": self.flags}


@dataclass
class Evidence:
    """One measured configuration: ``flags``, its mean target accuracy (%) and that of the
    same tuning's source-only run, where it was measured (``measurement``: file and rows)
    and the smallest label budget it was measured with (``min_labels_per_class``)."""

    modality: str
    flags: str
    accuracy: float
    source_only: float
    min_labels_per_class: int
    measurement: str

    @property
    def gain(self) -> float:
        return self.accuracy - self.source_only


@dataclass
class FewShotEvidence:
    """One measured few-shot configuration: ``flags``, its mean test accuracy (%) at
    ``shots`` labelled examples per class, and where it was measured."""
    modality: str
    flags: str
    accuracy: float
    shots: int
    measurement: str
    task: str = ""


def load_evidence(path: str = EVIDENCE_FILE) -> List[Evidence]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [Evidence(**row) for row in json.load(f)["rows"]]


def load_few_shot_evidence(path: str = EVIDENCE_FILE) -> List[FewShotEvidence]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [FewShotEvidence(**row) for row in json.load(f).get("few_shot_rows", [])]


def _few_shot_choice(modality: str, n: int, counts: str, gap: str, large_gap: bool,
                     evidence: List[FewShotEvidence]) -> Recommendation:
    """The best measured few-shot configuration at the measured K closest to ``n``, else a probe."""
    rows = [e for e in evidence if e.modality == modality]
    if rows:
        k = min({e.shots for e in rows}, key=lambda s: (abs(s - n), s))
        at_k = sorted((e for e in rows if e.shots == k), key=lambda e: -e.accuracy)
        best = at_k[0]
        tuning, objective = best.flags.split()[1], best.flags.split()[3]
        on = f" on {best.task}" if best.task else ""
        r = Recommendation(tuning, objective, [
            f"{counts} <= {FEW_SHOT_PER_CLASS}: few-shot regime",
            f"measured{on}, not on your data: {best.flags} reaches {best.accuracy:.1f} % at K={k}; {best.measurement}"],
            [f"{e.flags} ({e.accuracy:.1f} % measured at K={k}{' on ' + e.task if e.task else ''})" for e in at_k[1:4]])
    else:
        r = Recommendation("frozen", "erm", [
            f"{counts} <= {FEW_SHOT_PER_CLASS}: few-shot regime; no {modality} measurement in evidence.json, so a "
            "linear probe on frozen features (on text it beat nearest prototypes by 2-5 points)"],
            ["--tuning frozen --objective prototypes (nearest centroid, nothing trained)"])
    if large_gap:
        r.reasons.append(f"the domain gap is large (A-distance {gap} >= {LARGE_GAP_A_DISTANCE}); "
                         "too few labels to train a domain-adversarial model reliably")
    return r


def _measured_choice(modality: str, n: int, gap: str, counts: str, evidence: List[Evidence]) -> Optional[Recommendation]:
    """The best measured configuration measured with no more labels per class than ``n``."""
    rows = [e for e in evidence if e.modality == modality and e.min_labels_per_class <= max(n, 1)]
    if not rows:
        return None
    best = max(rows, key=lambda e: e.accuracy)
    tuning, objective = best.flags.split()[1], best.flags.split()[3]
    why = (f"measured: {best.flags} reaches {best.accuracy:.1f} % mean target accuracy vs {best.source_only:.1f} % "
           f"for the same tuning source-only ({best.gain:+.1f}); {best.measurement}")
    others = sorted((e for e in rows if e is not best), key=lambda e: -e.accuracy)[:3]
    alts = [f"{e.flags} ({e.accuracy:.1f} % measured, {e.gain:+.1f} vs its source-only)" for e in others]
    return Recommendation(tuning, objective, [f"large domain gap: A-distance {gap} >= {LARGE_GAP_A_DISTANCE} and "
                                              f"unlabelled target data is available; {counts}", why],
                          alts + ["--compare_source_only to check for negative transfer on your data"])


def recommend(labels_per_class: Dict[str, int], a_distance: Optional[float], has_unlabelled_target: bool = True,
              modality: str = "text", evidence: Optional[List[Evidence]] = None,
              few_shot_evidence: Optional[List[FewShotEvidence]] = None) -> Recommendation:
    """Apply the decision table of the module docstring (``evidence`` / ``few_shot_evidence``:
    default ``evidence.json``'s ``rows`` / ``few_shot_rows``)."""
    if not labels_per_class:
        raise ValueError("recommend needs the labelled source examples per class; got none")
    n = min(labels_per_class.values())
    rare = min(labels_per_class, key=labels_per_class.get)
    counts = f"{n} labelled examples in the smallest class ({rare!r}), {len(labels_per_class)} classes"
    gap = "unknown" if a_distance is None else f"{a_distance:.2f}"
    large_gap = a_distance is not None and a_distance >= LARGE_GAP_A_DISTANCE
    similar = a_distance is not None and a_distance < SIMILAR_A_DISTANCE
    if n <= FEW_SHOT_PER_CLASS:
        return _few_shot_choice(modality, n, counts, gap, large_gap,
                                load_few_shot_evidence() if few_shot_evidence is None else few_shot_evidence)
    if large_gap and has_unlabelled_target:
        measured = _measured_choice(modality, n, gap, counts, load_evidence() if evidence is None else evidence)
        if measured is not None:
            return measured
        tuning = "frozen" if n < SMALL_DATA_PER_CLASS else "partial"
        why_t = (f"{counts} < {SMALL_DATA_PER_CLASS}: keep the backbone frozen" if tuning == "frozen"
                 else f"{counts} >= {SMALL_DATA_PER_CLASS}: enough labels to update the top layers")
        return Recommendation(tuning, "dann", [
            f"large domain gap: A-distance {gap} >= {LARGE_GAP_A_DISTANCE} and unlabelled target data is available: "
            f"align the domains (DANN, Ganin et al. 2016); no measurement for {modality} in evidence.json, "
            "so this is a rule of thumb", why_t],
            [f"--tuning {tuning} --objective mmd (MK-MMD, Long et al. 2015)",
             "--compare_source_only to check for negative transfer"])
    if n < SMALL_DATA_PER_CLASS and similar:
        return Recommendation("frozen", "erm", [
            f"{counts} < {SMALL_DATA_PER_CLASS}: little labelled data",
            f"similar domains: A-distance {gap} < {SIMILAR_A_DISTANCE}: a probe on frozen features transfers"])
    reasons = []
    if large_gap:
        reasons.append(f"large domain gap (A-distance {gap}) but no unlabelled target data to align with")
    elif not similar:
        reasons.append(f"dissimilar domains: A-distance {gap} >= {SIMILAR_A_DISTANCE}: adapt the backbone")
    if n >= LARGE_DATA_PER_CLASS:
        reasons.append(f"{counts} >= {LARGE_DATA_PER_CLASS}: enough labels to update every layer")
        return Recommendation("full", "erm", reasons, ["--tuning partial (cheaper)"])
    if n >= SMALL_DATA_PER_CLASS:
        reasons.append(f"{counts} >= {SMALL_DATA_PER_CLASS}: enough labels to update the top layers")
    else:
        reasons.append(f"{counts} < {SMALL_DATA_PER_CLASS}: update only the top layers")
    return Recommendation("partial", "erm", reasons, ["--tuning frozen --objective erm (a linear probe) as a baseline"])
