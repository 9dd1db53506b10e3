"""Would a device-side head pre-filter pay? Measured on images, projected per board.

    python -m bench.head_filter [--images PATH ...] [--limit N] [--conf 0.25,0.1,0.001]
                                [--json OUT]

Today the host reads both int16 heads every frame (13x13x255 and 26x26x255: 430,950
bytes, 45% of the link's bytes per frame). The filter measured here: the device sends
only the candidates (cell, anchor) whose objectness logit exceeds the score threshold's
logit, each as a record of `RECORD_HEADER` bytes (cell index, anchor) and its 5 + C int16
values, after a `COUNT_BYTES` count per head. It loses nothing: a candidate's score is
objectness times a class probability, so one the host keeps at threshold t has objectness
above t. The bench checks that on every image: the detections decoded from the filtered
heads (dropped candidates' objectness at int16's minimum) equal the unfiltered ones.

Per threshold it prints the candidates kept and the head bytes per frame (mean, 95th
percentile, max over the images), and per board the projected fps over its UART and (Arty)
Ethernet without and with the filter (`bench.fps`'s model: link time plus compute, not
overlapped). The filter's device cost is modelled as one pass over the heads in device
memory plus writing the records, one memory beat a cycle; the filter itself is not built.
Images: assets/, ../shared/data/images and ../shared/data/coco-train128/images by default.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench.fps import board_config, fps
from boards import BOARDS
from hw.spec import intmath
from hw.spec.config import DEFAULT
from sw.runtime.bundle import Bundle
from sw.runtime.detect import head_specs, shipped_bundle
from sw.runtime.golden import GoldenModel
from sw.runtime.postprocess import HeadSpec, Letterbox, detect, letterbox, load_image

ROOT = Path(__file__).resolve().parents[1]
#: Bytes of a kept candidate's record before its values: a 16-bit cell index, the anchor
#: and a pad byte.
RECORD_HEADER = 4
#: Bytes of each head's candidate count.
COUNT_BYTES = 4
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def obj_threshold(conf: float, frac_bits: int) -> int:
    """The largest int16 objectness value a candidate may have and still be dropped at
    score threshold `conf` (a head with `frac_bits` fraction bits): one below the floor of
    logit(conf) in the head's fixed point, so float rounding never drops a kept one."""
    if not 0 < conf < 1:
        raise ValueError(f"conf must lie in (0, 1), got {conf}")
    return math.floor(math.log(conf / (1 - conf)) * 2.0 ** frac_bits) - 1


def filter_heads(heads: list[np.ndarray], specs: list[HeadSpec], frac_bits: list[int],
                 conf: float) -> tuple[list[np.ndarray], list[int]]:
    """The heads as the host would rebuild them from the device's records (candidates not
    sent get objectness int16 min) and the number of candidates sent per head."""
    out, kept = [], []
    for head, spec, f in zip(heads, specs, frac_bits, strict=True):
        per = 5 + spec.num_classes
        t = head.reshape(*head.shape[:2], len(spec.anchors), per).copy()
        keep = t[..., 4] > obj_threshold(conf, f)
        t[..., 4][~keep] = np.iinfo(np.int16).min
        out.append(t.reshape(head.shape))
        kept.append(int(keep.sum()))
    return out, kept


def filtered_bytes(kept: list[int], specs: list[HeadSpec]) -> int:
    """Head bytes on the link for `kept` candidates per head (records and counts)."""
    return sum(COUNT_BYTES + k * (RECORD_HEADER + 2 * (5 + s.num_classes))
               for k, s in zip(kept, specs, strict=True))


def image_paths(args: list[str]) -> list[Path]:
    """Image files of the given files and directories, sorted per directory."""
    paths: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"no image or directory {a}")
    return paths


def _stats(values: list[int]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", nargs="+", default=[
        str(ROOT / "assets"), str(ROOT.parent / "shared/data/images"),
        str(ROOT.parent / "shared/data/coco-train128/images")])
    ap.add_argument("--limit", type=int, help="first N images only")
    ap.add_argument("--conf", default="0.25,0.1,0.001",
                    help="score thresholds (the host's default is 0.25; mAP uses 0.001)")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    try:
        confs = [float(c) for c in args.conf.split(",")]
        for c in confs:
            obj_threshold(c, 0)
        paths = image_paths([a for a in args.images if Path(a).exists()] or args.images)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = paths[:args.limit] if args.limit else paths
    if not paths:
        print("error: no images", file=sys.stderr)
        return 2

    bundle = Bundle.load(shipped_bundle(DEFAULT), expect=DEFAULT)
    golden, specs = GoldenModel(bundle), head_specs(bundle)
    fbits = [bundle.layers[i]["f_out"] for i in bundle.head_indices]
    size = bundle.input_shape[0]
    kept: dict[float, list[list[int]]] = {c: [] for c in confs}
    t0 = time.process_time()
    for n, path in enumerate(paths, 1):
        lb, box = letterbox(load_image(path), size)
        outs = golden.run(intmath.quantize_input(lb), keep=False)
        heads = [outs[i] for i in bundle.head_indices]
        for c in confs:
            filt, k = filter_heads(heads, specs, fbits, c)
            _check_lossless(heads, filt, specs, box, c, path)
            kept[c].append(k)
        print(f"\r{n}/{len(paths)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    full = sum(h.nbytes for h in heads)
    report: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, Python {platform.python_version()}",
        "images": len(paths), "cpu_s": round(time.process_time() - t0, 1),
        "heads_bytes_full": full, "lossless_on_every_image": True, "thresholds": []}
    print(f"{len(paths)} images, detections identical with and without the filter on every "
          f"image and threshold; heads unfiltered: {full:,} bytes a frame")
    for c in confs:
        cand = [sum(k) for k in kept[c]]
        nbytes = [filtered_bytes(k, specs) for k in kept[c]]
        entry = {"conf": c, "candidates": _stats(cand), "heads_bytes": _stats(nbytes),
                 "boards": {}}
        print(f"\nconf {c}: candidates sent mean {entry['candidates']['mean']:.1f}, p95 "
              f"{entry['candidates']['p95']:.0f}, max {entry['candidates']['max']:.0f} "
              f"(of {sum(h.shape[0] * h.shape[1] * 3 for h in heads)}); head bytes mean "
              f"{entry['heads_bytes']['mean']:,.0f}, max {entry['heads_bytes']['max']:,.0f}")
        print(f"  {'board':<16}{'link':<10}{'fps now':>9}{'mean':>9}{'worst':>9}  gain")
        for board in sorted(BOARDS):
            cfg = board_config(board)
            beat = cfg.mem_data_bits // 8
            base = fps(board, bundle)
            row = {}
            for tag, b in (("mean", entry["heads_bytes"]["mean"]),
                           ("worst", entry["heads_bytes"]["max"])):
                scan = math.ceil(full / beat) + math.ceil(b / beat)
                row[tag] = fps(board, bundle, heads_bytes=math.ceil(b), extra_cycles=scan)
            for link in ("fps_uart", "fps_ethernet"):
                if link not in base:
                    continue
                now, mean, worst = base[link], row["mean"][link], row["worst"][link]
                entry["boards"].setdefault(board, {})[link] = {
                    "now": now, "filtered_mean": mean, "filtered_worst": worst}
                print(f"  {board:<16}{link[4:]:<10}{now:>9.3f}{mean:>9.3f}{worst:>9.3f}  "
                      f"{100 * (mean / now - 1):+.1f}%")
        report["thresholds"].append(entry)
    print(f"\n{report['machine']}; {report['cpu_s']} s CPU; {report['date']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _check_lossless(heads: list[np.ndarray], filt: list[np.ndarray], specs: list[HeadSpec],
                    box: Letterbox, conf: float, path: Path) -> None:
    want, got = detect(heads, specs, box, conf), detect(filt, specs, box, conf)
    if want != got:
        raise AssertionError(f"{path}: conf {conf}: the filter changed the detections "
                             f"({len(want)} without, {len(got)} with)")


if __name__ == "__main__":
    sys.exit(main())
