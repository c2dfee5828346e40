"""GEM (Grounding Everything Module) dense features on open_clip 3.x vision transformers.

Written from the math (Bousselham et al. 2023, as used by FADE sec. 3.2; facts in
``shared/methods/fade.md``) for open_clip's *batch-first* ``VisionTransformer``. We do not use the
``gem-torch`` package: it assumes the old sequence-first layout and mixes batch items.

One forward per input size returns two token sets, both projected and L2-normalised
(token 0 = CLS, tokens 1.. = patches in row-major grid order):

* ``clip`` — the ordinary final-block tokens, ``ln_post(x_L) @ proj``; ``clip[:, 0]`` is the
  standard CLIP image embedding;
* ``gem`` — ``ln_post(x_s + Σ_{l=s..L-1} gem_l) @ proj`` with ``s = max(0, L − 6)``, where ``gem_l``
  is the self-self attention (q-q, k-k, v-v, one clustering iteration, no FFN) of block ``l``
  applied to the original stream ``x_l``. The official rule (GEM's ``depth=7``) is the last 6
  blocks whatever the depth: blocks 6–11 of a 12-block ViT-B, 18–23 of a 24-block ViT-L.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

GEM_BLOCKS = 6
"""Blocks on the GEM path: the last 6 (the reference implementation's ``depth=7``)."""


def default_gem_start(layers: int) -> int:
    """First block of the GEM path: the last :data:`GEM_BLOCKS` blocks (all of them when fewer)."""
    return max(0, int(layers) - GEM_BLOCKS)


@dataclass
class DenseTokens:
    """GEM and CLIP tokens of one batch: each B×(1+h·w)×D, float32, L2-normalised."""

    gem: torch.Tensor
    clip: torch.Tensor
    grid: tuple[int, int]  # (h, w) patch grid

    @property
    def gem_patches(self) -> torch.Tensor:
        return self.gem[:, 1:]

    @property
    def clip_patches(self) -> torch.Tensor:
        return self.clip[:, 1:]

    @property
    def cls(self) -> torch.Tensor:
        return self.clip[:, 0]


# ---------------------------------------------------------------------------------- pure math
def resample_positional_embedding(
    pos: torch.Tensor, grid_hw: tuple[int, int], extra_tokens: int = 1, antialias: bool = True
) -> torch.Tensor:
    """A ViT positional table ((extra + g²)×D) resampled to another patch grid ((extra + h·w)×D).

    The leading ``extra_tokens`` rows (CLS) are kept; the square g×g grid is resized bicubic
    (align_corners=False, antialias). The one copy of this function: GEM (other input sizes) and
    the APRIL-GAN adapter map use it (re-exported by :mod:`inspector.models.clip`). Returns the
    input unchanged when the grid already matches.
    """
    n, dim = pos.shape
    g = int(round((n - extra_tokens) ** 0.5))
    if g * g != n - extra_tokens:
        raise ValueError(f"positional table of {n} rows is not {extra_tokens} + a square grid")
    h, w = int(grid_hw[0]), int(grid_hw[1])
    if (h, w) == (g, g):
        return pos
    head, grid = pos[:extra_tokens], pos[extra_tokens:]
    grid = grid.reshape(1, g, g, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(h * w, dim).to(pos.dtype)
    return torch.cat([head, grid], dim=0)


def gem_inverse_temperature(h: torch.Tensor, head_dim: int) -> torch.Tensor:
    """τ⁻¹ = mean_n ‖h_n‖₂ · d^-1/2, one scalar per image (B×1×1×1 for B×H×N×d maths)."""
    return (h.float().norm(dim=-1).mean(dim=-1) * head_dim**-0.5).view(-1, 1, 1, 1)


def self_self_attention(z0: torch.Tensor, v: torch.Tensor, inv_tau: torch.Tensor) -> torch.Tensor:
    """GEM self-self attention of one projection (eq. 2 of FADE): B×H×N×d in, B×H×N×d out.

    z = norm(z0); z = softmax(z zᵀ τ⁻¹) z; z = norm(z); return softmax(z zᵀ τ⁻¹) v.
    The per-image τ⁻¹ is folded into the query so the fused attention kernel can run.
    """
    scale = inv_tau.to(z0.dtype)
    z = F.normalize(z0, dim=-1)
    z = F.scaled_dot_product_attention(z * scale, z, z, scale=1.0)
    z = F.normalize(z, dim=-1)
    return F.scaled_dot_product_attention(z * scale, z, v, scale=1.0)


def gem_block_output(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """gem_l of one open_clip ``ResidualAttentionBlock`` for the (batch-first) stream ``x``: B×N×W."""
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise TypeError(
            f"GEM needs open_clip blocks with nn.MultiheadAttention packed projections, got {type(attn).__name__}"
        )
    b, n, width = x.shape
    heads = attn.num_heads
    d = width // heads
    h = block.ln_1(x)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (t.reshape(b, n, heads, d).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    inv_tau = gem_inverse_temperature(h, d)
    out = (self_self_attention(q, v, inv_tau) + self_self_attention(k, v, inv_tau) + self_self_attention(v, v, inv_tau)) / 3.0
    out = out.transpose(1, 2).reshape(b, n, width)
    return block.ls_1(attn.out_proj(out))


# ---------------------------------------------------------------------------------- encoder
class GemEncoder:
    """Runs an open_clip ``VisionTransformer`` once per batch and returns GEM + CLIP tokens.

    Works for any input size that is a multiple of the patch size; positional tables are
    resampled per grid and cached. ``gem_start`` defaults to :func:`default_gem_start` (the last 6
    blocks: 6 of 12 for B/16+, 18 of 24 for ViT-L).
    """

    def __init__(self, visual: torch.nn.Module, gem_start: int | None = None) -> None:
        for attr in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj"):
            if getattr(visual, attr, None) is None:
                raise TypeError(f"GEM needs an open_clip VisionTransformer with '{attr}'; got {type(visual).__name__}")
        if getattr(visual, "attn_pool", None) is not None:
            raise TypeError("GEM does not support attentional-pool vision towers (CoCa)")
        self.visual = visual
        self.layers = len(visual.transformer.resblocks)
        self.gem_start = default_gem_start(self.layers) if gem_start is None else int(gem_start)
        if not 0 <= self.gem_start < self.layers:
            raise ValueError(f"gem_start must be in [0, {self.layers - 1}], got {self.gem_start}")
        ps = visual.patch_size
        self.patch_size = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self._pos_cache: dict[tuple[int, int, torch.dtype, torch.device], torch.Tensor] = {}

    def positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        pos = self.visual.positional_embedding
        key = (grid[0], grid[1], pos.dtype, pos.device)
        table = self._pos_cache.get(key)
        if table is None:
            with torch.no_grad():
                table = resample_positional_embedding(pos.detach(), grid)
            self._pos_cache[key] = table
        return table

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch + class + positional embeddings and ln_pre: B×(1+h·w)×W."""
        v = self.visual
        hh, ww = x.shape[-2:]
        if hh % self.patch_size or ww % self.patch_size:
            raise ValueError(f"input size {hh}x{ww} is not a multiple of the patch size {self.patch_size}")
        grid = (hh // self.patch_size, ww // self.patch_size)
        t = v.conv1(x)
        t = t.reshape(t.shape[0], t.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], dim=1)
        t = t + self.positional_embedding(grid).to(t.dtype)
        t = v.patch_dropout(t)
        return v.ln_pre(t), grid

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """ln_post, proj and L2 normalisation of every token (float32 out)."""
        y = self.visual.ln_post(x) @ self.visual.proj
        return F.normalize(y.float(), dim=-1)

    def __call__(self, x: torch.Tensor) -> DenseTokens:
        """One forward of a preprocessed batch (B×3×H×W). Call inside the hub's autocast."""
        tokens, grid = self.embed(x)
        transformer = self.visual.transformer
        seq_first = not getattr(transformer, "batch_first", True)
        gem_stream: torch.Tensor | None = None
        for i, block in enumerate(transformer.resblocks):
            if i == self.gem_start:
                gem_stream = tokens
            if i >= self.gem_start:
                assert gem_stream is not None
                gem_stream = gem_stream + gem_block_output(block, tokens)
            if seq_first:  # pragma: no cover - open_clip 3.x vision towers are batch-first
                tokens = block(tokens.transpose(0, 1)).transpose(0, 1)
            else:
                tokens = block(tokens)
        assert gem_stream is not None
        return DenseTokens(gem=self.project(gem_stream), clip=self.project(tokens), grid=grid)
