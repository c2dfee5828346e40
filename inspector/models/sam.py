"""Segment Anything wrapper: one image embedding per image, batched prompt decoding.

Unlike ``SamPredictor`` this wrapper keeps no hidden per-image state: :meth:`SamModel.embed`
returns a :class:`SamEmbedding` that every later decode call receives explicitly, so a failed
image can never leave a stale embedding behind for the next one (a defect of the SAA reference
code). Coordinate frames (``shared/methods/clipsam.md``):

* point prompts are **(x, y) in original-image pixels** (numpy indices are (row, col) — swap);
* boxes are (x0, y0, x1, y1) in original-image pixels;
* ``mask_input`` are low-res logits B×1×256×256 from a previous decode (padded 1024 frame);
* ``embedding.features`` is 1×C×64×64; one cell covers 16×16 px of the padded 1024 frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from inspector.models.device import inference_autocast

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.store import ModelStore

log = logging.getLogger(__name__)


@dataclass
class SamEmbedding:
    """The image encoder's output for one image, plus the frames needed to map coordinates."""

    features: torch.Tensor  # 1×C×h×w, float32
    original_size: tuple[int, int]  # (H, W) of the image given to embed()
    input_size: tuple[int, int]  # (h, w) after the long-side resize, before padding

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Factors (x, y) from original pixels to the encoder frame (the long-side resize rounds
        the short side, so the two differ slightly)."""
        return self.input_size[1] / self.original_size[1], self.input_size[0] / self.original_size[0]


@dataclass
class SamDecode:
    """Batched decoder output at original resolution."""

    masks: np.ndarray  # bool B×M×H×W
    scores: np.ndarray  # float B×M (predicted IoU)
    low_res_logits: torch.Tensor  # float B×M×256×256 (feed back as mask_input)
    mask_logits: torch.Tensor | None = None  # float B×M×H×W when requested


class SamModel:
    """A loaded SAM (``segment_anything.modeling.Sam``) on one device."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, key: str) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.model = model.to(device).eval()
        self.device = device
        self.dtype = dtype
        self.key = key
        self.img_size = int(model.image_encoder.img_size)
        self.transform = ResizeLongestSide(self.img_size)
        self.encoder_calls = 0  # counted for tests and benchmarks
        self._dense_pe: torch.Tensor | None = None  # prompt-independent: computed once

    def dense_pe(self) -> torch.Tensor:
        """The decoder's positional encoding of the embedding grid (constant per model)."""
        if self._dense_pe is None:
            with torch.inference_mode():
                self._dense_pe = self.model.prompt_encoder.get_dense_pe()
        return self._dense_pe

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_module(cls, module: torch.nn.Module, device: torch.device, dtype: torch.dtype, key: str = "*") -> SamModel:
        return cls(module, device, dtype, key)

    @classmethod
    def from_store(cls, store: ModelStore, key: str, device: torch.device, dtype: torch.dtype) -> SamModel:
        from segment_anything import sam_model_registry

        entry = store.entry(key)
        arch = entry.arch  # "vit_b" | "vit_l" | "vit_h"
        if arch not in sam_model_registry:
            raise ValueError(f"model store entry {key!r}: unknown SAM architecture {arch!r}")
        state = store.load_state_dict(key)  # first: a missing file fails before the ViT is built
        model = sam_model_registry[arch](checkpoint=None)
        model.load_state_dict(state)
        return cls(model, device, dtype, key)

    # ----------------------------------------------------------------- encoder
    def embed(self, image: np.ndarray) -> SamEmbedding:
        """Run the image encoder once on an RGB uint8 HxWx3 image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"SAM expects RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None].float()
        with inference_autocast(self.device, self.dtype):
            x = self.model.preprocess(x)
            feats = self.model.image_encoder(x)
        self.encoder_calls += 1
        return SamEmbedding(feats.float(), (int(image.shape[0]), int(image.shape[1])), tuple(resized.shape[:2]))

    def features_at(self, emb: SamEmbedding, points_xy: np.ndarray) -> torch.Tensor:
        """Encoder features (N×C) at original-image pixels (x, y), bilinear on the feature grid.

        Pixel (x, y) is the square [x, x+1)×[y, y+1); its centre (x + 0.5, y + 0.5) is mapped to
        the padded encoder frame with the separate x and y resize ratios, and the grid is read
        with cell centres at (16 j + 8) frame px (``align_corners=False``). Outside the outermost
        cell centres the border cells are repeated (``padding_mode="border"``), never zeros.
        """
        pts = torch.as_tensor(np.asarray(points_xy, dtype=np.float32).reshape(-1, 2), device=emb.features.device)
        sx, sy = emb.scale_xy
        frame = (pts + 0.5) * torch.tensor([sx, sy], dtype=pts.dtype, device=pts.device)
        # the feature grid spans the padded img_size × img_size frame
        norm = frame / float(self.img_size) * 2 - 1
        sampled = torch.nn.functional.grid_sample(
            emb.features, norm.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
        )  # 1×C×1×N
        return sampled[0, :, 0, :].T.contiguous()

    # ----------------------------------------------------------------- decoder
    def decode(
        self,
        emb: SamEmbedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
        return_logits: bool = False,
        chunk: int = 16,
    ) -> SamDecode:
        """Decode B prompt sets on one embedding.

        ``points`` B×N×2 (x, y original px) with ``labels`` B×N (1 pos, 0 neg, -1 padding);
        ``boxes`` B×4 original px; ``mask_input`` B×1×256×256 low-res logits. Any may be None but
        all given ones share B. Large B is decoded in chunks to bound full-resolution memory.
        """
        sizes = [len(a) for a in (points, boxes, mask_input) if a is not None]
        if not sizes:
            raise ValueError("SAM decode needs points, boxes or mask_input")
        b = sizes[0]
        if any(s != b for s in sizes):
            raise ValueError(f"prompt batch sizes differ: {sizes}")
        outs: list[SamDecode] = []
        for start in range(0, b, chunk):
            sl = slice(start, min(start + chunk, b))
            outs.append(
                self._decode_chunk(
                    emb,
                    None if points is None else points[sl],
                    None if labels is None else labels[sl],
                    None if boxes is None else boxes[sl],
                    None if mask_input is None else mask_input[sl],
                    multimask,
                    return_logits,
                )
            )
        if len(outs) == 1:
            return outs[0]
        return SamDecode(
            masks=np.concatenate([o.masks for o in outs]),
            scores=np.concatenate([o.scores for o in outs]),
            low_res_logits=torch.cat([o.low_res_logits for o in outs]),
            mask_logits=None if not return_logits else torch.cat([o.mask_logits for o in outs]),  # type: ignore[misc]
        )

    def _decode_chunk(self, emb, points, labels, boxes, mask_input, multimask, return_logits) -> SamDecode:
        dev = self.device
        pts = None
        if points is not None:
            if labels is None:
                raise ValueError("point prompts need labels")
            coords = self.transform.apply_coords(np.asarray(points, dtype=np.float32), emb.original_size)
            pts = (
                torch.as_tensor(coords, dtype=torch.float32, device=dev),
                torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=dev),
            )
        box_t = None
        if boxes is not None:
            box = self.transform.apply_boxes(np.asarray(boxes, dtype=np.float32), emb.original_size)
            box_t = torch.as_tensor(box, dtype=torch.float32, device=dev)
        masks_t = None if mask_input is None else mask_input.to(dev, torch.float32)
        with inference_autocast(self.device, self.dtype):
            sparse, dense = self.model.prompt_encoder(points=pts, boxes=box_t, masks=masks_t)
            low, iou = self.model.mask_decoder(
                image_embeddings=emb.features.to(dev),
                image_pe=self.dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            full = self.model.postprocess_masks(low.float(), emb.input_size, emb.original_size)
        return SamDecode(
            masks=(full > self.model.mask_threshold).cpu().numpy(),
            scores=iou.float().cpu().numpy(),
            low_res_logits=low.float(),
            mask_logits=full.float() if return_logits else None,
        )
