"""Known-answer tests of :func:`inspector.detect.clip_maps.create_map_provider` and :class:`ClipMap`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from inspector.detect.clip_maps import PROVIDERS, ClipMap, create_map_provider


def test_each_provider_name_builds_a_fresh_instance_of_its_class() -> None:
    from inspector.detect.aprilgan import AprilGanMap
    from inspector.detect.fade import FadeLanguageMap

    a, b = create_map_provider("aprilgan"), create_map_provider("aprilgan")
    assert type(a) is AprilGanMap and a is not b and a.name == "aprilgan"
    f = create_map_provider("fade")
    assert type(f) is FadeLanguageMap and f.name == "fade" and f.fuse_vision is False
    assert sorted(PROVIDERS) == ["aprilgan", "fade"]


@pytest.mark.parametrize("name", ["gem", "FADE", ""])
def test_an_unknown_provider_names_the_known_ones(name: str) -> None:
    msg = f"unknown CLIP map provider {name!r}; choose one of aprilgan, fade"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        create_map_provider(name)


def test_clip_map_fields() -> None:
    m = np.zeros((2, 3), np.float32)
    cm = ClipMap(m, 0.25)
    assert cm.anomaly_map is m and cm.image_score == 0.25 and cm.timings == {}
    assert ClipMap(m, 0.5).timings is not cm.timings
