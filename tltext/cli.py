"""``tltext`` command line: train, data, diagnose, push."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

USAGE = """usage: tltext <command> [args]

commands:
  train {text,audio,image} ...   run a recipe in this process (same flags as recipes/*.py)
  data digits --output_dir D     write the offline image-shift data set (scikit-learn digits; --shift palette)
  diagnose ...                   domain-gap diagnostics and a strategy recommendation
  push OUT_OR_MODEL_DIR --hub_model_id ID   upload a finished run to the Hugging Face Hub
"""


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "train":
            from .experiment import main as run_main

            if not rest or rest[0] not in ("text", "audio", "image"):
                print("usage: tltext train {text,audio,image} [recipe flags]", file=sys.stderr)
                return 2
            return run_main({"audio": "speech"}.get(rest[0], rest[0]), rest[1:])
        if cmd == "data":
            if not rest or rest[0] != "digits":
                print("usage: tltext data digits --output_dir D [--seed S] [--size PX] [--shift random_colour|palette] "
                      "[--per_class N] [--overwrite]",
                      file=sys.stderr)
                return 2
            p = argparse.ArgumentParser(prog="tltext data digits")
            p.add_argument("--output_dir", required=True)
            p.add_argument("--seed", type=int, default=0, help="seed of the target colours")
            p.add_argument("--size", type=int, default=32, help="image side in pixels")
            p.add_argument("--shift", default="random_colour", choices=("random_colour", "palette"),
                           help="target style: random colours per image (MNIST-M-like) or one fixed palette")
            p.add_argument("--per_class", type=int, default=None, help="at most N images per class and domain")
            p.add_argument("--overwrite", action="store_true", help="replace a digits folder written with other settings")
            a = p.parse_args(rest[1:])
            from .data.digits import write_digits

            info = write_digits(a.output_dir, seed=a.seed, size=a.size, per_class=a.per_class, shift=a.shift,
                                overwrite=a.overwrite)
            print(f"{'unchanged (same settings)' if info['reused'] else 'wrote'}: {info['source']} source images in "
                  f"{info['source_dir']}, {info['target']} target images in {info['target_dir']}")
            return 0
        if cmd == "diagnose":
            from .diagnostics.cli import main as diag_main

            return diag_main(rest)
        if cmd == "push":
            from .hub import push_main

            return push_main(rest)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
