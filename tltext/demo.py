"""`make demo`: MiniLM, Amazon books -> kitchen, several strategies, one table.

Train on all books reviews (labels; 10 % held out for model selection), adapt
with the kitchen text (no labels), test on all kitchen reviews."""
from __future__ import annotations

import argparse
import os
import sys
import time

# The README's 3-seed protocol (benchmarks/quality.py --suite amazon), one seed here.
FROZEN = ["--tuning", "frozen", "--adapter_dim", "256", "--num_train_epochs", "30", "--learning_rate", "1e-3"]
RUNS = [
    ("frozen source-only", FROZEN + ["--objective", "erm"]),
    ("partial top-2 (erm)", ["--tuning", "partial", "--unfreeze_top_k", "2", "--objective", "erm",
                             "--num_train_epochs", "1", "--learning_rate", "1e-4"]),
]
DA_RUNS = [
    ("frozen + DANN", FROZEN + ["--objective", "dann"]),
    ("frozen + MMD", FROZEN + ["--objective", "mmd"]),
]

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data_dir", default=os.environ.get("TLTEXT_DATA", "../shared/data"))
    p.add_argument("--output_dir", default="runs/demo")
    p.add_argument("--seed", default="42")
    p.add_argument("--max_seq_length", default="128")
    p.add_argument("--no_da", action="store_true", help="only the erm runs")
    a = p.parse_args(argv)
    books = os.path.join(a.data_dir, "amazon", "books.jsonl")
    kitchen = os.path.join(a.data_dir, "amazon", "kitchen.jsonl")
    if not (os.path.exists(books) and os.path.exists(kitchen)):
        print(f"demo data not found: {books} and {kitchen}.\n"
              "Point the demo at the data with `make demo DATA=/path/to/shared/data`, or run the recipe on your own data:\n"
              "  accelerate launch recipes/text_classification.py --train_file SRC.jsonl --test_file TGT.jsonl "
              "--tuning frozen --output_dir OUT\n"
              "(--train_file also takes a datasets name, e.g. --train_file imdb).", file=sys.stderr)
        return 2
    from . import objectives
    from .experiment import parse_and_run

    runs = RUNS + ([] if a.no_da else DA_RUNS)
    rows = []
    for name, flags in runs:
        out = os.path.join(a.output_dir, name.split(" (")[0].replace(" ", "_").replace("+", "").replace("__", "_"))
        argv_run = ["--train_file", books, "--test_file", kitchen, "--output_dir", out, "--overwrite_output_dir",
                    "--seed", a.seed, "--max_seq_length", a.max_seq_length, "--disable_tqdm", "--report", "False",
                    "--per_device_train_batch_size", "32"] + flags
        if objectives.needs_target(flags[flags.index("--objective") + 1]):
            argv_run += ["--target_file", kitchen]
        t0 = time.perf_counter()
        res = parse_and_run("text", argv_run)
        rows.append((name, res["validation"].get("accuracy"), res["test"].get("accuracy"),
                     res["timing"]["train_seconds"], time.perf_counter() - t0))
    lines = [f"Amazon books -> kitchen, all-MiniLM-L6-v2, seed {a.seed} (model selection on the books validation "
             "split; kitchen labels are used only for the test column; one seed, the README has 3)",
             f"{'strategy':<24}{'books val acc':>14}{'kitchen test acc':>18}{'train s':>9}{'total s':>9}"]
    lines += [f"{name:<24}{v:>14.4f}{t:>18.4f}{ts:>9.1f}{tot:>9.1f}" for name, v, t, ts, tot in rows]
    summary = os.path.join(a.output_dir, "summary.txt")
    with open(summary + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(summary + ".tmp", summary)
    print("\n" + "\n".join(lines) + f"\n(written to {summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
