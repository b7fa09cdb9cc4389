"""Shared helpers for the benchmark scripts: machine facts, results file, RESULT lines."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("TLTEXT_DATA", os.path.join(ROOT, "..", "shared", "data"))
RESULTS_MD = os.path.join(ROOT, "benchmarks", "RESULTS.md")


def machine() -> Dict[str, Any]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(code_module: str, args: List[str]) -> Dict[str, Any]:
    """Run ``python -m code_module args`` and parse the JSON it prints last."""
    out = subprocess.run([sys.executable, "-m", code_module] + args, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    if out.returncode != 0:
        raise RuntimeError(f"{code_module} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def record(name: str, command: str, rows: Dict[str, Any], results: List[tuple]) -> None:
    """Append a section to benchmarks/RESULTS.md (replacing an older one) and print RESULT lines."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    m = machine()
    lines = [f"## {name}", "", f"`{command}` — {stamp}, {m['cores']} cores, torch {m['torch']}, "
             f"transformers {m['transformers']}, GPU: {m['gpu'] or 'none'}", "", "```json", json.dumps(rows, indent=2), "```", ""]
    for rname, ratio, target in results:
        lines.append(f"- RESULT {rname} ratio={ratio:.2f} target{target}")
    section = "\n".join(lines) + "\n"
    text = open(RESULTS_MD).read() if os.path.exists(RESULTS_MD) else "# Benchmark results\n\nWritten by the scripts in benchmarks/.\n\n"
    start = text.find(f"## {name}\n")
    if start >= 0:
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    tmp = RESULTS_MD + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, RESULTS_MD)
    for rname, ratio, target in results:
        print(f"RESULT {rname} ratio={ratio:.2f} target{target}", flush=True)


def run_payload(name: str, doc: str, settings: Dict[str, Any], load0: float, w0: float, records: List[Dict],
                summary: Any, **extra: Any) -> Dict[str, Any]:
    """The JSON a multi-run benchmark writes: machine, protocol (the script docstring's second paragraph),
    settings, per-run records, their summary and total wall/CPU minutes."""
    import torch

    return {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "torch": torch.__version__, "loadavg_start": load0, "loadavg_end": os.getloadavg()[0]},
            "protocol": doc.split("\n\n", 1)[1].split("\nWrites", 1)[0].strip(),
            "settings": settings, **extra, "summary": summary, "runs": records,
            "total_wall_minutes": (time.perf_counter() - w0) / 60,
            "total_cpu_minutes": sum(r["cpu_seconds"] for r in records) / 60}


def write_payload(results_dir: str, name: str, payload: Dict[str, Any], markdown: str) -> None:
    """Write RESULTS_DIR/NAME.json and NAME.md (each through a temp file + rename) and print the markdown."""
    os.makedirs(results_dir, exist_ok=True)
    for ext, text in (("json", json.dumps(payload, indent=2) + "\n"), ("md", markdown)):
        path = os.path.join(results_dir, f"{name}.{ext}")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(markdown)
