"""End to end on dog.jpg: float finds the objects, the int8 golden model the same boxes."""

from __future__ import annotations

import numpy as np
import pytest

from sw.quant.pipeline import make_backend
from sw.runtime.detect import CALIB_DIR
from sw.runtime.postprocess import box_iou, class_names, load_image


def _xyxy(d):
    x, y, w, h = d.bbox
    return np.array([[x, y, x + w, y + h]])


@pytest.fixture(scope="module")
def dog_detections(pretrained, pretrained_bundle):
    net, model = pretrained
    img = load_image(CALIB_DIR / "dog.jpg")
    fl, _ = make_backend("float", net=net, model=model).detect(img)
    gd, _ = make_backend("golden", pretrained_bundle).detect(img)
    return fl, gd


def test_float_finds_dog_bicycle_car(dog_detections):
    names = class_names()
    found = {names[d.class_id] for d in dog_detections[0]}
    assert {"dog", "bicycle"} <= found and found & {"car", "truck"}, found


def test_golden_matches_float_boxes(dog_detections):
    fl, gd = dog_detections
    names = class_names()
    for want in ("dog", "bicycle"):
        f = [d for d in fl if names[d.class_id] == want]
        g = [d for d in gd if names[d.class_id] == want]
        assert f and g, f"{want}: float {len(f)}, golden {len(g)}"
        iou = box_iou(_xyxy(f[0]), _xyxy(g[0]))[0, 0]
        assert iou >= 0.8, f"{want}: IoU {iou:.3f} between float {f[0]} and golden {g[0]}"
    vehicles = [d for d in fl if names[d.class_id] in ("car", "truck")]
    golden_vehicles = [d for d in gd if names[d.class_id] in ("car", "truck")]
    best = max(box_iou(_xyxy(a), _xyxy(b))[0, 0] for a in vehicles for b in golden_vehicles)
    assert best >= 0.8
