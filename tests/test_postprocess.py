"""Tests for sw.runtime.postprocess."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
from PIL import Image

from sw.runtime.postprocess import (
    COCO80_TO_91,
    Detection,
    HeadSpec,
    ImageError,
    Letterbox,
    box_iou,
    class_names,
    decode_head,
    detect,
    draw_detections,
    letterbox,
    load_image,
    nms,
    save_image_atomic,
    to_coco_results,
)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# -- letterbox ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("w", "h", "new_w", "new_h"),
    [(800, 400, 416, 208), (300, 600, 208, 416), (100, 100, 416, 416)],
    ids=["landscape", "portrait", "square"],
)
def test_letterbox_geometry(w: int, h: int, new_w: int, new_h: int) -> None:
    img = np.full((h, w, 3), (200, 10, 50), dtype=np.uint8)
    out, lb = letterbox(img, 416)
    assert out.shape == (416, 416, 3) and out.dtype == np.uint8
    assert lb.scale == pytest.approx(min(416 / w, 416 / h))
    assert (lb.orig_w, lb.orig_h, lb.size) == (w, h, 416)
    assert lb.pad_x == (416 - new_w) // 2
    assert lb.pad_y == (416 - new_h) // 2
    content = out[lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w]
    assert np.all(content == (200, 10, 50))
    mask = np.ones((416, 416), dtype=bool)
    mask[lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w] = False
    assert mask.sum() == 416 * 416 - new_w * new_h
    assert np.all(out[mask] == 128)


def test_letterbox_content_placement_landscape() -> None:
    # Left half red, right half blue: the split lands at the horizontal center.
    img = np.zeros((100, 200, 3), dtype=np.uint8)
    img[:, :100] = (255, 0, 0)
    img[:, 100:] = (0, 0, 255)
    out, lb = letterbox(img, 416)
    assert (lb.pad_x, lb.pad_y, lb.scale) == (0, 104, pytest.approx(2.08))
    assert tuple(out[208, 10]) == (255, 0, 0)
    assert tuple(out[208, 400]) == (0, 0, 255)
    assert tuple(out[103, 10]) == (128, 128, 128)
    assert tuple(out[104, 10]) == (255, 0, 0)
    assert tuple(out[311, 10]) == (255, 0, 0)
    assert tuple(out[312, 10]) == (128, 128, 128)


def test_letterbox_to_original_inverts() -> None:
    img = np.zeros((480, 640, 3), dtype=np.uint8)
    _, lb = letterbox(img, 416)
    assert lb.scale == pytest.approx(0.65) and (lb.pad_x, lb.pad_y) == (0, 52)
    orig = np.array([[100.0, 50.0, 300.0, 400.0]])
    lbox = orig * lb.scale + np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y])
    np.testing.assert_allclose(lb.to_original(lbox), orig, atol=1e-9)


def test_to_original_clips() -> None:
    lb = Letterbox(scale=0.5, pad_x=10, pad_y=20, orig_w=100, orig_h=50, size=416)
    got = lb.to_original(np.array([[0.0, 0.0, 500.0, 500.0]]))
    np.testing.assert_allclose(got, [[0.0, 0.0, 100.0, 50.0]])


# -- load_image --------------------------------------------------------------------------
def test_load_image_missing(tmp_path) -> None:
    p = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="nope.jpg"):
        load_image(p)


def test_load_image_text_file(tmp_path) -> None:
    p = tmp_path / "x.jpg"
    p.write_text("this is not an image\n")
    with pytest.raises(ImageError) as ei:
        load_image(p)
    assert str(p) in str(ei.value)


def test_load_image_truncated_jpeg(tmp_path) -> None:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "trunc.jpg"
    p.write_bytes(buf.getvalue()[:100])
    with pytest.raises(ImageError) as ei:
        load_image(p)
    assert str(p) in str(ei.value)


def test_load_image_directory(tmp_path) -> None:
    with pytest.raises(ImageError, match=str(tmp_path.name)):
        load_image(tmp_path)


def test_load_image_rgb_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    got = load_image(p)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, arr)


def test_load_image_grayscale(tmp_path) -> None:
    g = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    p = tmp_path / "g.png"
    Image.fromarray(g).save(p)
    with Image.open(p) as im:
        assert im.mode == "L"
    got = load_image(p)
    assert got.shape == (5, 6, 3) and got.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], g)


def test_load_image_rgba(tmp_path) -> None:
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 77
    p = tmp_path / "a.png"
    Image.fromarray(rgba).save(p)
    got = load_image(p)
    assert got.shape == (4, 5, 3)
    assert np.all(got == (10, 20, 30))


def test_load_image_palette(tmp_path) -> None:
    im = Image.new("RGB", (3, 2), (40, 50, 60)).convert("P", palette=Image.Palette.ADAPTIVE)
    p = tmp_path / "p.png"
    im.save(p)
    got = load_image(p)
    assert got.shape == (2, 3, 3)
    assert np.all(got == (40, 50, 60))


# -- decode_head -------------------------------------------------------------------------
def test_decode_yolo_one_cell() -> None:
    anchors = ((10.0, 14.0), (23.0, 27.0), (37.0, 58.0))
    spec = HeadSpec("yolo", anchors, 2)
    h, w, per = 4, 5, 7
    head = np.full((h, w, 3 * per), -20.0, dtype=np.float32)
    row, col, a = 2, 3, 1
    base = a * per
    head[row, col, base + 0] = _logit(0.25)  # tx
    head[row, col, base + 1] = _logit(0.75)  # ty
    head[row, col, base + 2] = math.log(2.0)  # tw
    head[row, col, base + 3] = math.log(0.5)  # th
    head[row, col, base + 4] = _logit(0.9)  # objectness
    head[row, col, base + 5] = _logit(0.2)
    head[row, col, base + 6] = _logit(0.8)
    boxes, obj, probs = decode_head(head, spec, 320)
    n = h * w * 3
    assert boxes.shape == (n, 4) and obj.shape == (n,) and probs.shape == (n, 2)
    assert boxes.dtype == np.float64
    i = (row * w + col) * 3 + a
    bx, by = (col + 0.25) / w * 320, (row + 0.75) / h * 320
    bw, bh = 2.0 * 23.0, 0.5 * 27.0
    np.testing.assert_allclose(
        boxes[i], [bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], rtol=1e-6)
    assert obj[i] == pytest.approx(0.9, rel=1e-6)
    np.testing.assert_allclose(probs[i], [0.2, 0.8], rtol=1e-5)
    assert np.argmax(obj) == i
    assert np.all(np.delete(obj, i) < 1e-8)


def test_decode_region_softmax() -> None:
    anchors = ((1.0, 2.0), (3.0, 1.5))
    spec = HeadSpec("region", anchors, 3)
    h, w, per = 13, 13, 8
    head = np.zeros((h, w, 2 * per))
    row, col, a = 6, 0, 1
    base = a * per
    head[row, col, base + 0] = 0.0  # sigmoid 0.5
    head[row, col, base + 1] = _logit(0.1)
    head[row, col, base + 2] = math.log(2.0)
    head[row, col, base + 3] = 0.0
    head[row, col, base + 4] = _logit(0.6)
    head[row, col, base + 5:base + 8] = [1.0, 2.0, 3.0]
    boxes, obj, probs = decode_head(head, spec, 416)
    i = (row * w + col) * 2 + a
    bx, by = (col + 0.5) / w * 416, (row + 0.1) / h * 416
    bw, bh = 2.0 * 3.0 / w * 416, 1.5 / h * 416
    np.testing.assert_allclose(boxes[i], [bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2])
    assert obj[i] == pytest.approx(0.6)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(probs[i], e / e.sum())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0], [1 / 3] * 3)


def test_decode_huge_logits_finite() -> None:
    spec = HeadSpec("region", ((1.0, 1.0),), 2)
    head = np.array([[[1e4, -1e4, 1e4, 1e4, -1e4, 1e4, -1e4]]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        boxes, obj, probs = decode_head(head, spec, 416)
    assert np.all(np.isfinite(boxes)) and np.all(np.isfinite(obj))
    np.testing.assert_allclose(probs[0], [1.0, 0.0])
    assert obj[0] == pytest.approx(0.0)
    spec_y = HeadSpec("yolo", ((10.0, 10.0),), 2)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        boxes, obj, probs = decode_head(head, spec_y, 416)
    assert np.all(np.isfinite(boxes)) and np.all(np.isfinite(probs))


def test_decode_head_bad_shape() -> None:
    with pytest.raises(ValueError):
        decode_head(np.zeros((2, 2, 10)), HeadSpec("yolo", ((1.0, 1.0),), 80), 416)
    with pytest.raises(ValueError):
        decode_head(np.zeros((2, 2, 6)), HeadSpec("ssd", ((1.0, 1.0),), 1), 416)


# -- IoU / NMS ---------------------------------------------------------------------------
def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])


def test_nms_greedy() -> None:
    boxes = np.array([
        [0, 0, 10, 10],     # 0: score 0.8
        [1, 1, 11, 11],     # 1: 0.9, overlaps 0 heavily (IoU 81/119)
        [20, 20, 30, 30],   # 2: 0.7, isolated
        [5, 0, 15, 10],     # 3: 0.6, IoU with 1 = 54/146 (< .45); with 0 = 1/3
        [21, 21, 31, 31],   # 4: 0.95, overlaps 2 heavily
    ], dtype=float)
    scores = np.array([0.8, 0.9, 0.7, 0.6, 0.95])
    keep = nms(boxes, scores, 0.45)
    assert keep.tolist() == [4, 1, 3]
    assert nms(boxes, scores, 0.2).tolist() == [4, 1]
    assert nms(boxes, scores, 1.0).tolist() == [4, 1, 0, 2, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# -- detect ------------------------------------------------------------------------------
def _one_anchor_head(h: int, w: int, c: int) -> np.ndarray:
    head = np.full((h, w, 5 + c), -30.0)
    head[..., 0:4] = 0.0
    return head


def test_detect_per_class_nms_and_mapping() -> None:
    c = 3
    spec = HeadSpec("yolo", ((100.0, 100.0),), c)
    head = _one_anchor_head(4, 4, c)
    # Two neighbouring cells give heavily overlapping 100x100 boxes (centers 26 px apart).
    head[1, 1, 4] = _logit(0.9)
    head[1, 1, 5 + 0] = _logit(0.9)          # class 0: 0.81
    head[1, 2, 4] = _logit(0.9)
    head[1, 2, 5 + 0] = _logit(0.5)          # class 0: 0.45 -> suppressed by the first
    head[1, 2, 5 + 2] = _logit(0.8)          # class 2: 0.72 -> kept (different class)
    img = np.zeros((52, 104, 3), dtype=np.uint8)  # letterboxed at scale 1.0
    _, lb = letterbox(img, 104)
    assert lb.scale == 1.0 and (lb.pad_x, lb.pad_y) == (0, 26)
    dets = detect([head], [spec], lb, conf_thresh=0.25, nms_thresh=0.45)
    assert [d.class_id for d in dets] == [0, 2]
    assert dets[0].score == pytest.approx(0.81)
    assert dets[1].score == pytest.approx(0.72)
    # Cell (1,1): center (1.5/4*104, 1.5/4*104) = (39, 39); box 100x100 clipped to image.
    x0, y0, x1, y1 = 39 - 50, 39 - 50 - 26, 39 + 50, 39 + 50 - 26
    exp = (max(x0, 0), max(y0, 0), min(x1, 104) - max(x0, 0), min(y1, 52) - max(y0, 0))
    np.testing.assert_allclose(dets[0].bbox, exp)


def test_detect_box_under_several_classes_threshold_and_cap() -> None:
    c = 4
    spec = HeadSpec("yolo", ((20.0, 20.0),), c)
    head = _one_anchor_head(2, 2, c)
    head[0, 0, 4] = 10.0  # objectness ~1
    head[0, 0, 5:9] = [_logit(0.9), _logit(0.6), _logit(0.3), _logit(0.2)]
    head[1, 1, 4] = 10.0
    head[1, 1, 5 + 3] = _logit(0.7)
    _, lb = letterbox(np.zeros((64, 64, 3), dtype=np.uint8), 64)
    dets = detect([head], [spec], lb, conf_thresh=0.25)
    assert [d.class_id for d in dets] == [0, 3, 1, 2]
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    assert dets[0].bbox == dets[2].bbox == dets[3].bbox
    assert len(detect([head], [spec], lb, conf_thresh=0.25, max_dets=2)) == 2
    assert detect([head], [spec], lb, conf_thresh=0.95) == []


def test_detect_two_heads() -> None:
    specs = [HeadSpec("yolo", ((30.0, 30.0),), 1), HeadSpec("yolo", ((10.0, 10.0),), 1)]
    h1, h2 = _one_anchor_head(2, 2, 1), _one_anchor_head(4, 4, 1)
    h1[0, 0, 4:6] = 10.0
    h2[3, 3, 4:6] = 10.0
    _, lb = letterbox(np.zeros((64, 64, 3), dtype=np.uint8), 64)
    dets = detect([h1, h2], specs, lb)
    assert len(dets) == 2
    centers = sorted((d.bbox[0] + d.bbox[2] / 2, d.bbox[1] + d.bbox[3] / 2) for d in dets)
    np.testing.assert_allclose(centers, [(16, 16), (56, 56)])
    with pytest.raises(ValueError):
        detect([h1], specs, lb)


# -- COCO helpers ------------------------------------------------------------------------
def test_coco80_to_91() -> None:
    ids = COCO80_TO_91
    assert len(ids) == 80
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert ids[0] == 1 and ids[-1] == 90
    assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert ids[2] == 3 and ids[79] == 90


def test_class_names() -> None:
    names = class_names()
    assert len(names) == 80
    assert names[0] == "person" and names[2] == "car"
    assert all(n and n == n.strip() for n in names)
    names.append("mutated")
    assert len(class_names()) == 80


def test_to_coco_results() -> None:
    dets = [Detection((1.23456, 2.0, 3.333, 4.0), 0.876543219, 79),
            Detection((0.0, 0.0, 1.0, 1.0), 0.5, 0)]
    res = to_coco_results(dets, "a.jpg")
    assert set(res[0]) == {"file_name", "bbox", "score", "class_id", "class_name",
                           "category_id"}
    assert res[0]["bbox"] == [1.23, 2.0, 3.33, 4.0]
    assert res[0]["score"] == 0.87654
    assert res[0]["category_id"] == 90 and res[0]["class_name"] == "toothbrush"
    assert res[1]["category_id"] == 1 and res[1]["class_name"] == "person"
    res = to_coco_results(dets, "a.jpg", image_id=42)
    assert all(r["image_id"] == 42 for r in res)
    assert "image_id" in res[0] and len(res[0]) == 7
    assert to_coco_results([], "a.jpg") == []


# -- drawing and saving ------------------------------------------------------------------
def test_draw_detections() -> None:
    img = np.full((60, 80, 3), 30, dtype=np.uint8)
    before = img.copy()
    dets = [Detection((10.0, 20.0, 30.0, 25.0), 0.87, 0),
            Detection((0.0, 0.0, 40.0, 40.0), 0.5, 1)]
    out = draw_detections(img, dets, class_names())
    assert isinstance(out, Image.Image)
    assert out.size == (80, 60) and out.mode == "RGB"
    np.testing.assert_array_equal(img, before)
    drawn = np.asarray(out)
    assert not np.array_equal(drawn, before)
    # Distinct colours per class on the two box outlines.
    assert tuple(drawn[44, 10]) != tuple(drawn[39, 0])
    assert tuple(drawn[44, 10]) != (30, 30, 30)


def test_save_image_atomic_png(tmp_path) -> None:
    arr = np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    p = tmp_path / "out.png"
    save_image_atomic(Image.fromarray(arr), p)
    assert [f.name for f in tmp_path.iterdir()] == ["out.png"]
    with Image.open(p) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), arr)
    save_image_atomic(Image.fromarray(arr), p)  # overwrite
    assert [f.name for f in tmp_path.iterdir()] == ["out.png"]


def test_save_image_atomic_jpeg_and_bad_suffix(tmp_path) -> None:
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 128))
    p = tmp_path / "out.JPG"
    save_image_atomic(im, p)
    with Image.open(p) as got:
        assert got.format == "JPEG" and got.size == (8, 8)
    with pytest.raises(ValueError):
        save_image_atomic(im, tmp_path / "out.gif")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.JPG"]
