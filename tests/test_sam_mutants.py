"""SAM wrapper known answers that mutation testing asked for: the encoder input (RGB, resize,
normalisation, padding), the decode batching, and the RGB image the detectors hand to SAM.

References: ``naive_embedding`` writes SAM's input transform out (PIL bilinear long-side resize
with SAM's rounding, the per-channel mean/std in RGB order, zero padding at the bottom/right) and
runs the encoder module; segment_anything's own ``SamPredictor`` (image_format="RGB") is the
library path. The tiny encoder mixes the three channels, and SAM's means/stds differ per channel,
so a BGR image gives other features (checked: the difference is far above the tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from inspector.models.hub import ModelHub
from inspector.models.sam import SamDecode, SamEmbedding, SamModel
from tests.support.tiny_models import tiny_sam

CPU = torch.device("cpu")
SAM_MEAN = np.array([123.675, 116.28, 103.53])  # R, G, B
SAM_STD = np.array([58.395, 57.12, 57.375])


@pytest.fixture(scope="module")
def sam_module() -> torch.nn.Module:
    return tiny_sam(seed=1)


@pytest.fixture(scope="module")
def sam(sam_module) -> SamModel:
    return SamModel.from_module(sam_module, CPU, torch.float32)


def _colour_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Strongly coloured (R ≠ G ≠ B everywhere), so the channel order matters."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([200 + 0 * xx, 60 + 40 * np.sin(xx / 4.0), 20 + 0.3 * yy], axis=-1) + rng.normal(0, 5, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def naive_embedding(sam_module: torch.nn.Module, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """SAM's input transform written out, then the encoder: (features 1×C×64×64, resized (h, w))."""
    h, w = image.shape[:2]
    s = 1024 / max(h, w)
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR), np.float64)
    x = np.zeros((1024, 1024, 3))
    x[:nh, :nw] = (resized - SAM_MEAN) / SAM_STD  # normalised, then zero-padded bottom/right
    with torch.no_grad():
        feats = sam_module.image_encoder(torch.tensor(x.transpose(2, 0, 1)[None], dtype=torch.float32))
    return feats.numpy(), (nh, nw)


@pytest.mark.parametrize("hw", [(48, 80), (90, 60)])
def test_embed_is_the_rgb_reference_transform_and_encoder(sam, sam_module, hw):
    from segment_anything import SamPredictor

    image = _colour_image(*hw)
    emb = sam.embed(image)
    want, input_hw = naive_embedding(sam_module, image)
    assert emb.original_size == hw and emb.input_size == input_hw
    assert emb.features.dtype == torch.float32
    np.testing.assert_allclose(emb.features.numpy(), want, atol=1e-4)
    predictor = SamPredictor(sam_module)
    predictor.set_image(image, image_format="RGB")
    np.testing.assert_allclose(emb.features.numpy(), predictor.get_image_embedding().numpy(), atol=1e-4)
    # the power of the check: the same image in BGR order is far outside the tolerance
    bgr, _ = naive_embedding(sam_module, np.ascontiguousarray(image[..., ::-1]))
    assert np.abs(bgr - want).max() > 100 * 1e-4
    assert sam.encoder_calls >= 1


def test_embed_rejects_what_is_not_rgb_uint8(sam):
    for bad, what in [(np.zeros((8, 8, 3), np.float32), r"float32 \(8, 8, 3\)"),
                      (np.zeros((8, 8), np.uint8), r"uint8 \(8, 8\)"),
                      (np.zeros((8, 8, 4), np.uint8), r"uint8 \(8, 8, 4\)")]:
        with pytest.raises(ValueError, match=rf"^SAM expects RGB uint8 HxWx3, got {what}$"):
            sam.embed(bad)


def test_scale_xy_is_x_then_y():
    emb = SamEmbedding(torch.zeros(1, 1, 64, 64), (300, 200), (1024, 683))
    assert emb.scale_xy == (683 / 200, 1024 / 300)


def test_decode_in_chunks_equals_one_batch_and_checks_its_prompts(sam):
    """7 boxes in chunks of 3 = the same 7 in one batch = each box alone (masks, scores, logits)."""
    image = _colour_image(48, 80, seed=3)
    emb = sam.embed(image)
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, 40, 7), rng.uniform(0, 24, 7)
    boxes = np.stack([x0, y0, x0 + rng.uniform(8, 40, 7), y0 + rng.uniform(8, 24, 7)], axis=1).astype(np.float32)
    points = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)[:, None]
    labels = np.ones((7, 1), np.int64)
    whole = sam.decode(emb, points=points, labels=labels, boxes=boxes, return_logits=True, chunk=16)
    parts = sam.decode(emb, points=points, labels=labels, boxes=boxes, return_logits=True, chunk=3)
    assert whole.masks.shape == parts.masks.shape == (7, 1, 48, 80)
    np.testing.assert_array_equal(parts.masks, whole.masks)
    np.testing.assert_allclose(parts.scores, whole.scores, atol=1e-5)
    torch.testing.assert_close(parts.low_res_logits, whole.low_res_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(parts.mask_logits, whole.mask_logits, atol=1e-4, rtol=0)
    for i in (0, 4, 6):
        one = sam.decode(emb, points=points[i:i + 1], labels=labels[i:i + 1], boxes=boxes[i:i + 1])
        np.testing.assert_array_equal(one.masks[0], whole.masks[i])
        assert one.mask_logits is None
    # masks are the logits above SAM's threshold (0)
    np.testing.assert_array_equal(whole.masks, (whole.mask_logits > 0.0).numpy())
    no_logits = sam.decode(emb, boxes=boxes, chunk=3)
    assert no_logits.mask_logits is None and no_logits.masks.shape == (7, 1, 48, 80)
    # multimask: three hypotheses per prompt, the low-res logits fed back as mask_input
    multi = sam.decode(emb, boxes=boxes[:2], multimask=True)
    assert multi.masks.shape == (2, 3, 48, 80) and multi.scores.shape == (2, 3)
    again = sam.decode(emb, boxes=boxes[:2], mask_input=multi.low_res_logits[:, :1])
    assert again.masks.shape == (2, 1, 48, 80)
    with pytest.raises(ValueError, match=r"^SAM decode needs points, boxes or mask_input$"):
        sam.decode(emb)
    with pytest.raises(ValueError, match=r"^prompt batch sizes differ: \[7, 2\]$"):
        sam.decode(emb, points=points, labels=labels, boxes=boxes[:2])
    with pytest.raises(ValueError, match=r"^point prompts need labels$"):
        sam.decode(emb, points=points)


def test_mask_input_changes_the_decode(sam):
    """mask_input reaches the prompt encoder: a strong planted logit mask changes the logits."""
    emb = sam.embed(_colour_image(48, 80, seed=4))
    box = np.array([[10.0, 8.0, 50.0, 40.0]], np.float32)
    plain = sam.decode(emb, boxes=box, return_logits=True)
    planted = torch.full((1, 1, 256, 256), -20.0)
    planted[:, :, 20:60, 40:120] = 20.0
    fed = sam.decode(emb, boxes=box, mask_input=planted, return_logits=True)
    assert (fed.mask_logits - plain.mask_logits).abs().max() > 1e-3
    # the same through segment_anything's own prompt encoder + decoder, written out
    m = sam.model
    with torch.no_grad():
        frame_box = box * np.array([1024 / 80, 614 / 48] * 2, np.float32)  # 48×80 -> 614×1024 (SAM rounding)
        sparse, dense = m.prompt_encoder(points=None, boxes=torch.tensor(frame_box), masks=planted)
        low, _ = m.mask_decoder(image_embeddings=emb.features, image_pe=m.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False)
    torch.testing.assert_close(fed.low_res_logits, low, atol=1e-4, rtol=0)


def test_from_store_checks_the_architecture(tmp_path):
    class Entry:
        arch = "vit_tiny"

    class Store:
        def entry(self, key):
            return Entry()

        def load_state_dict(self, key):  # pragma: no cover - must not be reached
            raise AssertionError("the architecture is checked before the file is read")

    with pytest.raises(ValueError, match=r"^model store entry 'sam_x': unknown SAM architecture 'vit_tiny'$"):
        SamModel.from_store(Store(), "sam_x", CPU, torch.float32)


# ------------------------------------------------------------------------------ detectors hand SAM the RGB image
def _library_embedding(sam_module: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam_module)
    predictor.set_image(image, image_format="RGB")
    return predictor.get_image_embedding().numpy()


def test_clipsam_embeds_the_rgb_image(sam_module):
    from tests.test_clipsam import HandMap, make_profile

    from inspector.detect.clipsam import ClipSamDetector

    image = _colour_image(48, 80, seed=5)
    amap = np.zeros((48, 80), np.float32)
    amap[10:30, 20:50] = 0.9
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("sam", sam_module)
    det = ClipSamDetector(HandMap(amap, 0.9))
    det.prepare(make_profile(), hub)
    analysis = det.analyse(image)
    np.testing.assert_allclose(analysis.embedding.features.numpy(), _library_embedding(sam_module, image), atol=1e-4)


def test_saa_embeds_the_rgb_image(tmp_path, sam_module):
    from inspector.detect import create_detector
    from inspector.profile import ProductProfile
    from tests.support.tiny_models import tiny_backbone, tiny_grounding

    grounding, _ = tiny_grounding(tmp_path / "gd")
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("grounding", grounding)
    hub.provide("sam", sam_module)
    hub.provide("backbone", tiny_backbone())
    profile = ProductProfile(name="w", pipeline="saa", object="widget",
                             saa={"variant": "saa", "grounding_short_side": 96, "grounding_max_size": 160,
                                  "box_threshold": 0.0, "max_regions": 2})
    det = create_detector("saa")
    det.prepare(profile, hub)
    image = _colour_image(48, 80, seed=6)
    analysis = det.analyse(image)
    assert len(analysis.defects)  # box_threshold 0: every box survives, so SAM runs
    np.testing.assert_allclose(analysis.embedding.features.numpy(), _library_embedding(sam_module, image), atol=1e-4)


def test_decode_result_type(sam):
    out = sam.decode(sam.embed(_colour_image(32, 32)), boxes=np.array([[2.0, 2.0, 20.0, 20.0]]))
    assert isinstance(out, SamDecode) and out.masks.dtype == bool and out.scores.dtype == np.float32


def test_from_store_builds_the_registered_architecture_with_the_stored_weights(tmp_path, monkeypatch):
    """A real ModelStore entry (sha256-checked, weights-only load) holding a tiny SAM's state dict;
    the architecture builder is segment_anything's registry, extended here by the tiny SAM."""
    import hashlib
    import io

    import segment_anything
    import yaml

    from inspector.models.store import ModelStore

    saved = tiny_sam(seed=7)
    buf = io.BytesIO()
    torch.save(saved.state_dict(), buf)
    data = buf.getvalue()
    manifest = {"models": {"sam_tiny": {"kind": "sam", "arch": "vit_tiny", "licence": "MIT", "size_mb": 1,
                                        "files": {"sam_tiny.pth": {"sha256": hashlib.sha256(data).hexdigest()}}}}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(manifest))
    (tmp_path / "store" / "sam_tiny").mkdir(parents=True)
    (tmp_path / "store" / "sam_tiny" / "sam_tiny.pth").write_bytes(data)
    built: list[object] = []

    def build(checkpoint=None):
        built.append(checkpoint)
        return tiny_sam(seed=8)  # other random weights: the stored ones must replace them

    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_tiny", build)
    store = ModelStore(tmp_path / "store", tmp_path / "m.yaml")
    sam = SamModel.from_store(store, "sam_tiny", CPU, torch.float64)
    assert built == [None]  # built empty, weights from the store
    assert sam.key == "sam_tiny" and sam.device == CPU and sam.dtype == torch.float64 and sam.img_size == 1024
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(sam.model.state_dict()[name], value, atol=0, rtol=0)


def test_features_at_takes_integer_points_and_warns_nothing(sam):
    """Integer pixel coordinates (numpy indices) give the same features as the same floats, and
    the grid is read with an explicit align_corners (torch warns when it is left to its default)."""
    import warnings

    rng = np.random.default_rng(2)
    emb = SamEmbedding(torch.tensor(rng.normal(size=(1, 3, 64, 64)), dtype=torch.float32), (300, 200), (1024, 683))
    ints = np.array([[0, 0], [17, 250], [199, 299], [101, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = sam.features_at(emb, ints)
    torch.testing.assert_close(got, sam.features_at(emb, ints.astype(np.float32)), atol=0, rtol=0)
    torch.testing.assert_close(sam.features_at(emb, [[17, 250]]), got[1:2], atol=0, rtol=0)


def test_decode_in_exactly_two_chunks(sam):
    emb = sam.embed(_colour_image(48, 80, seed=3))
    boxes = np.array([[2, 2, 30, 30], [10, 5, 60, 40], [40, 10, 79, 47], [0, 20, 25, 47], [5, 5, 70, 45]],
                     np.float32)
    whole = sam.decode(emb, boxes=boxes, return_logits=True)
    two = sam.decode(emb, boxes=boxes, return_logits=True, chunk=4)  # 4 + 1
    assert two.masks.shape == (5, 1, 48, 80) and two.mask_logits.shape == (5, 1, 48, 80)
    np.testing.assert_array_equal(two.masks, whole.masks)
    torch.testing.assert_close(two.mask_logits, whole.mask_logits, atol=1e-4, rtol=0)


def test_a_new_wrapper_counts_embeddings_and_caches_the_dense_pe(sam_module):
    """Built here (not from the module fixture) so that every line of the constructor is exercised."""
    own = SamModel.from_module(sam_module, CPU, torch.float32)
    assert own.key == "*" and own.device == CPU and own.dtype == torch.float32 and own.encoder_calls == 0
    assert SamModel.from_module(sam_module, CPU, torch.float32, key="sam_vit_b").key == "sam_vit_b"
    emb = own.embed(_colour_image(32, 32))
    own.embed(_colour_image(32, 32, seed=1))
    assert own.encoder_calls == 2
    pe = own.dense_pe()
    torch.testing.assert_close(pe, sam_module.prompt_encoder.get_dense_pe(), atol=0, rtol=0)
    assert own.dense_pe() is pe  # computed once
    out = own.decode(emb, boxes=np.array([[2.0, 2.0, 20.0, 20.0]]))
    assert out.masks.shape == (1, 1, 32, 32)


def test_points_only_decode_is_sam_predictors(sam, sam_module):
    """Point prompts alone (no box): the same low-res logits and masks as segment_anything's predictor."""
    from segment_anything import SamPredictor

    image = _colour_image(48, 80, seed=9)
    emb = sam.embed(image)
    pts = np.array([[[20.0, 10.0], [60.0, 30.0]]], np.float32)
    labels = np.array([[1, 0]])
    got = sam.decode(emb, points=pts, labels=labels, return_logits=True)
    predictor = SamPredictor(sam_module)
    predictor.set_image(image)
    logits, scores, low = predictor.predict(pts[0], labels[0], multimask_output=False, return_logits=True)
    np.testing.assert_allclose(got.mask_logits[0].numpy(), logits, atol=1e-3)
    np.testing.assert_allclose(got.low_res_logits[0].numpy(), low, atol=1e-4)
    np.testing.assert_allclose(got.scores[0], scores, atol=1e-5)


def test_float64_mask_input_is_converted(sam):
    emb = sam.embed(_colour_image(48, 80, seed=4))
    box = np.array([[10.0, 8.0, 50.0, 40.0]], np.float32)
    planted = torch.full((1, 1, 256, 256), -20.0)
    planted[:, :, 20:60, 40:120] = 20.0
    f32 = sam.decode(emb, boxes=box, mask_input=planted, return_logits=True)
    f64 = sam.decode(emb, boxes=box, mask_input=planted.double(), return_logits=True)
    torch.testing.assert_close(f64.mask_logits, f32.mask_logits, atol=0, rtol=0)


class ZeroBackgroundDecoder(torch.nn.Module):
    """Low-res logits +10 in a rectangle and exactly 0 elsewhere (SAM's threshold is > 0)."""

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output):
        low = torch.zeros((sparse_prompt_embeddings.shape[0], 1, 256, 256))
        low[:, :, 64:128, 64:128] = 10.0
        return low, torch.ones(low.shape[0], 1)


def test_masks_are_logits_strictly_above_zero():
    """64×64 image: frame = 1024², low-res cell (i, j) = 4×4 frame px = 1/4 image px. Logits exactly
    0 (everywhere outside the planted square, far from it) are background, as in SamPredictor."""
    sam = SamModel.from_module(tiny_sam(seed=1), CPU, torch.float32)
    sam.model.mask_decoder = ZeroBackgroundDecoder()
    emb = SamEmbedding(torch.zeros(1, 32, 64, 64), (64, 64), (1024, 1024))
    out = sam.decode(emb, boxes=np.array([[0.0, 0.0, 10.0, 10.0]]), return_logits=True)
    assert (out.mask_logits[0, 0, :8, :8] == 0).all()  # exactly zero far from the square
    mask = out.masks[0, 0]
    ys, xs = np.nonzero(mask)
    assert 15 <= ys.min() <= 17 and 15 <= xs.min() <= 17 and 30 <= ys.max() <= 32 and 30 <= xs.max() <= 32
    assert not mask[:8].any() and not mask[:, :8].any()
