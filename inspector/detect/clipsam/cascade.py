"""CPS (paper sec. 3.2, eq. 9-12): up to three SAM decoder passes, every prompt set batched in each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from inspector.detect.clipsam.points import pad_prompts
from inspector.detect.ppg import PointPrompts, mask_box

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.sam import SamDecode, SamEmbedding, SamModel
    from inspector.params.clipsam import ClipSamParams


@dataclass
class CascadeResult:
    """Final masks of every prompt set and what each stage was given."""

    logits: torch.Tensor | None  # B×H×W final full-resolution mask logits (dropped once fused)
    iou: np.ndarray  # B predicted IoU of the final mask
    boxes: np.ndarray | None  # B×4 boxes given to pass 3 (None when it did not run)
    box_from_mask: np.ndarray | None  # B bool: box came from the pass-2 mask (else component box)
    stages: int


def choose_masks(dec: SamDecode, mode: str, amap: np.ndarray) -> np.ndarray:
    """Index of the chosen candidate per prompt set: highest predicted IoU or mean CLIP score inside."""
    if dec.masks.shape[1] == 1:
        return np.zeros(dec.masks.shape[0], dtype=np.int64)
    if mode == "clip":
        area = dec.masks.sum(axis=(2, 3))
        inside = (dec.masks * amap[None, None]).sum(axis=(2, 3))
        score = np.where(area > 0, inside / np.maximum(area, 1), -np.inf)
        return score.argmax(axis=1)
    return dec.scores.argmax(axis=1)


def run_cascade(sam: SamModel, emb: SamEmbedding, sets: list[PointPrompts], p: ClipSamParams,
                amap: np.ndarray) -> CascadeResult:
    """CPS (eq. 9–12): up to three decoder passes, all prompt sets batched in each."""
    points, labels = pad_prompts(sets)
    rows = np.arange(len(sets))
    stages = p.cascade_stages
    boxes = box_from_mask = None

    # pass 1: points (eq. 9)
    dec = sam.decode(emb, points, labels, multimask=p.multimask_output, return_logits=stages == 1)
    pick = choose_masks(dec, p.mask_choice, amap)
    if stages >= 2:  # pass 2: points + logits of the best pass-1 mask (eq. 10)
        logits_in = dec.low_res_logits[rows, pick][:, None]
        dec = sam.decode(emb, points, labels, mask_input=logits_in, multimask=p.multimask_output,
                         return_logits=stages == 2)
        pick = choose_masks(dec, p.mask_choice, amap)
    if stages >= 3:  # pass 3: points + box of the best pass-2 mask + its logits (eq. 11–12)
        boxes = np.zeros((len(sets), 4), dtype=np.float32)
        box_from_mask = np.zeros(len(sets), dtype=bool)
        for i, s in enumerate(sets):
            box = mask_box(dec.masks[i, pick[i]])
            box_from_mask[i] = box is not None
            boxes[i] = box if box is not None else s.box  # guard: an empty mask has no box
        logits_in = dec.low_res_logits[rows, pick][:, None]
        dec = sam.decode(emb, points, labels, boxes=boxes, mask_input=logits_in, multimask=p.multimask_output,
                         return_logits=True)
        pick = choose_masks(dec, p.mask_choice, amap)
    assert dec.mask_logits is not None
    return CascadeResult(
        logits=dec.mask_logits[rows, pick].float(),
        iou=dec.scores[rows, pick].astype(np.float32),
        boxes=boxes,
        box_from_mask=box_from_mask,
        stages=stages,
    )
