"""The one list of pipelines (``inspector.params.PIPELINE_PARAMS``) and everything derived from it."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from inspector.cli import main
from inspector.detect import available_pipelines, detector_class
from inspector.params import PIPELINE_PARAMS
from inspector.profile import PIPELINES, Pipeline, ProductProfile, profile_from_dict


def test_patchcore_is_first_and_the_default() -> None:
    assert PIPELINES[0] == "patchcore"
    assert ProductProfile(name="p").pipeline == "patchcore"


def test_profile_choices_and_sections_follow_the_params_list() -> None:
    assert PIPELINES == tuple(PIPELINE_PARAMS)
    assert typing.get_args(Pipeline) == PIPELINES
    for name, params in PIPELINE_PARAMS.items():
        assert ProductProfile.model_fields[name].annotation is params
        assert profile_from_dict({"name": "p", "pipeline": name}).pipeline == name


def test_every_pipeline_has_a_registered_detector() -> None:
    assert available_pipelines() == sorted(PIPELINES)
    for name in PIPELINES:
        assert detector_class(name).__name__.endswith("Detector")


def test_cli_offers_the_same_pipelines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["profile", "new", "p", "--object", "o", "--pipeline", "nope", "--dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"choose from {', '.join(PIPELINES)}" in capsys.readouterr().err.replace("'", "")
    assert main(["profile", "new", "p", "--object", "o", "--dir", str(tmp_path)]) == 0
    assert ProductProfile.model_validate(
        {k: v for k, v in yaml.safe_load((tmp_path / "p" / "profile.yaml").read_text()).items()}
    ).pipeline == PIPELINES[0]


def test_the_gui_command_offers_every_source_kind() -> None:
    from inspector.commands.gui import SOURCE_KINDS as CLI_KINDS
    from inspector.sources import SOURCE_KINDS

    assert CLI_KINDS == SOURCE_KINDS
