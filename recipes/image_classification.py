#!/usr/bin/env python
"""Image classification / domain adaptation with torchvision backbones.

    accelerate launch recipes/image_classification.py --model_name_or_path resnet18 \
        --train_dir D/source --target_dir D/target --test_dir D/target \
        --tuning frozen|partial|full --objective erm|dann|mmd|prototypes --output_dir OUT
"""
import sys

from tltext.experiment import main

if __name__ == "__main__":
    sys.exit(main("image"))
