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

    GEM covers the last 6 blocks (6 of 12 in the real model; all of them at this depth).
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


# --------------------------------------------------------------------------- GroundingDINO
TINY_GROUNDING_WORDS = (
    "defect", "damage", "flaw", "on", "of", "the", "a", "widget", "bottle", "object", "nut", "metal",
    "crack", "scratch", "hole", "black", "white", "red", "broken", "part", "contamination", "stain",
    "thread", "spot", "pcb", "bent", "wire", "color",
)


def write_tiny_bert(folder: Path, seed: int = 0, words: tuple[str, ...] = TINY_GROUNDING_WORDS,
                    hidden: int = 32, layers: int = 2) -> Path:
    """A 2-layer random BERT saved with ``save_pretrained`` plus a small ``vocab.txt`` (offline)."""
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ","]
    vocab += [w for w in words if w not in vocab]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": true, "model_max_length": 256}', encoding="utf-8")
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=256)
    BertModel(cfg).save_pretrained(folder)
    return folder


def tiny_grounding(tmp_dir: Path, seed: int = 0, num_queries: int = 30, enc_layers: int = 1, dec_layers: int = 2):
    """groundingdino ``GroundingDINO`` with a tiny Swin, 1 fusion-encoder / 2 decoder layers, 30 queries.

    The hidden width stays 256: groundingdino's encoder hard-codes 256-d text position encodings.

    Built from groundingdino's own classes (``SwinTransformer``, ``Joiner``, ``PositionEmbeddingSineHW``,
    ``build_transformer``, ``GroundingDINO``) with the Swin-T OGC config's structure (4 feature
    levels, two-stage query selection, text enhancer, fusion layers, text cross-attention) at small
    widths; the text encoder is a 2-layer BERT written to ``tmp_dir/bert`` with a local vocabulary
    (:data:`TINY_GROUNDING_WORDS`). Returns ``(model, bert_folder)``.
    """
    from groundingdino.models.GroundingDINO.backbone.backbone import Joiner
    from groundingdino.models.GroundingDINO.backbone.position_encoding import PositionEmbeddingSineHW
    from groundingdino.models.GroundingDINO.backbone.swin_transformer import SwinTransformer
    from groundingdino.models.GroundingDINO.groundingdino import GroundingDINO
    from groundingdino.models.GroundingDINO.transformer import build_transformer

    from inspector.models.grounding import load_config

    hidden_dim = 256
    bert = write_tiny_bert(Path(tmp_dir) / "bert", seed)
    args = load_config("GroundingDINO_SwinT_OGC", dict(
        hidden_dim=hidden_dim, nheads=8, dim_feedforward=256, enc_layers=enc_layers,
        dec_layers=dec_layers, num_queries=num_queries, text_encoder_type=str(bert),
    ))
    torch.manual_seed(seed)
    swin = SwinTransformer(pretrain_img_size=224, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                           window_size=7, drop_path_rate=0.0, out_indices=(1, 2, 3))
    backbone = Joiner(swin, PositionEmbeddingSineHW(hidden_dim // 2, temperatureH=args.pe_temperatureH,
                                                    temperatureW=args.pe_temperatureW, normalize=True))
    backbone.num_channels = list(swin.num_features[1:])
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        model = GroundingDINO(
            backbone, build_transformer(args), num_queries=num_queries, aux_loss=True, iter_update=True,
            query_dim=4, num_feature_levels=args.num_feature_levels, nheads=args.nheads,
            dec_pred_bbox_embed_share=args.dec_pred_bbox_embed_share, two_stage_type=args.two_stage_type,
            two_stage_bbox_embed_share=args.two_stage_bbox_embed_share,
            two_stage_class_embed_share=args.two_stage_class_embed_share, num_patterns=args.num_patterns,
            dn_number=0, dn_box_noise_scale=args.dn_box_noise_scale, dn_label_noise_ratio=args.dn_label_noise_ratio,
            dn_labelbook_size=args.dn_labelbook_size, text_encoder_type=str(bert),
            sub_sentence_present=args.sub_sentence_present, max_text_len=args.max_text_len,
        )
    model.eval()
    return model, bert
