"""Overlays: the one heat-scale rule, the jet colour map and the drawing, used by every view."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.detect.base import Region
from inspector.overlay import colorize_map, heat_vmax, render_overlay


def test_render_overlay() -> None:
    image = np.full((40, 60, 3), 100, np.uint8)
    assert np.array_equal(render_overlay(image, None), image)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 20:35] = True
    region = Region(box=(20, 10, 34, 19), score=0.9, mask=mask)
    amap = np.zeros((10, 15), np.float32)
    amap[2:5, 5:9] = 1.0
    out = render_overlay(image, amap, [region])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[10, 27]) in {(255, 0, 0), (255, 64, 64)}  # red contour / box on the mask edge
    assert out[0, 0, 2] > out[0, 0, 0]  # cold (blue) heat far from the hot spot
    assert image[0, 0, 0] == 100  # the input is not modified


@pytest.mark.parametrize(("threshold", "expected"), [(0.5, 1.0), (0.3, 0.6), (2.5, 5.0), (0.0, 1.0), (-1.0, 1.0), (None, 1.0)])
def test_heat_vmax_puts_the_threshold_mid_scale(threshold: float | None, expected: float) -> None:
    assert heat_vmax(threshold) == pytest.approx(expected)


def test_threshold_is_mid_scale_in_the_colour_map() -> None:
    """A pixel exactly at the decision threshold is coloured like 0.5 on a [0, 1] scale."""
    threshold = 0.3
    at = colorize_map(np.full((1, 1), threshold, np.float32), 0.0, heat_vmax(threshold))
    u8 = np.full((1, 1), int(0.5 * 255), np.uint8)
    expected = cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    assert np.array_equal(at, expected)


def test_colorize_map_ends_are_jet_blue_and_red() -> None:
    out = colorize_map(np.array([[0.0, 2.0]], np.float32), 0.0, 2.0)
    assert out[0, 0, 2] > 100 and out[0, 0, 0] == 0  # jet starts dark blue
    assert out[0, 1, 0] > 100 and out[0, 1, 2] == 0  # and ends dark red
