"""Known-answer tests of the GroundingDINO wrapper (``inspector/models/grounding.py``) that kill the
mutants tests/test_grounding.py left alive (bench/mutation.md).

A tiny random-initialised GroundingDINO built from groundingdino's own classes (no mocks). The
expected values come from the library itself: its ``datasets.transforms`` resize and normalise
(the reference preprocessing), and the text and image features its own unsplit ``forward``
hands to the fusion transformer (captured with a forward pre-hook), which the split
``encode_text`` / ``encode_image`` must reproduce exactly.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from inspector.models import grounding as gmod
from inspector.models.grounding import (
    GroundingModel,
    build_grounding_dino,
    config_path,
    join_wordpieces,
    load_config,
    normalise_caption,
    resized_hw,
)
from inspector.models.store import ModelStore
from tests.support.tiny_models import tiny_grounding

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return tiny_grounding(tmp_path_factory.mktemp("gdm"))


@pytest.fixture()
def dino(tiny) -> GroundingModel:
    g = GroundingModel.from_module(tiny[0], CPU, torch.float32)
    g.short_side, g.max_size = 64, 96
    return g


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


# ------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize("h, w", [(600, 900), (900, 600), (500, 1500), (1500, 500), (700, 700), (333, 1000),
                                  (1001, 333), (64, 65), (65, 64), (480, 640)])
@pytest.mark.parametrize("short, max_size", [(800, 1333), (800, None), (96, 160), (200, 250)])
def test_resized_hw_is_groundingdinos_own_resize(h, w, short, max_size):
    from groundingdino.datasets import transforms as T

    out, _ = T.resize(Image.new("RGB", (w, h)), None, short, max_size)
    assert resized_hw(h, w, short, max_size) == (out.size[1], out.size[0])


def test_caption_and_wordpiece_helpers_by_hand():
    assert normalise_caption("Crack") == "crack."
    assert normalise_caption("\tBent Wire.\n") == "bent wire."
    assert normalise_caption("a. b") == "a. b."
    assert join_wordpieces([]) == ""
    assert join_wordpieces(["##ab", "c", "##d", "##e", "f"]) == "##ab cde f"
    assert join_wordpieces(["scratch"]) == "scratch"
    assert join_wordpieces(["white", "cr", "##ack", "hole", "sp", "##ot", "##s"]) == "white crack hole spots"


def test_config_path_and_its_error():
    assert config_path("GroundingDINO_SwinT_OGC").name == "GroundingDINO_SwinT_OGC.py"
    with pytest.raises(ValueError, match=r"^unknown GroundingDINO architecture 'SwinX'; groundingdino-py ships "
                                         r"GroundingDINO_SwinB_cfg, GroundingDINO_SwinT_OGC$"):
        config_path("SwinX")


def test_load_config_turns_checkpointing_off_and_applies_overrides():
    from groundingdino.util.slconfig import SLConfig

    shipped = SLConfig.fromfile(str(config_path("GroundingDINO_SwinT_OGC")))
    assert shipped.use_checkpoint is True and shipped.use_transformer_ckpt is True  # the library's training setting
    args = load_config("GroundingDINO_SwinT_OGC")
    assert args.use_checkpoint is False and args.use_transformer_ckpt is False
    assert args.enc_layers == shipped.enc_layers == 6
    args = load_config("GroundingDINO_SwinT_OGC", {"enc_layers": 1, "num_queries": 7})
    assert (args.enc_layers, args.num_queries, args.dec_layers) == (1, 7, shipped.dec_layers)


def test_build_needs_a_bert_folder(tmp_path):
    args = load_config("GroundingDINO_SwinT_OGC")
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # vocab.txt missing
    msg = (r"^.*bert: not a BERT folder \(needs config.json and vocab.txt\); install it with "
           r"`inspector models import` \(entry bert_base_uncased\)$")
    with pytest.raises(FileNotFoundError, match=msg):
        build_grounding_dino(args, folder)
    (folder / "config.json").unlink()
    (folder / "vocab.txt").write_text("[PAD]\n")  # config.json missing
    with pytest.raises(FileNotFoundError, match=msg):
        build_grounding_dino(args, folder)


# ------------------------------------------------------------------------------ the wrapper's state
def test_from_module_defaults(tiny):
    g = GroundingModel.from_module(tiny[0], CPU, torch.bfloat16)
    assert g.key == "*" and g.device == CPU and g.model.training is False
    assert g.dtype == torch.float32  # bf16 on the CPU would change the two-stage query selection
    assert (g.short_side, g.max_size, g.max_text_len) == (800, 1333, 256)
    assert (g.image_calls, g.text_calls, g.predict_rows) == (0, 0, 0)
    assert g.tokenizer is tiny[0].tokenizer


def test_preprocess_is_groundingdinos_own_transform(tiny):
    """groundingdino's load_image transform: RandomResize([800], max_size=1333), ToTensor, Normalize."""
    from groundingdino.datasets import transforms as T

    g = GroundingModel.from_module(tiny[0], CPU, torch.float32, "gd")
    img = _image(30, 45, 1)
    ref = T.Compose([T.RandomResize([800], max_size=1333), T.ToTensor(),
                     T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    want, _ = ref(Image.fromarray(img), None)
    got = g.preprocess(img)
    assert tuple(got.shape) == (3, 800, 1200)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    want, _ = T.Compose([T.RandomResize([64], max_size=80), T.ToTensor(),
                         T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(Image.fromarray(img), None)
    torch.testing.assert_close(g.preprocess(img, 64, 80), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32)])
def test_preprocess_refuses_what_is_not_rgb_uint8(dino, bad):
    with pytest.raises(ValueError, match=rf"^GroundingDINO expects RGB uint8 HxWx3, got {bad.dtype} "
                                         rf"\({', '.join(map(str, bad.shape))}\)$"):
        dino.preprocess(bad)


def test_encode_text_needs_non_empty_rows_and_numbers_entries(dino):
    for rows in ([], [["crack"], []]):
        with pytest.raises(ValueError, match="^encode_text needs at least one non-empty caption row$"):
            dino.encode_text(rows)
    text = dino.encode_text([["crack", "hole"], ["stain"]])
    assert text.entry_ids == [[0, 1], [0]] and text.num_rows == 2 and dino.text_calls == 1
    assert text.entry_spans == [[(1, 3), (3, 5)], [(1, 3)]]
    dino.encode_text([["crack"]])
    assert dino.text_calls == 2


def test_overlong_caption_error_message(dino):
    head = "crack " * 10  # the message quotes the caption's first 60 characters
    with pytest.raises(ValueError, match=rf"^caption '{head}'\.\.\. has 303 tokens; GroundingDINO reads "
                                         r"at most 256: use fewer or shorter prompts$"):
        dino.encode_text([["crack " * 299 + "hole"]])
    with pytest.raises(ValueError, match="has 257 tokens"):
        dino.encode_text([["crack " * 254]])
    text = dino.encode_text([["crack " * 253]])  # 253 + "." + [CLS] + [SEP] = 256: just fits
    assert text.num_tokens == 256


# ------------------------------------------------------------------------------ split == library forward
def _library_inputs(g: GroundingModel, image: np.ndarray, caption: str, short: int, max_size: int):
    """What groundingdino's own forward hands to its fusion transformer (copied at the call)."""
    seen: dict[str, object] = {}

    def hook(module, args):
        srcs, masks, _, poss, _, _, text_dict = args
        seen["srcs"] = [s.clone() for s in srcs]
        seen["masks"] = [m.clone() for m in masks]
        seen["poss"] = [p.clone() for p in poss]
        seen["text"] = {k: v.clone() for k, v in text_dict.items()}

    handle = g.model.transformer.register_forward_pre_hook(hook)
    try:
        g.forward_full(image, caption, short, max_size)
    finally:
        handle.remove()
    return seen


def test_encode_text_and_image_are_what_the_library_forward_computes(dino):
    """Row 0 at a size whose long-side cap binds (72 < 56·70/50), row 1 at one where only the short
    side counts (40 ≠ the wrapper's 64): both sizes must reach the preprocessing of both paths."""
    image = _image(50, 70, 2)
    captions = ["defect on widget. crack. black hole", "widget"]
    sizes, input_hw = [(56, 72), (40, 100)], [(51, 71), (40, 56)]
    text = dino.encode_text([[c] for c in captions])
    for row, caption in enumerate(captions):
        feats = dino.encode_image(image, *sizes[row])
        assert feats.image_hw == (50, 70) and feats.input_hw == input_hw[row]
        assert len(feats.srcs) == dino.model.num_feature_levels == 4  # 3 Swin levels + 1 strided extra level
        ref = _library_inputs(dino, image, caption, *sizes[row])
        n = ref["text"]["encoded_text"].shape[1]
        assert n == len(text.tokens[row])
        for k, v in ref["text"].items():
            mine = text.select([row])[k]
            mine = mine[:, :n, :n] if k == "text_self_attention_masks" else mine[:, :n]
            torch.testing.assert_close(mine, v, atol=1e-5, rtol=0, msg=k)
        for name in ("srcs", "masks", "poss"):
            for level, (mine, want) in enumerate(zip(getattr(feats, name), ref[name], strict=True)):
                assert mine.dtype == want.dtype, (name, level)
                torch.testing.assert_close(mine, want, atol=1e-5, rtol=0, msg=f"{name}[{level}]")
        assert dino.image_calls == 2 * (row + 1)  # encode_image and forward_full count one image each
    assert dino.text_calls == 3  # one encode_text + one per forward_full


def test_text_features_without_sub_sentence_masks_are_the_library_ones(tiny):
    """A GroundingDINO built with ``sub_sentence_present=False`` feeds BERT the plain tokenizer output."""
    model = copy.deepcopy(tiny[0])
    model.sub_sentence_present = False
    g = GroundingModel.from_module(model, CPU, torch.float32)
    caption = "defect on widget. crack. black hole"
    text = g.encode_text([[caption]])
    ref = _library_inputs(g, _image(40, 40, 4), caption, 48, 64)
    for k, v in ref["text"].items():
        torch.testing.assert_close(text.text_dict[k], v, atol=1e-5, rtol=0, msg=k)
    mask = ref["text"]["text_self_attention_masks"][0]
    assert not mask.all()  # the sub-sentence masks exist, BERT just does not see them
    with_masks = GroundingModel.from_module(tiny[0], CPU, torch.float32).encode_text([[caption]])
    assert float((with_masks.text_dict["encoded_text"] - text.text_dict["encoded_text"]).abs().max()) > 1e-3


def test_predict_rows_subset_default_batch_and_token_width(dino):
    image = _image(40, 60, 3)
    text = dino.encode_text([["crack"], ["defect on widget. black hole"], ["stain"]])
    feats = dino.encode_image(image)
    full = dino.predict(feats, text)
    assert dino.predict_rows == 3
    t = text.num_tokens
    assert full.logits.shape == (3, 30, t) and full.logits.dtype == np.float32 and full.boxes.dtype == np.float32
    calls: list[int] = []
    handle = dino.model.transformer.register_forward_pre_hook(
        lambda mod, args: calls.append(int(args[6]["encoded_text"].shape[0])))
    try:
        sub = dino.predict(feats, text, rows=[2, 0], batch=0)  # batch < 1: the device default, 1 on the CPU
        assert calls == [1, 1] and dino.predict_rows == 5
        np.testing.assert_allclose(sub.logits, full.logits[[2, 0]], atol=1e-5)
        np.testing.assert_allclose(sub.boxes, full.boxes[[2, 0]], atol=1e-5)
        pair = dino.predict(feats, text, rows=[1, 0], batch=2)  # two rows with different sub-sentence masks
        assert calls == [1, 1, 2] and dino.predict_rows == 7
        np.testing.assert_allclose(pair.logits, full.logits[[1, 0]], atol=1e-4)
        np.testing.assert_allclose(pair.boxes, full.boxes[[1, 0]], atol=1e-4)
    finally:
        handle.remove()
    ref = dino.forward_full(image, "stain")
    n = len(text.tokens[2])
    np.testing.assert_allclose(full.logits[2, :, :n], ref.logits[0, :, :n], atol=1e-4)
    np.testing.assert_allclose(full.boxes[2], ref.boxes[0], atol=1e-4)
    assert ref.logits.dtype == np.float32 and ref.boxes.dtype == np.float32


# ------------------------------------------------------------------------------ from the model store
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store(tmp_path: Path, bert: Path, state: dict, options: dict, text_key: str) -> ModelStore:
    root = tmp_path / "models"
    (root / "gd").mkdir(parents=True)
    (root / text_key).mkdir()
    torch.save({"model": state}, root / "gd" / "gd.pth")
    for f in bert.iterdir():
        (root / text_key / f.name).write_bytes(f.read_bytes())
    manifest = {"format": 1, "models": {
        "gd": {"kind": "grounding", "arch": "GroundingDINO_SwinT_OGC", "licence": "test", "size_mb": 1,
               "state_key": "model", "requires": [text_key], "options": options,
               "files": {"gd.pth": {"sha256": _sha(root / "gd" / "gd.pth")}}},
        text_key: {"kind": "grounding", "arch": "bert-base-uncased", "licence": "test", "size_mb": 1,
                   "files": {f.name: {"sha256": _sha(f)} for f in sorted((root / text_key).iterdir())}},
    }}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return ModelStore(root, tmp_path / "models.yaml")


@pytest.fixture()
def builds(tiny, monkeypatch):
    """groundingdino's Swin-T build takes ~10 s here: from_store gets a fresh copy of the tiny
    GroundingDINO (the library's classes, other random weights) and the arguments are recorded."""
    calls: list[tuple[object, Path]] = []

    def build(args, text_dir):
        calls.append((args, Path(text_dir)))
        model = copy.deepcopy(tiny[0])
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return model

    monkeypatch.setattr(gmod, "build_grounding_dino", build)
    return calls


def test_from_store_loads_the_checkpoint_with_the_entry_options(tmp_path, tiny, builds, caplog):
    state = dict(tiny[0].state_dict())
    pooler = [k for k in state if k.startswith("bert.pooler.")]
    assert pooler  # the ignorable keys exist in this architecture
    for k in pooler:
        del state[k]  # absent from the checkpoint: ignorable
    state["bert.embeddings.position_ids"] = torch.arange(256)[None]  # extra but ignorable
    extra = [f"extra.head{i}.weight" for i in range(5)]
    for k in extra:
        state[k] = torch.zeros(2)  # extra: logged, the first three named
    store = _store(tmp_path, tiny[1], state, {"text_encoder": "bert_x", "config": {"enc_layers": 1}}, "bert_x")
    with caplog.at_level(logging.WARNING, logger="inspector.models.grounding"):
        g = GroundingModel.from_store(store, "gd", CPU, torch.float32)
    (args, text_dir), = builds
    assert args.enc_layers == 1 and args.use_checkpoint is False and text_dir == store.path("bert_x")
    assert g.key == "gd" and g.device == CPU and g.dtype == torch.float32
    loaded = g.model.state_dict()
    for k, v in tiny[0].state_dict().items():
        if not k.startswith("bert.pooler."):
            assert torch.equal(loaded[k], v), k
    assert [r.getMessage() for r in caplog.records] == [
        f"gd: 5 checkpoint tensors unused (e.g. {extra[:3]})"]


def test_from_store_default_text_encoder_and_a_misfit_checkpoint(tmp_path, tiny, builds, caplog):
    state = dict(tiny[0].state_dict())
    gone = [k for k in state if k.startswith("input_proj.")]  # in the model's own key order
    assert len(gone) > 3
    for k in gone:
        del state[k]
    store = _store(tmp_path, tiny[1], state, {}, "bert_base_uncased")
    msg = (f"model store entry 'gd': checkpoint does not fit GroundingDINO_SwinT_OGC ({len(gone)} missing tensors, "
           f"e.g. {gone[:3]}); re-import the file")
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        GroundingModel.from_store(store, "gd", CPU, torch.float32)
    (args, text_dir), = builds
    assert text_dir == store.path("bert_base_uncased") and args.enc_layers == 6  # no overrides: the shipped config
