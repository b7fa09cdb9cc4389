#!/usr/bin/env python
"""bf16 fine-tuning throughput and model FLOPs utilisation of a BERT-base-sized
config on one GPU (prepared for a lent GPU machine; needs CUDA).

Random-weight BertConfig (12 layers, hidden 768, 12 heads, FFN 3072), sequence
length 128, full fine-tuning through tltext's engine pieces (TltextModel +
TrainingModule + AdamW) under ``Accelerator(mixed_precision="bf16")``.
MFU = 6 * N_params * tokens/s / peak bf16 FLOP/s (attention FLOPs excluded, as
in Kaplan et al. 2020); pass ``--peak_tflops`` for the card (H100 SXM dense
bf16: 989; H200: 989).

    python benchmarks/gpu_bf16.py [--steps 50] [--batch_size 64] [--partial_top_k 0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--partial_top_k", type=int, default=0, help="0: full fine-tuning; k: partial top-k")
    p.add_argument("--peak_tflops", type=float, default=989.0)
    a = p.parse_args()
    import torch
    from accelerate import Accelerator
    from transformers import BertConfig, BertModel

    from tltext.backbones import TextBackbone
    from tltext.modeling import TltextModel
    from tltext.strategies.tuning import plan_tuning
    from tltext.training.objective import TrainingModule

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    acc = Accelerator(mixed_precision="bf16")
    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=512)
    bb = TextBackbone(BertModel(cfg), tokenizer=None, max_length=a.seq_len)
    model = TltextModel.from_backbone(bb, {"a": 0, "b": 1})
    tuning = "full" if a.partial_top_k == 0 else "partial"
    plan = plan_tuning(bb, [model.classifier], tuning, 5e-5, 5e-4, 0.01, unfreeze_top_k=max(1, a.partial_top_k))
    tm = TrainingModule(model)
    opt = torch.optim.AdamW(plan.param_groups, lr=5e-5, fused=True)
    tm, opt = acc.prepare(tm, opt)
    ids = torch.randint(1000, 30000, (a.batch_size, a.seq_len), device=acc.device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (a.batch_size,), device=acc.device)
    n_params = sum(p.numel() for p in model.parameters())
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        out = tm(batch, labels, a.batch_size)
        acc.backward(out["loss"])
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    tokens = a.steps * a.batch_size * a.seq_len
    tps = tokens / secs
    mfu = 6 * n_params * tps / (a.peak_tflops * 1e12)
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "tuning": tuning, "params": n_params,
                      "samples_per_second": a.steps * a.batch_size / secs, "tokens_per_second": tps,
                      "mfu_full_ft_formula": mfu, "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
