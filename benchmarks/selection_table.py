#!/usr/bin/env python
"""How often each label-free model-selection criterion picks an epoch near the oracle's.

Reads OUT/results.json of finished runs (their per-epoch ``history``). A run counts only
when every epoch holds ``oracle_test_metric``: the target test metric recorded with
``--record_oracle`` (never selected on) or ``--oracle_selection``. For each criterion in
``tltext.training.selection.HISTORY_KEYS`` (source_validation: val_metric,
information_maximisation: target_im, snd: target_snd, dev: -dev_risk) and ``last``, the
epoch it would pick is the first epoch with its best score (the engine's rule: a later
epoch must score strictly higher); its gap is the oracle-best epoch's metric minus the
picked epoch's, in points (x100). A pick is a hit when the gap is at most --tolerance
points (1 by default). Reported per criterion: runs scored, hits, hit rate, mean and
largest gap.

    python benchmarks/selection_table.py RUN_DIR [RUN_DIR ...] [--tolerance 1] [--out_dir benchmarks/results] [--merge]

Writes OUT_DIR/selection.json and selection.md (each through a temp file + os.replace).
``--merge`` keeps the rows of the existing OUT_DIR/NAME.json for runs not given now, and a
given run whose folder is gone keeps its stored picks (read when it existed), so the table can
grow over runs made at different times. Runs are keyed by their normalised path (relative to
the project root when inside it), so ``x``, ``./x/`` and its absolute path are one run. The summary is given over all runs and per run length
(number of epochs), because a 2-epoch run leaves a criterion little to choose between.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, write_payload  # noqa: E402
from tltext.training.selection import HISTORY_KEYS  # noqa: E402

ORACLE_KEY = "oracle_test_metric"


def pick(history: Sequence[Dict[str, Any]], criterion: str) -> Optional[int]:
    """Index of the epoch ``criterion`` keeps (first best; ``last``: the last), or None
    when no epoch recorded the criterion."""
    if criterion == "last":
        return len(history) - 1 if history else None
    key, sign = HISTORY_KEYS[criterion]
    best = None
    for i, rec in enumerate(history):
        if rec.get(key) is not None and (best is None or sign * rec[key] > sign * history[best][key]):
            best = i
    return best


def run_name(run_dir: str) -> str:
    """The row key of a run folder: its path relative to the project root when inside it
    (``runs/pilots/x``), else absolute, normalised (no ``./``, no trailing slash)."""
    full = os.path.normpath(os.path.abspath(run_dir))
    rel = os.path.relpath(full, ROOT)
    return full if rel == ".." or rel.startswith(".." + os.sep) else rel


def run_rows(run_dir: str, tolerance: float) -> Dict[str, Any]:
    """One run's picks: ``{"run", "oracle_best", "picks": {criterion: {epoch, metric, gap, hit}}}``
    or ``{"run", "skipped": reason}``. Gaps and tolerance in points (metric x 100)."""
    name = run_name(run_dir)
    path = os.path.join(run_dir, "results.json")
    if not os.path.isdir(run_dir):
        return {"run": name, "skipped": "no such folder"}
    if not os.path.isfile(path):
        return {"run": name, "skipped": "no results.json"}
    try:
        res = json.load(open(path))
        hist = (res.get("history") if isinstance(res, dict) else None) or []
    except (OSError, ValueError) as e:
        return {"run": name, "skipped": f"unreadable results.json ({type(e).__name__})"}
    if not hist:
        return {"run": name, "skipped": "results.json has no per-epoch history"}
    if any(not isinstance(rec, dict) or rec.get(ORACLE_KEY) is None for rec in hist):
        return {"run": name, "skipped": f"history lacks {ORACLE_KEY} (run with --record_oracle)"}
    oracle = [100.0 * rec[ORACLE_KEY] for rec in hist]
    best = max(oracle)
    picks = {}
    for crit in [*HISTORY_KEYS, "last"]:
        i = pick(hist, crit)
        if i is not None:
            gap = best - oracle[i]
            picks[crit] = {"epoch": hist[i].get("epoch", i), "metric": oracle[i], "gap": gap,
                           "hit": gap <= tolerance + 1e-9}
    return {"run": name, "epochs": len(hist), "oracle_best": best, "picks": picks}


def load_table(path: str, tolerance: float) -> Dict[str, Any]:
    """The selection table stored at ``path``. Raises ValueError (one line) when it is not
    valid JSON, not a selection table, or was scored with another tolerance."""
    try:
        old = json.load(open(path))
    except ValueError as e:
        raise ValueError(f"--merge: {path} is not valid JSON ({e})") from None
    if not isinstance(old, dict) or old.get("benchmark") != "selection" or not isinstance(old.get("runs"), list):
        kind = old.get("benchmark") if isinstance(old, dict) else type(old).__name__
        raise ValueError(f"--merge: {path} is not a selection table (benchmark={kind!r})")
    if old.get("tolerance_points") != tolerance:
        raise ValueError(f"--merge: {path} was scored with --tolerance {old.get('tolerance_points')}, not {tolerance}")
    return old


def merged(rows: List[Dict[str, Any]], old: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The stored table's rows, each replaced by the row of the same run in ``rows`` unless
    that one is skipped and the stored one was scored (a folder deleted since keeps its
    picks), then the runs new to the table."""
    new = {r["run"]: r for r in rows}
    out = []
    for r in old.get("runs", []):
        fresh = new.pop(r.get("run"), None)
        out.append(r if fresh is None or ("skipped" in fresh and "picks" in r) else fresh)
    return out + list(new.values())


def by_length(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``summarise`` per run length: ``{"N epochs": summary}``, shortest first."""
    lengths = sorted({r["epochs"] for r in rows if "picks" in r and "epochs" in r})
    return {f"{n} epochs": summarise([r for r in rows if r.get("epochs") == n]) for n in lengths}


def summarise(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out = {}
    for crit in [*HISTORY_KEYS, "last"]:
        gaps = [r["picks"][crit]["gap"] for r in rows if "picks" in r and crit in r["picks"]]
        hits = sum(r["picks"][crit]["hit"] for r in rows if "picks" in r and crit in r["picks"])
        out[crit] = {"runs": len(gaps), "hits": hits, "hit_rate": hits / len(gaps) if gaps else None,
                     "mean_gap": sum(gaps) / len(gaps) if gaps else None, "max_gap": max(gaps) if gaps else None}
    return out


def summary_lines(title: str, summary: Dict[str, Dict[str, Any]]) -> List[str]:
    f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    lines = [title, "", "| criterion | runs | hits | hit rate | mean gap (points) | max gap (points) |", "|---|---|---|---|---|---|"]
    for crit, s in summary.items():
        lines.append(f"| {crit} | {s['runs']} | {s['hits']} | {f(s['hit_rate'], '.2f')} | {f(s['mean_gap'], '.2f')} "
                     f"| {f(s['max_gap'], '.2f')} |")
    return lines + [""]


def markdown(summary: Dict[str, Dict[str, Any]], rows: List[Dict[str, Any]], tolerance: float,
             lengths: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None) -> str:
    lines = [f"*Label-free model selection vs the oracle epoch (target test metric recorded per epoch, never "
             f"selected on). Hit: the criterion's epoch is within {tolerance:g} point(s) of the oracle-best epoch.*", ""]
    lines += summary_lines("All runs:", summary)
    for name, part in (lengths or {}).items():
        lines += summary_lines(f"Runs of {name}:", part)
    lines += ["| run | epochs | oracle best | " + " | ".join(summary) + " |", "|---|---|---|" + "---|" * len(summary)]
    for r in rows:
        if "picks" not in r:
            lines.append(f"| {r['run']} | skipped: {r['skipped']} |")
            continue
        cells = [f"e{r['picks'][c]['epoch']} {r['picks'][c]['metric']:.1f}" if c in r["picks"] else "-" for c in summary]
        lines.append(f"| {r['run']} | {r['epochs']} | {r['oracle_best']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders holding results.json")
    p.add_argument("--tolerance", type=float, default=1.0, help="hit when within this many points of the oracle")
    p.add_argument("--out_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    p.add_argument("--name", default="selection")
    p.add_argument("--merge", action="store_true", help="keep the existing table's rows for runs not given here")
    a = p.parse_args(argv)
    if not math.isfinite(a.tolerance) or a.tolerance < 0:
        p.error(f"--tolerance {a.tolerance}: expected a finite number >= 0 (points)")
    rows = list({r["run"]: r for r in (run_rows(d, a.tolerance) for d in a.runs)}.values())  # a folder given twice: one row
    if a.merge:
        old_path = os.path.join(a.out_dir, f"{a.name}.json")
        if os.path.isfile(old_path):
            try:
                rows = merged(rows, load_table(old_path, a.tolerance))
            except ValueError as e:
                p.error(str(e))
    summary, lengths = summarise(rows), by_length(rows)
    payload = {"benchmark": "selection", "tolerance_points": a.tolerance, "metric_key": ORACLE_KEY,
               "criteria_keys": {k: {"key": v[0], "sign": v[1]} for k, v in HISTORY_KEYS.items()},
               "summary": summary, "summary_by_length": lengths, "runs": rows}
    write_payload(a.out_dir, a.name, payload, markdown(summary, rows, a.tolerance, lengths))
    return payload


if __name__ == "__main__":
    main()
