"""What the device-side head filter saves: measured on images, projected per board.

    python -m bench.head_filter [--images PATH ...] [--limit N] [--conf 0.25,0.1,0.001]
                                [--json OUT]

Without it the host reads both int16 heads every frame (13x13x255 and 26x26x255: 430,950
bytes, 45% of the link's bytes per frame). With `sw/host.py --filter-heads` (the resident
network's `HeadFilter`s) the device answers MEM_MASK: one bit per candidate (cell, anchor),
set when its objectness logit is above the score threshold's (`objectness_floor`); the host
then reads the candidates kept, one MEM_READ per run of consecutive ones. It loses
nothing: a candidate's score is objectness times a class probability, so one the host
keeps at threshold t has objectness above t. The bench checks that on every image: the
detections decoded from the filtered heads equal the unfiltered ones.

Per threshold it prints the candidates kept and the heads' link bytes per frame (requests
and replies with their framing; mean, 95th percentile, max over the images), and per board
the projected fps over its UART and (Arty) Ethernet without and with the filter
(`bench.fps`'s model: link time plus compute, not overlapped; the device's MEM_MASK reads
the heads at a byte a cycle, added to the compute). The golden model stands in for the
device here: `tests/test_memory_device.py` checks that the device's filtered heads are
these. Images: assets/, ../shared/data/images and ../shared/data/coco-train128/images.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import struct
import sys
import time
from pathlib import Path

import numpy as np

from bench.fps import fps
from boards import BOARDS
from hw.spec import intmath, protocol
from hw.spec.config import DEFAULT
from sw.runtime.bundle import Bundle
from sw.runtime.detect import head_specs, shipped_bundle
from sw.runtime.golden import GoldenModel
from sw.runtime.postprocess import (
    HeadSpec,
    Letterbox,
    detect,
    letterbox,
    load_image,
    objectness_floor,
)
from sw.runtime.util import image_files

ROOT = Path(__file__).resolve().parents[1]


def filter_heads(heads: list[np.ndarray], specs: list[HeadSpec], frac_bits: list[int],
                 conf: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The heads as the host rebuilds them from the candidates the device's mask keeps
    (the others: objectness int16 min, the rest 0, as `ResidentNetwork.run` gives them)
    and the mask of each head (a bool per candidate, in memory order)."""
    out, masks = [], []
    for head, spec, f in zip(heads, specs, frac_bits, strict=True):
        recs = head.reshape(-1, 5 + spec.num_classes)
        keep = recs[:, 4] > objectness_floor(conf, f)
        t = np.zeros_like(recs)
        t[:, 4] = np.iinfo(np.int16).min
        t[keep] = recs[keep]
        out.append(t.reshape(head.shape))
        masks.append(keep)
    return out, masks


def _reply_bytes(payload: int) -> int:
    """A reply of `payload` bytes: DATA frames of MAX_PAYLOAD, then an OK with the rest."""
    return payload + max(1, math.ceil(payload / protocol.MAX_PAYLOAD)) * protocol.FRAME_OVERHEAD


def filtered_bytes(masks: list[np.ndarray], specs: list[HeadSpec]) -> int:
    """Link bytes of the filtered heads: per head a MEM_MASK and its mask, then a
    MEM_READ of each run of consecutive candidates kept."""
    req_mask = protocol.FRAME_OVERHEAD + struct.calcsize(protocol.MEM_MASK_FORMAT)
    req_read = protocol.FRAME_OVERHEAD + struct.calcsize(protocol.MEM_RANGE_FORMAT)
    total = 0
    for keep, spec in zip(masks, specs, strict=True):
        total += req_mask + _reply_bytes((len(keep) + 7) // 8)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            total += req_read + _reply_bytes(int(stop - start) * 2 * (5 + spec.num_classes))
    return total


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
            objectness_floor(c, 0)
        paths = [f for a in ([a for a in args.images if Path(a).exists()] or args.images)
                 for f in image_files(a)]
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
    kept: dict[float, list[list[np.ndarray]]] = {c: [] for c in confs}
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

    full = sum(h.size * 2 for h in heads)             # int16 values
    report: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, Python {platform.python_version()}",
        "images": len(paths), "cpu_s": round(time.process_time() - t0, 1),
        "heads_bytes_full": full, "lossless_on_every_image": True, "thresholds": []}
    print(f"{len(paths)} images, detections identical with and without the filter on every "
          f"image and threshold; heads unfiltered: {full:,} bytes a frame")
    for c in confs:
        cand = [sum(int(m.sum()) for m in k) for k in kept[c]]
        nbytes = [filtered_bytes(k, specs) for k in kept[c]]
        entry = {"conf": c, "candidates": _stats(cand), "heads_bytes": _stats(nbytes),
                 "boards": {}}
        print(f"\nconf {c}: candidates sent mean {entry['candidates']['mean']:.1f}, p95 "
              f"{entry['candidates']['p95']:.0f}, max {entry['candidates']['max']:.0f} "
              f"(of {sum(len(m) for m in kept[c][0])}); heads' link bytes mean "
              f"{entry['heads_bytes']['mean']:,.0f}, max {entry['heads_bytes']['max']:,.0f}")
        print(f"  {'board':<16}{'link':<10}{'fps now':>9}{'mean':>9}{'worst':>9}  gain")
        for board in sorted(BOARDS):
            base = fps(board, bundle)
            row = {tag: fps(board, bundle, heads_bytes=math.ceil(entry["heads_bytes"][tag]),
                            extra_cycles=full)          # MEM_MASK: a byte a cycle
                   for tag in ("mean", "max")}
            for link in ("fps_uart", "fps_ethernet"):
                if link not in base:
                    continue
                now, mean, worst = base[link], row["mean"][link], row["max"][link]
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
