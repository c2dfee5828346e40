"""A small model manifest with real (tiny) checkpoint files, for store, CLI and download tests.

Entries mirror the shapes of the real manifest: single files with a full sha256 or only a
published prefix, a multi-file folder with ``one_of`` alternatives (like ``bert_base_uncased``),
an entry that requires another, and one verified only by its git blob id (like the APRIL-GAN
adapters). Every file is a genuine torch / safetensors / JSON file with known content.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# tensors whose values tests can check after loading
ALPHA_STATE = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "bias": torch.ones(2)}
BETA_STATE = {"proj": torch.full((3, 3), 0.5)}
DET_STATE = {"backbone.w": torch.arange(4, dtype=torch.float32)}
ADAPTER_STATE = {"fc.0.weight": torch.eye(2), "fc.0.bias": torch.zeros(2)}


@dataclass
class FakeModels:
    manifest: Path
    blobs: dict[tuple[str, str], bytes]

    def content(self, key: str, file: str) -> bytes:
        return self.blobs[(key, file)]

    def bundle(
        self,
        dest: Path,
        flat: bool = False,
        keys: set[str] | None = None,
        files: set[tuple[str, str]] | None = None,
        corrupt: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
    ) -> Path:
        """Write a bundle folder (``<key>/<file>`` or flat); ``corrupt`` files get one byte flipped."""
        dest.mkdir(parents=True, exist_ok=True)
        for (key, file), data in self.blobs.items():
            if keys is not None and key not in keys:
                continue
            if files is not None and (key, file) not in files:
                continue
            if (key, file) in corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            target = dest / file if flat else dest / key / file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return dest

    def served(self) -> dict[str, bytes]:
        """URL path -> content, laid out like a mirror of the store (``/<key>/<file>``)."""
        return {f"/{k}/{f}": d for (k, f), d in self.blobs.items()}


def make_fake_models(folder: Path, url_base: str = "http://127.0.0.1:9") -> FakeModels:
    """Write ``folder/models.yaml`` and return it with the file contents it describes."""
    from safetensors.torch import save as save_safetensors

    blobs: dict[tuple[str, str], bytes] = {
        ("alpha", "alpha.pth"): _torch_bytes(ALPHA_STATE),
        ("beta", "beta-prefix.pt"): _torch_bytes({"state_dict": {f"module.{k}": v for k, v in BETA_STATE.items()}}),
        ("textenc", "config.json"): json.dumps({"hidden_size": 4}).encode(),
        ("textenc", "vocab.txt"): b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nscratch\n",
        ("textenc", "model.safetensors"): save_safetensors({"emb": torch.ones(2, 2)}),
        ("textenc", "pytorch_model.bin"): _torch_bytes({"emb": torch.zeros(2, 2)}),
        ("detector", "det.pth"): _torch_bytes({"model": DET_STATE, "epoch": 3}),
        ("adapter", "adapter_a.pth"): _torch_bytes({"trainable_linearlayer": ADAPTER_STATE}),
        ("adapter", "adapter_b.pth"): _torch_bytes({"trainable_linearlayer": {"fc.0.weight": torch.ones(2, 2)}}),
    }

    def sha(k: str, f: str) -> str:
        return hashlib.sha256(blobs[(k, f)]).hexdigest()

    def spec(k: str, f: str, **extra: object) -> dict[str, object]:
        return {"sha256": sha(k, f), "bytes": len(blobs[(k, f)]), "url": f"{url_base}/{k}/{f}", **extra}

    manifest = {
        "format": 1,
        "models": {
            "alpha": {
                "kind": "sam", "arch": "vit_t", "licence": "Apache-2.0", "size_mb": 0.01,
                "files": {"alpha.pth": spec("alpha", "alpha.pth")},
            },
            "beta": {  # only a published prefix, no exact size (like open_clip's file names)
                "kind": "clip", "arch": "Tiny", "licence": "MIT", "size_mb": 0.01, "state_key": "state_dict",
                "files": {"beta-prefix.pt": {"sha256": sha("beta", "beta-prefix.pt")[:8],
                                             "url": f"{url_base}/beta/beta-prefix.pt"}},
            },
            "textenc": {
                "kind": "grounding", "arch": "tiny-bert", "licence": "Apache-2.0", "size_mb": 0.01,
                "files": {
                    "config.json": spec("textenc", "config.json"),
                    "vocab.txt": spec("textenc", "vocab.txt"),
                    "model.safetensors": spec("textenc", "model.safetensors", one_of="weights"),
                    "pytorch_model.bin": spec("textenc", "pytorch_model.bin", one_of="weights"),
                },
            },
            "detector": {
                "kind": "grounding", "arch": "TinyDet", "licence": "Apache-2.0", "size_mb": 0.01,
                "requires": ["textenc"], "state_key": "model",
                "files": {"det.pth": spec("detector", "det.pth")},
            },
            "adapter": {
                "kind": "adapter", "arch": "linear", "licence": "MIT", "size_mb": 0.01,
                "state_key": "trainable_linearlayer", "default_file": "adapter_a.pth",
                "files": {
                    "adapter_a.pth": {"git_blob_sha1": git_blob_id(blobs[("adapter", "adapter_a.pth")]),
                                      "url": f"{url_base}/adapter/adapter_a.pth"},
                    "adapter_b.pth": {"git_blob_sha1": git_blob_id(blobs[("adapter", "adapter_b.pth")]),
                                      "url": f"{url_base}/adapter/adapter_b.pth"},
                },
            },
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return FakeModels(path, blobs)


def install_all(fake: FakeModels, root: Path) -> None:
    """Place every file straight into a store folder (as if copied by hand)."""
    for (key, file), data in fake.blobs.items():
        (root / key).mkdir(parents=True, exist_ok=True)
        (root / key / file).write_bytes(data)


__all__ = ["FakeModels", "install_all", "make_fake_models", "git_blob_id"]
