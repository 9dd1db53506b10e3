"""MAC array resources with one and two MACs per DSP48E1: Yosys `synth_xilinx` estimates.

Run as ``python -m bench.dsp_pack [--shapes 8x8,16x8] [--pack 1,2]``. For each array
shape (R x C) and `HwConfig.mac_pack` it synthesizes `MacArray` alone
(`hw.synth_report.synth_cells`, out of context) and prints a Markdown table: MACs,
DSP48E1, MACs per DSP, LUT, FF, SRL, CARRY4 and the synthesis time. Pre-place-and-route
cell counts, not Vivado utilization. An 8x8 array takes about a minute per variant on
this machine, 16x8 about two.
"""

from __future__ import annotations

import argparse
import time

from hw.mac_array import MacArray
from hw.spec.config import HwConfig
from hw.synth_report import synth_cells, xc7_resources


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="8x8,16x8", help="comma-separated RxC array shapes")
    ap.add_argument("--pack", default="1,2", help="comma-separated mac_pack values")
    args = ap.parse_args(argv)
    print("| array | mac_pack | MACs | DSP48E1 | MACs/DSP | LUT | FF | SRL | CARRY4 | synth s |")
    print("|" + "---|" * 10, flush=True)
    for shape in args.shapes.split(","):
        rows, cols = (int(v) for v in shape.split("x"))
        for pack in (int(v) for v in args.pack.split(",")):
            cfg = HwConfig(array_rows=rows, array_cols=cols, mac_pack=pack)
            start = time.monotonic()
            r = xc7_resources("mac_array", synth_cells(MacArray(cfg), "mac_array"),
                              time.monotonic() - start)
            per = f"{cfg.macs_per_cycle / r.dsp:.2f}" if r.dsp else "-"
            print(f"| {rows}x{cols} | {pack} | {cfg.macs_per_cycle} | {r.dsp} | {per} "
                  f"| {r.lut} | {r.ff} | {r.srl} | {r.carry4} | {r.seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
