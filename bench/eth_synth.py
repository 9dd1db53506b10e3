"""Yosys estimate of the Ethernet additions for the Arty parts: LiteEth's generated board
core (MII PHY, MAC, ARP/IP/ICMP/UDP, the raw UDP port) and the UDP bridge.

    python -m bench.eth_synth

`synth_xilinx -family xc7`, as `hw.synth_report` does for the gateware blocks (the core with
its I/O buffers: MDIO is a tristate pin); pre-place-and-route cell counts, not Vivado's
utilization. Prints the
machine, each row and the parts' totals.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hw.eth import generate  # noqa: E402
from hw.eth.bridge import UdpBridge  # noqa: E402
from hw.synth_report import _yosys_command, synth_cells, xc7_resources  # noqa: E402

#: The parts' totals (LUT, FF, BRAM36, DSP48E1): Xilinx DS180.
PARTS = {"xc7a35t": (20800, 41600, 50, 90), "xc7a100t": (63400, 126800, 135, 240)}


def synth_core() -> dict[str, int]:
    """Cells of the board variant of the LiteEth core (with I/O buffers)."""
    core = generate("arty_a7", sim=False)
    with tempfile.TemporaryDirectory(prefix="synth-liteeth-") as tmp:
        shutil.copy(core.verilog, Path(tmp) / "core.v")
        script = (f"read_verilog core.v; synth_xilinx -family xc7 -top {core.meta['module']} "
                  "-flatten -dff; tee -q -o stat.json stat -json")
        r = subprocess.run([*_yosys_command(), "-q", "-p", script], cwd=tmp,
                           capture_output=True, text=True)
        stat = Path(tmp) / "stat.json"
        if r.returncode != 0 or not stat.exists():
            raise SystemExit(f"error: yosys failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        return json.loads(stat.read_text())["design"]["num_cells_by_type"]


def main() -> int:
    print(f"machine: {platform.node()} {platform.machine()}; yosys synth_xilinx -family xc7")
    rows = []
    t = time.monotonic()
    rows.append(xc7_resources("liteeth_core (MII, MAC, ARP/IP/UDP)", synth_core(),
                              time.monotonic() - t))
    t = time.monotonic()
    rows.append(xc7_resources("UdpBridge", synth_cells(UdpBridge(7777), "udp_bridge"),
                              time.monotonic() - t))
    print("| block | LUT | FF | SRL | LUTRAM | CARRY4 | BRAM36 | BRAM18 | synth s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.lut} | {r.ff} | {r.srl} | {r.lutram} | {r.carry4} | "
              f"{r.bram36} | {r.bram18} | {r.seconds:.0f} |")
    lut, ff = sum(r.lut + r.lutram for r in rows), sum(r.ff for r in rows)
    bram = sum(r.bram36_equiv for r in rows)
    for part, (pl, pf, pb, _pd) in PARTS.items():
        print(f"{part}: Ethernet {lut} LUT ({100 * lut / pl:.1f}%), {ff} FF "
              f"({100 * ff / pf:.1f}%), {bram:g} BRAM36 ({100 * bram / pb:.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
