"""What writing only the changed input rows saves on the link (`ResidentNetwork.run`).

    python -m bench.input_rows [--images PATH ...] [--json OUT]

The resident network writes the first frame's int8 image whole (416x416x3: 519,168 bytes)
and later frames only the rows that differ from the last image it wrote, then asks the
device for the CRC-32 of the whole input (one MEM_CRC: the device reads the input at a
byte a cycle, counted here as device time). Two sequences of the given images (default
assets/*.jpg, in name order), each letterboxed and quantized as `sw/host.py` does:

- *photos*: the images as they are (their own aspect ratios: the letterbox bands differ
  from one image to the next where the ratios differ);
- *16:9 video*: each image centre-cropped to 16:9 first (every frame 416x234 between
  two gray bands of 91 rows, as a 1280x720 camera's frames are), the content changing
  every frame.

Per sequence it prints the input's link bytes per frame after the first (MEM_WRITE
requests with their framing and OK replies, plus MEM_CRC when rows were skipped; the
mean over the frames), against writing the image whole, and per board the UART seconds
they take at its baud and the CRC's device time at its clock. The bytes are exactly what
`ResidentNetwork` sends for these inputs (`sw.runtime.resident.changed_rows`);
tests/test_memory_device.py checks the mechanism on the simulated device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from bench.fps import FRAME_BYTES, board_config, write_bytes
from bench.golden_frame import machine
from boards import BOARDS
from hw.spec import intmath
from sw.runtime.postprocess import letterbox, load_image
from sw.runtime.resident import changed_rows

ROOT = Path(__file__).resolve().parent.parent
SIZE = 416


def crop_16_9(img: np.ndarray) -> np.ndarray:
    """The centre 16:9 part of `img` (the whole image when it is wider)."""
    h, w = img.shape[:2]
    if w * 9 >= h * 16:
        return img
    ch = w * 9 // 16
    top = (h - ch) // 2
    return img[top:top + ch]


def sequence(frames: list[np.ndarray]) -> dict[str, float]:
    """Input link bytes per frame after the first: whole and with the changed rows."""
    whole, rows, skipped = [], [], []
    prev = None
    for x in frames:
        data = x.tobytes()
        whole.append(write_bytes(len(data)))
        if prev is None:
            rows.append(write_bytes(len(data)))
            skipped.append(0)
        else:
            runs = changed_rows(prev, data, len(data) // x.shape[0])
            sent = sum(hi - lo for lo, hi in runs)
            cost = sum(write_bytes(hi - lo) for lo, hi in runs)
            if sent < len(data):                     # MEM_CRC request (addr, len) + reply
                cost += FRAME_BYTES + 8 + FRAME_BYTES + 4
            rows.append(cost)
            skipped.append(len(data) - sent)
        prev = data
    n = len(frames) - 1
    return {"frames": len(frames), "whole_bytes": sum(whole[1:]) / n,
            "rows_bytes": sum(rows[1:]) / n, "skipped_bytes": sum(skipped[1:]) / n,
            "input_bytes": len(frames[0].tobytes())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", nargs="+", type=Path,
                    default=sorted((ROOT / "assets").glob("*.jpg")))
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    if len(args.images) < 2:
        ap.error("--images needs at least two images (the first frame is always whole)")
    imgs = [load_image(p) for p in args.images]
    seqs = {
        "photos": [intmath.quantize_input(letterbox(i, SIZE)[0]) for i in imgs],
        "16:9 video": [intmath.quantize_input(letterbox(crop_16_9(i), SIZE)[0]) for i in imgs],
    }
    print(f"{machine()}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{len(imgs)} images: {', '.join(p.name for p in args.images)}")
    out: dict[str, object] = {"images": [str(p) for p in args.images], "sequences": {}}
    for name, frames in seqs.items():
        s = sequence(frames)
        print(f"\n{name}: input link bytes per frame after the first: {s['whole_bytes']:,.0f} "
              f"whole, {s['rows_bytes']:,.0f} with the changed rows "
              f"({1 - s['rows_bytes'] / s['whole_bytes']:.1%} less; "
              f"{s['skipped_bytes']:,.0f} of {s['input_bytes']:,} image bytes not sent)")
        per_board = {}
        for board in sorted(BOARDS):
            cfg = board_config(board)
            uart = 10 / cfg.uart_baud
            crc_s = s["input_bytes"] / cfg.clock_hz if s["skipped_bytes"] else 0.0
            per_board[board] = {"uart_s_whole": s["whole_bytes"] * uart,
                                "uart_s_rows": s["rows_bytes"] * uart, "crc_s": crc_s}
            print(f"  {board:>15}: UART {cfg.uart_baud / 1e6:g} Mbaud: "
                  f"{s['whole_bytes'] * uart:.3f} s -> {s['rows_bytes'] * uart:.3f} s a frame "
                  f"(+ {crc_s * 1e3:.1f} ms of device CRC at {cfg.clock_hz / 1e6:g} MHz)")
        out["sequences"][name] = s | {"boards": per_board}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
