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


def _naive_pos(visual, grid: int | tuple[int, int]) -> torch.Tensor:
    pos = visual.positional_embedding.detach().double()
    g0 = visual.grid_size[0]
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    if (gh, gw) == (g0, g0):
        return pos
    table = pos[1:].reshape(g0, g0, -1).permute(2, 0, 1)[None]
    table = torch.nn.functional.interpolate(table, size=(gh, gw), mode="bicubic", antialias=True,
                                            align_corners=False)
    return torch.cat([pos[:1], table[0].permute(1, 2, 0).reshape(gh * gw, -1)])


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


def naive_dense(model, image: torch.Tensor, start: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(gem tokens, clip tokens) of one image 3×S×S, float64, normalised."""
    visual = model.visual
    ps = visual.patch_size[0]
    gh, gw = image.shape[-2] // ps, image.shape[-1] // ps
    w = visual.conv1.weight.double()
    patches = []
    for r in range(gh):
        for c in range(gw):
            crop = image[:, r * ps:(r + 1) * ps, c * ps:(c + 1) * ps].double()
            patches.append((w * crop[None]).sum(dim=(1, 2, 3)))
    x = torch.cat([visual.class_embedding.double()[None], torch.stack(patches)])
    x = x + _naive_pos(visual, (gh, gw))
    x = _layer_norm(visual.ln_pre, x)
    blocks = list(visual.transformer.resblocks)
    if start is None:
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


# ------------------------------------------------------------------------------ found by mutation testing
def test_inverse_temperature_is_per_image_by_hand():
    """τ⁻¹ = mean_n ‖h_n‖ / √d per image: rows of norm 2 and 4 (image 0), 6 (image 1), d = 4."""
    from inspector.models.gem import gem_inverse_temperature

    h = torch.zeros(2, 2, 3)
    h[0, 0, 0], h[0, 1, 1], h[1, 0, 2], h[1, 1, 0] = 2.0, 4.0, 6.0, -6.0
    got = gem_inverse_temperature(h, head_dim=4)
    assert got.shape == (2, 1, 1, 1)
    torch.testing.assert_close(got.flatten(), torch.tensor([3.0 / 2.0, 6.0 / 2.0]))


def test_self_self_attention_keeps_the_input_precision():
    """bfloat16 projections (autocast on a GPU) with a float32 τ⁻¹: computed in bfloat16, close to float64."""
    from inspector.models.gem import self_self_attention

    torch.manual_seed(0)
    z0, v = torch.randn(1, 2, 5, 4, dtype=torch.float64), torch.randn(1, 2, 5, 4, dtype=torch.float64)
    inv_tau = torch.tensor([1.7], dtype=torch.float32).view(-1, 1, 1, 1)
    want = torch.zeros_like(v)
    for hd in range(2):
        z = _unit(z0[0, hd])
        z = _softmax(z @ z.T * 1.7) @ z
        z = _unit(z)
        want[0, hd] = _softmax(z @ z.T * 1.7) @ v[0, hd]
    got = self_self_attention(z0.bfloat16(), v.bfloat16(), inv_tau)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, atol=3e-2, rtol=0)
    torch.testing.assert_close(self_self_attention(z0, v, inv_tau), want, atol=1e-6, rtol=0)


def test_gem_needs_packed_multihead_attention(model):
    from inspector.models.gem import gem_block_output

    class OtherAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.in_proj_weight = torch.nn.Parameter(torch.zeros(3, 3))

    class Block(torch.nn.Module):
        def __init__(self, attn: torch.nn.Module) -> None:
            super().__init__()
            self.attn, self.ln_1 = attn, torch.nn.Identity()

    x = torch.zeros(1, 2, 8)
    with pytest.raises(TypeError, match=r"^GEM needs open_clip blocks with nn.MultiheadAttention packed "
                                        r"projections, got OtherAttention$"):
        gem_block_output(Block(OtherAttention()), x)
    separate = torch.nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)  # no packed in_proj_weight
    assert separate.in_proj_weight is None
    with pytest.raises(TypeError, match=r"packed projections, got MultiheadAttention$"):
        gem_block_output(Block(separate), x)


def test_gem_with_nonzero_biases_and_norm_weights():
    """Random initialisation leaves the attention biases at 0 and the norms at 1/0; real checkpoints
    do not. Randomised, GEM still matches the naive reference (the q/k/v biases are used)."""
    m = tiny_clip(seed=6)
    torch.manual_seed(6)
    with torch.no_grad():
        for blk in m.visual.transformer.resblocks:
            blk.attn.in_proj_bias.normal_(0, 0.5)
            blk.attn.out_proj.bias.normal_(0, 0.1)
            for ln in (blk.ln_1, blk.ln_2):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.normal_(0, 0.1)
    x = torch.randn(1, 3, 240, 240)
    with torch.inference_mode():
        out = GemEncoder(m.visual)(x)
    ref_gem, ref_clip = naive_dense(m, x[0])
    torch.testing.assert_close(out.gem[0].double(), ref_gem, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.clip[0].double(), ref_clip, atol=1e-5, rtol=0)


def test_non_square_input_has_an_integer_h_by_w_grid(model):
    enc = GemEncoder(model.visual)
    torch.manual_seed(4)
    x = torch.randn(1, 3, 240, 272)
    with torch.inference_mode():
        out = enc(x)
    assert out.grid == (15, 17) and all(type(g) is int for g in out.grid)
    assert out.gem.shape[1] == 1 + 15 * 17
    ref_gem, ref_clip = naive_dense(model, x[0])
    torch.testing.assert_close(out.gem[0].double(), ref_gem, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.clip[0].double(), ref_clip, atol=1e-5, rtol=0)
    for bad in [(240, 250), (250, 240)]:  # either side alone not a multiple of 16
        with pytest.raises(ValueError, match=rf"^input size {bad[0]}x{bad[1]} is not a multiple of the patch size 16$"):
            enc(torch.zeros(1, 3, *bad))


def test_sequence_first_transformer_gives_the_same_tokens(model):
    """open_clip's Transformer(batch_first=False) runs its blocks on L×B×W: GEM transposes around them."""
    from open_clip.transformer import Transformer

    visual = model.visual
    bf = visual.transformer
    sf = Transformer(bf.width, len(bf.resblocks), bf.resblocks[0].attn.num_heads,
                     mlp_ratio=bf.resblocks[0].mlp.c_fc.out_features / bf.width, batch_first=False)
    sf.load_state_dict(bf.state_dict())
    sf.eval()
    torch.manual_seed(5)
    x = torch.randn(2, 3, 240, 240)
    with torch.inference_mode():
        want = GemEncoder(visual)(x)
        visual.transformer = sf
        try:
            got = GemEncoder(visual)(x)
        finally:
            visual.transformer = bf
    torch.testing.assert_close(got.gem, want.gem, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.clip, want.clip, atol=1e-5, rtol=0)


def test_encoder_checks_the_tower_and_gem_start(model):
    visual = model.visual
    with pytest.raises(TypeError, match=r"^GEM needs an open_clip VisionTransformer with 'conv1'; got Linear$"):
        GemEncoder(torch.nn.Linear(2, 2))
    saved = visual.proj
    visual.proj = None
    try:
        with pytest.raises(TypeError, match=r"^GEM needs an open_clip VisionTransformer with 'proj'; "
                                            r"got VisionTransformer$"):
            GemEncoder(visual)
    finally:
        visual.proj = saved
    visual.attn_pool = torch.nn.Identity()
    try:
        with pytest.raises(TypeError, match=r"^GEM does not support attentional-pool vision towers \(CoCa\)$"):
            GemEncoder(visual)
    finally:
        visual.attn_pool = None
    for bad in (-1, 4):
        with pytest.raises(ValueError, match=rf"^gem_start must be in \[0, 3\], got {bad}$"):
            GemEncoder(visual, gem_start=bad)
    # an explicit start is honoured: blocks 2..3 only, against the naive reference
    enc = GemEncoder(visual, gem_start=2)
    assert enc.gem_start == 2 and GemEncoder(visual, gem_start=3).gem_start == 3
    torch.manual_seed(7)
    x = torch.randn(1, 3, 240, 240)
    with torch.inference_mode():
        out = enc(x)
    ref_gem, _ = naive_dense(model, x[0], start=2)
    torch.testing.assert_close(out.gem[0].double(), ref_gem, atol=1e-5, rtol=0)


def test_any_module_with_the_tower_attributes_and_an_int_patch_size(model):
    """A tower that is not open_clip's class (no attn_pool attribute, patch_size an int) works the same."""
    v = model.visual

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.ln_pre, self.transformer, self.ln_post = v.conv1, v.ln_pre, v.transformer, v.ln_post
            self.class_embedding, self.positional_embedding, self.proj = v.class_embedding, v.positional_embedding, v.proj
            self.patch_dropout, self.patch_size = v.patch_dropout, 16

    enc = GemEncoder(Tower())
    assert enc.patch_size == 16 and enc.layers == 4
    torch.manual_seed(8)
    x = torch.randn(1, 3, 240, 240)
    with torch.inference_mode():
        torch.testing.assert_close(enc(x).gem, GemEncoder(v)(x).gem, atol=0, rtol=0)


def test_positional_cache_tells_h_by_w_from_w_by_w(model):
    enc = GemEncoder(model.visual)
    a = enc.positional_embedding((15, 17))
    b = enc.positional_embedding((17, 17))
    assert a.shape[0] == 1 + 15 * 17 and b.shape[0] == 1 + 17 * 17
    torch.testing.assert_close(a.double(), _naive_pos(model.visual, (15, 17)), atol=1e-6, rtol=0)


def test_resampling_with_several_extra_tokens_keeps_dtype_and_checks_the_table():
    """5 leading tokens + a 2×2 grid -> 3×3; a bfloat16 table stays bfloat16; a table that is not
    extra + a square grid is refused by name."""
    torch.manual_seed(9)
    pos = torch.randn(5 + 4, 6)
    got = resample_positional_embedding(pos, (3, 3), extra_tokens=5)
    grid = torch.nn.functional.interpolate(pos[5:].reshape(1, 2, 2, 6).permute(0, 3, 1, 2).double(), size=(3, 3),
                                           mode="bicubic", align_corners=False, antialias=True)
    want = torch.cat([pos[:5].double(), grid.permute(0, 2, 3, 1).reshape(9, 6)])
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)
    half = resample_positional_embedding(pos.bfloat16(), (3, 3), extra_tokens=5)
    assert half.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"^positional table of 16 rows is not 1 \+ a square grid$"):
        resample_positional_embedding(torch.zeros(16, 4), (4, 4))
