"""The one Accelerate training engine used by every tuning, objective and modality.

AdamW + ``transformers.get_scheduler`` (warmup), gradient accumulation, mixed
precision, clipping, early stopping with the best state kept, tqdm on the main
process, trackers via ``--report_to``, exact distributed inference with
``gather_for_metrics``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from .batching import LengthGroupedSampler, SplitDataset, collate_items, length_sorted
from .objective import TrainingModule, da_coefficient


class NonFiniteLossError(FloatingPointError):
    pass


def _to_device(batch: Dict[str, Any], device) -> Dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


class Engine:
    def __init__(self, accelerator: Accelerator, args, disable_tqdm: bool = False):
        self.acc = accelerator
        self.args = args
        self.disable_tqdm = disable_tqdm or not accelerator.is_local_main_process
        self.history: List[Dict[str, Any]] = []
        self.step_log: List[Dict[str, float]] = []

    # ------------------------------------------------------------------ inference
    def infer(self, fn: Callable[[Dict[str, Any]], torch.Tensor], inputs: Sequence[Any], lengths: Sequence[int],
              batch_size: int, desc: str = "infer") -> torch.Tensor:
        """Apply ``fn`` to batches of ``inputs`` on all processes; returns the
        outputs for every input exactly once, in input order."""
        n = len(inputs)
        order = length_sorted(lengths)
        ds = SplitDataset([inputs[i] for i in order])
        dl = self.acc.prepare_data_loader(
            DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_items), device_placement=False
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
    ) -> Dict[str, Any]:
        """Train ``tm``; ``evaluate(epoch)`` returns ``{"score": float|None, ...}``
        (higher is better) and drives early stopping / best-state selection."""
        a, acc = self.args, self.acc
        da = da or {}
        bs = a.per_device_train_batch_size
        if batch_sampler is not None:
            train_dl = DataLoader(train, batch_sampler=batch_sampler, collate_fn=collate_items,
                                  num_workers=a.dataloader_num_workers)
            sampler = batch_sampler
        else:
            cached = isinstance(train.inputs, torch.Tensor)
            sampler = (RandomSampler(train, generator=torch.Generator().manual_seed(a.seed)) if cached
                       else LengthGroupedSampler(train_lengths, bs, seed=a.seed))
            train_dl = DataLoader(train, batch_size=bs, sampler=sampler, collate_fn=collate_items,
                                  num_workers=a.dataloader_num_workers)
        target_dl = None
        if target is not None:
            target_dl = DataLoader(target, batch_size=bs, collate_fn=collate_items, shuffle=False,
                                   sampler=RandomSampler(target, generator=torch.Generator().manual_seed(a.seed + 1)))
        optimizer = torch.optim.AdamW(param_groups, lr=param_groups[0]["lr"] if param_groups else 1e-3)
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

        def target_batches() -> Iterator[Dict[str, Any]]:
            ep = 0
            while True:
                if hasattr(target_dl, "set_epoch"):
                    target_dl.set_epoch(ep)
                for b in target_dl:
                    yield b
                ep += 1

        tgt_iter = target_batches() if target_dl is not None else None
        unwrapped = acc.unwrap_model(tm)
        best = {"score": None, "epoch": -1, "state": None}
        bad_epochs = 0
        step = 0
        seen = 0
        t0 = time.perf_counter()
        bar = tqdm(total=total_steps, desc="train", disable=self.disable_tqdm)
        for epoch in range(num_epochs):
            if plan is not None and plan.apply_epoch(epoch) and epoch > 0 and acc.num_processes > 1:
                tm = self._rewrap(tm)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            tm.train()
            run = {"loss": 0.0, "n": 0}
            extra_sum: Dict[str, float] = {}
            for batch in train_dl:
                tb = next(tgt_iter) if tgt_iter is not None else None
                progress = step / max(1, total_steps)
                coeff = da_coefficient(unwrapped.objective, progress, da.get("weight", 1.0), da.get("warmup_ratio", 0.0))
                with acc.accumulate(tm):
                    inputs, n_src = self._inputs(batch, tb, collate_inputs)
                    out = tm(inputs, batch["labels"], n_src, coeff)
                    loss = out["loss"]
                    if acc.num_processes == 1 and not torch.isfinite(loss):
                        raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {step + 1} (epoch {epoch}); stopping, the last saved checkpoint is left intact")
                    acc.backward(loss)
                    if acc.sync_gradients:
                        norm = acc.clip_grad_norm_([p for p in trainable if p.requires_grad],
                                                   a.max_grad_norm if a.max_grad_norm and a.max_grad_norm > 0 else float("inf"))
                        if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                            raise NonFiniteLossError(f"non-finite loss/gradient (grad norm {float(norm)}) at step {step + 1} (epoch {epoch}); stopping, the last saved checkpoint is left intact")
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                seen += n_src * acc.num_processes
                run["loss"] += loss.detach().item()
                run["n"] += 1
                for k in ("ce", "da", "disc_acc", "episode_acc"):
                    if k in out:
                        extra_sum[k] = extra_sum.get(k, 0.0) + float(out[k])
                if acc.sync_gradients:
                    step += 1
                    bar.update(1)
                    if step % max(1, a.logging_steps) == 0 or step == total_steps:
                        log = {"train/loss": run["loss"] / max(1, run["n"]), "train/lr": scheduler.get_last_lr()[0],
                               "train/coeff": coeff}
                        acc.log(log, step=step)
                        self.step_log.append({"step": step, **log})
                if step >= total_steps:
                    break
            rec = {"epoch": epoch, "step": step, "train_loss": run["loss"] / max(1, run["n"]), "da_coeff": coeff}
            rec.update({k: v / max(1, run["n"]) for k, v in extra_sum.items()})
            if evaluate is not None:
                ev = evaluate(epoch)
                rec.update({k: v for k, v in ev.items() if k != "score"})
                score = ev.get("score")
                rec["score"] = score
                if score is not None and (best["score"] is None or score > best["score"]):
                    best = {"score": score, "epoch": epoch,
                            "state": {k: v.detach().cpu().clone() for k, v in acc.unwrap_model(tm).model.state_dict().items()}}
                    bad_epochs = 0
                elif score is not None:
                    bad_epochs += 1
            self.history.append(rec)
            acc.log({f"epoch/{k}": v for k, v in rec.items() if isinstance(v, (int, float))}, step=step)
            if acc.is_main_process:
                parts = [f"epoch {epoch}", f"loss {rec['train_loss']:.4f}"]
                for k in ("disc_acc", "episode_acc", "val_metric", "target_im", "score"):
                    if isinstance(rec.get(k), float):
                        parts.append(f"{k} {rec[k]:.4f}")
                tqdm.write(" | ".join(parts)) if not self.disable_tqdm else print(" | ".join(parts), flush=True)
            if a.early_stopping_patience is not None and bad_epochs > a.early_stopping_patience:
                break
            if step >= total_steps:
                break
        bar.close()
        train_seconds = time.perf_counter() - t0
        final = acc.unwrap_model(tm)
        if best["state"] is not None and a.selection != "last":
            final.model.load_state_dict(best["state"])
        acc.wait_for_everyone()
        acc.free_memory()
        return {"train_seconds": train_seconds, "train_samples_per_second": seen / max(train_seconds, 1e-9),
                "steps": step, "best_epoch": best["epoch"], "best_score": best["score"], "history": self.history}

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
        raw = list(batch["raw"]) + (list(tb["raw"]) if tb is not None else [])
        return _to_device(collate_inputs(raw, True), self.acc.device), n_src
