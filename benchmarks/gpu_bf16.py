#!/usr/bin/env python
"""bf16 fine-tuning throughput and model FLOPs utilisation of a BERT-base-sized
model on one GPU, through tltext's recipe (the real engine) and a bare loop.

A random-weight BERT-base config (12 layers, hidden 768, 12 heads, FFN 3072,
the MiniLM tokenizer's 30,522-token vocabulary) is saved to a temp folder, then
  engine: the text recipe, full fine-tuning, --mixed_precision bf16, synthetic
          texts that fill --seq_len tokens, --max_train_steps N (tokenizing,
          batching, logging: everything a user's run does);
  bare:   the same model under Accelerator(mixed_precision="bf16"), one fixed
          pre-tokenized batch, fused AdamW, no data loading.
Both are timed over all N steps (warm-up included) for the engine/bare ratio
(target >= 0.9: per-step overhead under 10 %); the bare loop is also timed
after --warmup steps for tokens/s and MFU = 6 N_params tokens/s / peak, with
N_params the non-embedding parameters (attention score FLOPs excluded, Kaplan
et al. 2020). --peak_tflops is the card's dense bf16 peak (H100/H200 SXM: 989).
Writes the `gpu_bf16` section of benchmarks/RESULTS.md with the GPU name.

    python benchmarks/gpu_bf16.py [--steps 200] [--batch_size 64] [--seq_len 128]
    python benchmarks/gpu_bf16.py --smoke   # tiny config on CPU: checks the script, records nothing
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import record  # noqa: E402


def synthetic_texts(tokenizer, n: int, seq_len: int, seed: int = 0):
    """``n`` texts of whole-word vocabulary entries, each at least ``seq_len`` tokens long."""
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) > 2]
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=seq_len)) for _ in range(n)]


def bare_loop(model_dir: str, tokenizer, a, device_ok: bool) -> dict:
    import torch
    from accelerate import Accelerator

    from tltext.backbones import TextBackbone
    from tltext.modeling import TltextModel
    from tltext.objectives import ObjectiveSet, ObjectiveSetup
    from tltext.training.objective import TrainingModule

    acc = Accelerator(mixed_precision="bf16", cpu=not device_ok)
    bb = TextBackbone.from_pretrained(model_dir, max_length=a.seq_len)
    model = TltextModel.from_backbone(bb, {"neg": 0, "pos": 1})
    tm = TrainingModule(model, ObjectiveSet("erm", ObjectiveSetup(feature_dim=model.feature_dim, num_classes=2)))
    opt = torch.optim.AdamW([p for p in tm.parameters() if p.requires_grad], lr=5e-5, fused=device_ok)
    tm, opt = acc.prepare(tm, opt)
    texts = synthetic_texts(tokenizer, a.batch_size, a.seq_len, seed=1)
    batch = {k: v.to(acc.device) for k, v in bb.collate(texts).items()}
    labels = torch.randint(0, 2, (a.batch_size,), device=acc.device)
    sync = torch.cuda.synchronize if device_ok else (lambda: None)
    sync()
    t_all = time.perf_counter()
    for i in range(a.steps):
        if i == a.warmup:
            sync()
            t_warm = time.perf_counter()
        out = tm(batch, labels, a.batch_size, 0, i / a.steps)
        acc.backward(out["loss"])
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    end = time.perf_counter()
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    n_params = sum(p.numel() for p in model.parameters())
    return {"seconds_all_steps": end - t_all, "seconds_after_warmup": end - t_warm,
            "timed_steps": a.steps - a.warmup, "params": n_params, "non_embedding_params": n_params - emb,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device_ok else None,
            "seq_len_in_batch": int(batch["input_ids"].shape[1])}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--peak_tflops", type=float, default=989.0)
    p.add_argument("--smoke", action="store_true", help="tiny config on CPU, 4 steps; prints, records nothing")
    a = p.parse_args()
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tltext.experiment import default_model, parse_and_run

    cuda = torch.cuda.is_available()
    if a.smoke:
        a.steps, a.warmup, a.batch_size, a.seq_len = 4, 1, 4, 32
        cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=512)
    elif not cuda:
        print("no CUDA device: this benchmark needs a GPU (use --smoke to check it on CPU)", file=sys.stderr)
        return 2
    else:
        cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512)
    on_gpu = cuda and not a.smoke
    tok = AutoTokenizer.from_pretrained(default_model("text"))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "bert-base-random")
        torch.manual_seed(0)
        BertModel(cfg).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        bare = bare_loop(model_dir, tok, a, on_gpu)
        train = os.path.join(tmp, "train.jsonl")
        texts = synthetic_texts(tok, a.steps * a.batch_size, a.seq_len)
        with open(train, "w") as f:
            f.writelines(json.dumps({"text": t, "label": ["neg", "pos"][i % 2]}) + "\n" for i, t in enumerate(texts))
        res = parse_and_run("text", [
            "--model_name_or_path", model_dir, "--train_file", train, "--validation_split_percentage", "0",
            "--tuning", "full", "--mixed_precision", "bf16", "--max_train_steps", str(a.steps),
            "--per_device_train_batch_size", str(a.batch_size), "--max_seq_length", str(a.seq_len),
            "--learning_rate", "5e-5", "--output_dir", os.path.join(tmp, "out"), "--disable_tqdm",
            "--report", "False", "--save_model", "False", "--seed", "0", "--logging_steps", "50"])
    engine_sps = res["timing"]["train_samples_per_second"]
    bare_sps_all = a.steps * a.batch_size / bare["seconds_all_steps"]
    tokens_per_s = bare["timed_steps"] * a.batch_size * a.seq_len / bare["seconds_after_warmup"]
    mfu = 6 * bare["non_embedding_params"] * tokens_per_s / (a.peak_tflops * 1e12)
    rows = {"gpu": torch.cuda.get_device_name(0) if on_gpu else None, "smoke": a.smoke, "steps": a.steps,
            "warmup": a.warmup, "batch_size": a.batch_size, "seq_len": a.seq_len, "peak_tflops": a.peak_tflops,
            "engine_samples_per_second": engine_sps, "bare_samples_per_second_all_steps": bare_sps_all,
            "bare_tokens_per_second_after_warmup": tokens_per_s, "mfu": mfu, "engine_vs_bare": engine_sps / bare_sps_all,
            "bare": bare}
    if a.smoke:
        print(json.dumps(rows))
        return 0
    record("gpu_bf16", f"python benchmarks/gpu_bf16.py --steps {a.steps} --batch_size {a.batch_size} "
                       f"--seq_len {a.seq_len} --peak_tflops {a.peak_tflops:g}", rows,
           [("gpu_engine_vs_bare_loop", engine_sps / bare_sps_all, ">=0.9")])
    print(f"MFU {mfu:.3f} ({tokens_per_s:.0f} tokens/s on {rows['gpu']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
