"""GEM dense features checked against a deliberately naive second implementation.

The reference below re-derives everything from open_clip's parameters with per-image,
per-head Python loops and an explicit softmax; it shares no code with ``inspector.models.gem``.
"""

from __future__ import annotations

import math

import pytest
import torch

from inspector.models.clip import ClipModel
from inspector.models.gem import GemEncoder, resample_positional_embedding
from tests.support.tiny_models import tiny_clip


def _softmax(s: torch.Tensor) -> torch.Tensor:
    e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=-1, keepdim=True)


def _layer_norm(ln: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _naive_pos(visual, grid: int) -> torch.Tensor:
    pos = visual.positional_embedding.detach().double()
    g0 = visual.grid_size[0]
    if grid == g0:
        return pos
    table = pos[1:].reshape(g0, g0, -1).permute(2, 0, 1)[None]
    table = torch.nn.functional.interpolate(table, size=(grid, grid), mode="bicubic", antialias=True,
                                            align_corners=False)
    return torch.cat([pos[:1], table[0].permute(1, 2, 0).reshape(grid * grid, -1)])


def _naive_block(block, x: torch.Tensor) -> torch.Tensor:
    """The original block, one image (N×W), written out by hand."""
    attn = block.attn
    n, w = x.shape
    heads = attn.num_heads
    d = w // heads
    h = _layer_norm(block.ln_1, x)
    W = attn.in_proj_weight.double()
    bias = attn.in_proj_bias.double()
    q, k, v = (h @ W[i * w:(i + 1) * w].T + bias[i * w:(i + 1) * w] for i in range(3))
    outs = []
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        a = _softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d))
        outs.append(a @ v[:, sl])
    o = torch.cat(outs, dim=1) @ attn.out_proj.weight.double().T + attn.out_proj.bias.double()
    x = x + o
    m = _layer_norm(block.ln_2, x)
    m = m @ block.mlp.c_fc.weight.double().T + block.mlp.c_fc.bias.double()
    m = torch.nn.functional.gelu(m)
    m = m @ block.mlp.c_proj.weight.double().T + block.mlp.c_proj.bias.double()
    return x + m


def _naive_gem(block, x: torch.Tensor) -> torch.Tensor:
    """gem_l for one image (N×W): per-head loops, explicit softmax, fade.md's formulas."""
    attn = block.attn
    n, w = x.shape
    heads = attn.num_heads
    d = w // heads
    h = _layer_norm(block.ln_1, x)
    inv_tau = float(torch.stack([h[i].norm() for i in range(n)]).mean().detach()) / math.sqrt(d)
    W = attn.in_proj_weight.double()
    bias = attn.in_proj_bias.double()
    q, k, v = (h @ W[i * w:(i + 1) * w].T + bias[i * w:(i + 1) * w] for i in range(3))
    heads_out = []
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        acc = torch.zeros(n, d, dtype=torch.float64)
        for z0 in (q[:, sl], k[:, sl], v[:, sl]):
            z = _unit(z0)
            z = _softmax(z @ z.T * inv_tau) @ z
            z = _unit(z)
            acc = acc + _softmax(z @ z.T * inv_tau) @ v[:, sl]
        heads_out.append(acc / 3.0)
    return torch.cat(heads_out, dim=1) @ attn.out_proj.weight.double().T + attn.out_proj.bias.double()


def naive_dense(model, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gem tokens, clip tokens) of one image 3×S×S, float64, normalised."""
    visual = model.visual
    ps = visual.patch_size[0]
    grid = image.shape[-1] // ps
    w = visual.conv1.weight.double()
    patches = []
    for r in range(grid):
        for c in range(grid):
            crop = image[:, r * ps:(r + 1) * ps, c * ps:(c + 1) * ps].double()
            patches.append((w * crop[None]).sum(dim=(1, 2, 3)))
    x = torch.cat([visual.class_embedding.double()[None], torch.stack(patches)])
    x = x + _naive_pos(visual, grid)
    x = _layer_norm(visual.ln_pre, x)
    blocks = list(visual.transformer.resblocks)
    start = max(0, len(blocks) - 6)  # the official rule: the last 6 blocks whatever the depth
    gem = None
    for i, blk in enumerate(blocks):
        if i == start:
            gem = x.clone()
        if i >= start:
            gem = gem + _naive_gem(blk, x)
        x = _naive_block(blk, x)
    proj = visual.proj.double()
    return _unit(_layer_norm(visual.ln_post, gem) @ proj), _unit(_layer_norm(visual.ln_post, x) @ proj)


@pytest.fixture(scope="module")
def model():
    return tiny_clip(seed=3)


@pytest.mark.parametrize("size", [240, 272])
def test_gem_matches_naive_reference(model, size):
    torch.manual_seed(size)
    x = torch.randn(2, 3, size, size)
    enc = GemEncoder(model.visual)
    assert enc.gem_start == 0  # 4 blocks: all of them are among the last 6
    with torch.inference_mode():
        out = enc(x)
    g = size // 16
    assert out.grid == (g, g)
    assert out.gem.shape == out.clip.shape == (2, 1 + g * g, model.visual.output_dim)
    for b in range(2):
        ref_gem, ref_clip = naive_dense(model, x[b])
        torch.testing.assert_close(out.gem[b].double(), ref_gem, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.clip[b].double(), ref_clip, atol=1e-5, rtol=0)
    # the GEM path really differs from the CLIP path (it is not a copy of the final tokens)
    assert (out.gem - out.clip).abs().max() > 1e-2


@pytest.mark.parametrize(("layers", "start"), [(8, 2), (12, 6)])
def test_gem_covers_the_last_six_blocks_at_any_depth(layers, start):
    deep = tiny_clip(seed=5, layers=layers, width=32)
    enc = GemEncoder(deep.visual)
    assert enc.gem_start == start  # not layers // 2: ViT-L (24 blocks) starts at 18
    torch.manual_seed(layers)
    x = torch.randn(1, 3, 240, 240)
    with torch.inference_mode():
        out = enc(x)
    ref_gem, ref_clip = naive_dense(deep, x[0])
    torch.testing.assert_close(out.gem[0].double(), ref_gem, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.clip[0].double(), ref_clip, atol=1e-5, rtol=0)


def test_batch_independence(model):
    torch.manual_seed(1)
    a = torch.randn(1, 3, 240, 240)
    others = torch.randn(3, 3, 240, 240)
    enc = GemEncoder(model.visual)
    with torch.inference_mode():
        alone = enc(a)
        together = enc(torch.cat([others[:2], a, others[2:]]))
    torch.testing.assert_close(together.gem[2], alone.gem[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together.clip[2], alone.clip[0], atol=1e-5, rtol=0)


def test_cls_equals_encode_image(model):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 240, 240)
    clip = ClipModel(model, torch.device("cpu"), torch.float32, "tiny")
    dense = clip.encode_dense(x)
    torch.testing.assert_close(dense.cls, clip.encode_image(x), atol=1e-5, rtol=0)
    assert clip.image_calls == 2


def test_positional_resampling_is_cached_and_keeps_cls(model):
    enc = GemEncoder(model.visual)
    t1 = enc.positional_embedding((28, 28))
    assert t1.shape == (1 + 28 * 28, model.visual.positional_embedding.shape[1])
    assert enc.positional_embedding((28, 28)) is t1
    torch.testing.assert_close(t1[0], model.visual.positional_embedding[0].detach())
    assert enc.positional_embedding((15, 15)) is model.visual.positional_embedding or torch.equal(
        enc.positional_embedding((15, 15)), model.visual.positional_embedding.detach())
    # a constant grid stays constant under resampling (bicubic with antialias preserves DC)
    flat = torch.ones(1 + 15 * 15, 4)
    torch.testing.assert_close(resample_positional_embedding(flat, (56, 56)), torch.ones(1 + 56 * 56, 4))


def test_rejects_size_not_multiple_of_patch(model):
    enc = GemEncoder(model.visual)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        enc(torch.zeros(1, 3, 250, 250))
