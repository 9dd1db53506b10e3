"""Label-free fidelity of quantized bundles on many views of held-out images.

    python -m sw.eval.fidelity --images DIR [--skip K] [--views 8] --bundle default [--bundle B.npz]
                          [--variants channel-mse-bc] [--bootstrap 200]

Fidelity scores a bundle's detections (golden integer model) against the float model's own
detections at score >= 0.25 as ground truth (`sw.eval.evaluate`). It needs no labels, so each image
gives several test inputs ("views"): the image, its mirror and random crops (25-100 % of
the area, aspect ratio changed by up to 4/3, each mirrored or not, seeded), each
letterboxed as an input of its own. A view has other objects at other scales and
positions on the 32-pixel grid, and so its own quantization errors; views of one image are
still correlated, so the 95 % intervals come from a cluster bootstrap over the source
images (a resampled image brings all its views), paired across bundles: the differences
are bundle - first bundle on the same resamples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sw.eval.evaluate import (
    AGREE_CONF,
    EVAL_CONF,
    ImageEval,
    _results,
    add_ground_truth,
    bootstrap_evals,
    fmt_ci,
    heads_sqnr,
    named_bundles,
)
from sw.quant.pipeline import load_float, make_backend
from sw.quant.views import views
from sw.runtime.detect import CALIB_DIR, Backend
from sw.runtime.postprocess import (
    COCO80_TO_91,
    ImageError,
    class_names,
    detect,
    letterbox,
    load_image,
)
from sw.runtime.util import image_files, log

__all__ = ["evaluate", "main"]


def evaluate(files: Sequence[Path], float_be: Backend, bundles: dict[str, Backend],
             size: int, n_views: int = 8, seed: int = 0, bootstrap: int = 0,
             pool_heads: bool = False) -> dict:
    """Fidelity mAP@0.5 and @0.5:0.95 and head SQNR of each bundle backend on `n_views`
    views of every image (letterboxed to `size`), with cluster-bootstrap intervals over
    the images. Head SQNR per input: the mean of the heads' SQNRs, or with `pool_heads`
    the SQNR of all heads together (finite even where one head is exact)."""
    if not files or not bundles:
        raise ValueError("fidelity needs at least one image and one bundle")
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": n} for c, n in zip(COCO80_TO_91, class_names(), strict=True)]
    gt: dict = {"images": [], "annotations": [], "categories": cats}
    dets: dict[str, list[dict]] = {k: [] for k in bundles}
    sqnr: dict[str, list[float]] = {k: [] for k in bundles}
    source: list[int] = []
    t0 = time.time()
    for n, path in enumerate(files):
        for view in views(load_image(path), n_views, rng):
            vid = len(gt["images"]) + 1
            gt["images"].append({"id": vid, "file_name": f"{path.name}#{len(source)}",
                                 "width": view.shape[1], "height": view.shape[0]})
            source.append(n)
            lb, box = letterbox(view, size)
            ref = float_be.heads(lb)
            add_ground_truth(gt, detect(ref, float_be.specs, box, AGREE_CONF, 0.45,
                                        max_dets=100), vid)
            for name, be in bundles.items():
                heads = be.heads(lb)
                dets[name] += _results(detect(heads, be.specs, box, EVAL_CONF, 0.45,
                                              max_dets=100), vid)
                sqnr[name].append(heads_sqnr(ref, heads, pool_heads))
        if (n + 1) % 8 == 0 or n + 1 == len(files):
            log(f"  {n + 1}/{len(files)} images, {len(source)} views ({time.time() - t0:.0f} s)")
    evals = {k: ImageEval(gt, d) for k, d in dets.items()}
    report: dict = {"images": len(files), "views": len(source), "views_per_image": n_views,
                    "seed": seed, "float_boxes": len(gt["annotations"]), "rows": []}
    for name, ev in evals.items():
        f50, f5095 = ev.map()
        report["rows"].append({"bundle": name, "fidelity50": f50, "fidelity50_95": f5095,
                               "head_sqnr_db": float(np.mean(sqnr[name]))})
    if bootstrap:
        log(f"cluster bootstrap: {bootstrap} resamples of {len(files)} images ...")
        by_image = [np.flatnonzero(np.asarray(source) == i) for i in range(len(files))]
        first = next(iter(evals))
        ci = bootstrap_evals(evals, bootstrap, seed, ref=first, clusters=by_image)
        for row in report["rows"]:
            c = ci[row["bundle"]]
            row["ci"] = {"fidelity50": c["mAP50"], "fidelity50_95": c["mAP50_95"]}
            if "diff50_95" in c:            # first - bundle: report bundle - first
                lo, hi = c["diff50_95"]
                row["ci"]["diff50_95"] = (-hi, -lo)
        report["bootstrap"] = {"resamples": bootstrap, "level": 0.95, "reference": first}
    return report


def markdown(report: dict) -> str:
    lines = [f"{report['images']} images x {report['views_per_image']} views = {report['views']} "
             f"inputs (seed {report['seed']}); float model: {report['float_boxes']} boxes at "
             f"score >= {AGREE_CONF}", ""]
    boot = "bootstrap" in report
    head = "| bundle | fidelity mAP@0.5 | fidelity mAP@0.5:0.95 | head SQNR dB |"
    if boot:
        head += f" 95% interval @0.5:0.95 | minus {report['bootstrap']['reference']}, 95% |"
    lines += [head, "|---" * (6 if boot else 4) + "|"]
    for r in report["rows"]:
        line = (f"| {r['bundle']} | {r['fidelity50']:.4f} | {r['fidelity50_95']:.4f} | "
                f"{r['head_sqnr_db']:.1f} |")
        if boot:
            c = r["ci"]
            diff = fmt_ci(c["diff50_95"]) if "diff50_95" in c else "-"
            line += f" {fmt_ci(c['fidelity50_95'])} | {diff} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sw.eval.fidelity",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of images (labels not needed)")
    p.add_argument("--skip", type=int, default=0, metavar="K",
                   help="leave out the first K images (sorted by name)")
    p.add_argument("--limit", type=int, help="use only the first N images (after --skip)")
    p.add_argument("--views", type=int, default=8, help="views per image (default 8)")
    p.add_argument("--bundle", action="append", default=[],
                   help="bundle file, or 'default' (repeatable; the first is the reference)")
    p.add_argument("--variants", default="", help="comma list of PTQ variant tags (sw.eval)")
    p.add_argument("--calib", default=str(CALIB_DIR), help="calibration images of --variants")
    p.add_argument("--hw-config", help="HwConfig JSON")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the bootstrap")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="cluster-bootstrap intervals from N resamples (0: off)")
    p.add_argument("--json", help="write the report as JSON here")
    args = p.parse_args(argv)
    if args.views < 1 or args.skip < 0 or args.bootstrap < 0 or (args.limit or 1) < 1:
        p.error("--views and --limit must be >= 1, --skip and --bootstrap >= 0")
    variants = [v for v in args.variants.split(",") if v]
    if not variants and not args.bundle:
        p.error("name at least one --bundle or --variants")
    try:
        files = image_files(args.images)[args.skip:]
        files = files[:args.limit] if args.limit else files
        if not files:
            raise FileNotFoundError(f"{args.images}: no images left after --skip {args.skip}")
        net, model, _ = load_float()
        float_be = make_backend("float", net=net, model=model)
        bundles = {name: make_backend("golden", b) for name, b in
                   named_bundles(variants, args.bundle, args.hw_config, args.calib)}
        report = evaluate(files, float_be, bundles, net.width, args.views, args.seed,
                          args.bootstrap)
    except (ValueError, ImageError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
