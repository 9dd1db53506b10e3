"""Accuracy of float vs quantized backends on a COCO-format image folder.

    python -m sw.eval.evaluate --images DIR --ann instances.json [--variants channel-percentile,...]

For the float network and each quantization variant (weights granularity - activation
calibration, run on the golden integer model, and optionally the fake-quant model),
prints mAP@0.5 and mAP@0.5:0.95 (pycocotools) against the labels, plus agreement with
the float model: detections matched at score >= 0.25 (same class, IoU >= 0.5), head
SQNR in dB, and "fidelity" mAP@0.5:0.95 scoring the int8 detections against the float
model's own detections (score >= 0.25) as ground truth. With --bootstrap N, adds 95%
percentile intervals over N resamples of the images (with replacement) for each backend's
mAP, for the paired difference float - backend and for each quantized backend's fidelity.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hw.spec.config import load_config
from sw.quant.pipeline import (
    PRETRAINED,
    build_bundle,
    bundle_cache_path,
    default_bundle,
    load_float,
    make_backend,
)
from sw.quant.ptq import QuantOptions
from sw.quant.tune import sqnr_db
from sw.runtime.bundle import Bundle
from sw.runtime.detect import CALIB_DIR
from sw.runtime.postprocess import (
    COCO80_TO_91,
    Detection,
    box_iou,
    detect,
    letterbox,
    load_image,
)
from sw.runtime.util import image_files, log
from sw.runtime.weights import default_cfg

EVAL_CONF = 0.005   # low threshold for mAP, as Darknet's map evaluation
AGREE_CONF = 0.25   # operating point for agreement/fidelity


def coco_map(gt: dict, dets: list[dict]) -> tuple[float, float]:
    """(mAP@0.5, mAP@0.5:0.95) of COCO results against a COCO ground-truth dict."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not dets:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        res = coco.loadRes(dets)
        ev = COCOeval(coco, res, "bbox")
        ev.params.imgIds = sorted(img["id"] for img in gt["images"])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


class ImageEval:
    """COCO evaluation of one detection set, kept per image so that any multiset of the
    images (a bootstrap resample) can be scored without re-matching.

    `map(idx)` equals `coco_map` on the images at positions idx (duplicates allowed) given
    fresh ids in gt and detections: COCO matches boxes per image and category, so a
    duplicated image contributes its per-image match results twice; only accumulation
    (precision/recall over all images) is redone. Only the area range "all" and 100
    detections per image are evaluated, which is what mAP@0.5 and mAP@0.5:0.95 read.
    """

    def __init__(self, gt: dict, dets: list[dict]):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if not gt.get("images"):
            raise ValueError("ImageEval: the ground truth has no images")
        self.ids = sorted(img["id"] for img in gt["images"])
        self.empty = not dets
        if self.empty:
            return
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = gt
            coco.createIndex()
            ev = COCOeval(coco, coco.loadRes(dets), "bbox")
            ev.params.imgIds = self.ids
            ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
            ev.evaluate()
        self.ev = ev
        self.per_image = list(ev.evalImgs)  # category-major: k * len(ids) + image
        self.cats = len(ev.params.catIds)

    def __len__(self) -> int:
        return len(self.ids)

    def map(self, idx: Sequence[int] | np.ndarray | None = None) -> tuple[float, float]:
        """(mAP@0.5, mAP@0.5:0.95) over the images at positions idx (default: all once)."""
        if self.empty:
            return 0.0, 0.0
        n = len(self.ids)
        idx = range(n) if idx is None else [int(i) for i in idx]
        ev = self.ev
        ev.evalImgs = [self.per_image[k * n + i] for k in range(self.cats) for i in idx]
        fresh = list(range(1, len(idx) + 1))
        ev.params.imgIds = ev._paramsEval.imgIds = fresh
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                ev.accumulate()
        finally:
            ev.params.imgIds = ev._paramsEval.imgIds = self.ids
            ev.evalImgs = self.per_image
        prec = ev.eval["precision"][:, :, :, 0, 0]  # IoU x recall x category

        def mean(p: np.ndarray) -> float:
            p = p[p > -1]
            return float(p.mean()) if p.size else -1.0
        return mean(prec[0]), mean(prec)


def resample_indices(n_images: int, n: int, seed: int = 0) -> np.ndarray:
    """n bootstrap resamples (rows) of image positions 0..n_images-1, with replacement."""
    if n_images < 1:
        raise ValueError("bootstrap needs at least one image")
    if n < 1:
        raise ValueError(f"bootstrap needs at least one resample, got {n}")
    return np.random.default_rng(seed).integers(0, n_images, (n, n_images))


def percentile_interval(values: Sequence[float] | np.ndarray,
                        level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap values."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise ValueError("percentile_interval of no values")
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [a, 100 - a])
    return float(lo), float(hi)


def bootstrap_map(gt: dict, dets: dict[str, list[dict]], n: int = 200, seed: int = 0,
                  ref: str | None = None, level: float = 0.95) -> dict[str, dict]:
    """Bootstrap intervals over images of mAP@0.5 and mAP@0.5:0.95 per detection set
    (`bootstrap_evals` of each set's `ImageEval`)."""
    if not dets:
        raise ValueError("bootstrap_map: no detection sets")
    return bootstrap_evals({k: ImageEval(gt, d) for k, d in dets.items()}, n, seed, ref, level)


def bootstrap_evals(evals: dict[str, ImageEval], n: int = 200, seed: int = 0,
                    ref: str | None = None, level: float = 0.95,
                    clusters: Sequence[np.ndarray] | None = None) -> dict[str, dict]:
    """Bootstrap intervals of mAP@0.5 and mAP@0.5:0.95 per evaluation.

    Every set is scored on the same n seeded resamples of the images (with replacement;
    a duplicated image counts as a new image in gt and detections), or with `clusters`
    (arrays of image positions) of the clusters, each bringing all its images. Returns per
    name {"mAP50": (lo, hi), "mAP50_95": (lo, hi)} and, when `ref` names one of the sets,
    for the others the paired difference ref - name as "diff50" and "diff50_95" (lo, hi).
    """
    if not evals:
        raise ValueError("bootstrap_map: no detection sets")
    if ref is not None and ref not in evals:
        raise ValueError(f"bootstrap_map: reference {ref!r} is not one of the detection sets")
    units = len(clusters) if clusters is not None else len(next(iter(evals.values())))
    idx = resample_indices(units, n, seed)
    if clusters is not None:
        idx = [np.concatenate([clusters[i] for i in row]) for row in idx]
    vals = {k: np.array([e.map(ix) for ix in idx]) for k, e in evals.items()}
    out: dict[str, dict] = {}
    for k, v in vals.items():
        out[k] = {"mAP50": percentile_interval(v[:, 0], level),
                  "mAP50_95": percentile_interval(v[:, 1], level)}
        if ref is not None and k != ref:
            d = vals[ref] - v
            out[k].update(diff50=percentile_interval(d[:, 0], level),
                          diff50_95=percentile_interval(d[:, 1], level))
    return out


def heads_sqnr(ref: Sequence[np.ndarray], heads: Sequence[np.ndarray], pool: bool = False,
               ) -> float:
    """SQNR (dB) of detection heads against the float heads `ref`: the mean of the heads'
    SQNRs, or with `pool` the SQNR of all heads' values together."""
    if pool:
        return sqnr_db(np.concatenate([r.ravel() for r in ref]),
                       np.concatenate([h.ravel() for h in heads]))
    return float(np.mean([sqnr_db(r, q) for r, q in zip(ref, heads, strict=True)]))


def _results(dets: list[Detection], image_id: int) -> list[dict]:
    return [{"image_id": image_id, "category_id": COCO80_TO_91[d.class_id],
             "bbox": [float(v) for v in d.bbox], "score": float(d.score)} for d in dets]


def add_ground_truth(gt: dict, dets: Sequence[Detection], image_id: int) -> None:
    """Append detections (the float model's, for fidelity) to a COCO ground-truth dict."""
    for d in dets:
        x, y, w, h = d.bbox
        gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                  "category_id": COCO80_TO_91[d.class_id],
                                  "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})


def matched(ref: list[Detection], other: list[Detection], iou: float = 0.5) -> int:
    """Greedy one-to-one matches of same-class boxes with IoU >= iou."""
    if not ref or not other:
        return 0

    def xyxy(d: list[Detection]) -> np.ndarray:
        return np.array([[x, y, x + w, y + h] for x, y, w, h in (e.bbox for e in d)])

    ious = box_iou(xyxy(ref), xyxy(other))
    same = np.array([[a.class_id == b.class_id for b in other] for a in ref])
    ious = np.where(same, ious, 0.0)
    n, used = 0, set()
    for r in range(len(ref)):
        for c in np.argsort(-ious[r]):
            if ious[r, c] < iou:
                break
            if c not in used:
                used.add(int(c))
                n += 1
                break
    return n


def variant_bundle(name: str, hw_path: str | None, calib: str) -> Bundle:
    hw = load_config(hw_path)
    opts = QuantOptions.from_tag(name)
    path = bundle_cache_path(f"eval-{name}", hw, default_cfg(), PRETRAINED,
                             image_files(calib), opts)
    if not path.exists():
        build_bundle(path, calib=calib, hw=hw, opts=opts)
    return Bundle.load(path, expect=hw)


def named_bundles(variants: Sequence[str], bundles: Sequence[str], hw_path: str | None,
                  calib: str) -> list[tuple[str, Bundle]]:
    """(name, bundle) for PTQ variant tags (calibrated on `calib`) and bundle files
    ("default": the default bundle), all checked against the HwConfig."""
    hw = load_config(hw_path)
    named = [(v, variant_bundle(v, hw_path, calib)) for v in variants]
    for p in bundles:
        path = default_bundle(hw) if p == "default" else Path(p)
        named.append(("default" if p == "default" else path.stem, Bundle.load(path, expect=hw)))
    return named


def evaluate(images: Path, ann: Path, variants: list[str], fakequant: bool, limit: int | None,
             hw_path: str | None, calib: str, bundles: Sequence[str] = (),
             bootstrap: int = 0, seed: int = 0, skip: int = 0) -> dict:
    gt = json.loads(ann.read_text())
    by_name = {img["file_name"]: img for img in gt["images"]}
    files = sorted(p for p in images.iterdir() if p.name in by_name)[skip:]
    if limit:
        files = files[:limit]
    if not files:
        raise SystemExit(f"error: no image of {ann} found in {images}")
    gt = {**gt, "images": [by_name[p.name] for p in files]}
    net, model, _ = load_float()
    backends = {"float": make_backend("float", net=net, model=model)}
    for name, b in named_bundles(variants, bundles, hw_path, calib):
        backends[f"{name} golden"] = make_backend("golden", b)
        if fakequant:
            backends[f"{name} fakequant"] = make_backend("fakequant", b)
    dets = {k: [] for k in backends}
    stats = {k: {"sqnr": [], "matched": 0, "count": 0, "seconds": 0.0} for k in backends}
    fid_gt = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
    t0 = time.time()
    for n, path in enumerate(files, 1):
        img_id = by_name[path.name]["id"]
        lb, box = letterbox(load_image(path), net.width)
        ref_heads, ref_dets = None, None
        for name, be in backends.items():
            t = time.time()
            heads = be.heads(lb)
            stats[name]["seconds"] += time.time() - t
            d_all = detect(heads, be.specs, box, EVAL_CONF, 0.45, max_dets=100)
            dets[name] += _results(d_all, img_id)
            d_op = [d for d in d_all if d.score >= AGREE_CONF]
            if ref_heads is None:
                ref_heads, ref_dets = heads, d_op
                add_ground_truth(fid_gt, d_op, img_id)
            else:
                stats[name]["sqnr"].append(heads_sqnr(ref_heads, heads))
            stats[name]["matched"] += matched(ref_dets, d_op)
            stats[name]["count"] += len(d_op)
        if n % 8 == 0 or n == len(files):
            log(f"  {n}/{len(files)} images ({time.time() - t0:.0f} s)")
    report = {"images": len(files), "annotations": sum(
        1 for a in gt["annotations"] if a["image_id"] in {i["id"] for i in gt["images"]}),
        "float_dets_at_0.25": stats["float"]["count"], "rows": []}
    for name in backends:
        m50, m5095 = coco_map(gt, dets[name])
        row = {"backend": name, "mAP50": m50, "mAP50_95": m5095,
               "s_per_image": stats[name]["seconds"] / len(files)}
        if name != "float":
            f50, f5095 = coco_map(fid_gt, dets[name])
            row.update(fidelity50=f50, fidelity50_95=f5095,
                       head_sqnr_db=float(np.mean(stats[name]["sqnr"])),
                       matched=stats[name]["matched"], dets=stats[name]["count"])
        report["rows"].append(row)
    if bootstrap:
        log(f"bootstrap: {bootstrap} resamples of {len(files)} images ...")
        ci = bootstrap_map(gt, dets, bootstrap, seed, ref="float")
        quant = {k: v for k, v in dets.items() if k != "float"}
        fid = bootstrap_map(fid_gt, quant, bootstrap, seed) if quant else {}
        report["bootstrap"] = {"resamples": bootstrap, "seed": seed, "level": 0.95}
        for row in report["rows"]:
            row["ci"] = ci[row["backend"]]
            if row["backend"] in fid:
                f = fid[row["backend"]]
                row["ci"].update(fidelity50=f["mAP50"], fidelity50_95=f["mAP50_95"])
    return report


def markdown(report: dict) -> str:
    lines = [f"{report['images']} images, {report['annotations']} labelled boxes; float "
             f"model: {report['float_dets_at_0.25']} detections at score >= {AGREE_CONF}", "",
             "| backend | mAP@0.5 | mAP@0.5:0.95 | fidelity mAP@0.5 | fidelity mAP@0.5:0.95 "
             "| matched / dets (float ref) | head SQNR dB | s/image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r["backend"] == "float":
            extra = "| - | - | - | - "
        else:
            extra = (f"| {r['fidelity50']:.4f} | {r['fidelity50_95']:.4f} | "
                     f"{r['matched']} / {r['dets']} | {r['head_sqnr_db']:.1f} ")
        lines.append(f"| {r['backend']} | {r['mAP50']:.4f} | {r['mAP50_95']:.4f} {extra}"
                     f"| {r['s_per_image']:.3f} |")
    if "bootstrap" in report:
        b = report["bootstrap"]
        lines += ["", f"{b['level']:.0%} bootstrap intervals over images ({b['resamples']} "
                  f"resamples, seed {b['seed']}); difference = float - backend, paired:", "",
                  "| backend | mAP@0.5 | mAP@0.5:0.95 | float - backend mAP@0.5 "
                  "| float - backend mAP@0.5:0.95 | fidelity mAP@0.5:0.95 |",
                  "|---|---|---|---|---|---|"]
        for r in report["rows"]:
            c = r["ci"]
            diff = ("| - | - " if "diff50" not in c else
                    f"| {fmt_ci(c['diff50'])} | {fmt_ci(c['diff50_95'])} ")
            fid = f"| {fmt_ci(c['fidelity50_95'])} " if "fidelity50_95" in c else "| - "
            lines.append(f"| {r['backend']} | {fmt_ci(c['mAP50'])} | {fmt_ci(c['mAP50_95'])} "
                         f"{diff}{fid}|")
    return "\n".join(lines)


def fmt_ci(ci: Sequence[float]) -> str:
    """An interval as [lo, hi] with 4 decimals."""
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sw.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--ann", required=True, help="COCO-format instances.json for them")
    p.add_argument("--variants", default="channel-mse-bc,channel-max,tensor-max",
                   help="comma list of WEIGHTS-ACTIVATIONS[-bc][-eqA][-fill][-fs] quantization "
                        "variants, WEIGHTS in channel|tensor, ACTIVATIONS in "
                        "max|stdM|percentile|mse (stdM: clip at |mean| + M std, e.g. std3), "
                        "-bc: bias correction, -eqA: activation equalization of strength A, "
                        "-fill: scale tensors onto their pow2 grid, -fs: f_out search "
                        "(sw/quant/tune.py)")
    p.add_argument("--calib", default=str(CALIB_DIR), help="calibration images folder")
    p.add_argument("--bundle", action="append", default=[],
                   help="also evaluate this bundle file (repeatable); 'default': the default "
                        "bundle sw/host.py runs")
    p.add_argument("--fakequant", action="store_true", help="also run the fake-quant model")
    p.add_argument("--skip", type=int, default=0, metavar="K",
                   help="leave out the first K images (sorted by name): the default bundle is "
                        "calibrated on the first 64 of coco-train128, so --skip 64 holds it out")
    p.add_argument("--limit", type=int, help="evaluate only the first N images (after --skip)")
    p.add_argument("--hw-config", help="HwConfig JSON")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="95%% bootstrap intervals over images from N resamples (0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    args = p.parse_args(argv)
    if args.bootstrap < 0:
        p.error("--bootstrap must be >= 0")
    if args.skip < 0:
        p.error("--skip must be >= 0")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        try:
            QuantOptions.from_tag(v)
        except ValueError as e:
            p.error(f"bad variant {v!r}: {e}")
    images, ann = Path(args.images), Path(args.ann)
    for f in (images, ann):
        if not f.exists():
            p.error(f"{f}: not found")
    report = evaluate(images, ann, variants, args.fakequant, args.limit, args.hw_config,
                      args.calib, args.bundle, args.bootstrap, args.seed, args.skip)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
