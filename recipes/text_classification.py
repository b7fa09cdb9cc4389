#!/usr/bin/env python
"""Text classification / domain adaptation / few-shot with tltext.

    accelerate launch recipes/text_classification.py --train_file SRC.jsonl \
        --test_file T.jsonl --tuning frozen|partial|full --objective erm|dann|mmd|prototypes \
        --output_dir OUT --seed 42
"""
import sys

from tltext.experiment import main

if __name__ == "__main__":
    sys.exit(main("text"))
