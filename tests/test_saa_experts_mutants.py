"""Known-answer tests for the SAA+ expert-profile generator (inspector.detect.saa.experts) that the
mutation run of bench/mutate.sh showed missing: the file layout written, re-writing into an existing
tree, non-ASCII prompts kept readable, and validation errors naming the generated file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inspector.detect.saa import experts
from inspector.detect.saa.experts import ExpertPrompt, expert_profile, expert_profile_data, write_profiles
from inspector.profile import ProfileError

# the field order expert_profile_data builds (by hand from the function): the file keeps it
ORDER = ["name", "description", "author", "version", "pipeline", "object", "prompts", "properties", "saa"]


def _top_level_keys(text: str) -> list[str]:
    return [line.split(":", 1)[0] for line in text.splitlines()
            if line and not line.startswith((" ", "#", "-"))]


def test_written_files_keep_the_field_order_and_rewrite_in_place(tmp_path: Path) -> None:
    first = write_profiles(tmp_path)
    pcb1 = (tmp_path / "visa_pcb1" / "profile.yaml").read_text(encoding="utf-8")
    assert _top_level_keys(pcb1) == ORDER + ["reason_codes"]  # not sorted (sorted: author first)
    # properties keep their order too: object_count, top_k, max_area_ratio, then theta
    props = yaml.safe_load(pcb1)["properties"]
    assert list(props) == ["object_count", "top_k", "max_area_ratio", "min_iou_with_object"]
    assert props == {"object_count": 1, "top_k": 1, "max_area_ratio": 0.3, "min_iou_with_object": 0.5}
    carpet = (tmp_path / "mvtec_carpet" / "profile.yaml").read_text(encoding="utf-8")
    assert _top_level_keys(carpet) == ORDER
    # a second run into the same tree (the folders exist) rewrites the same files
    second = write_profiles(tmp_path)
    assert second == first
    assert (tmp_path / "visa_pcb1" / "profile.yaml").read_text(encoding="utf-8") == pcb1


def test_non_ascii_prompts_are_written_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(experts, "DATASETS", {"mvtec": ("MVTec-AD", {
        "piece": ExpertPrompt("pièce", 0.5, ("rayure sur la pièce",), filter_word="pièce")})})
    [target] = write_profiles(tmp_path)
    assert target == tmp_path / "mvtec_piece" / "profile.yaml"
    text = target.read_text(encoding="utf-8")
    assert "object: pièce\n" in text and "- rayure sur la pièce\n" in text  # not "\xE8" escapes
    data = yaml.safe_load(text)
    assert data["object"] == "pièce" and data["saa"] == {"variant": "saa+"}  # filter word = object: dropped


def test_an_invalid_table_entry_names_the_generated_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(experts.MVTEC, "broken", ExpertPrompt("broken", 0.9, ("defect",), top_k=0))
    assert expert_profile_data("mvtec", "broken")["properties"]["top_k"] == 0
    with pytest.raises(ProfileError, match=r"^mvtec_broken/profile\.yaml"):
        expert_profile("mvtec", "broken")
