"""Known-answer tests of safe checkpoint loading (``inspector/models/store/checkpoint.py``).

The pickles whose globals are read are written byte by byte here (each string opcode, each global
opcode, zip and legacy layouts), and every refusal / corruption text is compared in full: it tells
an IT admin which file, which manifest entry and what to do. Written for the mutation run of
bench/mutation.md.
"""

from __future__ import annotations

import io
import logging
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from inspector.models.store import CheckpointRefusedError, ModelCorruptError, ModelEntry
from inspector.models.store import checkpoint as ck
from tests.support.checks import torch_bytes

FIX = ("`inspector models download k`, or on a station without internet "
       "`inspector models import <bundle folder or archive>`")
LOGGER = "inspector.models.store"


def _entry(**fields: object) -> ModelEntry:
    base: dict[str, object] = dict(key="k", kind="sam", arch="a", files=["f.pth"], sha256={}, size_mb=1.0,
                                   licence="MIT", urls={})
    base.update(fields)
    return ModelEntry(**base)  # type: ignore[arg-type]


def _corrupt(path: Path, detail: str) -> str:
    return f"model 'k': {path} is corrupt: {detail}. Replace it with {FIX}."


def _refused(path: Path, types: str, where: str, allows: str) -> str:
    return (f"model 'k': {path} holds Python objects of type {types}, which Inspector's weights-only loader refuses "
            f"({where} allows {allows}); nothing from the file was executed. If the file is genuine (its sha256 "
            f"matched the manifest), report the type(s) and the entry 'k' to the Inspector maintainers; otherwise "
            f"replace it with {FIX}.")


class Gadget:
    """Not a tensor: a weights-only load must refuse to build it."""

    def __init__(self) -> None:
        self.armed = True


GADGET = f"{__name__}.Gadget"


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    monkeypatch.setattr(logging.getLogger(LOGGER), "disabled", False)
    return caplog


# ---------------------------------------------------------------------------------- hand-made pickles
def sbu(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def bu(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def bu8(s: str) -> bytes:  # BINUNICODE8
    b = s.encode()
    return b"\x8d" + struct.pack("<Q", len(b)) + b


def uni(s: str) -> bytes:  # UNICODE (protocol 0)
    return b"V" + s.encode() + b"\n"


def glob(module: str, name: str) -> bytes:  # GLOBAL "module name"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


STACK_GLOBAL = b"\x93"
STOP = b"."
PROTO4 = b"\x80\x04"


def test_pickle_globals_of_each_string_opcode(tmp_path: Path) -> None:
    body = (PROTO4 + sbu("m1") + sbu("A") + STACK_GLOBAL + bu("m2.x") + bu("B") + STACK_GLOBAL
            + bu8("m3") + bu8("C") + STACK_GLOBAL + uni("m4") + uni("D") + STACK_GLOBAL
            + sbu("only_one") + b"N" + STACK_GLOBAL  # one string then None: not a (module, name) pair
            + glob("m5.y", "E") + glob("m1", "A") + STOP)
    p = tmp_path / "legacy.pth"
    p.write_bytes(body)
    assert ck._pickle_globals(p) == ["m1.A", "m2.x.B", "m3.C", "m4.D", "D.only_one", "m5.y.E"]


def test_pickle_globals_pairs_only_the_last_two_strings(tmp_path: Path) -> None:
    body = PROTO4 + sbu("a") + sbu("b") + sbu("c") + STACK_GLOBAL + sbu("d") + STACK_GLOBAL + STOP
    p = tmp_path / "x.pth"
    p.write_bytes(body)
    assert ck._pickle_globals(p) == ["b.c", "c.d"]


def test_pickle_globals_legacy_file_reads_four_pickles(tmp_path: Path) -> None:
    pickles = [PROTO4 + glob(f"p{i}", "G") + STOP for i in range(1, 6)]
    p = tmp_path / "legacy.pth"
    p.write_bytes(b"".join(pickles))
    assert ck._pickle_globals(p) == ["p1.G", "p2.G", "p3.G", "p4.G"]  # magic, protocol, sys info, object
    p.write_bytes(pickles[0] + b"\xff\xfe garbage")  # an unreadable rest keeps what was found
    assert ck._pickle_globals(p) == ["p1.G"]
    p.write_bytes(b"\xff" * 8)
    assert ck._pickle_globals(p) == []
    assert ck._pickle_globals(tmp_path / "absent.pth") == []


def test_pickle_globals_of_a_zip_read_the_first_data_pkl(tmp_path: Path) -> None:
    p = tmp_path / "z.pth"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("arch/xdata.pkl", PROTO4 + glob("not", "This") + STOP)
        zf.writestr("arch/data.pkl", PROTO4 + glob("first", "One") + glob("first", "One") + STOP)
        zf.writestr("other/data.pkl", PROTO4 + glob("second", "Two") + STOP)
    assert ck._pickle_globals(p) == ["first.One"]
    top = tmp_path / "top.pth"
    with zipfile.ZipFile(top, "w") as zf:
        zf.writestr("data.pkl", PROTO4 + glob("top", "Level") + STOP)
    assert ck._pickle_globals(top) == ["top.Level"]
    none = tmp_path / "none.pth"
    with zipfile.ZipFile(none, "w") as zf:
        zf.writestr("arch/data.bin", PROTO4 + glob("no", "Pkl") + STOP)
    assert ck._pickle_globals(none) == []


def test_pickle_globals_of_a_real_checkpoint(tmp_path: Path) -> None:
    import argparse

    p = tmp_path / "x.pth"
    p.write_bytes(torch_bytes({"w": torch.ones(1), "args": argparse.Namespace(a=1), "g": Gadget()}))
    assert ck._pickle_globals(p) == ["torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "collections.OrderedDict",
                                     "argparse.Namespace", GADGET]
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(torch_bytes({"g": Gadget()}, _use_new_zipfile_serialization=False))
    assert ck._pickle_globals(legacy) == [GADGET]


def test_refused_types_from_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x.pth"
    p.write_bytes(PROTO4 + glob("collections", "OrderedDict") + glob("torch.nn.modules.linear", "Linear")
                  + glob("argparse", "Namespace") + glob("evil", "Gadget") + glob("builtins", "eval") + STOP)
    assert ck._refused_types(p, ["argparse.Namespace"], Exception("GLOBAL x.Y")) == ["evil.Gadget", "builtins.eval"]
    assert ck._refused_types(p, [], Exception()) == ["argparse.Namespace", "evil.Gadget", "builtins.eval"]


def test_pickle_globals_pair_only_unicode_strings(tmp_path: Path) -> None:
    short_binstring = b"U\x01z"  # a (protocol 2) byte string, never a module or class name
    p = tmp_path / "x.pth"
    p.write_bytes(PROTO4 + sbu("m") + short_binstring + sbu("N") + STACK_GLOBAL + STOP)
    assert ck._pickle_globals(p) == ["m.N"]


def test_refused_types_without_torchs_private_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._weights_only_unpickler as wou

    def gone() -> dict:
        raise AttributeError("removed in a later torch")

    monkeypatch.setattr(wou, "_get_allowed_globals", gone)
    p = tmp_path / "x.pth"
    p.write_bytes(PROTO4 + glob("collections", "OrderedDict") + glob("torch._utils", "_rebuild_tensor_v2")
                  + glob("evil", "Gadget") + STOP)
    assert ck._refused_types(p, [], Exception()) == ["collections.OrderedDict", "evil.Gadget"]


def test_refused_types_fall_back_to_the_error_then_to_a_placeholder(tmp_path: Path) -> None:
    p = tmp_path / "x.pth"
    p.write_bytes(PROTO4 + glob("collections", "OrderedDict") + STOP)
    exc = pickle.UnpicklingError("Unsupported global: GLOBAL foo.Bar was not allowed; GLOBAL baz_2.Q too")
    assert ck._refused_types(p, [], exc) == ["foo.Bar", "baz_2.Q"]
    assert ck._refused_types(p, [], pickle.UnpicklingError("no names here")) == ["(an unlisted Python type)"]
    assert ck._refused_types(tmp_path / "absent", [], Exception("")) == ["(an unlisted Python type)"]


# ---------------------------------------------------------------------------------- small helpers
@pytest.mark.parametrize(
    "exc, line",
    [
        (RuntimeError("first line\nsecond line"), "first line"),
        (RuntimeError("  padded  \n"), "padded"),
        (RuntimeError(""), "RuntimeError"),
        (EOFError(), "EOFError"),
        (ValueError("   \n  "), "ValueError"),
        (RuntimeError("x" * 301), "x" * 300),
        (RuntimeError("use weights_only=False to load it"), "RuntimeError"),
        (pickle.UnpicklingError("a\nb weights_only"), "UnpicklingError"),
    ],
)
def test_first_line(exc: BaseException, line: str) -> None:
    assert ck._first_line(exc) == line


def test_is_torchscript(tmp_path: Path) -> None:
    def z(name: str, *members: str) -> Path:
        p = tmp_path / name
        with zipfile.ZipFile(p, "w") as zf:
            for m in members:
                zf.writestr(m, b"x")
        return p

    assert ck._is_torchscript(z("a.pt", "archive/data.pkl", "archive/constants.pkl")) is True
    assert ck._is_torchscript(z("b.pt", "constants.pkl")) is True
    assert ck._is_torchscript(z("c.pt", "archive/data.pkl", "archive/xconstants.pkl", "constants.pkl.bak")) is False
    (tmp_path / "d.pt").write_bytes(b"not a zip")
    assert ck._is_torchscript(tmp_path / "d.pt") is False
    assert ck._is_torchscript(tmp_path / "absent.pt") is False


# ---------------------------------------------------------------------------------- the refusal error
def test_checkpoint_refused_error_text_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "f.pth"
    manifest = tmp_path / "models.yaml"
    err = CheckpointRefusedError("k", str(path), ["a.B", "c.D"], manifest, ["argparse.Namespace", "x.Y"])  # type: ignore[arg-type]
    assert str(err) == _refused(path, "a.B, c.D", f"manifest entry 'k' in {manifest}", "argparse.Namespace, x.Y")
    assert err.detail == (f"holds Python objects of type a.B, c.D, which Inspector's weights-only loader refuses "
                          f"(manifest entry 'k' in {manifest} allows argparse.Namespace, x.Y); nothing from the file "
                          f"was executed")
    assert (err.key, err.path, err.command, err.refused, err.manifest) == (
        "k", path, "inspector models download k", ["a.B", "c.D"], manifest)
    assert isinstance(err.path, Path) and isinstance(err, ModelCorruptError)
    bare = CheckpointRefusedError("k", path, ["a.B"], None, [])
    assert str(bare) == _refused(path, "a.B", "manifest entry 'k'", "no extra types")


# ---------------------------------------------------------------------------------- loading
def test_safetensors_are_loaded_on_the_asked_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file
    import safetensors.torch as st

    p = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(3, dtype=torch.float32)}, str(p))
    out = ck._load_checkpoint(_entry(), p, torch.device("cpu"))
    assert list(out) == ["a"] and torch.equal(out["a"], torch.arange(3, dtype=torch.float32))
    calls: list[tuple[object, object]] = []
    real = st.load_file
    monkeypatch.setattr(st, "load_file", lambda f, **kw: calls.append((f, kw)) or real(f, **kw))
    ck._load_checkpoint(_entry(), p, torch.device("cpu"))
    assert calls == [(str(p), {"device": "cpu"})]


def test_unreadable_safetensors_is_corrupt(tmp_path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = tmp_path / "w.safetensors"
    p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(SafetensorError) as raw:
        load_file(str(p))
    with pytest.raises(ModelCorruptError) as err:
        ck._load_checkpoint(_entry(), p, "cpu")
    assert str(err.value) == _corrupt(p, f"not a readable safetensors file ({raw.value})")
    assert err.value.detail == f"not a readable safetensors file ({raw.value})"


def _torchscript(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.script(torch.nn.Linear(3, 2))
        buf = io.BytesIO()
        torch.jit.save(module, buf)
    p = tmp_path / "ts.pt"
    p.write_bytes(buf.getvalue())
    return p, module


def test_torchscript_needs_its_manifest_loader(tmp_path: Path) -> None:
    p, _ = _torchscript(tmp_path)
    m = tmp_path / "m.yaml"
    with pytest.raises(CheckpointRefusedError) as err:
        ck._load_checkpoint(_entry(safe_globals=["argparse.Namespace"]), p, "cpu", m)
    assert str(err.value) == _refused(p, "TorchScript archive (code)", f"manifest entry 'k' in {m}", "argparse.Namespace")
    assert err.value.refused == ["TorchScript archive (code)"]


def test_only_torchs_future_warning_is_silenced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p, module = _torchscript(tmp_path)
    real = torch.jit.load

    def load(f: str, map_location: object = None) -> torch.nn.Module:
        warnings.warn("jit is deprecated", FutureWarning)
        warnings.warn("something else", UserWarning)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return real(f, map_location=map_location)

    monkeypatch.setattr(torch.jit, "load", load)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ck._load_checkpoint(_entry(loader="torchscript"), p, "cpu")
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, "something else")]
    assert torch.equal(out["weight"], module.weight.detach())


def test_torchscript_loads_silently_as_a_state_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p, module = _torchscript(tmp_path)
    seen: list[object] = []
    real = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda f, map_location=None: seen.append((f, map_location)) or
                        real(f, map_location=map_location))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's jit deprecation warning is not passed on
        out = ck._load_checkpoint(_entry(loader="torchscript"), p, "cpu")
    assert type(out) is dict and list(out) == ["weight", "bias"]
    assert torch.equal(out["weight"], module.weight.detach()) and torch.equal(out["bias"], module.bias.detach())
    assert seen == [(str(p), "cpu")]


def test_broken_torchscript_is_corrupt(tmp_path: Path) -> None:
    p = tmp_path / "ts.pt"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/constants.pkl", b"xx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(RuntimeError) as raw:
            torch.jit.load(str(p))
    with pytest.raises(ModelCorruptError) as err:
        ck._load_checkpoint(_entry(loader="torchscript"), p, "cpu")
    assert str(err.value) == _corrupt(p, f"not a readable TorchScript archive ({raw.value})")
    assert type(err.value) is ModelCorruptError


@pytest.mark.parametrize("zip_format", [True, False])
def test_weights_only_load_with_mmap_for_zip_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zip_format: bool, debug_log: pytest.LogCaptureFixture
) -> None:
    p = tmp_path / "w.pth"
    p.write_bytes(torch_bytes({"w": torch.arange(4.0)}, _use_new_zipfile_serialization=zip_format))
    calls: list[dict[str, object]] = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, **kw: calls.append({"f": f, **kw}) or real(f, **kw))
    clock = iter([100.0, 102.5])
    monkeypatch.setattr(ck.time, "perf_counter", lambda: next(clock))
    out = ck._load_checkpoint(_entry(), p, "cpu")
    assert list(out) == ["w"] and torch.equal(out["w"], torch.arange(4.0))
    assert calls == [{"f": p, "map_location": "cpu", "weights_only": True, "mmap": zip_format}]
    assert [r.getMessage() for r in debug_log.records if r.name == LOGGER] == [f"loaded {p} in 2.50 s"]
    assert debug_log.records[-1].levelno == logging.DEBUG


def test_map_location_is_passed_on(tmp_path: Path) -> None:
    p = tmp_path / "w.pth"
    p.write_bytes(torch_bytes({"w": torch.arange(4.0)}))
    out = ck._load_checkpoint(_entry(), p, "meta")
    assert out["w"].device.type == "meta" and out["w"].shape == (4,)


def test_safe_globals_are_allowed_only_when_listed(tmp_path: Path) -> None:
    import argparse

    p = tmp_path / "w.pth"
    p.write_bytes(torch_bytes({"w": torch.ones(2), "args": argparse.Namespace(lr=0.5)}))
    out = ck._load_checkpoint(_entry(safe_globals=["argparse.Namespace"]), p, "cpu")
    assert out["args"] == argparse.Namespace(lr=0.5) and torch.equal(out["w"], torch.ones(2))
    with pytest.raises(CheckpointRefusedError) as err:
        ck._load_checkpoint(_entry(), p, "cpu", None)
    assert str(err.value) == _refused(p, "argparse.Namespace", "manifest entry 'k'", "no extra types")


def test_arbitrary_objects_are_refused_and_logged(tmp_path: Path, debug_log: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "evil.pth"
    p.write_bytes(torch_bytes({"w": torch.ones(1), "g": Gadget()}))
    m = tmp_path / "models.yaml"
    with pytest.raises(CheckpointRefusedError) as err:
        ck._load_checkpoint(_entry(safe_globals=["argparse.Namespace"]), p, "cpu", m)
    assert str(err.value) == _refused(p, GADGET, f"manifest entry 'k' in {m}", "argparse.Namespace")
    assert err.value.__cause__ is None and err.value.__suppress_context__ is True
    with pytest.raises(pickle.UnpicklingError) as raw:
        torch.load(p, weights_only=True)
    msgs = [r.getMessage() for r in debug_log.records if r.name == LOGGER]
    assert msgs == [f"weights-only load of {p} refused: {raw.value}"]
    assert debug_log.records[0].levelno == logging.DEBUG


def _raising_load(message: str):  # type: ignore[no-untyped-def]
    def load(*a: object, **k: object) -> None:
        raise pickle.UnpicklingError(message)

    return load


def test_malformed_pickle_is_corrupt_not_refused(tmp_path: Path) -> None:
    p = tmp_path / "junk.pth"
    p.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ModelCorruptError) as err:
        ck._load_checkpoint(_entry(), p, "cpu")
    assert str(err.value) == _corrupt(p, "not a readable PyTorch checkpoint (its pickle is malformed)")
    assert type(err.value) is ModelCorruptError and isinstance(err.value.__cause__, pickle.UnpicklingError)


def test_refusal_without_globals_in_the_file_uses_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "junk.pth"
    p.write_bytes(b"\xff" * 16)  # no readable globals
    monkeypatch.setattr(torch, "load", _raising_load("Unsupported GLOBAL evil.Thing was not allowed"))
    with pytest.raises(CheckpointRefusedError) as err:
        ck._load_checkpoint(_entry(), p, "cpu")
    assert str(err.value) == _refused(p, "evil.Thing", "manifest entry 'k'", "no extra types")


def test_refusal_with_globals_but_torchs_other_wording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "evil.pth"
    p.write_bytes(torch_bytes({"g": Gadget()}))
    monkeypatch.setattr(torch, "load", _raising_load("Weights only load failed. Re-running with weights_only=False"))
    with pytest.raises(CheckpointRefusedError) as err:
        ck._load_checkpoint(_entry(), p, "cpu")
    assert err.value.refused == [GADGET]


@pytest.mark.parametrize(
    "data, detail",
    [
        (b"\x80\x02}q\x00.", "Invalid magic number; corrupt file?"),
        (b"", "EOFError"),
    ],
)
def test_unreadable_checkpoint_names_the_first_line(tmp_path: Path, data: bytes, detail: str) -> None:
    p = tmp_path / "w.pth"
    p.write_bytes(data)
    with pytest.raises(ModelCorruptError) as err:
        ck._load_checkpoint(_entry(), p, "cpu")
    assert str(err.value) == _corrupt(p, f"not a readable PyTorch checkpoint ({detail})")


@pytest.mark.parametrize("exc", [RuntimeError("bad\nmore"), EOFError("bad"), ValueError("bad"),
                                 zipfile.BadZipFile("bad")])
def test_each_read_error_is_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    p = tmp_path / "w.pth"
    p.write_bytes(torch_bytes({"w": torch.ones(1)}))

    def load(*a: object, **k: object) -> None:
        raise exc

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(ModelCorruptError) as err:
        ck._load_checkpoint(_entry(), p, "cpu")
    assert str(err.value) == _corrupt(p, "not a readable PyTorch checkpoint (bad)")
    assert err.value.__cause__ is exc
