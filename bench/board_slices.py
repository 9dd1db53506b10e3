"""Benchmark check: a board config's engine in Verilator against the schedule model.

    python bench/board_slices.py [--board arty_a7_100]

Builds the board's LayerEngine (its HwConfig with max_width 32) and runs the Tiny-YOLOv3-
shaped slices of `sim/test_engine.py` BOARD_SLICES through it with no stalls: every output
bit-exact against the reference and every pass's cycles within 1% of
`hw.spec.engine.engine_cycles` (the cocotb test `engine_slice` asserts both). Prints the
machine and the wall time. About 10 minutes for the A7-100T's 50x8 packed array on 2 cores,
most of it the Verilator build.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "sim")]

from harness import run_block  # noqa: E402
from test_engine import BOARD_SLICES, board_slice_config  # noqa: E402

from bench.golden_frame import machine  # noqa: E402
from boards import BOARDS  # noqa: E402
from hw.engine import LayerEngine  # noqa: E402
from hw.simulator import verilator_env  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="arty_a7_100",
                    choices=[b for b, v in BOARDS.items() if v.hw_config])
    args = ap.parse_args()
    cfg = board_slice_config(args.board)
    env = verilator_env()          # as sim/conftest.py: the venv's verilator, MAKEFLAGS
    os.environ["PATH"], os.environ["MAKEFLAGS"] = env["PATH"], env["MAKEFLAGS"]
    t0 = time.perf_counter()
    run_block(LayerEngine(cfg), "engine", "base", cfg, "test_engine",
              {"seed": 3100, "idle": 0.0, "stall": 0.0, "slices": BOARD_SLICES}, seed=13,
              testcase="engine_slice")
    print(f"machine: {machine()}")
    print(f"{args.board} ({cfg.array_rows}x{cfg.array_cols}, mac_pack {cfg.mac_pack}): "
          f"{len(BOARD_SLICES)} slices bit-exact and within 1% of the schedule model, "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
