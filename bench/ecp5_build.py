"""Full ECP5 open flow of a board build (ULX3S 85F by default): Yosys, nextpnr-ecp5, ecppack.

Run as ``python -m bench.ecp5_build [--board NAME] [--system dram|streaming] [--hw-config
JSON] [--build-dir DIR]`` (default: the board's system, and the board's config for the
DRAM system, the built-in default for the streaming device). Prints the
machine, wall time per step, nextpnr's Fmax (and the critical path when the target is
missed) and the resources: the Yosys estimate and nextpnr's device utilisation.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

from boards import BOARDS
from hw.build import (
    NAME,
    SYSTEMS,
    BuildError,
    build,
    critical_path,
    default_system,
    format_usage,
    parse_nextpnr_fmax,
)
from hw.spec.config import load_config


def nextpnr_utilisation(log: str) -> dict[str, tuple[int, int]]:
    """{cell type: (used, available)} from the last 'Device utilisation' block of a log."""
    i = log.rfind("Device utilisation:")
    if i < 0:
        return {}
    found = {}
    for line in log[i:].splitlines()[1:]:
        m = re.search(r"(\w+):\s+(\d+)/\s*(\d+)", line)
        if m is None:
            break
        found[m[1]] = (int(m[2]), int(m[3]))
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ulx3s_85f",
                    choices=[b for b, v in BOARDS.items() if v.family == "ecp5"])
    ap.add_argument("--system", choices=SYSTEMS, help="default: the board's")
    ap.add_argument("--hw-config", help="HwConfig JSON (default: the board's for the DRAM "
                                        "system, else the built-in default)")
    ap.add_argument("--build-dir", type=Path, default=Path("build/bench_ecp5"))
    args = ap.parse_args(argv)
    board = BOARDS[args.board]
    system = args.system or default_system(board)
    cfg = load_config(args.hw_config or (board.default_config_path() if system == "dram"
                                         else None))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    start = time.monotonic()
    try:
        result = build(board, cfg, args.build_dir, run_estimate=True, system=system)
        ok = True
    except BuildError as e:
        print(f"error: {str(e).splitlines()[0]}")
        result, ok = None, False
    total = time.monotonic() - start
    tim_path = args.build_dir / f"{NAME}.tim"
    tim = tim_path.read_text() if tim_path.exists() else ""
    util = nextpnr_utilisation(tim)
    if util:
        print("nextpnr device utilisation:")
        print("| cell | used | available | util |\n|---|---|---|---|")
        for cell, (used, avail) in util.items():
            if used:
                print(f"| {cell} | {used} | {avail} | {100 * used / avail:.1f}% |")
    if result is not None and result.usage is not None:
        print("yosys estimate (synth_ecp5):")
        print(format_usage(result.usage, board.capacity))
    for clk, (f, target) in parse_nextpnr_fmax(tim).items():
        print(f"Fmax {clk}: {f:.2f} MHz (target {target:.2f} MHz, "
              f"{'met' if f >= target else 'NOT met'})")
    if not ok and tim:
        print(critical_path(tim))
    bit = args.build_dir / f"{NAME}.bit"
    print(f"bitstream: {bit} ({bit.stat().st_size} bytes)" if bit.exists() else "no bitstream")
    print(f"total build time: {total:.0f} s (estimate + yosys + nextpnr + ecppack)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
