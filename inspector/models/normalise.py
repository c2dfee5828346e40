"""ImageNet input normalisation: the one home of its per-channel mean and std (RGB, [0, 1] scale).

Used by the timm backbones (when a model's pretrained config names none) and GroundingDINO's
image transform.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
