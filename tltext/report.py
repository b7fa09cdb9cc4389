"""OUT/report.md: what a run did, in pictures.

Written after every training run (``--report``, on by default):

* ``embeddings_before.png`` / ``embeddings_after.png``: source and target (or
  train and test) points in 2-D, PCA and t-SNE (van der Maaten & Hinton 2008),
  coloured by domain and by class; *before* = backbone embeddings, *after* =
  the trained model's adapter-space features (what DA aligns, what the head reads);
* ``confusion_matrix.png`` on the test set (validation if there is none);
* ``curves.png``: training loss, validation metric, domain-discriminator accuracy
  and the DA coefficient per epoch;
* proxy A-distance and MK-MMD^2 before / after (with a target file), also stored
  in ``results.json`` as ``domain_gap``.

At most ``MAX_POINTS_PER_DOMAIN`` examples per domain are embedded, so the report
costs seconds. Features are computed on every process (collective); files are
written by the main process only.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .atomic import atomic_write_text
from .results import RunArtifacts, RunResult

MAX_POINTS_PER_DOMAIN = 500  # embedded / plotted per domain (t-SNE then sees <= 1000 points)
TSNE_ITERATIONS = 500
DPI = 80
EMBEDDINGS_FIGSIZE = (10.0, 8.0)  # inches: 800 x 640 px at DPI
CURVES_FIGSIZE = (10.0, 7.0)  # 800 x 560 px
CONFUSION_FIGSIZE = (6.0, 5.0)  # 480 x 400 px; larger for many classes, see confusion_figsize
MAX_LEGEND_CLASSES = 20
DOMAIN_COLOURS = ("tab:blue", "tab:orange")
CLASS_COLOURS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black")


def figure_pixels(figsize: Tuple[float, float]) -> Tuple[int, int]:
    return int(round(figsize[0] * DPI)), int(round(figsize[1] * DPI))


def confusion_figsize(num_classes: int) -> Tuple[float, float]:
    if num_classes <= 10:
        return CONFUSION_FIGSIZE
    side = min(16.0, 5.0 + 0.12 * num_classes)
    return (side + 1.0, side)


# --------------------------------------------------------------------------- features
def _subsample(n: int, k: int, seed: int) -> List[int]:
    if n <= k:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, k, replace=False).tolist())


def report_domains(labels: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(display name, split) pairs: source vs target, else train vs test."""
    if "target" in labels:
        return [("source", "train"), ("target", "target")]
    if "test" in labels:
        return [("train", "train"), ("test", "test")]
    return [("train", "train")]


def _target_labels_from_test(d, arts: RunArtifacts) -> Optional[List[int]]:
    """The usual DA protocol tests on the very target file: then its labels colour the
    target points (for the picture only; training never sees them)."""
    test, target = arts.labels.get("test"), arts.inputs.get("target")
    if (test is not None and target is not None and d.test_file == d.target_file and d.test_filter == d.target_filter
            and len(test) == len(target)):
        return test
    return None


def head_input_name(model: Any, tuning: str) -> str:
    """What the 'after' features are: the adapter's output, else the pooled embedding the head reads."""
    if getattr(model.config, "adapter_dim", 0):
        return "adapter features"
    if tuning == "frozen":
        return "head input: the frozen backbone embeddings"
    return "head input: pooled embeddings of the trained model"


def collect_features(arts: RunArtifacts, max_per_domain: int = MAX_POINTS_PER_DOMAIN) -> Dict[str, Any]:
    """Backbone embeddings (before) and the features the head reads (after: the adapter's output,
    or the trained encoder's pooled embedding when there is no adapter) of a subsample of
    each domain. Runs on all processes (``Predictor`` gathers)."""
    model, t, m, d = arts.model, arts.train_args, arts.model_args, arts.data_args
    domains, before, after, labels = [], [], [], []
    fresh = None
    for i, (name, split) in enumerate(report_domains(arts.labels)):
        x = arts.inputs[split]
        idx = _subsample(len(x), max_per_domain, t.seed + i)
        if torch.is_tensor(x):  # frozen runs: cached backbone embeddings
            sub = x[idx]
            before.append(sub.float().cpu())
        else:  # the backbone was trained: embed with the pretrained one
            sub = [x[j] for j in idx]
            if fresh is None:
                if arts.fresh_backbone is None:
                    raise ValueError("no untrained backbone to embed with")
                fresh = arts.fresh_backbone()
            before.append(arts.predictor.embed(fresh, sub, f"report: embed {name}").float())
        after.append(arts.predictor.features(model, sub, f"report: features {name}").float())
        ys = arts.labels.get(split)
        if ys is None and split == "target":
            ys = _target_labels_from_test(d, arts)
        labels.append(np.asarray([ys[j] for j in idx]) if ys is not None else np.full(len(idx), -1))
        domains.append(name)
    note = None
    if fresh is not None:
        if m.model_config and not m.model_name_or_path:
            note = "built from a config (no pretrained weights): 'before' is a freshly initialised backbone"
        del fresh
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"domains": domains, "before": before, "after": after, "labels": labels, "note": note,
            "after_name": head_input_name(model, m.tuning),
            "target_labels_from_test": "target" in arts.labels and arts.labels["target"] is None
            and _target_labels_from_test(d, arts) is not None}


def compute_domain_gap(feats: Dict[str, Any], seed: int) -> Dict[str, Any]:
    """Proxy A-distance and MK-MMD^2 between the two domains, before and after."""
    from .diagnostics.adistance import domain_classifier_error, a_distance_from_error, mmd2

    gap: Dict[str, Any] = {}
    for stage in ("before", "after"):
        xs, xt = feats[stage][0], feats[stage][1]
        e = domain_classifier_error(xs, xt, seed=seed, max_per_domain=None)
        gap[f"a_distance_{stage}"] = a_distance_from_error(e["error"])
        gap[f"mmd2_{stage}"] = mmd2(xs, xt, max_per_domain=None, seed=seed)
        gap["n_per_domain"] = e["n_per_domain"]
    gap["space_before"] = f"backbone embeddings ({feats['before'][0].shape[1]}-d)"
    gap["space_after"] = f"{feats['after_name']} ({feats['after'][0].shape[1]}-d)"
    return gap


# --------------------------------------------------------------------------- plots
def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def project_2d(x: np.ndarray, seed: int, tsne: bool = True) -> Dict[str, Optional[np.ndarray]]:
    """PCA (2 components) and, when ``tsne`` and n >= 5, t-SNE on the top-50 PCA
    components (perplexity min(30, (n-1)/3); one thread: fast on a busy machine and reproducible)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    out: Dict[str, Optional[np.ndarray]] = {"PCA": PCA(2, random_state=seed).fit_transform(x) if n >= 2 else None, "t-SNE": None}
    if tsne and n >= 5:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        k = min(50, n, x.shape[1])
        z = PCA(k, random_state=seed).fit_transform(x) if x.shape[1] > k else x
        with threadpool_limits(limits=1):
            out["t-SNE"] = TSNE(2, perplexity=min(30.0, (n - 1) / 3.0), init="pca", random_state=seed,
                                max_iter=TSNE_ITERATIONS).fit_transform(z)
    return out


def plot_embeddings(x_by_domain: List[np.ndarray], domains: List[str], labels: List[np.ndarray],
                    label_names: List[str], path: str, title: str, seed: int = 0, tsne: bool = True) -> str:
    """2 x 2 panels: rows PCA / t-SNE, columns coloured by domain / by class."""
    import matplotlib
    import matplotlib.colors

    x = np.concatenate([np.asarray(v, dtype=np.float64) for v in x_by_domain])
    dom = np.concatenate([np.full(len(v), i) for i, v in enumerate(x_by_domain)])
    y = np.concatenate(labels)
    proj = project_2d(x, seed, tsne)
    fig = _figure(EMBEDDINGS_FIGSIZE)
    fig.suptitle(title)
    axes = fig.subplots(2, 2)
    k = len(label_names)
    cmap = (matplotlib.colors.ListedColormap(CLASS_COLOURS) if k <= len(CLASS_COLOURS)
            else matplotlib.colormaps["tab20" if k <= 20 else "viridis"])
    markers = ("o", "^")
    for row, (method, z) in enumerate(proj.items()):
        for col in range(2):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if z is None:
                ax.text(0.5, 0.5, f"{method} skipped", ha="center", va="center", transform=ax.transAxes)
                continue
            if col == 0:
                for i, name in enumerate(domains):
                    sel = dom == i
                    ax.scatter(z[sel, 0], z[sel, 1], s=8, alpha=0.6, c=DOMAIN_COLOURS[i % 2], label=f"{name} ({sel.sum()})")
                ax.set_title(f"{method}: by domain")
            else:
                for i, name in enumerate(domains):
                    sel = (dom == i) & (y < 0)
                    if sel.any():
                        ax.scatter(z[sel, 0], z[sel, 1], s=8, alpha=0.3, c="lightgrey", marker=markers[i % 2],
                                   label=f"{name} (unlabelled)")
                for c in range(k):
                    colour = cmap(c if k <= 20 else c / max(1, k - 1))
                    named = False
                    for i in range(len(domains)):
                        sel = (dom == i) & (y == c)
                        if sel.any():
                            ax.scatter(z[sel, 0], z[sel, 1], s=8, alpha=0.7, color=colour, marker=markers[i % 2],
                                       label=None if named else str(label_names[c]))
                            named = True
                ax.set_title(f"{method}: by class" + (" (o source, ^ target)" if len(domains) > 1 else ""))
            if col == 0 or k <= MAX_LEGEND_CLASSES:
                ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return _save(fig, path)


def plot_confusion(cm: np.ndarray, label_names: List[str], path: str, title: str) -> str:
    cm = np.asarray(cm, dtype=np.float64)
    k = len(cm)
    fig = _figure(confusion_figsize(k))
    ax = fig.subplots()
    rows = cm.sum(1, keepdims=True)
    im = ax.imshow(cm / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    if k <= 30:
        ax.set_xticks(range(k), [str(n)[:14] for n in label_names], rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
        ax.set_yticks(range(k), [str(n)[:14] for n in label_names], fontsize=8)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                frac = cm[i, j] / max(rows[i, 0], 1)
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=9,
                        color="white" if frac > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


_SELECTION_KEYS = (("val_metric", "source validation"), ("target_im", "target information max."),
                   ("oracle_test_metric", "ORACLE target test"))
_NOT_TERMS = {"epoch", "step", "train_loss", "ce", "score"} | {k for k, _ in _SELECTION_KEYS}


def curve_panels(history: List[Dict[str, Any]]) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """The four panels and their series, from the keys the run logged: losses (total, CE,
    each objective term), selection metrics, each term's diagnostics (``name/key``, e.g.
    ``dann/disc_acc``) and each term's coefficient (``name/coeff``)."""
    keys = list(dict.fromkeys(k for h in history for k in h))
    terms = [(k, f"{k} term") for k in keys if "/" not in k and k not in _NOT_TERMS]
    diag = [(k, k) for k in keys if "/" in k and not k.endswith("/coeff") and not k.endswith("/skipped")]
    coeff = [(k, k.split("/")[0]) for k in keys if k.endswith("/coeff")]
    return [("training loss", [("train_loss", "total"), ("ce", "cross-entropy")] + terms),
            ("model selection metric", list(_SELECTION_KEYS)),
            ("objective diagnostics (train batches)", diag),
            ("objective coefficients (end of epoch)", coeff)]


def plot_curves(history: List[Dict[str, Any]], path: str, title: str) -> str:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(CURVES_FIGSIZE)
    fig.suptitle(title)
    axes = fig.subplots(2, 2).ravel()
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    for ax, (name, series) in zip(axes, curve_panels(history)):
        drawn = False
        for key, label in series:
            pts = [(e, h[key]) for e, h in zip(epochs, history) if isinstance(h.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
                drawn = True
        if any(k.endswith("disc_acc") for k, _ in series) and drawn:
            ax.axhline(0.5, ls="--", c="grey", lw=1, label="discriminator chance")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not recorded for this run", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


# --------------------------------------------------------------------------- report
def _confusion(res: Dict[str, Any], arts: RunArtifacts) -> Optional[Tuple[str, np.ndarray]]:
    for split in ("test", "validation"):
        if (res.get(split) or {}).get("confusion_matrix") is not None:
            return split, np.asarray(res[split]["confusion_matrix"])
        logits = arts.logits.get(split)
        if logits is not None and arts.labels.get(split) is not None:
            k = len(arts.label_names)
            pred = logits.argmax(-1).numpy()
            true = np.asarray(arts.labels[split])
            return split, np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    return None


def _fmt(v: Any, nd: int = 4) -> str:
    """A table cell: floats to ``nd`` places; a metric the split does not have (e.g. f1 on
    the probe's cross-validation line) as a dash."""
    return f"{v:.{nd}f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _markdown(res: Dict[str, Any], pictures: Dict[str, str], notes: List[str], after_name: Optional[str]) -> str:
    a = res["args"]
    ne = res.get("num_examples", {})
    tm = res.get("timing", {})
    lines = ["# tltext run report", "",
             "| | |", "| --- | --- |",
             f"| modality | {res['modality']} |",
             f"| model | `{res['base_model']}` |",
             f"| tuning / objective | {res['tuning']} / {res['objective']} |",
             f"| selection | {res['selection']} (best epoch {res.get('best_epoch')}) |",
             f"| examples | {', '.join(f'{k} {v}' for k, v in ne.items())} |",
             f"| classes | {len(res['label_names'])}: {', '.join(map(str, res['label_names'][:12]))}{' ...' if len(res['label_names']) > 12 else ''} |",
             f"| train time | {tm.get('train_seconds', 0):.1f} s, {tm.get('train_steps', '?')} steps, seed {a.get('seed')} |",
             "", "## Metrics", ""]
    rows = [(s, res[s]) for s in ("validation", "test") if res.get(s)]
    if res.get("source_only", {}).get("test"):
        rows.append(("test, source-only (erm)", res["source_only"]["test"]))
    keys = [k for k in a.get("metric", ["accuracy", "f1"]) if any(isinstance(d.get(k), float) for _, d in rows)]
    if rows and keys:
        lines += ["| split | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
        lines += [f"| {s} | " + " | ".join(_fmt(d.get(k)) for k in keys) + " |" for s, d in rows]
    else:
        lines.append("no labelled validation or test split")
    if a.get("test_file"):
        lines += ["", f"test file: `{a['test_file']}`"]
    gap = res.get("domain_gap")
    if gap:
        lines += ["", "## Domain gap (source vs target)", "",
                  "| | before: " + gap["space_before"] + " | after: " + gap["space_after"] + " |", "| --- | --- | --- |",
                  f"| proxy A-distance (0 = same, 2 = separable) | {gap['a_distance_before']:.3f} | {gap['a_distance_after']:.3f} |",
                  f"| MK-MMD^2 | {gap['mmd2_before']:.4f} | {gap['mmd2_after']:.4f} |", "",
                  f"{gap['n_per_domain']} examples per domain; linear domain classifier, 5-fold CV "
                  "(Ben-David et al. 2010). MMD^2 values are in each space's own scale."]
    for key, heading in (("embeddings_before", "Embeddings before adaptation (backbone)"),
                         ("embeddings_after", f"Embeddings after adaptation ({after_name})"),
                         ("confusion_matrix", "Confusion matrix"), ("curves", "Training curves")):
        if key in pictures:
            lines += ["", f"## {heading}", "", f"![{key}]({pictures[key]})"]
    for w in res.get("warnings", []) + notes:
        lines += ["", f"> note: {w}"]
    lines += ["", "All numbers: `results.json`.", ""]
    return "\n".join(lines)


def write_run_report(result: RunResult, arts: RunArtifacts) -> Optional[str]:
    """Write OUT/report.md and its PNGs; add ``domain_gap`` (``result.extra``) and
    ``timing.report_seconds``. A failure here is reported as a warning and never loses
    the run's results. Returns the report's path (main process) or None."""
    t = arts.train_args
    if not getattr(t, "report", True):
        return None
    t0 = time.perf_counter()
    seed = t.seed
    problems: List[str] = []
    feats = None
    try:
        feats = collect_features(arts)
    except Exception as e:  # noqa: BLE001 - the run itself has finished; keep its results
        problems.append(f"report: embeddings not computed ({type(e).__name__}: {e})")
    if not arts.is_main_process:
        return None
    res = result.as_dict()
    odir = t.output_dir
    pictures: Dict[str, str] = {}
    tsne = bool(getattr(t, "report_tsne", True))
    label_names = list(arts.label_names)
    notes = [feats["note"]] if feats is not None and feats["note"] else []
    try:
        if feats is not None:
            if len(feats["domains"]) == 2 and "target" in arts.labels and min(len(v) for v in feats["before"]) >= 5:
                res["domain_gap"] = result.extra["domain_gap"] = compute_domain_gap(feats, seed)
            for stage, what in (("before", "backbone embeddings"), ("after", feats["after_name"])):
                name = f"embeddings_{stage}.png"
                title = f"{stage} adaptation: {what}"
                if feats["target_labels_from_test"]:
                    title += " (target classes: its test labels, unseen in training)"
                plot_embeddings(feats[stage], feats["domains"], feats["labels"], label_names,
                                os.path.join(odir, name), title, seed, tsne)
                pictures[f"embeddings_{stage}"] = name
        cm = _confusion(res, arts)
        if cm is not None:
            split, m = cm
            plot_confusion(m, label_names, os.path.join(odir, "confusion_matrix.png"), f"{split} set ({int(m.sum())} examples)")
            pictures["confusion_matrix"] = "confusion_matrix.png"
        plot_curves(res.get("history", []), os.path.join(odir, "curves.png"), f"{res['tuning']} / {res['objective']}")
        pictures["curves"] = "curves.png"
    except Exception as e:  # noqa: BLE001
        problems.append(f"report: plots incomplete ({type(e).__name__}: {e})")
    result.timing["report_seconds"] = res["timing"]["report_seconds"] = time.perf_counter() - t0
    path = os.path.join(odir, "report.md")
    atomic_write_text(path, _markdown(res, pictures, problems + notes, feats and feats["after_name"]))
    for n in problems:
        print(f"WARNING: {n}", file=sys.stderr, flush=True)
        result.warn(n)
    return path
