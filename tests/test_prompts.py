"""FADE prompt ensembles: WinCLIP composition, industrial descriptions, profile overrides."""

from __future__ import annotations

import re

import pytest

from inspector.detect.prompts import (
    PromptLibraryError,
    class_specific_phrases,
    classification_prompts,
    compose_descriptions,
    encoder_texts,
    load_library,
    segmentation_prompts,
)
from inspector.profile import ProductProfile


def _profile(**kw) -> ProductProfile:
    return ProductProfile(name="p", pipeline="fade", object="bottle", **kw)


def test_winclip_classification_ensemble_sizes_and_content():
    ps = classification_prompts(_profile())
    assert len(ps.normal) == 154 and len(ps.anomalous) == 88
    assert "a cropped photo of the flawless bottle." in ps.normal
    assert "a photo of a bottle without defect for visual inspection." in ps.normal
    assert "a close-up photo of a damaged bottle." in ps.anomalous
    assert "a photo of the large bottle with damage." in ps.anomalous
    assert len(set(ps.normal)) == 154 and len(set(ps.anomalous)) == 88


def test_segmentation_ensemble_is_class_agnostic_and_large():
    lib = load_library()
    ps = segmentation_prompts(_profile())
    assert 400 <= len(lib.industrial_normal) and 400 <= len(lib.industrial_anomalous)
    assert len(ps.normal) == 154 + len(lib.industrial_normal)
    assert len(ps.anomalous) == 88 + len(lib.industrial_anomalous)
    assert "a cropped photo of the flawless object." in ps.normal
    assert not any("bottle" in p for p in ps.normal + ps.anomalous)
    # the composed descriptions are distinct on each side
    assert len(set(lib.industrial_normal)) == len(lib.industrial_normal)
    assert len(set(lib.industrial_anomalous)) == len(lib.industrial_anomalous)
    assert not set(lib.industrial_normal) & set(lib.industrial_anomalous)


def test_industrial_descriptions_read_as_phrases():
    lib = load_library()
    for text in lib.industrial_normal + lib.industrial_anomalous:
        assert "{" not in text and "}" not in text, text
        assert "  " not in text and text == text.strip(), text
        # wrapped as "a photo of a {text}." so they start without an article
        assert not re.match(r"^(a|an|the)\s", text), text
    # specific defect vocabulary is present on the anomalous side only
    joined_a = " ".join(lib.industrial_anomalous)
    for word in ("scratch", "crack", "dent", "contamination", "missing", "discoloured", "deformation"):
        assert word in joined_a, word


def test_profile_overrides_and_class_specific_phrases():
    p = _profile(prompts={"normal_states": ["good {object}", "clean"], "anomalous_states": ["{c} with a chip"],
                          "class_specific": ["broken neck. crack on {object}"]},
                 fade={"industrial_prompts": False})
    cls = classification_prompts(p)
    assert len(cls.normal) == 2 * 22 and len(cls.anomalous) == 22
    assert "a photo of a clean bottle." in cls.normal
    assert "a photo of the bottle with a chip." in cls.anomalous
    assert class_specific_phrases(p) == ["broken neck", "crack on bottle"]
    seg = segmentation_prompts(p)
    assert len(seg.normal) == 44
    assert seg.anomalous[-2:] == ("broken neck", "crack on bottle")
    assert "a photo of the object with a chip." in seg.anomalous


def test_content_hash_follows_prompts():
    a = segmentation_prompts(_profile())
    b = segmentation_prompts(_profile(prompts={"class_specific": ["cap missing"]}))
    assert a.content_hash() == segmentation_prompts(_profile()).content_hash()
    assert a.content_hash() != b.content_hash()
    # the object name does not enter the class-agnostic ensemble
    assert a.content_hash() == segmentation_prompts(ProductProfile(name="q", object="screw")).content_hash()


def test_encoder_texts_wrap_each_prompt():
    assert encoder_texts(["a cropped photo of the bottle.", "deep scratch"]) == [
        "a photo of a a cropped photo of the bottle.",
        "a photo of a deep scratch.",
    ]
    assert encoder_texts(["dent"], "{} on a part") == ["dent on a part"]


def test_compose_descriptions_rule():
    out = compose_descriptions(("{surface} with {item}", "{item} on {surface}"), ("s0", "s1", "s2"), ("x", "y"), 2)
    # item i, j-th pair: frame (i + j) mod F, surface (5i + 3j) mod S
    assert out == ["s0 with x", "x on s0", "y on s2", "s2 with y"]


def test_malformed_library_names_file_and_field(tmp_path):
    (tmp_path / "winclip.yaml").write_text("normal_states: ['{c}']\nanomalous_states: []\ntemplates: ['{}']\n")
    (tmp_path / "industrial.yaml").write_text("surfaces: [metal]\n")
    with pytest.raises(PromptLibraryError, match=r"winclip.yaml: anomalous_states"):
        load_library(tmp_path)
    (tmp_path / "winclip.yaml").write_text("normal_states: ['{c}']\nanomalous_states: ['bad']\ntemplates: ['{}']\n")
    with pytest.raises(PromptLibraryError, match=r"anomalous_states: entries must contain '\{c\}'"):
        load_library(tmp_path)
    with pytest.raises(PromptLibraryError, match="prompt file not found"):
        load_library(tmp_path / "nowhere")
