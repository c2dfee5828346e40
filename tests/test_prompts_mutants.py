"""Known answers for the prompt library's reader and assembly (``inspector/detect/prompts.py``).

Written against mutmut's survivors: every message is matched whole (``^…$``), every composed
list is written out by hand, and the hash is recomputed from a JSON string typed in the test.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from inspector.detect.prompts import (
    PromptLibraryError,
    PromptSet,
    encoder_texts,
    fill_state,
    load_library,
    prompts_dir,
)

WINCLIP = "normal_states: ['{c}', ' flawless {c} ']\nanomalous_states: ['damaged {c}']\ntemplates: ['a {}', '{} here']\n"
INDUSTRIAL = """surfaces: [s0, s1, s2]
normal:
  frames: ["{surface} with {item}", "{item} on {surface}"]
  items: [x, y]
  phrases: [" clean part "]
  per_item: 2
anomalous:
  frames: ["{item} on {surface}"]
  items: [dent]
  phrases: [scratch]
"""


def write(folder: Path, winclip: str = WINCLIP, industrial: str = INDUSTRIAL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "winclip.yaml").write_text(winclip, encoding="utf-8")
    (folder / "industrial.yaml").write_text(industrial, encoding="utf-8")
    return folder


def fails(folder: Path, message: str) -> None:
    with pytest.raises(PromptLibraryError, match="^" + re.escape(message) + "$"):
        load_library(folder)


def test_library_fields_by_hand(tmp_path: Path) -> None:
    lib = load_library(write(tmp_path / "a"))
    assert lib.normal_states == ("{c}", "flawless {c}")  # entries are stripped
    assert lib.anomalous_states == ("damaged {c}",)
    assert lib.templates == ("a {}", "{} here")
    assert lib.segmentation_object == "object"  # the default
    # phrases first, then item i with frame (i + j) mod 2 and surface (5i + 3j) mod 3, j < 2
    assert lib.industrial_normal == ("clean part", "s0 with x", "x on s0", "y on s2", "s2 with y")
    # per_item defaults to 1: item 0, frame 0, surface 0
    assert lib.industrial_anomalous == ("scratch", "dent on s0")
    other = load_library(write(tmp_path / "b", WINCLIP + "segmentation_object: ' part '\n"))
    assert other.segmentation_object == "part"


def test_industrial_section_errors_name_file_and_field(tmp_path: Path) -> None:
    d = tmp_path / "p"
    ipath = d / "industrial.yaml"
    write(d, industrial="surfaces: [s0]\nanomalous: {frames: ['{item} on {surface}'], items: [a], phrases: [b]}\n")
    fails(d, f"{ipath}: normal: missing section (needs frames, items, phrases, per_item)")
    write(d, industrial=INDUSTRIAL.replace('"{item} on {surface}"]\n  items: [x, y]', '"{item} on it"]\n  items: [x, y]'))
    fails(d, f"{ipath}: normal.frames: '{{item}} on it' must contain both {{surface}} and {{item}}")
    write(d, industrial=INDUSTRIAL.replace('["{surface} with {item}", ', '["{surface} alone", '))
    fails(d, f"{ipath}: normal.frames: '{{surface}} alone' must contain both {{surface}} and {{item}}")
    for bad in ("0", "3", "'2'", "1.5"):
        write(d, industrial=INDUSTRIAL.replace("per_item: 2", f"per_item: {bad}"))
        shown = {"0": "0", "3": "3", "'2'": "'2'", "1.5": "1.5"}[bad]
        fails(d, f"{ipath}: normal.per_item: must be an integer in [1, 2], got {shown}")
    write(d, industrial=INDUSTRIAL.replace("items: [x, y]", "items: []"))
    fails(d, f"{ipath / 'normal'}: items: must be a non-empty list of non-empty strings")
    write(d, industrial=INDUSTRIAL.replace('phrases: [" clean part "]', "phrases: ['  ']"))
    fails(d, f"{ipath / 'normal'}: phrases: must be a non-empty list of non-empty strings")
    write(d, industrial=INDUSTRIAL.replace('frames: ["{item} on {surface}"]', "frames: [3]"))
    fails(d, f"{ipath / 'anomalous'}: frames: must be a non-empty list of non-empty strings")
    write(d, industrial=INDUSTRIAL.replace("surfaces: [s0, s1, s2]", "surfaces: s0"))
    fails(d, f"{ipath}: surfaces: must be a non-empty list of non-empty strings")


def test_reader_errors(tmp_path: Path) -> None:
    d = tmp_path / "r"
    write(d, winclip="- a list\n")
    fails(d, f"{d / 'winclip.yaml'}: expected a mapping at the top level")
    write(d, winclip="normal_states: [\n")
    with pytest.raises(PromptLibraryError, match="^" + re.escape(f"{d / 'winclip.yaml'}: cannot read prompt file (")):
        load_library(d)
    (d / "winclip.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PromptLibraryError, match="^" + re.escape(f"{d / 'winclip.yaml'}: cannot read prompt file (")):
        load_library(d)
    write(d, winclip=WINCLIP.replace("templates: ['a {}', '{} here']", "templates: ['a', '{} here']"))
    fails(d, f"{d / 'winclip.yaml'}: templates: entries must contain '{{}}', e.g. not 'a'")
    write(d, winclip=WINCLIP + "segmentation_object: 7\n")
    fails(d, f"{d / 'winclip.yaml'}: segmentation_object: must be a non-empty string")
    write(d, winclip=WINCLIP + "segmentation_object: ' '\n")
    fails(d, f"{d / 'winclip.yaml'}: segmentation_object: must be a non-empty string")
    (d / "industrial.yaml").unlink()
    fails(d, f"{d / 'industrial.yaml'}: prompt file not found; reinstall Inspector or restore the file")


def test_library_is_reread_when_a_file_changes(tmp_path: Path) -> None:
    import os

    d = write(tmp_path / "m")
    assert load_library(d).anomalous_states == ("damaged {c}",)
    (d / "winclip.yaml").write_text(WINCLIP.replace("damaged {c}", "cracked {c}"), encoding="utf-8")
    os.utime(d / "winclip.yaml", (1_000_000, 1_000_000))
    assert load_library(d).anomalous_states == ("cracked {c}",)
    text = INDUSTRIAL.replace("phrases: [scratch]", "phrases: [burr]")
    (d / "industrial.yaml").write_text(text, encoding="utf-8")
    os.utime(d / "industrial.yaml", (2_000_000, 2_000_000))
    assert load_library(d).industrial_anomalous[0] == "burr"
    # no folder: the shipped one
    assert load_library() == load_library(prompts_dir())
    assert load_library().templates == load_library(str(prompts_dir())).templates


def test_prompt_set_rules() -> None:
    s = PromptSet(normal=("a",), anomalous=("b", "c"))
    assert len(s) == 3
    assert s.content_hash() == hashlib.sha256(b'[["a"],["b","c"]]').hexdigest()
    assert PromptSet(("é",), ("b",)).content_hash() == hashlib.sha256('[["é"],["b"]]'.encode()).hexdigest()
    with pytest.raises(PromptLibraryError,
                       match=r"^a prompt ensemble needs prompts on both sides \(normal: 0, anomalous: 2\)$"):
        PromptSet((), ("b", "c"))
    with pytest.raises(PromptLibraryError,
                       match=r"^a prompt ensemble needs prompts on both sides \(normal: 1, anomalous: 0\)$"):
        PromptSet(("a",), ())


def test_fill_state_and_encoder_texts_by_hand() -> None:
    assert fill_state("{c} with a {c}", "nut") == "nut with a nut"
    assert fill_state("broken {object}", "nut") == "broken nut"
    assert fill_state("{object} and {c}", "nut") == "nut and nut"
    assert fill_state("scratched", "nut") == "scratched nut"
    assert encoder_texts([" scratch. ", "dent"]) == ["a photo of a scratch.", "a photo of a dent."]
    assert encoder_texts(["hole ..", "x"], "see {}!") == ["see hole!", "see x!"]


def test_compose_descriptions_with_coprime_counts_by_hand() -> None:
    from inspector.detect.prompts import compose_descriptions

    frames = ("A {item} {surface}", "B {item} {surface}", "C {item} {surface}")
    # 3 frames and 4 surfaces: (i + j) mod 3 and (5i + 3j) mod 4 differ from (i − j), (5i − 3j)
    out = compose_descriptions(frames, ("s0", "s1", "s2", "s3"), ("x", "y"), 2)
    assert out == ["A x s0", "B x s3", "B y s1", "C y s0"]


def test_encoder_texts_strip_only_full_stops() -> None:
    assert encoder_texts(["XBOX", "tax."]) == ["a photo of a XBOX.", "a photo of a tax."]
