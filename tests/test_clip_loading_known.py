"""open_clip checkpoints load through open_clip's own conversions, whatever the layout they were saved in."""

from __future__ import annotations

import pytest
import torch

from inspector.models.clip import load_open_clip_state
from tests.support.tiny_models import TINY_CLIP_IMAGE_SIZE, tiny_clip


def _configs():
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=16, image_size=TINY_CLIP_IMAGE_SIZE)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)
    return vision, text


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, TINY_CLIP_IMAGE_SIZE, TINY_CLIP_IMAGE_SIZE)
    t = torch.randint(1, 400, (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(x), b.encode_image(x))
        torch.testing.assert_close(a.encode_text(t), b.encode_text(t))


def test_scalar_logit_scale_and_another_positional_grid_load():
    src = tiny_clip(seed=1, layers=2)
    state = src.state_dict()
    state["logit_scale"] = state["logit_scale"].reshape(1)  # saved as a 1-d parameter elsewhere
    dst = tiny_clip(seed=2, layers=2)
    load_open_clip_state(dst, state)
    assert dst.logit_scale.shape == src.logit_scale.shape
    _same_outputs(src, dst)


def test_old_flat_text_tower_loads_into_a_custom_text_clip():
    """Checkpoints of CLIP (text tower at the top level) into CustomTextCLIP (``text.*``)."""
    from open_clip.model import CLIP, CustomTextCLIP

    vision, text = _configs()
    torch.manual_seed(3)
    src = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()
    dst = CustomTextCLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()
    assert not hasattr(dst, "positional_embedding")
    with pytest.raises(RuntimeError):
        dst.load_state_dict(src.state_dict(), strict=True)  # a bare load does not know the layout
    load_open_clip_state(dst, src.state_dict())
    _same_outputs(src, dst)


def test_positional_table_of_another_grid_is_resized():
    src = tiny_clip(seed=4, layers=2)
    state = src.state_dict()
    pos = state["visual.positional_embedding"]
    state["visual.positional_embedding"] = torch.cat([pos[:1], pos[1:1 + 10 * 10]])  # a 10×10 grid
    dst = tiny_clip(seed=5, layers=2)
    load_open_clip_state(dst, state)
    assert dst.visual.positional_embedding.shape == pos.shape


def test_a_checkpoint_of_another_architecture_is_a_clear_error():
    state = tiny_clip(seed=1, layers=2).state_dict()
    with pytest.raises(ValueError, match="entry 'x'.*does not fit"):
        load_open_clip_state(tiny_clip(seed=1, layers=3), state, "model store entry 'x'")
