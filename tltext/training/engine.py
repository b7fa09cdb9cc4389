"""The one Accelerate training engine used by every tuning, objective and modality.

AdamW + ``transformers.get_scheduler`` (warmup), gradient accumulation, mixed
precision, clipping, early stopping with the best state kept, tqdm on the main
process, trackers via ``--report_to``, exact distributed inference with
``gather_for_metrics``, and exact resume from checkpoints.

Checkpoints (``--checkpointing_steps N|epoch``) are written atomically to
``OUT/checkpoints/step_N``: ``Accelerator.save_state`` (model, optimizer,
scheduler, grad scaler, the RNG states of every process) into a temporary
folder, plus ``engine_state.json`` (step, epoch, batches consumed in the epoch,
running sums, history, best score, target-stream position) and
``best_state.pt``, then one rename. Data order depends only on ``(seed,
epoch)`` (every sampler is re-seeded per epoch and no data loader draws from
the global RNG), so ``--resume_from_checkpoint PATH|latest`` restores the
state, skips the batches already seen (``skip_first_batches``) and continues
bit for bit as the uninterrupted run would have.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from .batching import LengthGroupedSampler, SplitDataset, collate_items, length_sorted
from .memory import HeapTrimmer
from .objective import TrainingModule, da_coefficient

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "engine_state.json"
BEST_FILE = "best_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class NonFiniteLossError(FloatingPointError):
    pass


# --------------------------------------------------------------------------- checkpoint flags
def parse_checkpointing_steps(value: Optional[str]) -> Union[int, str, None]:
    """``--checkpointing_steps``: None (off), ``"epoch"`` or a positive step count."""
    if value is None or str(value).strip().lower() in ("", "no", "none"):
        return None
    if str(value).strip().lower() == "epoch":
        return "epoch"
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"--checkpointing_steps {value!r}: expected a positive number of optimizer steps or 'epoch'") from None
    if n <= 0:
        raise ValueError(f"--checkpointing_steps {value!r}: expected a positive number of optimizer steps or 'epoch'")
    return n


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """Complete checkpoints ``OUT/checkpoints/step_N`` as ``(N, path)``, oldest first
    (a folder still being written has a temporary name and is never listed)."""
    root = os.path.join(output_dir, CHECKPOINT_DIR)
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            out.append((int(m.group(1)), path))
    return sorted(out)


def resolve_checkpoint(spec: Optional[str], output_dir: str) -> Optional[str]:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``latest`` (the newest
    complete one under ``OUT/checkpoints``; None when there is none yet)."""
    if not spec:
        return None
    if spec == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    if not os.path.isdir(spec) or not os.path.isfile(os.path.join(spec, STATE_FILE)):
        raise ValueError(f"--resume_from_checkpoint {spec}: not a tltext checkpoint; expected a folder "
                         f"OUT/{CHECKPOINT_DIR}/step_N holding {STATE_FILE} (or 'latest')")
    return spec


def check_checkpoint_args(t) -> None:
    """Validate the checkpoint flags before any work is done."""
    every = parse_checkpointing_steps(t.checkpointing_steps)
    if (every or t.resume_from_checkpoint) and getattr(t, "compare_source_only", False):
        raise ValueError("--checkpointing_steps/--resume_from_checkpoint cannot be combined with --compare_source_only "
                         "(two trainings in one output dir); train the erm baseline as its own run")
    if not t.resume_from_checkpoint:
        return
    if t.eval_only:
        raise ValueError("--resume_from_checkpoint continues a training run; it cannot be combined with --eval_only")
    found = resolve_checkpoint(t.resume_from_checkpoint, t.output_dir)
    out = t.output_dir
    if found is None and os.path.isdir(out) and not t.overwrite_output_dir:
        others = [e for e in os.listdir(out) if e != CHECKPOINT_DIR]
        if others:
            raise ValueError(f"--resume_from_checkpoint latest: no checkpoint under {os.path.join(out, CHECKPOINT_DIR)} "
                             f"and {out} is not empty; use --overwrite_output_dir to start afresh")


def _adamw(param_groups: List[Dict]) -> torch.optim.AdamW:
    """AdamW, fused where torch supports the parameters (one kernel per step, no per-step temporary
    copies of every parameter: peak RSS 1981 -> 1908 MB in benchmarks/throughput.py, MiniLM on CPU)."""
    lr = param_groups[0]["lr"] if param_groups else 1e-3
    try:
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(param_groups, lr=lr)


class EpochRandomSampler(Sampler[int]):
    """A uniformly random order whose permutation depends only on ``(seed, epoch)``,
    so epoch ``e`` is the same whether or not the run was resumed before it."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng([self.seed % 2**63, self.epoch])
        return iter(rng.permutation(self.n).tolist())


class _TargetStream:
    """Endless batches of unlabelled target data, epoch after epoch; ``position``
    (epoch, batches taken in it) is saved with checkpoints and restored."""

    def __init__(self, dl, sampler, epoch: int = 0, taken: int = 0):
        self.dl, self.sampler, self.epoch, self.taken = dl, sampler, int(epoch), int(taken)
        self._it: Optional[Iterator] = None

    @property
    def position(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "batches": self.taken}

    def __next__(self) -> Dict[str, Any]:
        while True:
            if self._it is None:
                self.dl.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch)
                dl = skip_first_batches(self.dl, self.taken) if self.taken else self.dl
                # the target stream must not decide when gradients sync (end of the *source* epoch does)
                dl.begin, dl.end = dl.reset, (lambda: None)
                self._it = iter(dl)
            try:
                b = next(self._it)
            except StopIteration:
                self.epoch, self.taken, self._it = self.epoch + 1, 0, None
                continue
            self.taken += 1
            return b


def _every_param_used(loss: torch.Tensor, params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """``loss + 0 * sum_p p[0]`` over the trainable parameters: the value and every
    gradient are unchanged, but each parameter now gets a (zero) local gradient even
    in a step that skipped it (a layer dropped by LayerDrop, SpecAugment's mask
    vector when nothing is masked), so DDP's reducer sees all of them without
    ``find_unused_parameters``. The all-reduced gradient is the exact mean over
    processes (a skipped layer contributes 0 from that process's batch)."""
    used = [p.reshape(-1)[0].float() for p in params if p.requires_grad]
    return loss + 0.0 * torch.stack(used).sum() if used else loss


def _to_device(batch: Dict[str, Any], device) -> Dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if torch.is_tensor(o):
        return o.tolist()
    return str(o)


def _fresh_state() -> Dict[str, Any]:
    return {"step": 0, "epoch": 0, "batches": 0, "epoch_done": False, "run_loss": 0.0, "run_n": 0,
            "extra_sum": {}, "coeff": 0.0, "seen": 0, "bad_epochs": 0, "best_score": None, "best_epoch": -1,
            "train_seconds": 0.0, "target": {"epoch": 0, "batches": 0}, "history": [], "step_log": []}


class Engine:
    def __init__(self, accelerator: Accelerator, args, disable_tqdm: bool = False):
        self.acc = accelerator
        self.args = args
        self.disable_tqdm = disable_tqdm or not accelerator.is_local_main_process
        self.history: List[Dict[str, Any]] = []
        self.step_log: List[Dict[str, float]] = []
        self.last_checkpoint: Optional[str] = None
        self._two_pass = False

    # ------------------------------------------------------------------ inference
    def infer(self, fn: Callable[[Dict[str, Any]], torch.Tensor], inputs: Sequence[Any], lengths: Sequence[int],
              batch_size: int, desc: str = "infer") -> torch.Tensor:
        """Apply ``fn`` to batches of ``inputs`` on all processes; returns the
        outputs for every input exactly once, in input order."""
        n = len(inputs)
        order = length_sorted(lengths)
        ds = SplitDataset([inputs[i] for i in order])
        dl = self.acc.prepare_data_loader(
            DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_items,
                       generator=torch.Generator()),  # never draws from the global RNG
            device_placement=False,
        )
        outs, idxs = [], []
        with torch.no_grad():
            for batch in tqdm(dl, desc=desc, disable=self.disable_tqdm, leave=False):
                with self.acc.autocast():
                    y = fn(batch).float()
                y, ix = self.acc.gather_for_metrics((y.contiguous(), batch["index"].to(y.device)))
                outs.append(y.cpu())
                idxs.append(ix.cpu())
        self.acc._dataloaders.remove(dl) if dl in self.acc._dataloaders else None
        y = torch.cat(outs)
        ix = torch.cat(idxs)
        if len(ix) != n or len(set(ix.tolist())) != n:
            raise RuntimeError(f"{desc}: gathered {len(ix)} outputs ({len(set(ix.tolist()))} distinct) for {n} inputs")
        result = torch.empty((n,) + tuple(y.shape[1:]), dtype=y.dtype)
        pos = torch.tensor(order)[ix]
        result[pos] = y
        return result

    # ------------------------------------------------------------------ training
    def fit(
        self,
        tm: TrainingModule,
        param_groups: List[Dict],
        plan,
        train: SplitDataset,
        train_lengths: Sequence[int],
        collate_inputs: Callable[[List[Any], bool], Dict[str, torch.Tensor]],
        target: Optional[SplitDataset] = None,
        evaluate: Optional[Callable[[int], Dict[str, Any]]] = None,
        batch_sampler=None,
        da: Optional[Dict[str, float]] = None,
        target_lengths: Optional[Sequence[int]] = None,
    ) -> Dict[str, Any]:
        """Train ``tm``; ``evaluate(epoch)`` returns ``{"score": float|None, ...}``
        (higher is better) and drives early stopping / best-state selection."""
        a, acc = self.args, self.acc
        da = da or {}
        bs = a.per_device_train_batch_size
        if batch_sampler is not None:
            sampler = batch_sampler
            train_dl = DataLoader(train, batch_sampler=batch_sampler, collate_fn=collate_items,
                                  num_workers=a.dataloader_num_workers, generator=torch.Generator().manual_seed(a.seed))
        else:
            cached = isinstance(train.inputs, torch.Tensor)
            sampler = EpochRandomSampler(len(train), a.seed) if cached else LengthGroupedSampler(train_lengths, bs, seed=a.seed)
            train_dl = DataLoader(train, batch_size=bs, sampler=sampler, collate_fn=collate_items,
                                  num_workers=a.dataloader_num_workers, generator=torch.Generator().manual_seed(a.seed))
        target_dl = target_sampler = None
        # padding-invariant backbones (text) encode the target batch on its own, so a
        # length-grouped target stream cuts its padding as it does the source's
        self._two_pass = bool(getattr(getattr(tm.model, "backbone", None), "padding_invariant", False))
        if target is not None:
            raw_target = not isinstance(target.inputs, torch.Tensor)
            if raw_target and self._two_pass and target_lengths is not None:
                target_sampler = LengthGroupedSampler(target_lengths, bs, seed=a.seed + 1)
            else:
                target_sampler = EpochRandomSampler(len(target), a.seed + 1)
            target_dl = DataLoader(target, batch_size=bs, sampler=target_sampler, collate_fn=collate_items,
                                   generator=torch.Generator().manual_seed(a.seed + 1))
        optimizer = _adamw(param_groups)
        tm, optimizer, train_dl = acc.prepare(tm, optimizer, train_dl)
        if target_dl is not None:
            target_dl = acc.prepare(target_dl)
        steps_per_epoch = max(1, math.ceil(len(train_dl) / a.gradient_accumulation_steps))
        total_steps = a.max_train_steps or max(1, math.ceil(a.num_train_epochs * steps_per_epoch))
        num_epochs = math.ceil(total_steps / steps_per_epoch)
        warmup = int(math.ceil(a.warmup_ratio * total_steps))
        scheduler = get_scheduler(a.lr_scheduler_type, optimizer, num_warmup_steps=warmup * acc.num_processes,
                                  num_training_steps=total_steps * acc.num_processes)
        scheduler = acc.prepare(scheduler)
        trainable = [p for g in param_groups for p in g["params"]]
        unwrapped = acc.unwrap_model(tm)

        out_dir = getattr(a, "output_dir", None)
        every = parse_checkpointing_steps(getattr(a, "checkpointing_steps", None)) if out_dir else None
        config = {"seed": a.seed, "num_processes": acc.num_processes, "train_examples": len(train),
                  "per_device_train_batch_size": bs, "gradient_accumulation_steps": a.gradient_accumulation_steps,
                  "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "objective": unwrapped.objective,
                  "trainable_parameters": sum(p.numel() for p in trainable)}
        st, best_state = _fresh_state(), None
        resume = resolve_checkpoint(getattr(a, "resume_from_checkpoint", None), out_dir) if out_dir else None
        if resume is None and out_dir and getattr(a, "resume_from_checkpoint", None) and acc.is_main_process:
            print(f"no checkpoint under {os.path.join(out_dir, CHECKPOINT_DIR)}: starting from step 0", flush=True)
        if out_dir and acc.is_main_process:
            root = os.path.join(out_dir, CHECKPOINT_DIR)
            if os.path.isdir(root):  # leftovers of a run killed while saving
                for name in os.listdir(root):
                    if name.startswith(".tmp-"):
                        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        if resume is not None:
            st, best_state = self._load_checkpoint(resume, config)
        self.history, self.step_log = st["history"], st["step_log"]

        trimmer = HeapTrimmer(enabled=bool(getattr(a, "trim_cpu_heap", True)) and acc.device.type == "cpu")
        tgt = None if target_dl is None else _TargetStream(target_dl, target_sampler, st["target"]["epoch"],
                                                           st["target"]["batches"])
        step = st["step"]
        t0 = time.perf_counter()
        bar = tqdm(total=total_steps, initial=step, desc="train", disable=self.disable_tqdm)

        seconds_before = st["train_seconds"]  # spent before a resume

        def checkpoint() -> None:
            st.update(step=step, train_seconds=seconds_before + time.perf_counter() - t0,
                      target=tgt.position if tgt is not None else st["target"], history=self.history,
                      step_log=self.step_log)
            self._save_checkpoint(st, best_state, config)

        start_epoch = st["epoch"] + 1 if st["epoch_done"] else st["epoch"]
        for epoch in range(start_epoch, num_epochs):
            resuming = epoch == st["epoch"] and not st["epoch_done"] and st["batches"] > 0
            if not resuming:
                if step >= total_steps or (a.early_stopping_patience is not None
                                           and st["bad_epochs"] > a.early_stopping_patience):
                    break
                st.update(batches=0, run_loss=0.0, run_n=0, extra_sum={})
            st.update(epoch=epoch, epoch_done=False)
            if plan is not None and plan.apply_epoch(epoch) and epoch > 0 and acc.num_processes > 1:
                tm = self._rewrap(tm)
            train_dl.set_epoch(epoch)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            tm.train()
            for batch in (skip_first_batches(train_dl, st["batches"]) if resuming else train_dl):
                if step >= total_steps:
                    break
                tb = next(tgt) if tgt is not None else None
                progress = step / max(1, total_steps)
                coeff = da_coefficient(unwrapped.objective, progress, da.get("weight", 1.0), da.get("warmup_ratio", 0.0))
                with acc.accumulate(tm):
                    inputs, n_src = self._inputs(batch, tb, collate_inputs)
                    trimmer.before_step(inputs)
                    out = tm(inputs, batch["labels"], n_src, coeff)
                    loss = out["loss"]
                    if acc.num_processes == 1 and not torch.isfinite(loss):
                        raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {step + 1} (epoch {epoch}); "
                                                 f"stopping. {self._checkpoint_note()}")
                    acc.backward(_every_param_used(loss, trainable) if acc.num_processes > 1 else loss)
                    if acc.sync_gradients:
                        norm = acc.clip_grad_norm_([p for p in trainable if p.requires_grad],
                                                   a.max_grad_norm if a.max_grad_norm and a.max_grad_norm > 0 else float("inf"))
                        if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                            raise NonFiniteLossError(f"non-finite loss/gradient (grad norm {float(norm)}) at step {step + 1} "
                                                     f"(epoch {epoch}); stopping. {self._checkpoint_note()}")
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                st["batches"] += 1
                st["seen"] += n_src * acc.num_processes
                st["run_loss"] += loss.detach().item()
                st["run_n"] += 1
                st["coeff"] = coeff
                for k in ("ce", "da", "disc_acc", "episode_acc"):
                    if k in out:
                        st["extra_sum"][k] = st["extra_sum"].get(k, 0.0) + float(out[k])
                if acc.sync_gradients:
                    step += 1
                    bar.update(1)
                    if step % max(1, a.logging_steps) == 0 or step == total_steps:
                        log = {"train/loss": st["run_loss"] / max(1, st["run_n"]), "train/lr": scheduler.get_last_lr()[0],
                               "train/coeff": coeff}
                        acc.log(log, step=step)
                        self.step_log.append({"step": step, **log})
                    if isinstance(every, int) and step % every == 0:
                        checkpoint()
                if step >= total_steps:
                    break
            n = max(1, st["run_n"])
            rec = {"epoch": epoch, "step": step, "train_loss": st["run_loss"] / n, "da_coeff": st["coeff"]}
            rec.update({k: v / n for k, v in st["extra_sum"].items()})
            if evaluate is not None:
                ev = evaluate(epoch)
                rec.update({k: v for k, v in ev.items() if k != "score"})
                score = ev.get("score")
                rec["score"] = score
                if score is not None and (st["best_score"] is None or score > st["best_score"]):
                    st.update(best_score=score, best_epoch=epoch, bad_epochs=0)
                    best_state = {k: v.detach().cpu().clone() for k, v in acc.unwrap_model(tm).model.state_dict().items()}
                elif score is not None:
                    st["bad_epochs"] += 1
            self.history.append(rec)
            acc.log({f"epoch/{k}": v for k, v in rec.items() if isinstance(v, (int, float))}, step=step)
            if acc.is_main_process:
                parts = [f"epoch {epoch}", f"loss {rec['train_loss']:.4f}"]
                for k in ("disc_acc", "episode_acc", "val_metric", "target_im", "score"):
                    if isinstance(rec.get(k), float):
                        parts.append(f"{k} {rec[k]:.4f}")
                tqdm.write(" | ".join(parts)) if not self.disable_tqdm else print(" | ".join(parts), flush=True)
            st["epoch_done"] = True
            if every == "epoch":
                checkpoint()
            if a.early_stopping_patience is not None and st["bad_epochs"] > a.early_stopping_patience:
                break
            if step >= total_steps:
                break
        bar.close()
        train_seconds = seconds_before + time.perf_counter() - t0
        final = acc.unwrap_model(tm)
        if best_state is not None and a.selection != "last":
            final.model.load_state_dict(best_state)
        acc.wait_for_everyone()
        acc.free_memory()
        return {"train_seconds": train_seconds, "train_samples_per_second": st["seen"] / max(train_seconds, 1e-9),
                "steps": step, "best_epoch": st["best_epoch"], "best_score": st["best_score"], "history": self.history,
                "resumed_from": resume, "last_checkpoint": self.last_checkpoint, "heap_trims": trimmer.trims}

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_note(self) -> str:
        if self.last_checkpoint:
            return f"The last good checkpoint, {self.last_checkpoint}, is left intact."
        return "No checkpoint had been saved (see --checkpointing_steps)."

    def _save_checkpoint(self, st: Dict[str, Any], best_state, config: Dict[str, Any]) -> str:
        """``save_state`` into ``.tmp-step_N``, add the engine state, rename to ``step_N``."""
        acc = self.acc
        root = os.path.join(self.args.output_dir, CHECKPOINT_DIR)
        name = f"step_{st['step']}"
        final, tmp = os.path.join(root, name), os.path.join(root, f".tmp-{name}")
        if acc.is_main_process:
            os.makedirs(root, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(tmp)
        if acc.is_main_process:
            if best_state is not None:
                torch.save(best_state, os.path.join(tmp, BEST_FILE))
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump({"format": 1, "config": config, **st}, f, indent=1, default=_json_default)
        acc.wait_for_everyone()
        if acc.is_main_process:
            if os.path.exists(final):  # the same step saved again (resumed from an older checkpoint)
                old = os.path.join(root, f".tmp-old-{name}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        acc.wait_for_everyone()
        self.last_checkpoint = final
        return final

    def _load_checkpoint(self, path: str, config: Dict[str, Any]):
        with open(os.path.join(path, STATE_FILE)) as f:
            st = json.load(f)
        saved = st.pop("config", {})
        st.pop("format", None)
        diffs = [f"{k} {saved.get(k)!r} there, {v!r} now" for k, v in config.items() if saved.get(k) != v]
        if diffs:
            raise ValueError(f"--resume_from_checkpoint {path}: written by a different run ({'; '.join(diffs)}); "
                             "resume with the flags, data and number of processes of the interrupted run")
        self.acc.load_state(path)
        best = os.path.join(path, BEST_FILE)
        best_state = torch.load(best, map_location="cpu", weights_only=True) if os.path.exists(best) else None
        if self.acc.is_main_process:
            print(f"resumed from {path} (step {st['step']}, epoch {st['epoch']}"
                  f"{', finished' if st['epoch_done'] else ', ' + str(st['batches']) + ' batches in'})", flush=True)
        self.last_checkpoint = path
        return {**_fresh_state(), **st}, best_state

    def _rewrap(self, tm):
        """Re-wrap in DDP after the trainable set changed (gradual unfreezing):
        DDP registers gradient hooks for the parameters trainable at wrap time."""
        inner = self.acc.unwrap_model(tm)
        self.acc._models = [m for m in self.acc._models if m is not tm]
        return self.acc.prepare_model(inner)

    def _inputs(self, batch: Dict[str, Any], tb: Optional[Dict[str, Any]], collate_inputs):
        n_src = len(batch["labels"])
        if "embeddings" in batch:
            emb = batch["embeddings"] if tb is None else torch.cat([batch["embeddings"], tb["embeddings"].to(batch["embeddings"].device)])
            return {"embeddings": emb}, n_src
        if tb is not None and self._two_pass:
            # each domain padded to its own longest item (same embeddings, less padding)
            parts = [_to_device(collate_inputs(list(b["raw"]), True), self.acc.device) for b in (batch, tb)]
            return {"parts": parts}, n_src
        raw = list(batch["raw"]) + (list(tb["raw"]) if tb is not None else [])
        return _to_device(collate_inputs(raw, True), self.acc.device), n_src
