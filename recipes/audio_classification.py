#!/usr/bin/env python
"""Audio classification / speaker or corpus adaptation / few-shot with tltext.

    accelerate launch recipes/audio_classification.py --model_name_or_path DIR_OR_HUB_ID \
        --train_file manifest.csv --audio_column path --label_column digit \
        --tuning frozen|partial|full --objective erm|dann|mmd|prototypes --output_dir OUT

Offline (no pretrained checkpoint): ``--model_config tiny|small|config.json`` builds a
wav2vec2 from scratch; see recipes/configs/fsdd_two_stage.sh.
"""
import sys

from tltext.experiment import main

if __name__ == "__main__":
    sys.exit(main("speech"))
