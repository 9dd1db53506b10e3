"""Evaluation helpers: COCO mAP wrapper, matching, SQNR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sw.eval.evaluate import coco_map, matched
from sw.quant.tune import sqnr_db
from sw.runtime.postprocess import Detection


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

    from sw.eval.evaluate import AGREE_CONF, main
    from sw.quant.pipeline import make_backend
    from sw.runtime.detect import CALIB_DIR
    from sw.runtime.postprocess import COCO80_TO_91, class_names, load_image

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
                 "channel-mse-bc", "--json", str(out), "--bootstrap", "20"]) == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["float"]["mAP50"] == pytest.approx(1.0)
    int8 = rows["channel-mse-bc golden"]
    assert 0.5 < int8["mAP50"] <= 1.0 and int8["fidelity50"] == pytest.approx(int8["mAP50"])
    # fidelity intervals for the quantized backends only; float is the fidelity reference
    assert "fidelity50_95" not in rows["float"]["ci"]
    lo, hi = int8["ci"]["fidelity50_95"]
    assert 0 <= lo <= hi <= 1 and int8["ci"]["fidelity50"][1] <= 1
    assert "| channel-mse-bc golden |" in capsys.readouterr().out


def test_eval_cli_rejects_bad_variant(tmp_path):
    from sw.eval.evaluate import main
    with pytest.raises(SystemExit) as e:
        main(["--images", str(tmp_path), "--ann", str(tmp_path), "--variants", "row-max"])
    assert e.value.code == 2


def _synthetic(n_img=20, seed=0):
    """Random gt boxes in 3 categories; detections: jittered gt (80%) plus false positives."""
    rng = np.random.default_rng(seed)
    imgs = [{"id": 10 + 3 * k, "file_name": f"{k}.jpg", "width": 200, "height": 200}
            for k in range(n_img)]
    gt = {"images": imgs, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
          "annotations": []}
    dets = []
    for im in imgs:
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(10, 50, 2)
            c = int(rng.integers(1, 4))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": im["id"],
                                      "category_id": c, "bbox": [x, y, w, h], "area": w * h,
                                      "iscrowd": 0})
            if rng.random() < 0.8:
                j = rng.normal(0, 4, 4)
                dets.append({"image_id": im["id"], "category_id": c, "score": float(rng.random()),
                             "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]]})
        for _ in range(rng.integers(0, 3)):
            x, y, w, h = rng.uniform(0, 100, 4) + np.array([0, 0, 10, 10])
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, 4)),
                         "bbox": [x, y, w, h], "score": float(rng.random())})
    return gt, dets


def test_image_eval_equals_coco_map_with_fresh_ids():
    """Scoring a multiset of images = coco_map on explicitly duplicated, renumbered images."""
    from sw.eval.evaluate import ImageEval

    gt, dets = _synthetic()
    ie = ImageEval(gt, dets)
    assert ie.map() == pytest.approx(coco_map(gt, dets), abs=1e-12)
    idx = [3, 3, 0, 5, 19, 19, 19, 2, 7]
    ids = sorted(img["id"] for img in gt["images"])
    dup = {"images": [], "annotations": [], "categories": gt["categories"]}
    dup_dets = []
    for new, pos in enumerate(idx, 1):
        old = ids[pos]
        dup["images"].append({"id": new, "file_name": f"{new}.jpg", "width": 200,
                              "height": 200})
        dup["annotations"] += [{**a, "id": len(dup["annotations"]) + k + 1, "image_id": new}
                               for k, a in enumerate(a for a in gt["annotations"]
                                                     if a["image_id"] == old)]
        dup_dets += [{**d, "image_id": new} for d in dets if d["image_id"] == old]
    assert ie.map(idx) == pytest.approx(coco_map(dup, dup_dets), abs=1e-12)
    assert ie.map() == pytest.approx(coco_map(gt, dets), abs=1e-12)  # state restored


def test_bootstrap_intervals():
    from sw.eval.evaluate import bootstrap_map

    gt, dets = _synthetic(30)
    worse = [d for k, d in enumerate(dets) if k % 3]  # drop a third of the detections
    sets = {"float": dets, "q": worse}
    ci = bootstrap_map(gt, sets, n=60, seed=3, ref="float")
    assert ci == bootstrap_map(gt, sets, n=60, seed=3, ref="float")  # deterministic
    assert ci != bootstrap_map(gt, sets, n=60, seed=4, ref="float")
    for name, d in sets.items():
        point = coco_map(gt, d)
        for key, p in zip(("mAP50", "mAP50_95"), point, strict=True):
            lo, hi = ci[name][key]
            assert lo <= p <= hi, (name, key, lo, p, hi)
    lo, hi = ci["q"]["diff50"]
    assert lo <= coco_map(gt, dets)[0] - coco_map(gt, worse)[0] <= hi
    assert "diff50" not in ci["float"]
    same = bootstrap_map(gt, {"float": dets, "copy": dets}, n=20, ref="float")
    assert same["copy"]["diff50"] == (0.0, 0.0) and same["copy"]["diff50_95"] == (0.0, 0.0)


def test_bootstrap_errors():
    from sw.eval.evaluate import bootstrap_map, percentile_interval, resample_indices

    gt, dets = _synthetic(5)
    with pytest.raises(ValueError, match="no images"):
        bootstrap_map({**gt, "images": []}, {"a": dets})
    with pytest.raises(ValueError, match="no detection sets"):
        bootstrap_map(gt, {})
    with pytest.raises(ValueError, match="reference"):
        bootstrap_map(gt, {"a": dets}, ref="float")
    with pytest.raises(ValueError, match="resample"):
        bootstrap_map(gt, {"a": dets}, n=0)
    with pytest.raises(ValueError):
        resample_indices(0, 10)
    with pytest.raises(ValueError):
        percentile_interval([])
    assert bootstrap_map(gt, {"a": []}, n=5)["a"]["mAP50"] == (0.0, 0.0)


def test_markdown_prints_bootstrap_intervals():
    from sw.eval.evaluate import markdown

    rows = [{"backend": "float", "mAP50": 0.5, "mAP50_95": 0.25, "s_per_image": 0.1,
             "ci": {"mAP50": (0.4, 0.6), "mAP50_95": (0.2, 0.3)}},
            {"backend": "q golden", "mAP50": 0.45, "mAP50_95": 0.2, "s_per_image": 0.3,
             "fidelity50": 0.9, "fidelity50_95": 0.8, "head_sqnr_db": 30.0, "matched": 9,
             "dets": 10, "ci": {"mAP50": (0.35, 0.55), "mAP50_95": (0.15, 0.25),
                                "diff50": (0.01, 0.09), "diff50_95": (0.0, 0.1),
                                "fidelity50": (0.85, 0.95), "fidelity50_95": (0.7, 0.9)}}]
    md = markdown({"images": 2, "annotations": 3, "float_dets_at_0.25": 4, "rows": rows,
                   "bootstrap": {"resamples": 50, "seed": 0, "level": 0.95}})
    assert ("| q golden | [0.3500, 0.5500] | [0.1500, 0.2500] | [0.0100, 0.0900] "
            "| [0.0000, 0.1000] | [0.7000, 0.9000] |") in md
    assert "| float | [0.4000, 0.6000] | [0.2000, 0.3000] | - | - | - |" in md
    assert "bootstrap" not in markdown({"images": 2, "annotations": 3,
                                        "float_dets_at_0.25": 4, "rows": rows[:1]})


def test_eval_cli_rejects_negative_bootstrap(tmp_path):
    from sw.eval.evaluate import main
    with pytest.raises(SystemExit) as e:
        main(["--images", str(tmp_path), "--ann", str(tmp_path), "--bootstrap", "-2"])
    assert e.value.code == 2
