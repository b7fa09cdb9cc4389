"""benchmarks/gpu_bf16.py only measures on a GPU; its --smoke mode runs the same
code (recipe with bf16 + bare loop) on a tiny config on CPU so it cannot rot."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_bf16_smoke_runs_both_paths_and_records_nothing():
    results = os.path.join(ROOT, "benchmarks", "RESULTS.md")
    before = open(results).read() if os.path.exists(results) else None
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_bf16.py"), "--smoke"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert rows["smoke"] is True and rows["gpu"] is None
    assert rows["engine_samples_per_second"] > 0 and rows["bare_samples_per_second_all_steps"] > 0
    assert rows["bare"]["seq_len_in_batch"] == rows["seq_len"]  # synthetic texts fill the sequence
    assert 0 < rows["bare"]["non_embedding_params"] < rows["bare"]["params"]
    assert 0 < rows["mfu"] < 1
    assert (open(results).read() if os.path.exists(results) else None) == before
