"""Runs LiteDRAM's standalone core generator on a board's DRAM config (a child process of
`hw.dram.generate`: it imports Migen, LiteX and LiteDRAM, which nothing else here does).

    python -m hw.dram.litedram_gen --config boards/dram/BOARD.yml --data-bits N --out DIR [--sim]

Writes DIR/litedram_core.v (module ``litedram_core``), DIR/csr.json and DIR/core.json: the
module's ports, the CSR addresses, the PHY's leveling capabilities, the DRAM size and the
init sequence LiteDRAM generates for the PHY and module (`litedram.init`), as data.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

#: The core's module name.
CORE_NAME = "litedram_core"


def _core_config(path: Path, data_bits: int) -> dict[str, Any]:
    """The board's YAML as litedram_gen's core config (its conversions, done here)."""
    import yaml
    from litedram import modules as litedram_modules
    from litedram import phy as litedram_phys

    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a mapping")
    cfg: dict[str, Any] = {}
    for k, v in raw.items():
        v = {"None": None, "True": True, "False": False}.get(v, v) if isinstance(v, str) else v
        if "clk_freq" in k:
            v = float(v)
        elif k == "sdram_module":
            v = getattr(litedram_modules, v)
        elif k == "sdram_phy":
            v = getattr(litedram_phys, v)
        cfg[k] = v
    ports = cfg.get("user_ports") or {}
    if len(ports) != 1 or next(iter(ports.values())).get("type") != "native":
        raise ValueError(f"{path}: exactly one user port, of type native, is expected")
    name = next(iter(ports))
    cfg["user_ports"] = {name: {**ports[name], "data_width": data_bits}}
    return cfg


def _platform(cfg: dict[str, Any], sim: bool) -> Any:
    """The LiteX platform litedram_gen picks for the PHY."""
    from litedram import phy as litedram_phys
    from litex.build.lattice import LatticePlatform
    from litex.build.sim import SimPlatform
    from litex.build.xilinx import XilinxPlatform

    phy = cfg["sdram_phy"]
    if sim:
        return SimPlatform("", io=[])
    if phy in (litedram_phys.GENSDRPHY, litedram_phys.ECP5DDRPHY):
        return LatticePlatform(cfg["device"], io=[], toolchain="trellis")
    if phy in (litedram_phys.A7DDRPHY, litedram_phys.K7DDRPHY, litedram_phys.V7DDRPHY):
        return XilinxPlatform("", io=[], toolchain="vivado")
    raise ValueError(f"unsupported SDRAM PHY {phy.__name__}")


def _ports(verilog: str) -> dict[str, list[Any]]:
    """{port: [direction, width]} of the core's module header."""
    head = verilog[verilog.index(f"module {CORE_NAME}"):]
    head = head[:head.index(");")]
    out = {}
    for d, msb, name in re.findall(r"(input|output|inout)\s+wire\s+(?:\[(\d+):0\]\s+)?(\w+)",
                                   head):
        out[name] = [d, int(msb) + 1 if msb else 1]
    return out


def _fix_bidirectional(verilog: str) -> str:
    """LiteX declares the pads its ECP5 tristates (TRELLIS_IO ``B``) drive as inputs of the
    core's module: declare them ``inout``, as its Xilinx cores do, so that a top level
    wires them to bidirectional pins."""
    names = set(re.findall(r"\.B\s*\((\w+)[\[)\s]", verilog))
    for name in names:
        verilog = re.sub(rf"\binput(\s+wire\s+(?:\[\d+:0\]\s+)?{name}\s*,)", r"inout\1",
                         verilog, count=1)
    return verilog


def _init_sequence(settings: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """LiteDRAM's DFII constants and init sequence for the PHY and module, as data.

    The constants come from the Python header `litedram.init` writes; each step is
    (comment, address, bank address, command, delay) as `get_sdram_phy_init_sequence`
    gives it, its command a '|' of DFII_CONTROL_* (a write of the DFII control register)
    or DFII_COMMAND_* names (a command issued on phase 0), as LiteDRAM's C header does."""
    from litedram.init import get_sdram_phy_init_sequence, get_sdram_phy_py_header

    header: dict[str, Any] = {}
    exec(get_sdram_phy_py_header(settings.phy, settings.timing), header)  # LiteDRAM's output
    consts = {k.upper(): v for k, v in header.items() if k.startswith("dfii_")}
    seq, _mr = get_sdram_phy_init_sequence(settings.phy, settings.timing)
    steps = []
    for comment, a, ba, cmd, delay in seq:
        names = [n.strip() for n in cmd.split("|")]
        value = 0
        for n in names:
            value |= consts[n]
        kind = "control" if all(n.startswith("DFII_CONTROL") for n in names) else "command"
        steps.append({"comment": comment, "address": int(a), "baddress": int(ba),
                      "kind": kind, "value": value, "delay": int(delay)})
    return consts, steps


def _int_or_none(v: Any) -> int | None:
    """An int setting, or a Migen signal's reset value (as LiteDRAM's C header takes it)."""
    v = getattr(getattr(v, "reset", None), "value", v)
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def generate(config: Path, data_bits: int, out: Path, sim: bool) -> dict[str, Any]:
    """Generate the core into `out`; returns what core.json holds."""
    from litedram.gen import LiteDRAMCore
    from litex.soc.integration.builder import Builder

    cfg = _core_config(config, data_bits)
    platform = _platform(cfg, sim)
    if sim:
        # The sim platform's build also prepares LiteX's own simulator (its variables need
        # the tapcfg data package, from git only, and a make run): only the Verilog is
        # wanted, so those two steps are skipped.
        import litex.build.sim.verilator as litex_verilator
        litex_verilator._generate_sim_variables = lambda *a, **k: None
        litex_verilator._build_sim = lambda *a, **k: None
    soc = LiteDRAMCore(platform, cfg, integrated_rom_size=0xC000)
    builder = Builder(soc, output_dir=str(out), compile_software=False, compile_gateware=False,
                      csr_json=str(out / "csr.json"))
    builder.build(build_name=CORE_NAME, regular_comb=False)
    verilog = _fix_bidirectional((out / "gateware" / f"{CORE_NAME}.v").read_text())
    (out / f"{CORE_NAME}.v").write_text(verilog)

    settings = soc.sdram.controller.settings
    consts, steps = _init_sequence(settings)
    csr = json.loads((out / "csr.json").read_text())
    geom = settings.geom
    mem_bytes = (1 << (geom.bankbits + geom.rowbits + geom.colbits)) * settings.phy.databits // 8
    versions = {}
    import importlib.metadata as md
    for dist in ("litedram", "litex", "migen"):
        versions[dist] = md.version(dist)
    meta = {
        "module": CORE_NAME,
        "config": str(config),
        "sim": sim,
        "memtype": settings.phy.memtype,
        # the DRAM data path: DQ lines, DFI data bits per phase, DFI phases (DRAM clocks per
        # sys clock): `GeneratedCore.peak_bytes_per_cycle`
        "databits": settings.phy.databits,
        "dfi_databits": settings.phy.dfi_databits,
        "nphases": settings.phy.nphases,
        "phy": "SDRAMPHYModel" if sim else cfg["sdram_phy"].__name__,
        "sdram_module": cfg["sdram_module"].__name__,
        "sys_clk_freq": cfg["sys_clk_freq"],
        "mem_bytes": mem_bytes,
        "ports": _ports(verilog),
        "csr": {k: v["addr"] for k, v in csr["csr_registers"].items()},
        "csr_data_width": csr["constants"].get("config_csr_data_width", 32),
        "rdphase": _int_or_none(getattr(settings.phy, "rdphase", None)),
        "wrphase": _int_or_none(getattr(settings.phy, "wrphase", None)),
        "read_leveling": bool(getattr(settings.phy, "read_leveling", False)),
        "write_leveling": bool(getattr(settings.phy, "write_leveling", False)),
        "dfii": consts,
        "init_sequence": steps,
        "versions": versions,
    }
    (out / "core.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hw.dram.litedram_gen",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--data-bits", required=True, type=int)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--sim", action="store_true", help="SDRAMPHYModel in place of the PHY")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        generate(args.config, args.data_bits, args.out, args.sim)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
