"""Tiny random-initialised instances of the *real* architectures, for tests and tools.

Every factory builds the model with the library's own classes (open_clip ``CLIP``,
segment_anything ``Sam``, groundingdino ``GroundingDINO``, timm) at small widths and depths,
seeded so results are repeatable. Nothing here fakes a model's output: the pipelines run the
same code paths as with real checkpoints, only the numbers are random.

Use them through the hub: ``hub.provide("clip", tiny_clip())``.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_CLIP_IMAGE_SIZE = 240  # same positional grid (15x15) as ViT-B-16-plus-240


def tiny_clip(seed: int = 0, layers: int = 4, width: int = 64, embed_dim: int = 32):
    """open_clip ``CLIP`` with a ViT-B-16-plus-240 *shape* (patch 16, 240 px) but tiny widths.

    GEM covers the last half of the blocks (6 of 12 in the real model; ``layers // 2`` here).
    """
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=layers, width=width, head_width=16, patch_size=16, image_size=TINY_CLIP_IMAGE_SIZE)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)
    model = CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text)
    # open_clip leaves the proj randomly scaled; make sure no parameter is degenerate
    model.eval()
    return model


def tiny_sam(seed: int = 0, embed_dim: int = 32, depth: int = 2, prompt_dim: int = 32):
    """segment_anything ``Sam`` with a 2-block ViT encoder at the real 1024 frame / 64x64 grid."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    image_size, patch = 1024, 16
    grid = image_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=image_size,
            mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[depth - 1],
            window_size=14,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    return sam


def tiny_backbone(seed: int = 0, name: str = "resnet18", out_indices: tuple[int, ...] = (1, 2, 3)):
    """timm ``features_only`` CNN of the same family as WideResNet50-2 (layers 1-3), random weights."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
    model.eval()
    return model


def write_tiny_clip_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save a tiny CLIP state dict (as open_clip checkpoints are saved) for store/loader tests."""
    torch.save(tiny_clip(seed).state_dict(), path)
    return path
