"""Builds the Verilator simulator of the memory device on its two links (`EthDeviceTop`:
LiteEth's core on the MII pins, `UdpBridge`, the UART's bytes, `LinkArbiter`,
`MemDeviceTop`) in the C++ harness sim/harness_cpp/main.cpp with ``HARNESS_ETH`` (the cable
and the host's network stack, eth_wire.h, to a local UDP socket; the UART's bytes on
stdin / stdout) and ``HARNESS_MEMORY`` (the harness's model of the device memory).

    python -m hw.eth.simulator --config hw_config.json --timeout-cycles N --dir DIR --key KEY
                               [--ip A.B.C.D] [--mac M] [--udp-port N]

Run by `sw.runtime.udplink.eth_harness_binary` in a child process when no binary with the
current key exists (the runtime never imports Amaranth), like `hw.simulator`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amaranth.hdl import ClockDomain, DomainRenamer, Elaboratable, Module, Signal

from hw.eth import EthError, EthSettings, device_defaults, generate
from hw.simulator import HARNESS_SRC, build_harness, connect_memory_pins
from hw.spec.config import ConfigError, HwConfig

__all__ = ["SIM_CONFIG", "build"]

#: The Ethernet config (boards/eth/) the simulator uses.
SIM_CONFIG = "arty_a7"
#: The MII pins the harness drives (clocks and receive data: not registered) and reads.
_MII_IN = {"mii_rx_clk": 1, "mii_tx_clk": 1, "mii_rx_dv": 1, "mii_rx_data": 4}
_MII_OUT = {"mii_tx_en": 1, "mii_tx_data": 4}
#: The UART link's byte streams (the harness's stdin / stdout).
_UART = {"rx_valid": 1, "rx_ready": 1, "rx_payload": 8, "tx_valid": 1, "tx_ready": 1,
         "tx_payload": 8}


class _EthPipeTop(Elaboratable):
    """`EthDeviceTop` with flat ports for the harness: clk, rst, the MII pins, the UART's
    bytes as rx_* / tx_*, active and the memory port as mem_cmd_*, mem_wdata_*, mem_rdata_*
    (inputs registered as in `hw.simulator`'s pipe top; the MII inputs reach the core
    directly, at their own edges)."""

    def __init__(self, cfg: HwConfig, timeout_cycles: int, settings: EthSettings) -> None:
        from hw.eth.system import EthDeviceTop

        self.core = generate(SIM_CONFIG, sim=True)
        self.dut = EthDeviceTop(cfg, self.core, settings, timeout_cycles)
        widths = {**_MII_IN, **_MII_OUT, **_UART, "active": 1}
        mem = self.dut.mem
        self.mem_out = set()
        for name, s in (("cmd", mem.cmd), ("wdata", mem.wdata), ("rdata", mem.rdata)):
            widths[f"mem_{name}_valid"] = widths[f"mem_{name}_ready"] = 1
            if name == "rdata":
                widths["mem_rdata_data"] = len(s.payload)
                self.mem_out.add("mem_rdata_ready")
            else:
                self.mem_out.add(f"mem_{name}_valid")
                for field in s.payload.shape().members:
                    widths[f"mem_{name}_{field}"] = len(getattr(s.payload, field))
                    self.mem_out.add(f"mem_{name}_{field}")
        self.ports = {n: Signal(w, name=n) for n, w in widths.items()}
        self.clk, self.rst = Signal(name="clk"), Signal(name="rst")

    def elaborate(self, platform: object) -> Module:
        m = Module()
        dut, p = self.dut, dict(self.ports)
        m.domains.dev = dev = ClockDomain("dev")
        m.domains.port = port_cd = ClockDomain("port", reset_less=True)
        m.d.comb += [dev.clk.eq(self.clk), port_cd.clk.eq(self.clk)]
        m.d.port += dev.rst.eq(self.rst)
        m.submodules.dut = DomainRenamer({"sync": "dev"})(dut)
        for name in ("mem_cmd_ready", "mem_wdata_ready", "mem_rdata_valid", "mem_rdata_data",
                     "rx_valid", "rx_payload", "tx_ready"):
            q = Signal.like(p[name], name=f"{name}_q")
            m.d.port += q.eq(p[name])
            p[name] = q
        mii = dut.mii
        m.d.comb += [mii.rx_clk.eq(p["mii_rx_clk"]), mii.tx_clk.eq(p["mii_tx_clk"]),
                     mii.rx_dv.eq(p["mii_rx_dv"]), mii.rx_data.eq(p["mii_rx_data"]),
                     p["mii_tx_en"].eq(mii.tx_en), p["mii_tx_data"].eq(mii.tx_data),
                     p["active"].eq(dut.active),
                     dut.rx.valid.eq(p["rx_valid"]), dut.rx.payload.eq(p["rx_payload"]),
                     p["rx_ready"].eq(dut.rx.ready), p["tx_valid"].eq(dut.tx.valid),
                     p["tx_payload"].eq(dut.tx.payload), dut.tx.ready.eq(p["tx_ready"])]
        connect_memory_pins(m, p, dut.mem)
        return m


def build(cfg: HwConfig, timeout_cycles: int, build_dir: Path, key: str,
          settings: EthSettings) -> Path:
    """Build DIR/harness (unless DIR/stamp.sha256 already holds `key`)."""
    if cfg.mem_data_bits <= 64:
        raise RuntimeError("the harness's memory model needs mem_data_bits > 64")
    flags = (f"-DHARNESS_ETH -DHARNESS_MEMORY -DMEM_WORD_BYTES={cfg.mem_word_bytes} "
             f"-DMEM_BYTES={cfg.mem_bytes}ULL -I{HARNESS_SRC.parent}")
    return build_harness(build_dir, key, lambda: _EthPipeTop(cfg, timeout_cycles, settings),
                         flags, ("-Wno-MULTIDRIVEN",))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hw.eth.simulator",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="HwConfig JSON")
    p.add_argument("--timeout-cycles", type=int, required=True, help="frame timeout of the top")
    p.add_argument("--dir", required=True, help="build directory")
    p.add_argument("--key", required=True, help="cache key to stamp the build with")
    p.add_argument("--ip", help="the device's IPv4 address (default: the board config's)")
    p.add_argument("--mac", help="the device's MAC address")
    p.add_argument("--udp-port", type=int, help="the device's UDP port")
    args = p.parse_args(argv)
    try:
        cfg = HwConfig.load(args.config)
        settings = device_defaults(SIM_CONFIG, ip=args.ip, mac=args.mac, udp_port=args.udp_port)
        build(cfg, args.timeout_cycles, Path(args.dir), args.key, settings)
    except (ConfigError, EthError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
