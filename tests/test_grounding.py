"""GroundingDINO and timm backbone wrappers: split forward == library forward, offline loading from the store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inspector.models.backbone import BackboneModel
from inspector.models.grounding import (
    GroundingModel,
    join_wordpieces,
    load_config,
    normalise_caption,
    resized_hw,
)
from inspector.models.store import ModelStore
from tests.support.tiny_models import tiny_backbone, tiny_grounding

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory: pytest.TempPathFactory):
    model, bert = tiny_grounding(tmp_path_factory.mktemp("gd"))
    return model, bert


@pytest.fixture()
def dino(tiny_dino) -> GroundingModel:
    g = GroundingModel.from_module(tiny_dino[0], CPU, torch.float32)
    g.short_side, g.max_size = 96, 160
    return g


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((72, 100, 3)) * 255).astype(np.uint8)


def test_caption_and_size_conventions() -> None:
    assert normalise_caption("  Broken Part. Hole ") == "broken part. hole."
    assert normalise_caption("crack.") == "crack."
    assert resized_hw(600, 900, 800, 1333) == (800, 1200)
    assert resized_hw(500, 1500, 800, 1333) == (444, 1332)  # long side capped (int() as the library)
    assert resized_hw(900, 600, 800, None) == (1200, 800)
    assert join_wordpieces(["white", "cr", "##ack", "hole"]) == "white crack hole"


def test_entry_spans_cover_each_entry(dino: GroundingModel) -> None:
    text = dino.encode_text([["defect on widget", "crack. black hole"], ["widget"]], [[0, 1], [-1]])
    assert text.rows == ["defect on widget. crack. black hole.", "widget."]
    toks = text.tokens[0]
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    (a0, a1), (b0, b1) = text.entry_spans[0]
    assert toks[a0:a1] == ["defect", "on", "widget", "."]
    assert toks[b0:b1] == ["crack", ".", "black", "hole", "."]
    assert text.entry_spans[1] == [(1, 3)] and text.entry_ids == [[0, 1], [-1]]
    assert text.text_dict["encoded_text"].shape[:2] == (2, len(toks))


def test_split_forward_equals_library_forward_for_batched_captions(dino: GroundingModel, image) -> None:
    """Image side once + text side once + batched fusion == one library forward per caption.

    The rows have different lengths and sub-sentence masks, which also covers the head-order fix of
    the text-enhancer mask (without it the batched rows get each other's masks).
    """
    captions = ["defect on widget. crack. black hole", "widget", "scratch on the metal nut. stain"]
    text = dino.encode_text([[c] for c in captions])
    pred = dino.predict(dino.encode_image(image), text, batch=8)
    assert pred.logits.shape[:2] == (3, 30) and pred.boxes.shape == (3, 30, 4)
    for i, caption in enumerate(captions):
        ref = dino.forward_full(image, caption)
        t = len(text.tokens[i])
        np.testing.assert_allclose(pred.logits[i, :, :t], ref.logits[0, :, :t], atol=1e-4)
        np.testing.assert_allclose(pred.boxes[i], ref.boxes[0], atol=1e-4)
        assert np.all(pred.logits[i, :, t:] == 0)  # padding tokens of shorter rows score nothing
    # chunked batches give the same answer
    again = dino.predict(dino.encode_image(image), text, batch=1)
    np.testing.assert_allclose(again.logits, pred.logits, atol=1e-4)


def test_backbone_runs_once_per_image_whatever_the_caption_count(dino: GroundingModel, image) -> None:
    calls = []
    handle = dino.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        text = dino.encode_text([[f"defect on widget {w}"] for w in ("a", "the", "of", "on", "red", "white")])
        dino.predict(dino.encode_image(image), text, batch=4)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert dino.predict_rows == 6


def test_overlong_caption_is_a_clear_error(dino: GroundingModel) -> None:
    with pytest.raises(ValueError, match="at most 256"):
        dino.encode_text([["crack " * 300]])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_grounding_loads_offline_from_the_store(tmp_path: Path) -> None:
    """Real config (Swin-T OGC, layers reduced via manifest options), local BERT folder, checkpoint file."""
    _, bert = tiny_grounding(tmp_path / "src")
    overrides = {"enc_layers": 1, "dec_layers": 1, "num_queries": 20, "dim_feedforward": 256}
    torch.manual_seed(1)
    from inspector.models.grounding import build_grounding_dino

    source = build_grounding_dino(load_config("GroundingDINO_SwinT_OGC", overrides), bert)
    root = tmp_path / "models"
    (root / "gd").mkdir(parents=True)
    (root / "bert").mkdir()
    torch.save({"model": source.state_dict()}, root / "gd" / "gd.pth")
    for f in bert.iterdir():
        (root / "bert" / f.name).write_bytes(f.read_bytes())
    manifest = {"format": 1, "models": {
        "gd": {"kind": "grounding", "arch": "GroundingDINO_SwinT_OGC", "licence": "test", "size_mb": 1,
               "state_key": "model", "requires": ["bert"],
               "options": {"text_encoder": "bert", "config": overrides},
               "files": {"gd.pth": {"sha256": _sha(root / "gd" / "gd.pth")}}},
        "bert": {"kind": "grounding", "arch": "bert-base-uncased", "licence": "test", "size_mb": 1,
                 "files": {f.name: {"sha256": _sha(f)} for f in sorted((root / "bert").iterdir())}},
    }}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    store = ModelStore(root, tmp_path / "models.yaml")
    loaded = GroundingModel.from_store(store, "gd", CPU, torch.float32)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    text = loaded.encode_text([["defect on widget"]])
    out = loaded.predict(loaded.encode_image(img, 64, 64), text)
    assert out.logits.shape[:2] == (1, 20)


def test_backbone_wrapper_features_and_store_loading(tmp_path: Path) -> None:
    import timm

    full = timm.create_model("resnet18", pretrained=False)
    root = tmp_path / "models"
    (root / "cnn").mkdir(parents=True)
    torch.save(full.state_dict(), root / "cnn" / "cnn.pth")
    manifest = {"format": 1, "models": {"cnn": {
        "kind": "backbone", "arch": "resnet18", "licence": "test", "size_mb": 1,
        "options": {"out_indices": [1, 2, 3]}, "files": {"cnn.pth": {"sha256": _sha(root / "cnn" / "cnn.pth")}}}}}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    bb = BackboneModel.from_store(ModelStore(root, tmp_path / "models.yaml"), "cnn", CPU, torch.float32)
    assert torch.equal(bb.model.state_dict()["layer1.0.conv1.weight"], full.state_dict()["layer1.0.conv1.weight"])
    img = (np.random.default_rng(2).random((50, 70, 3)) * 255).astype(np.uint8)
    feats = bb.features(img, 64)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)]
    assert bb.channels == [64, 128, 256] and bb.calls == 1

    # a checkpoint of another architecture is refused with the key in the message
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), root / "cnn" / "cnn.pth")
    manifest["models"]["cnn"]["files"]["cnn.pth"]["sha256"] = _sha(root / "cnn" / "cnn.pth")
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match="'cnn'"):
        BackboneModel.from_store(ModelStore(root, tmp_path / "models.yaml"), "cnn", CPU, torch.float32)


def test_backbone_from_module_rejects_plain_networks() -> None:
    with pytest.raises(TypeError, match="features_only"):
        BackboneModel.from_module(torch.nn.Linear(2, 2), CPU, torch.float32)
    assert BackboneModel.from_module(tiny_backbone(), CPU, torch.float32).reductions == [4, 8, 16]


def test_preprocess_is_the_reference_resize(dino: GroundingModel) -> None:
    """GroundingDINO's reference transform: torchvision ``resize`` of a PIL image (antialiased
    bilinear) to the 800/1333 rule, ToTensor, ImageNet normalisation. OpenCV's INTER_LINEAR (the
    old resize) was up to 70 grey levels off on a fine texture at 1024 -> 800; this is identical."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:300, 0:420]
    img = ((((xx // 3 + yy // 3) % 2) * 200)[..., None] + rng.integers(0, 55, (300, 420, 3))).astype(np.uint8)
    got = dino.preprocess(img, 200, 400)
    assert tuple(got.shape) == (3, 200, 280)
    ref = TF.resize(Image.fromarray(img), [200, 280])
    ref = TF.normalize(TF.to_tensor(ref), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
