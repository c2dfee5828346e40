"""The heatmap and contours sit exactly on the pixels they describe (pyqtgraph axis order!)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from inspector.detect.base import Region  # noqa: E402
from inspector.ui.image_view import ImageView, jet_lut  # noqa: E402

H, W = 30, 50  # not square: a transposed map would land elsewhere
ROWS, COLS = slice(5, 10), slice(30, 40)


def _grab_rgb(view: ImageView) -> np.ndarray:
    img = view.graphics.grab().toImage().convertToFormat(view.graphics.grab().toImage().Format.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    arr = np.frombuffer(img.constBits(), np.uint8, count=bpl * h).reshape(h, bpl)[:, : w * 3]
    return arr.reshape(h, w, 3).copy()


@pytest.fixture
def view(qtbot):
    v = ImageView()
    qtbot.addWidget(v)
    v.resize(500, 400)
    v.show()
    qtbot.waitExposed(v)
    return v


def test_jet_lut_matches_opencv_ends() -> None:
    lut = jet_lut()
    assert lut.shape == (256, 3)
    assert lut[0, 2] > 100 and lut[0, 0] == 0  # dark blue at 0
    assert lut[255, 0] > 100 and lut[255, 2] == 0  # dark red at 1


def test_heatmap_lands_on_its_pixels(view: ImageView, qtbot) -> None:
    image = np.full((H, W, 3), 128, np.uint8)
    amap = np.zeros((H, W), np.float32)
    amap[ROWS, COLS] = 1.0
    view.opacity.setValue(100)
    view.show_inspection(image, amap, vmax=1.0)
    qtbot.wait(50)
    rgb = _grab_rgb(view).astype(int)
    hot = (rgb[..., 0] > 100) & (rgb[..., 2] < 60)  # jet(1) is red, jet(0) blue
    ys, xs = np.nonzero(hot)
    assert len(xs) > 50
    pts = [view.widget_to_image(x, y) for x, y in zip(xs[::7], ys[::7], strict=False)]
    px = np.array([p.x() for p in pts])
    py = np.array([p.y() for p in pts])
    # every red screen pixel maps into the hot block (one screen pixel of slack at the edges)
    slack = 0.2
    assert px.min() >= COLS.start - slack and px.max() <= COLS.stop + slack
    assert py.min() >= ROWS.start - slack and py.max() <= ROWS.stop + slack
    # and the block is covered: its centre is red on screen
    c = view.image_to_widget((COLS.start + COLS.stop) / 2, (ROWS.start + ROWS.stop) / 2)
    r = rgb[int(c.y()), int(c.x())]
    assert r[0] > 100 and r[2] < 60
    # a point outside the block (same rows, other columns) is blue
    o = view.image_to_widget(5.5, 7.5)
    b = rgb[int(o.y()), int(o.x())]
    assert b[2] > 100 and b[0] < 60


def test_low_resolution_map_is_stretched_over_the_image(view: ImageView, qtbot) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    amap = np.zeros((3, 5), np.float32)  # one cell = 10×10 image pixels
    amap[0, 3] = 1.0  # image rows 0..10, cols 30..40
    view.opacity.setValue(100)
    view.show_inspection(image, amap)
    qtbot.wait(50)
    rgb = _grab_rgb(view).astype(int)
    inside = view.image_to_widget(35, 5)
    outside = view.image_to_widget(35, 15)
    assert rgb[int(inside.y()), int(inside.x())][0] > 100
    assert rgb[int(outside.y()), int(outside.x())][2] > 100


def test_contours_boxes_and_ground_truth_follow_the_mask(view: ImageView) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    mask = np.zeros((H, W), bool)
    mask[ROWS, COLS] = True
    region = Region(box=(30, 5, 40, 10), score=0.9, label="scratch", area_px=50, mask=mask)
    gt = np.zeros((H, W), bool)
    gt[0:3, 0:4] = True
    view.show_inspection(image, None, [region], gt_mask=gt)
    assert len(view.contour_items) == 1 and len(view.box_items) == 1 and len(view.gt_items) == 1
    rect = view.contour_items[0].path().boundingRect()
    assert (rect.left(), rect.top(), rect.right(), rect.bottom()) == (30.5, 5.5, 39.5, 9.5)  # pixel centres
    box = view.box_items[0].rect()
    assert (box.left(), box.top(), box.width(), box.height()) == (30, 5, 10, 5)
    g = view.gt_items[0].path().boundingRect()
    assert (g.left(), g.top(), g.right(), g.bottom()) == (0.5, 0.5, 3.5, 2.5)
    # item 13: what the pipeline knows, the box centre ((30+40)//2, (5+10)//2) and its size
    assert view.label_items[0].toPlainText() == "scratch 0.90 · (35, 7) · 10×5 px"
    view.contour_check.setChecked(False)
    assert not view.contour_items[0].isVisible()
    view.toggle_heatmap()
    assert not view.heat_item.isVisible()
    view.toggle_reference()
    assert view.ref_panel.isVisible()


def test_zoom_keys_and_zoom_to_region(qtbot) -> None:
    from inspector.ui.image_view import ImageView

    view = ImageView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    image = np.zeros((H, W, 3), np.uint8)
    region = Region(box=(30, 5, 40, 10), score=0.9, label="scratch", area_px=50, mask=None)
    view.show_inspection(image, None, [region])
    full = view.visible_rect()
    view.zoom_in()
    assert view.visible_rect().width() == pytest.approx(full.width() / 1.25, rel=0.02)
    view.zoom_out()
    assert view.visible_rect().width() == pytest.approx(full.width(), rel=0.02)
    assert view.zoom_to_region(0) and not view.zoom_to_region(5)
    shown = view.visible_rect()
    assert shown.contains(35, 7.5) and shown.height() <= 2 * 5 + 1 or shown.width() <= 2 * 10 + 1
