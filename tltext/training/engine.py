"""The one Accelerate training engine used by every tuning, objective and modality.

Read ``Engine.fit`` top to bottom: ``_setup`` (loaders, optimizer, scheduler,
``accelerator.prepare``), then per epoch ``_train_step`` for each batch and
``_end_epoch`` (selection, early stopping, checkpoint). AdamW +
``transformers.get_scheduler`` (warmup), gradient accumulation, mixed precision
(fp16 overflow steps are skipped, not fatal), clipping, early stopping with the
best state kept, tqdm on the main process, trackers via ``--report_to``, and exact
resume from checkpoints. All state lives in :class:`TrainState` (JSON).

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
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..atomic import json_default
from .batching import (EpochRandomSampler, LengthGroupedSampler, ShardBatches, SplitDataset, concat_batches,
                       length_sorted, make_collate, to_device)
from .memory import HeapTrimmer
from .objective import TrainingModule

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "engine_state.json"
BEST_FILE = "best_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def train_sampler(cached: bool, lengths: Optional[Sequence[int]], n: int, batch_size: int, seed: int,
                  group_by_length: bool = True):
    """The order of the training examples each epoch: batches of similar length
    (``LengthGroupedSampler``) for raw inputs when ``group_by_length``; otherwise (and for
    cached embeddings, which have no padding) a uniformly random permutation per epoch."""
    if cached or not group_by_length or lengths is None:
        return EpochRandomSampler(n, seed)
    return LengthGroupedSampler(lengths, batch_size, seed=seed)


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


class NonFiniteLossError(FloatingPointError):
    pass


#: consecutive non-finite fp16 losses/gradients (skipped by the grad scaler) before the run counts as diverged
MAX_SKIPPED_FP16_STEPS = 25


@dataclass
class TrainState:
    """Everything the engine must restore to resume bit for bit (saved as JSON)."""

    step: int = 0
    epoch: int = 0
    batches: int = 0  # batches consumed in ``epoch``
    epoch_done: bool = False
    loss_sum: float = 0.0
    loss_n: int = 0
    log_sums: Dict[str, float] = field(default_factory=dict)
    seen: int = 0
    bad_epochs: int = 0
    best_score: Optional[float] = None
    best_epoch: int = -1
    train_seconds: float = 0.0
    selection_seconds: float = 0.0  # of train_seconds: the per-epoch model-selection passes
    target_epoch: int = 0
    target_batches: int = 0
    skipped_steps: int = 0  # fp16 overflow steps the grad scaler skipped
    history: List[Dict[str, Any]] = field(default_factory=list)
    step_log: List[Dict[str, Any]] = field(default_factory=list)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.epoch_done, self.batches = epoch, False, 0
        self.loss_sum, self.loss_n, self.log_sums = 0.0, 0, {}

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "TrainState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FitResult:
    """What one ``Engine.fit`` did: seconds (``selection_seconds`` of them scoring the
    selection criteria after each epoch), steps, the global batch (the mean over steps when the
    objective's ``batch_sampler`` makes the batches: ``batch_sampler`` then describes it), selection."""

    train_seconds: float = 0.0
    selection_seconds: float = 0.0
    train_samples_per_second: float = 0.0
    steps: int = 0
    steps_per_epoch: int = 0
    global_batch_size: int = 0
    batch_sampler: Optional[str] = None
    num_processes: int = 1
    best_epoch: int = -1
    best_score: Optional[float] = None
    skipped_steps: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    step_log: List[Dict[str, Any]] = field(default_factory=list)
    resumed_from: Optional[str] = None
    last_checkpoint: Optional[str] = None
    heap_trims: int = 0


@dataclass
class TrainData:
    """The engine's inputs: the labelled source split (raw inputs or cached embeddings),
    item lengths for length grouping, an optional ``batch_sampler`` (episodes), and the
    unlabelled target split for objectives that need one."""

    train: SplitDataset
    lengths: Sequence[int]
    backbone: Any = None  # collates raw inputs in the loader
    batch_sampler: Any = None
    target: Optional[SplitDataset] = None
    target_lengths: Optional[Sequence[int]] = None


def _adamw(param_groups: List[Dict]) -> torch.optim.AdamW:
    """AdamW, fused where torch supports the parameters (one kernel per step, no per-step temporary
    copies of every parameter: peak RSS 1981 -> 1908 MB in benchmarks/throughput.py, MiniLM on CPU)."""
    lr = param_groups[0]["lr"] if param_groups else 1e-3
    try:
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(param_groups, lr=lr)


def _every_param_used(loss: torch.Tensor, params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """``loss + 0 * sum_p p[0]`` over the trainable parameters: the value and every
    gradient are unchanged, but each parameter now gets a (zero) local gradient even
    in a step that skipped it (a layer dropped by LayerDrop, SpecAugment's mask
    vector when nothing is masked), so DDP's reducer sees all of them without
    ``find_unused_parameters``. The all-reduced gradient is the exact mean over
    processes (a skipped layer contributes 0 from that process's batch)."""
    used = [p.reshape(-1)[0].float() for p in params if p.requires_grad]
    return loss + 0.0 * torch.stack(used).sum() if used else loss


class _TargetStream:
    """Endless batches of unlabelled target data for this process, epoch after epoch
    (its own share of each epoch's order; a plain DataLoader, so it never decides when
    gradients sync). ``(epoch, taken)`` is saved with checkpoints and restored."""

    def __init__(self, ds: SplitDataset, sampler, batch_size: int, collate, acc: Accelerator, seed: int,
                 epoch: int = 0, taken: int = 0):
        self.ds, self.sampler, self.bs, self.collate, self.acc, self.seed = ds, sampler, batch_size, collate, acc, seed
        self.epoch, self.taken = int(epoch), int(taken)
        self._it: Optional[Iterator] = None

    def __next__(self) -> Dict[str, Any]:
        while True:
            if self._it is None:
                self.sampler.set_epoch(self.epoch)
                batches = ShardBatches(self.sampler, self.bs, self.acc.process_index, self.acc.num_processes, self.taken)
                self._it = iter(DataLoader(self.ds, batch_sampler=batches, collate_fn=self.collate,
                                           generator=torch.Generator()))  # never draws from the global RNG
            try:
                b = next(self._it)
            except StopIteration:
                self.epoch, self.taken, self._it = self.epoch + 1, 0, None
                continue
            self.taken += 1
            return to_device(b, self.acc.device)


def infer(acc: Accelerator, fn: Callable[[Dict[str, Any]], torch.Tensor], dataset: SplitDataset,
          lengths: Sequence[int], batch_size: int, collate, desc: str = "infer", disable_tqdm: bool = False) -> torch.Tensor:
    """``fn(batch) -> [B, ...]`` over every item of ``dataset``, sharded across processes
    (longest first, less padding) and gathered: returns ``[N, ...]`` in dataset order,
    each item exactly once. Uses only the public ``Accelerator.gather``."""
    n, world, rank = len(dataset), acc.num_processes, acc.process_index
    order = length_sorted(lengths)
    per = math.ceil(n / world)
    mine = [order[min(i, n - 1)] for i in range(rank, per * world, world)]  # pads the last round with a repeat
    dl = DataLoader(dataset, batch_size=batch_size, sampler=mine, collate_fn=collate,
                    generator=torch.Generator())  # never draws from the global RNG
    outs, idxs = [], []
    with torch.no_grad():
        for batch in tqdm(dl, desc=desc, disable=disable_tqdm or not acc.is_local_main_process, leave=False):
            batch = to_device(batch, acc.device)
            with acc.autocast():
                outs.append(fn(batch).float())
            idxs.append(batch["index"])
    y = torch.cat(outs) if outs else torch.empty(0)
    ix = torch.cat(idxs) if idxs else torch.empty(0, dtype=torch.long, device=acc.device)
    if world > 1:
        y, ix = acc.gather(y.contiguous()), acc.gather(ix)
    y, ix = y.cpu(), ix.cpu()
    result = torch.empty((n,) + tuple(y.shape[1:]), dtype=y.dtype)
    result[ix] = y  # duplicates (the padding repeat) write the same row
    if len(set(ix.tolist())) != n:
        raise RuntimeError(f"{desc}: gathered {len(set(ix.tolist()))} distinct outputs for {n} inputs")
    return result


class Engine:
    """``fit(tm, param_groups, plan, data, selector)`` trains; ``selector`` is any object
    with ``score(model, epoch) -> dict`` (``"score"``: higher is better, or None) that
    drives best-state selection and early stopping (``tltext.training.selection``)."""

    def __init__(self, accelerator: Accelerator, args, disable_tqdm: bool = False):
        self.acc = accelerator
        self.args = args
        self.disable_tqdm = disable_tqdm or not accelerator.is_local_main_process
        self.last_checkpoint: Optional[str] = None

    def infer(self, fn, dataset: SplitDataset, lengths: Sequence[int], batch_size: int, collate, desc: str = "infer"):
        return infer(self.acc, fn, dataset, lengths, batch_size, collate, desc, self.disable_tqdm)

    # ------------------------------------------------------------------ training
    def fit(self, tm: TrainingModule, param_groups: List[Dict], plan, data: TrainData, selector=None) -> FitResult:
        a, acc = self.args, self.acc
        self._setup(tm, param_groups, plan, data)
        st, t0 = self.state, time.perf_counter()
        seconds_before = st.train_seconds
        bar = tqdm(total=self.total_steps, initial=st.step, desc="train", disable=self.disable_tqdm)
        start_epoch = st.epoch + 1 if st.epoch_done else st.epoch
        for epoch in range(start_epoch, self.num_epochs):
            resuming = epoch == st.epoch and not st.epoch_done and st.batches > 0
            if not resuming:
                if st.step >= self.total_steps or self._patience_exhausted():
                    break
                st.start_epoch(epoch)
            st.epoch, st.epoch_done = epoch, False
            self._begin_epoch(epoch)
            loader = skip_first_batches(self.train_dl, st.batches) if resuming else self.train_dl
            for batch in loader:
                if st.step >= self.total_steps:
                    break
                if self._train_step(batch):
                    bar.update(1)
                    if isinstance(self.every, int) and st.step % self.every == 0:
                        self._checkpoint(seconds_before + time.perf_counter() - t0)
            self._end_epoch(epoch, selector)
            if self.every == "epoch":
                self._checkpoint(seconds_before + time.perf_counter() - t0)
            if self._patience_exhausted() or st.step >= self.total_steps:
                break
        bar.close()
        return self._finish(seconds_before + time.perf_counter() - t0, selector)

    def _setup(self, tm: TrainingModule, param_groups: List[Dict], plan, data: TrainData) -> None:
        a, acc = self.args, self.acc
        bs = a.per_device_train_batch_size
        collate = make_collate(data.backbone, train=True)
        gen = torch.Generator().manual_seed(a.seed)
        self.own_batches = data.batch_sampler is not None
        if data.batch_sampler is not None:
            self.sampler = data.batch_sampler
            train_dl = DataLoader(data.train, batch_sampler=data.batch_sampler, collate_fn=collate,
                                  num_workers=a.dataloader_num_workers, generator=gen)
        else:
            self.sampler = train_sampler(data.train.cached, data.lengths, len(data.train), bs, a.seed,
                                         getattr(a, "group_by_length", True))
            train_dl = DataLoader(data.train, batch_size=bs, sampler=self.sampler, collate_fn=collate,
                                  num_workers=a.dataloader_num_workers, generator=gen)
        # padding-invariant backbones (text) encode the target batch on its own pass
        self.two_pass = bool(getattr(data.backbone, "padding_invariant", False))
        self.plan, self.trainable = plan, [p for g in param_groups for p in g["params"]]
        self.gradual_ddp = bool(plan is not None and plan.gradual and acc.num_processes > 1)
        if self.gradual_ddp:  # DDP registers hooks at wrap time: keep every eventually-trained param in it
            for p in self.trainable:
                p.requires_grad_(True)
        optimizer = _adamw(param_groups)
        self.tm, self.optimizer, self.train_dl = acc.prepare(tm, optimizer, train_dl)
        self.steps_per_epoch = max(1, math.ceil(len(self.train_dl) / a.gradient_accumulation_steps))
        self.total_steps = a.max_train_steps or max(1, math.ceil(a.num_train_epochs * self.steps_per_epoch))
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        warmup = int(math.ceil(a.warmup_ratio * self.total_steps))
        sched = get_scheduler(a.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup * acc.num_processes,
                              num_training_steps=self.total_steps * acc.num_processes)
        self.scheduler = acc.prepare(sched)
        self.unwrapped = acc.unwrap_model(self.tm)
        out_dir = getattr(a, "output_dir", None)
        self.every = parse_checkpointing_steps(getattr(a, "checkpointing_steps", None)) if out_dir else None
        self.config = {"seed": a.seed, "num_processes": acc.num_processes, "train_examples": len(data.train),
                       "per_device_train_batch_size": bs, "gradient_accumulation_steps": a.gradient_accumulation_steps,
                       "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                       "objective": self.unwrapped.objective.spec,
                       "objective_options": dict(getattr(self.unwrapped.objective, "options", {})),
                       "trainable_parameters": sum(p.numel() for p in self.trainable)}
        self.state, self.best_state = TrainState(), None
        self.resumed_from = resolve_checkpoint(getattr(a, "resume_from_checkpoint", None), out_dir) if out_dir else None
        if self.resumed_from is None and out_dir and getattr(a, "resume_from_checkpoint", None) and acc.is_main_process:
            print(f"no checkpoint under {os.path.join(out_dir, CHECKPOINT_DIR)}: starting from step 0", flush=True)
        if out_dir and acc.is_main_process:
            _remove_partial_checkpoints(out_dir)
        if self.resumed_from is not None:
            self.state, self.best_state = self._load_checkpoint(self.resumed_from)
        self.trimmer = HeapTrimmer(enabled=bool(getattr(a, "trim_cpu_heap", True)) and acc.device.type == "cpu")
        self.target = None
        if data.target is not None:
            tcollate = make_collate(data.backbone, train=True)
            # grouped by length only where the target runs its own pass (a joint pass pads to the source)
            tsampler = train_sampler(data.target.cached or not self.two_pass, data.target_lengths, len(data.target),
                                     bs, a.seed + 1, getattr(a, "group_by_length", True))
            self.target = _TargetStream(data.target, tsampler, bs, tcollate, acc, a.seed + 1,
                                        self.state.target_epoch, self.state.target_batches)

    def _begin_epoch(self, epoch: int) -> None:
        if self.plan is not None:
            self.plan.apply_epoch(epoch)
            if self.gradual_ddp:  # trainable set changes inside the DDP wrapper: mask the inactive grads instead
                self._active = {id(p) for p in self.trainable if p.requires_grad}
                for p in self.trainable:
                    p.requires_grad_(True)
        self.train_dl.set_epoch(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.tm.train()

    def _step_inputs(self, batch: Dict[str, Any], tb: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], int]:
        """Model inputs of one step: source rows first, then the target's (if any)."""
        if "embeddings" in batch:
            emb = batch["embeddings"] if tb is None else torch.cat([batch["embeddings"], tb["embeddings"]])
            return {"embeddings": emb}, 0 if tb is None else len(tb["labels"])
        if tb is None:
            return batch["inputs"], 0
        if self.two_pass:  # each domain padded to its own longest item (same embeddings, less padding)
            return {"parts": [batch["inputs"], tb["inputs"]]}, len(tb["labels"])
        return concat_batches(batch["inputs"], tb["inputs"]), len(tb["labels"])

    def _train_step(self, batch: Dict[str, Any]) -> bool:
        """One forward/backward (an optimizer step when gradients sync); True when
        an optimizer step was taken."""
        a, acc, st = self.args, self.acc, self.state
        tb = next(self.target) if self.target is not None else None
        progress = st.step / max(1, self.total_steps)
        st.batches += 1
        with acc.accumulate(self.tm):
            inputs, n_tgt = self._step_inputs(batch, tb)
            self.trimmer.before_step(inputs)
            n_src = len(batch["labels"])
            out = self.tm(inputs, batch["labels"], n_src, n_tgt, progress)
            loss = out["loss"]
            if not self._loss_ok(loss):
                self.optimizer.zero_grad(set_to_none=True)
                return False
            acc.backward(_every_param_used(loss, self.trainable) if acc.num_processes > 1 else loss)
            if acc.sync_gradients:
                if self.gradual_ddp:
                    for p in self.trainable:
                        if id(p) not in self._active:
                            p.grad = None
                clip = a.max_grad_norm if a.max_grad_norm and a.max_grad_norm > 0 else float("inf")
                norm = acc.clip_grad_norm_([p for p in self.trainable if p.requires_grad], clip)
                self._grad_ok(norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        st.seen += n_src * acc.num_processes
        st.loss_sum += float(loss.detach())
        st.loss_n += 1
        for k, v in out["logs"].items():
            st.log_sums[k] = st.log_sums.get(k, 0.0) + float(v)
        if not acc.sync_gradients:
            return False
        st.step += 1
        if st.step % max(1, a.logging_steps) == 0 or st.step == self.total_steps:
            log = {"train/loss": st.loss_sum / max(1, st.loss_n), "train/lr": self.scheduler.get_last_lr()[0],
                   **{f"train/{k}": v for k, v in self.unwrapped.objective.coefficients(progress).items()}}
            acc.log(log, step=st.step)
            st.step_log.append({"step": st.step, **log})
        if self.target is not None:
            st.target_epoch, st.target_batches = self.target.epoch, self.target.taken
        return True

    def _fp16_scaling(self) -> bool:
        return getattr(self.acc, "scaler", None) is not None

    def _loss_ok(self, loss: torch.Tensor) -> bool:
        """A non-finite loss: a skipped step under fp16 loss scaling (until
        ``MAX_SKIPPED_FP16_STEPS`` in a row: diverged), else fatal."""
        if self.acc.num_processes > 1 or torch.isfinite(loss):
            return True
        return self._overflow(f"non-finite loss ({float(loss.detach())})")

    def _grad_ok(self, norm) -> None:
        if norm is None or torch.isfinite(torch.as_tensor(norm)):
            self._consecutive_overflows = 0
            return
        self._overflow(f"non-finite loss/gradient (grad norm {float(norm)})")

    def _overflow(self, what: str) -> bool:
        st = self.state
        if self._fp16_scaling():  # the scaler skips this optimizer step and lowers its scale
            st.skipped_steps += 1
            self._consecutive_overflows = getattr(self, "_consecutive_overflows", 0) + 1
            if self._consecutive_overflows < MAX_SKIPPED_FP16_STEPS:
                return False
            what = f"{what}; {self._consecutive_overflows} fp16 steps in a row overflowed: the run diverged"
        raise NonFiniteLossError(f"{what} at step {st.step + 1} (epoch {st.epoch}); stopping. {self._checkpoint_note()}")

    def _end_epoch(self, epoch: int, selector) -> None:
        st, acc = self.state, self.acc
        n = max(1, st.loss_n)
        rec: Dict[str, Any] = {"epoch": epoch, "step": st.step, "train_loss": st.loss_sum / n}
        rec.update({k: v / n for k, v in st.log_sums.items()})
        rec.update(self.unwrapped.objective.coefficients(st.step / max(1, self.total_steps)))
        if selector is not None:
            t0 = time.perf_counter()
            ev = selector.score(self.unwrapped.model, epoch)
            st.selection_seconds += time.perf_counter() - t0
            rec.update({k: v for k, v in ev.items() if k != "score"})
            score = rec["score"] = ev.get("score")
            if score is not None and (st.best_score is None or score > st.best_score):
                st.best_score, st.best_epoch, st.bad_epochs = score, epoch, 0
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.unwrapped.model.state_dict().items()}
            elif score is not None:
                st.bad_epochs += 1
            self.tm.train()
        st.history.append(rec)
        acc.log({f"epoch/{k}": v for k, v in rec.items() if isinstance(v, (int, float))}, step=st.step)
        if acc.is_main_process:
            parts = [f"epoch {epoch}", f"loss {rec['train_loss']:.4f}"]
            parts += [f"{k} {v:.4f}" for k, v in rec.items() if k not in ("epoch", "step", "train_loss")
                      and isinstance(v, float) and not k.endswith("/coeff")]
            (tqdm.write if not self.disable_tqdm else print)(" | ".join(parts))
        st.epoch_done = True

    def _patience_exhausted(self) -> bool:
        p = self.args.early_stopping_patience
        return p is not None and self.state.bad_epochs > p

    def _finish(self, seconds: float, selector) -> FitResult:
        a, acc, st = self.args, self.acc, self.state
        if self.best_state is not None and getattr(selector, "keeps_best", True):
            self.unwrapped.model.load_state_dict(self.best_state)
        acc.wait_for_everyone()
        acc.free_memory()
        return FitResult(
            train_seconds=seconds, selection_seconds=st.selection_seconds,
            train_samples_per_second=st.seen / max(seconds, 1e-9), steps=st.step,
            steps_per_epoch=self.steps_per_epoch, num_processes=acc.num_processes,
            global_batch_size=(round(st.seen / max(1, st.step)) if self.own_batches else  # the objective's sampler
                               a.per_device_train_batch_size * acc.num_processes * a.gradient_accumulation_steps),
            batch_sampler=(getattr(self.sampler, "description", type(self.sampler).__name__) if self.own_batches else None),
            best_epoch=st.best_epoch, best_score=st.best_score, skipped_steps=st.skipped_steps, history=st.history,
            step_log=st.step_log, resumed_from=self.resumed_from, last_checkpoint=self.last_checkpoint,
            heap_trims=self.trimmer.trims)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_note(self) -> str:
        if self.last_checkpoint:
            return f"The last good checkpoint, {self.last_checkpoint}, is left intact."
        return "No checkpoint had been saved (see --checkpointing_steps)."

    def _checkpoint(self, seconds: float) -> str:
        """``save_state`` into ``.tmp-step_N``, add the engine state, rename to ``step_N``."""
        acc, st = self.acc, self.state
        st.train_seconds = seconds
        root = os.path.join(self.args.output_dir, CHECKPOINT_DIR)
        name = f"step_{st.step}"
        final, tmp = os.path.join(root, name), os.path.join(root, f".tmp-{name}")
        if acc.is_main_process:
            os.makedirs(root, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(tmp)
        if acc.is_main_process:
            if self.best_state is not None:
                torch.save(self.best_state, os.path.join(tmp, BEST_FILE))
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump({"format": 2, "config": self.config, **st.to_json()}, f, indent=1, default=json_default)
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

    def _load_checkpoint(self, path: str) -> Tuple[TrainState, Optional[Dict[str, torch.Tensor]]]:
        with open(os.path.join(path, STATE_FILE)) as f:
            raw = json.load(f)
        saved = raw.pop("config", {})
        raw.pop("format", None)
        # a key the checkpoint lacks was not recorded by the version that wrote it: not compared
        diffs = [f"{k} {saved.get(k)!r} there, {v!r} now" for k, v in self.config.items() if k in saved and saved[k] != v]
        if diffs:
            raise ValueError(f"--resume_from_checkpoint {path}: written by a different run ({'; '.join(diffs)}); "
                             "resume with the flags, data and number of processes of the interrupted run")
        self.acc.load_state(path)
        best = os.path.join(path, BEST_FILE)
        best_state = torch.load(best, map_location="cpu", weights_only=True) if os.path.exists(best) else None
        st = TrainState.from_json(raw)
        if self.acc.is_main_process:
            print(f"resumed from {path} (step {st.step}, epoch {st.epoch}"
                  f"{', finished' if st.epoch_done else ', ' + str(st.batches) + ' batches in'})", flush=True)
        self.last_checkpoint = path
        return st, best_state


def _remove_partial_checkpoints(out_dir: str) -> None:
    """Leftovers of a run killed while saving (``.tmp-*`` folders)."""
    root = os.path.join(out_dir, CHECKPOINT_DIR)
    if os.path.isdir(root):
        for name in os.listdir(root):
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
