"""Runs LiteEth's standalone core generator on a board's Ethernet config (a child process of
`hw.eth.generate`: it imports Migen, LiteX and LiteEth, which nothing else here does).

    python -m hw.eth.liteeth_gen --config boards/eth/BOARD.yml --out DIR [--sim]

Writes DIR/liteeth_core.v (module ``liteeth_core``) and DIR/core.json (the module's ports,
the PHY, the clock, the versions). ``--sim`` generates the same core (the board's PHY, MII
included) for Verilator: LiteX's simulation platform, whose lowering of the PHY's reset
synchronisers is plain Verilog, instead of the vendor's primitives.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["CORE_NAME", "main"]

#: The core's module name.
CORE_NAME = "liteeth_core"


def _core_config(path: Path) -> dict[str, Any]:
    """The `liteeth` section of the board's YAML as liteeth_gen's config (its conversions)."""
    import yaml
    from liteeth import phy as liteeth_phys

    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("liteeth"), dict):
        raise ValueError(f"{path}: no `liteeth` mapping")
    cfg: dict[str, Any] = {}
    for k, v in raw["liteeth"].items():
        v = {"None": None, "True": True, "False": False}.get(v, v) if isinstance(v, str) else v
        if k == "phy":
            if not hasattr(liteeth_phys, str(v)):
                raise ValueError(f"{path}: unknown LiteEth PHY {v!r}")
            v = getattr(liteeth_phys, v)
        elif k in ("clk_freq", "refclk_freq"):
            v = int(float(v))
        cfg[k] = v
    if cfg.get("core") != "udp":
        raise ValueError(f"{path}: core must be udp (MAC + ARP/IP/UDP)")
    for key in ("ip_address", "mac_address"):
        if cfg.get(key) is not None:
            raise ValueError(f"{path}: {key} is set by hw.eth, not in the config")
    ports = cfg.get("udp_ports") or {}
    if len(ports) != 1 or next(iter(ports.values())).get("mode") != "raw":
        raise ValueError(f"{path}: exactly one udp port, of mode raw, is expected")
    if next(iter(ports.values())).get("data_width", 8) != 8:
        raise ValueError(f"{path}: the udp port is 8 bits wide")
    cfg.setdefault("device", "")
    return cfg


def _platform(cfg: dict[str, Any], sim: bool) -> Any:
    """The LiteX platform, with liteeth_gen's IOs."""
    from liteeth.gen import _io
    from litex.build.lattice import LatticePlatform
    from litex.build.sim import SimPlatform
    from litex.build.xilinx import XilinxPlatform

    if sim:
        platform = SimPlatform("", io=[])
        # Verilator has no timing constraints: the PHY's clock constraints are dropped.
        platform.add_period_constraint = lambda *a, **k: None
        platform.add_false_path_constraints = lambda *a, **k: None
    elif cfg.get("vendor") == "xilinx":
        platform = XilinxPlatform(cfg["device"], io=[], toolchain=cfg.get("toolchain", "vivado"))
    elif cfg.get("vendor") == "lattice":
        platform = LatticePlatform(cfg["device"], io=[], toolchain=cfg.get("toolchain", "trellis"))
    else:
        raise ValueError(f"unsupported vendor {cfg.get('vendor')!r}")
    platform.add_extension(_io)
    return platform


def _ports(verilog: str) -> dict[str, list[Any]]:
    """{port: [direction, width]} of the core's module header."""
    head = verilog[verilog.index(f"module {CORE_NAME}"):]
    head = head[:head.index(");")]
    out = {}
    pattern = r"(input|output|inout)\s+(?:wire|reg)\s+(?:\[(\d+):0\]\s+)?(\w+)"
    for d, msb, name in re.findall(pattern, head):
        out[name] = [d, int(msb) + 1 if msb else 1]
    return out


def generate(config: Path, out: Path, sim: bool) -> dict[str, Any]:
    """Generate the core into `out`; returns what core.json holds."""
    from liteeth.gen import UDPCore
    from litex.soc.integration.builder import Builder

    cfg = _core_config(config)
    platform = _platform(cfg, sim)
    if sim:
        # The sim platform's build also prepares LiteX's own simulator; only the Verilog is
        # wanted (as in hw.dram.litedram_gen).
        import litex.build.sim.verilator as litex_verilator
        litex_verilator._generate_sim_variables = lambda *a, **k: None
        litex_verilator._build_sim = lambda *a, **k: None
    soc = UDPCore(platform, cfg)
    builder = Builder(soc, output_dir=str(out), compile_software=False, compile_gateware=False,
                      csr_json=str(out / "csr.json"))
    builder.build(build_name=CORE_NAME, regular_comb=False)
    verilog_path = out / "gateware" / f"{CORE_NAME}.v"
    (out / f"{CORE_NAME}.v").write_text(verilog_path.read_text())
    xdc = out / "gateware" / f"{CORE_NAME}.xdc"
    if xdc.exists():
        (out / f"{CORE_NAME}.xdc").write_text(xdc.read_text())
    meta = {
        "module": CORE_NAME,
        "config": str(config),
        "sim": sim,
        "phy": cfg["phy"].__name__,
        "clk_freq": cfg["clk_freq"],
        "udp_port_name": next(iter(cfg["udp_ports"])),
        "ports": _ports(verilog_path.read_text()),
        "versions": {d: md.version(d) for d in ("liteeth", "litex", "migen")},
    }
    (out / "core.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hw.eth.liteeth_gen",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--sim", action="store_true", help="for Verilator (LiteX's sim platform)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        generate(args.config, args.out, args.sim)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
