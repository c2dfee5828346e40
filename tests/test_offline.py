"""Offline by construction: the guard blocks everything but loopback, and building models from
the store, the hub with tiny models, and the text encoder folder GroundingDINO needs all work
without a single attempt to reach the network."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from inspector.models.hub import ModelHub
from inspector.models.store import ModelStore
from tests.conftest import NetworkBlockedError, NetworkGuard
from tests.support.http_files import FileServer
from tests.support.tiny_models import tiny_backbone, tiny_clip, tiny_sam

TINY_CLIP_ARCH = "Inspector-Tiny-ViT-16-240"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 240, "layers": 4, "width": 64, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


# ------------------------------------------------------------------------------ the guard itself
def test_guard_blocks_remote_hosts_and_dns(network_guard: NetworkGuard) -> None:
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(("203.0.113.7", 80), timeout=1)  # TEST-NET-3, never routed
    with pytest.raises(NetworkBlockedError):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(OSError):  # urllib sees an ordinary network failure
        urllib.request.urlopen("http://198.51.100.1/model.pth", timeout=1)
    assert len(network_guard.attempts) == 3
    network_guard.attempts.clear()  # deliberate attempts: do not fail this test at teardown


def test_guard_allows_loopback(network_guard: NetworkGuard) -> None:
    with FileServer(files={"/x": b"hello"}) as srv:
        assert urllib.request.urlopen(srv.url + "/x", timeout=5).read() == b"hello"
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection(("localhost", int(port)), timeout=5):
            pass
    assert network_guard.attempts == []


# ------------------------------------------------------------------------------ store + hub
def _write_manifest(folder: Path, entries: dict[str, dict]) -> Path:
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
    return path


def _file_entry(kind: str, arch: str, name: str, data: bytes, **extra: object) -> dict:
    return {"kind": kind, "arch": arch, "licence": "test", "size_mb": 0.1, **extra,
            "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}}


@pytest.fixture
def tiny_clip_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register a tiny open_clip config so the real ``open_clip.create_model`` path builds it."""
    import open_clip

    if TINY_CLIP_ARCH not in open_clip.list_models():
        cfg = tmp_path_factory.mktemp("open_clip_cfg") / f"{TINY_CLIP_ARCH}.json"
        cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(cfg)
    return TINY_CLIP_ARCH


@pytest.mark.slow
def test_hub_builds_models_from_the_store_offline(
    tmp_path: Path, network_guard: NetworkGuard, tiny_clip_arch: str
) -> None:
    """Checkpoints imported into the store load into fresh real architectures, bit for bit."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    reference_clip, reference_sam = tiny_clip(seed=0), tiny_sam(seed=0)
    torch.save(reference_clip.state_dict(), bundle / "tiny_clip.pt")
    torch.save(reference_sam.state_dict(), bundle / "tiny_sam.pth")
    manifest = _write_manifest(tmp_path, {
        "tiny_clip": _file_entry("clip", tiny_clip_arch, "tiny_clip.pt", (bundle / "tiny_clip.pt").read_bytes()),
        "tiny_sam": _file_entry("sam", "tiny", "tiny_sam.pth", (bundle / "tiny_sam.pth").read_bytes()),
    })
    store = ModelStore(tmp_path / "models", manifest)
    assert sorted(store.import_from(bundle)) == ["tiny_clip", "tiny_sam"]

    # SAM: the store's state dict restores a differently seeded instance exactly
    fresh_sam = tiny_sam(seed=1)
    fresh_sam.load_state_dict(store.load_state_dict("tiny_sam"))
    want_sam = reference_sam.state_dict()
    assert all(torch.equal(v, want_sam[k]) for k, v in fresh_sam.state_dict().items())

    # CLIP through the hub: ClipModel.from_store -> open_clip.create_model -> store.load_state_dict
    hub = ModelHub(store, device="cpu", precision="fp32")
    clip = hub.get("clip", "tiny_clip")
    assert hub.get("clip", "tiny_clip") is clip and hub.load_counts[("clip", "tiny_clip")] == 1
    image = torch.rand(1, 3, 240, 240, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = torch.nn.functional.normalize(reference_clip.encode_image(image), dim=-1)
    assert torch.allclose(clip.encode_image(image), want, atol=1e-5)
    text = clip.encode_text(["a photo of a scratched bottle"])
    assert text.shape == (1, 32) and torch.isfinite(text).all()
    assert network_guard.attempts == []


@pytest.mark.parametrize("kind, factory", [("clip", tiny_clip), ("sam", tiny_sam), ("backbone", tiny_backbone)])
def test_hub_with_provided_tiny_models_is_offline(
    kind: str, factory, network_guard: NetworkGuard, tmp_path: Path
) -> None:
    wrapper_module = {"clip": "inspector.models.clip", "sam": "inspector.models.sam",
                      "backbone": "inspector.models.backbone"}[kind]
    pytest.importorskip(wrapper_module, reason=f"{wrapper_module} not in this build yet")
    hub = ModelHub(ModelStore(tmp_path / "models"), device="cpu", precision="fp32")
    hub.provide(kind, factory())
    model = hub.get(kind, "any_key")
    assert model is hub.get(kind, "any_key")
    assert network_guard.attempts == []


@pytest.mark.slow
def test_text_encoder_folder_loads_offline(tmp_path: Path, network_guard: NetworkGuard) -> None:
    """A bert-style folder from the store is what transformers (and GroundingDINO) load offline."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    src = tmp_path / "bert"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "scratch", "on", "bottle", "."]
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(src, safe_serialization=True)
    (src / "vocab.txt").write_text("\n".join(words) + "\n")
    (src / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 64}))
    files = {}
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors"):
        files[name] = {"sha256": hashlib.sha256((src / name).read_bytes()).hexdigest()}
    files["model.safetensors"]["one_of"] = "weights"
    files["pytorch_model.bin"] = {"sha256": "0" * 64, "one_of": "weights"}
    manifest = _write_manifest(tmp_path, {
        "tiny_bert": {"kind": "grounding", "arch": "bert", "licence": "test", "size_mb": 0.1, "files": files}})
    store = ModelStore(tmp_path / "models", manifest)
    store.import_from(src)
    folder = store.path("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = tokenizer("Scratch on bottle.")["input_ids"]
    assert ids == [2, 5, 6, 7, 8, 3]  # [CLS] scratch on bottle . [SEP], lower-cased
    model = BertModel.from_pretrained(str(folder))
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids])).last_hidden_state
    assert out.shape == (1, 6, 16)
    assert network_guard.attempts == []
