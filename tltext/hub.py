"""Model card and Hugging Face Hub upload of a finished run.

After every training run ``after_run`` writes ``OUT/model/README.md`` (see
``tltext.model_card``) and, with ``--push_to_hub --hub_model_id ID``, uploads in
one commit:

    OUT/model/*  (model.safetensors, config.json, tokenizer / preprocessor files, README.md)
    OUT/*.png, OUT/report.md  (plots and report, when present)

``tltext push OUT_OR_MODEL_DIR --hub_model_id ID`` does the same later. The
token is ``--hub_token``, else ``HF_TOKEN``, else the stored ``hf auth login``;
it is sent in the Authorization header only, never written or printed (messages
are scrubbed, and files that contain it are refused). Weights go up as
safetensors only; pickle files (.bin/.pt/...) are never uploaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

TOKEN_HELP = "pass --hub_token, set HF_TOKEN or log in with `hf auth login`"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".pth.tar")
MAX_SCAN_BYTES = 64 * 2**20  # files up to this size are checked for the token before upload
CARD = "README.md"


# --------------------------------------------------------------------------- helpers
def resolve_token(token: Optional[str] = None) -> str:
    """``token``, else ``HF_TOKEN``, else the token stored by ``hf auth login``."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise ValueError(f"no Hugging Face token: {TOKEN_HELP}")
    return token


def scrub(text: str, token: Optional[str]) -> str:
    return text.replace(token, "***") if token else text


def locate(path: str) -> Tuple[Optional[str], str]:
    """``(run folder or None, model folder)`` for a run output folder or a saved tltext model."""
    if os.path.isfile(os.path.join(path, "config.json")):
        out_dir, model_dir = None, path
    elif os.path.isfile(os.path.join(path, "model", "config.json")):
        out_dir, model_dir = path, os.path.join(path, "model")
    else:
        raise ValueError(f"{path}: expected a tltext run folder (with model/config.json) or a saved model folder "
                         "(with config.json)")
    with open(os.path.join(model_dir, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    if model_type != "tltext":
        raise ValueError(f"{model_dir}/config.json: model_type {model_type!r}, expected 'tltext'")
    return out_dir, model_dir


def plot_files(out_dir: Optional[str]) -> List[str]:
    """Names of the run's pictures (``OUT/*.png``)."""
    if not out_dir or not os.path.isdir(out_dir):
        return []
    return sorted(f for f in os.listdir(out_dir) if f.lower().endswith(".png") and not f.startswith(".")
                  and os.path.isfile(os.path.join(out_dir, f)))


def upload_plan(model_dir: str, out_dir: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(local file, path in repo)`` pairs: the model folder at the repo root, then
    the run's plots and report.md. Pickle files are left out; safetensors weights are required."""
    plan: List[Tuple[str, str]] = []
    skipped: List[str] = []
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith(".") or f.endswith(".tmp"):
                continue
            local = os.path.join(root, f)
            rel = os.path.relpath(local, model_dir).replace(os.sep, "/")
            if f.lower().endswith(PICKLE_SUFFIXES):
                skipped.append(rel)
                continue
            plan.append((local, rel))
    names = {p for _, p in plan}
    if "model.safetensors" not in names and "model.safetensors.index.json" not in names:
        raise ValueError(f"{model_dir}: no model.safetensors; only safetensors weights are uploaded")
    if skipped:
        print(f"WARNING: not uploading pickle files {skipped} (weights go up as safetensors only)", file=sys.stderr)
    extra = plot_files(out_dir) + (["report.md"] if out_dir and os.path.isfile(os.path.join(out_dir, "report.md")) else [])
    for f in extra:
        if f not in names:
            plan.append((os.path.join(out_dir, f), f))
    return plan


def check_no_secret(plan: Sequence[Tuple[str, str]], token: str) -> None:
    """Refuse to upload a file that contains the token."""
    needle = token.encode()
    for local, rel in plan:
        if os.path.getsize(local) > MAX_SCAN_BYTES:
            continue
        with open(local, "rb") as f:
            if needle in f.read():
                raise ValueError(f"refusing to upload {rel}: it contains the Hub token")


def write_model_card(model_dir: str, res: Dict[str, Any], repo_id: Optional[str] = None,
                     out_dir: Optional[str] = None) -> str:
    """Write ``model_dir/README.md`` from the run's results; returns its path."""
    from .atomic import atomic_write_text
    from .model_card import render_card

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    extra = ["report.md"] if out_dir and os.path.isfile(os.path.join(out_dir, "report.md")) else []
    text = render_card(res, config, repo_id=repo_id, plots=plot_files(out_dir), extra_files=extra,
                       link_prefix="" if repo_id else "../")  # local: the plots stay in OUT/, beside model/
    path = os.path.join(model_dir, CARD)
    atomic_write_text(path, text)
    return path


def _load_results(out_dir: Optional[str]) -> Optional[Dict[str, Any]]:
    path = os.path.join(out_dir, "results.json") if out_dir else None
    if path and os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


# --------------------------------------------------------------------------- push
def push(path: str, repo_id: str, private: bool = False, token: Optional[str] = None,
         res: Optional[Dict[str, Any]] = None, commit_message: Optional[str] = None) -> Dict[str, Any]:
    """Create ``repo_id`` (``private`` when asked; an existing repo is reused) and upload
    the run in one commit. The card is rewritten from ``res`` (or OUT/results.json)
    when available; a model folder with its own README.md is uploaded as is."""
    from huggingface_hub import CommitOperationAdd, HfApi

    if not repo_id:
        raise ValueError("--hub_model_id is required (e.g. your-name/model-name)")
    out_dir, model_dir = locate(path)
    token = resolve_token(token)
    res = res if res is not None else _load_results(out_dir)
    if res is not None or not os.path.isfile(os.path.join(model_dir, CARD)):
        write_model_card(model_dir, res or {}, repo_id=repo_id, out_dir=out_dir)
    plan = upload_plan(model_dir, out_dir)
    check_no_secret(plan, token)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=bool(private), exist_ok=True, repo_type="model")
    ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=local) for local, rel in plan]
    message = commit_message or "Upload tltext model" + (
        f" ({res.get('modality')}, {res.get('objective')}, {res.get('tuning')})" if res else "")
    info = api.create_commit(url.repo_id, ops, commit_message=message, repo_type="model")
    return {"repo_id": url.repo_id, "url": str(url), "commit_url": info.commit_url, "private": bool(private),
            "files": [rel for _, rel in plan]}


def after_run(result, arts) -> None:
    """Post-training step (``ModelCardCallback``): write the card; push when
    ``--push_to_hub``. Failures become warnings in ``result`` (the run's results are
    never lost); a push adds ``result.extra["hub"]``."""
    if not arts.is_main_process:
        return
    t = arts.train_args
    res = result.as_dict()
    model_dir = os.path.join(t.output_dir, "model")
    push_to_hub = bool(getattr(t, "push_to_hub", False))
    token = getattr(t, "hub_token", None)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        if push_to_hub:
            _warn(result, "--push_to_hub: no saved model to push (--save_model False)", token)
        return
    try:
        write_model_card(model_dir, res, repo_id=t.hub_model_id if push_to_hub else None, out_dir=t.output_dir)
    except Exception as e:  # noqa: BLE001 - the model is saved; keep the run's results
        _warn(result, f"model card not written ({type(e).__name__}: {e})", token)
    if not push_to_hub:
        return
    try:
        token = resolve_token(token)
        info = push(t.output_dir, t.hub_model_id, private=t.hub_private_repo, token=token, res=res)
    except Exception as e:  # noqa: BLE001
        _warn(result, f"push to the Hub failed ({type(e).__name__}: {e}); the run is saved in {t.output_dir}: retry "
                   f"with `tltext push {t.output_dir} --hub_model_id {t.hub_model_id}`", token)
        return
    result.extra["hub"] = {k: info[k] for k in ("repo_id", "url", "commit_url", "private", "files")}
    print(f"pushed {len(info['files'])} files to {info['url']}" + (" (private)" if info["private"] else ""), flush=True)


def _warn(res, message: str, token: Optional[str]) -> None:
    """Print a warning and add it to ``res`` (a ``RunResult`` or a results dict)."""
    message = scrub(message, token)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)
    if hasattr(res, "warn"):
        res.warn(message)
    else:
        res.setdefault("warnings", []).append(message)


def push_main(argv: Optional[List[str]] = None) -> int:
    """``tltext push OUT_OR_MODEL_DIR --hub_model_id ID [--hub_private_repo] [--hub_token T]``."""
    p = argparse.ArgumentParser(prog="tltext push", description="Upload a tltext run (OUT) or model folder "
                                "(OUT/model) to the Hugging Face Hub, with its model card.")
    p.add_argument("path", help="run output folder (with model/) or saved model folder")
    p.add_argument("--hub_model_id", required=True, help="the repo to create or update, e.g. your-name/model-name")
    p.add_argument("--hub_private_repo", action="store_true", help="create the repo as private")
    p.add_argument("--hub_token", default=None, help="Hub token (default: HF_TOKEN, else the `hf auth login` token)")
    p.add_argument("--commit_message", default=None)
    a = p.parse_args(argv)
    token = a.hub_token
    try:
        locate(a.path)
        token = resolve_token(token)
        info = push(a.path, a.hub_model_id, private=a.hub_private_repo, token=token, commit_message=a.commit_message)
    except Exception as e:  # noqa: BLE001 - one scrubbed line, never a traceback with request details
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {scrub(msg, token)}", file=sys.stderr)
        return 2
    print(f"pushed {len(info['files'])} files to {info['url']}" + (" (private)" if info["private"] else ""))
    print("  " + "\n  ".join(info["files"]))
    return 0
