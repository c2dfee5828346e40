"""SAM wrapper known answers: coordinate frames both ways, written out by hand in the test.

Forward: points and boxes in original pixels reach the prompt encoder in the 1024 frame (x by
new_w / W, y by new_h / H). Back: low-res mask logits are upsampled to the padded 1024 frame,
cropped to the resized image and resized to the original. Features: ``features_at`` reads the
encoder grid at the original pixel centre, per-axis ratios, border cells repeated.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.models.sam import SamEmbedding, SamModel
from tests.support.tiny_models import tiny_sam

CPU = torch.device("cpu")


def _resized_hw(h: int, w: int, long: int = 1024) -> tuple[int, int]:
    s = long / max(h, w)
    return int(h * s + 0.5), int(w * s + 0.5)  # SAM's ResizeLongestSide rounding


@pytest.fixture(scope="module")
def sam() -> SamModel:
    return SamModel.from_module(tiny_sam(seed=1), CPU, torch.float32)


def _naive_features_at(feats: np.ndarray, orig_hw: tuple[int, int], input_hw: tuple[int, int],
                       pts: np.ndarray) -> np.ndarray:
    """Bilinear read of a C×64×64 grid whose cell j covers frame px [16 j, 16 j + 16)."""
    c, gh, gw = feats.shape
    sy, sx = input_hw[0] / orig_hw[0], input_hw[1] / orig_hw[1]
    out = np.zeros((len(pts), c))
    for n, (x, y) in enumerate(pts):
        u = (x + 0.5) * sx / 16.0 - 0.5  # cell coordinate, cell centres at integers
        v = (y + 0.5) * sy / 16.0 - 0.5
        u, v = min(max(u, 0.0), gw - 1), min(max(v, 0.0), gh - 1)  # border: repeat the edge cells
        x0, y0 = int(np.floor(u)), int(np.floor(v))
        x1, y1 = min(x0 + 1, gw - 1), min(y0 + 1, gh - 1)
        fx, fy = u - x0, v - y0
        out[n] = ((1 - fy) * ((1 - fx) * feats[:, y0, x0] + fx * feats[:, y0, x1])
                  + fy * ((1 - fx) * feats[:, y1, x0] + fx * feats[:, y1, x1]))
    return out


@pytest.mark.parametrize("orig_hw", [(64, 64), (300, 200), (48, 80), (1000, 1024)])
def test_features_at_reads_the_original_pixel_centre(sam, orig_hw):
    rng = np.random.default_rng(sum(orig_hw))
    feats = rng.normal(size=(4, 64, 64)) + 3.0  # offset: zero padding would show as a dip
    input_hw = _resized_hw(*orig_hw)
    emb = SamEmbedding(torch.tensor(feats[None], dtype=torch.float32), orig_hw, input_hw)
    h, w = orig_hw
    pts = np.array([[0, 0], [w - 1, h - 1], [w // 2, 0], [0, h // 3], [w - 1, 0], [w / 3.0, h / 5.0]],
                   dtype=np.float32)
    got = sam.features_at(emb, pts).numpy()
    np.testing.assert_allclose(got, _naive_features_at(feats, orig_hw, input_hw, pts), atol=1e-4)


def test_features_at_on_a_constant_grid_is_constant_at_every_border(sam):
    emb = SamEmbedding(torch.full((1, 2, 64, 64), 5.0), (64, 64), (1024, 1024))
    pts = np.array([[0, 0], [63, 63], [0, 63], [63, 0], [31, 0]], np.float32)
    np.testing.assert_allclose(sam.features_at(emb, pts).numpy(), 5.0, atol=1e-6)


def test_one_cell_per_pixel_at_64_px(sam):
    """64×64 image -> 1024 frame: pixel (x, y) covers exactly cell (x, y)."""
    feats = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64)
    emb = SamEmbedding(feats, (64, 64), (1024, 1024))
    pts = np.array([[5, 9], [40, 2], [0, 0]], np.float32)
    assert sam.features_at(emb, pts)[:, 0].tolist() == [9 * 64 + 5, 2 * 64 + 40, 0.0]


def test_points_and_boxes_reach_the_prompt_encoder_in_the_1024_frame(sam):
    h, w = 300, 200
    nh, nw = _resized_hw(h, w)
    assert (nh, nw) == (1024, 683)
    emb = SamEmbedding(sam.embed(np.zeros((h, w, 3), np.uint8)).features, (h, w), (nh, nw))
    seen: dict[str, torch.Tensor] = {}

    def grab(module, args, kwargs):
        seen["points"] = kwargs["points"][0].clone()
        seen["boxes"] = kwargs["boxes"].clone()

    hook = sam.model.prompt_encoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        sam.decode(emb, points=np.array([[[150.0, 30.0]]]), labels=np.array([[1]]),
                   boxes=np.array([[10.0, 20.0, 190.0, 280.0]]))
    finally:
        hook.remove()
    torch.testing.assert_close(seen["points"][0, 0], torch.tensor([150 * nw / w, 30 * nh / h]))
    torch.testing.assert_close(seen["boxes"][0], torch.tensor([10 * nw / w, 20 * nh / h, 190 * nw / w, 280 * nh / h]))


class PlantedDecoder(torch.nn.Module):
    """A mask decoder whose low-res logits are a given rectangle (to test the way back only)."""

    def __init__(self, rect_lowres: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.rect = rect_lowres

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output):
        b = sparse_prompt_embeddings.shape[0]
        low = torch.full((b, 1, 256, 256), -10.0)
        y0, x0, y1, x1 = self.rect
        low[:, :, y0:y1, x0:x1] = 10.0
        return low, torch.ones(b, 1)


def test_masks_come_back_to_original_pixels(sam):
    """Low-res rectangle rows 32..96, cols 16..48 of 256 = frame rows 128..384, cols 64..192 =
    original (300×200 image, frame 1024×683) rows 37.5..112.5, cols 18.7..56.2."""
    h, w = 300, 200
    nh, nw = _resized_hw(h, w)
    emb = SamEmbedding(torch.zeros(1, 32, 64, 64), (h, w), (nh, nw))
    original = sam.model.mask_decoder
    sam.model.mask_decoder = PlantedDecoder((32, 16, 96, 48))
    try:
        out = sam.decode(emb, boxes=np.array([[0.0, 0.0, 10.0, 10.0]]), return_logits=True)
    finally:
        sam.model.mask_decoder = original
    mask = out.masks[0, 0]
    assert mask.shape == (h, w)
    ys, xs = np.nonzero(mask)
    y0, y1 = 128 * h / nh, 384 * h / nh
    x0, x1 = 64 * w / nw, 192 * w / nw
    assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5
    assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
