"""Evaluation helpers: COCO mAP wrapper, matching, SQNR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sw.eval import coco_map, matched, sqnr_db
from sw.postprocess import Detection


def _gt(boxes):
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": b,
                             "area": b[2] * b[3], "iscrowd": 0}
                            for k, (c, b) in enumerate(boxes)]}


def test_coco_map_perfect_wrong_and_empty():
    boxes = [(1, [10, 10, 30, 40]), (3, [50, 50, 40, 20])]
    gt = _gt(boxes)
    perfect = [{"image_id": 1, "category_id": c, "bbox": b, "score": 0.9} for c, b in boxes]
    assert coco_map(gt, perfect) == pytest.approx((1.0, 1.0))
    shifted = [{**d, "bbox": [d["bbox"][0] + 8, *d["bbox"][1:]]} for d in perfect]
    m50, m5095 = coco_map(gt, shifted)
    assert m5095 < m50 <= 1.0  # a small shift hurts the strict thresholds first
    wrong_class = [{**d, "category_id": 4 - d["category_id"]} for d in perfect]
    assert coco_map(gt, wrong_class) == (0.0, 0.0)
    assert coco_map(gt, []) == (0.0, 0.0)


def test_matched_is_one_to_one_and_class_aware():
    a = Detection((0, 0, 10, 10), 0.9, 0)
    b = Detection((1, 1, 10, 10), 0.8, 0)
    c = Detection((0, 0, 10, 10), 0.7, 5)
    assert matched([a], [b]) == 1
    assert matched([a], [c]) == 0
    assert matched([a, a], [b]) == 1
    assert matched([a], [Detection((30, 30, 5, 5), 0.9, 0)]) == 0
    assert matched([], [a]) == 0


def test_sqnr():
    x = np.ones(100)
    assert sqnr_db(x, x) == math.inf
    assert abs(sqnr_db(x, x * 1.1) - 20.0) < 1e-9


def test_eval_cli_end_to_end(tmp_path, pretrained, pretrained_bundle, capsys):
    """Ground truth = the float model's own detections: float must score 1.0 on it."""
    import json
    import shutil

    from sw.eval import AGREE_CONF, main
    from sw.pipeline import CALIB_DIR, make_backend
    from sw.postprocess import COCO80_TO_91, class_names, load_image

    net, model = pretrained
    backend = make_backend("float", net=net, model=model)
    images, anns = [], []
    (tmp_path / "imgs").mkdir()
    for k, name in enumerate(("dog.jpg", "person.jpg"), 1):
        shutil.copy(CALIB_DIR / name, tmp_path / "imgs" / name)
        img = load_image(CALIB_DIR / name)
        images.append({"id": k, "file_name": name, "width": img.shape[1],
                       "height": img.shape[0]})
        for d in backend.detect(img, AGREE_CONF)[0]:
            anns.append({"id": len(anns) + 1, "image_id": k, "bbox": list(d.bbox),
                         "category_id": COCO80_TO_91[d.class_id], "iscrowd": 0,
                         "area": d.bbox[2] * d.bbox[3]})
    cats = [{"id": c, "name": n} for c, n in zip(COCO80_TO_91, class_names(), strict=True)]
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    out = tmp_path / "report.json"
    assert main(["--images", str(tmp_path / "imgs"), "--ann", str(ann), "--variants",
                 "channel-mse-bc", "--json", str(out)]) == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["float"]["mAP50"] == pytest.approx(1.0)
    int8 = rows["channel-mse-bc golden"]
    assert 0.5 < int8["mAP50"] <= 1.0 and int8["fidelity50"] == pytest.approx(int8["mAP50"])
    assert "| channel-mse-bc golden |" in capsys.readouterr().out


def test_eval_cli_rejects_bad_variant(tmp_path):
    from sw.eval import main
    with pytest.raises(SystemExit) as e:
        main(["--images", str(tmp_path), "--ann", str(tmp_path), "--variants", "row-max"])
    assert e.value.code == 2
