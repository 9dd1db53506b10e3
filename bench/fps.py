"""Frames per second of the memory device per board, from the engine's schedule model.

    python -m bench.fps --board arty_a7_100 [--json] [--bundle PATH]

Compiles the bundle (default: the shipped default bundle) for the board's HwConfig
(`boards/*.json`, else the default config), sums the no-stall schedule of every pass
(`hw.spec.engine.engine_cycles`, checked against Verilator by the engine tests) plus the
parameter block's beats (one a cycle), and prints one JSON object with `--json`:

- `board`, `macs` (MACs per cycle), `dsp_used` (the MAC array's multipliers:
  `HwConfig.multipliers`; DSP48E1 on Artix-7, MULT18X18D on ECP5), `dsp_total` (the part's),
  `clock_hz` (the config's clock, which the board's timing build meets),
  `cycles_per_frame`, `utilization` (the network's MACs over `macs * cycles_per_frame`);
- `fps_compute`: the engine alone at `clock_hz`;
- `fps_uart`, `fps_ethernet`: link time plus compute, not overlapped, with the link bytes
  of one frame (`link_bytes_per_frame`: the int8 image written and the heads and trace
  read in protocol frames, STATUS polls not counted) over the board's UART (8N1) and
  over 100 Mbit Ethernet (8.8 MB/s of UDP payload as `bench.eth_link` measures it in
  simulation; the Arty boards only).

The measured frame on the simulated device (`bench/sim_frame.py`) adds memory stalls and
pass starts to this model (0.3% on the default config, 2026-11-27).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from boards import BOARDS
from hw.spec import protocol
from hw.spec.config import DEFAULT, HwConfig, load_config
from hw.spec.memory import TRACE_BYTES
from sw.runtime.bundle import Bundle
from sw.runtime.detect import shipped_bundle
from sw.runtime.program import NetworkImage, compile_network

#: UDP payload rate of the Arty's 100 Mbit Ethernet as measured over the simulated LiteEth
#: core, MII PHY and UDP bridge by `python -m bench.eth_link` (8.80 MB/s written, 8.76 read,
#: stop and wait, the host's turnaround not included; 2026-11-27). The brief's 11.5 MB/s is
#: the wire's limit with every datagram in flight at once.
ETHERNET_BYTES_S = 8.8e6
#: Bytes a request or reply frame adds to its payload (sync, opcode, length, CRC).
FRAME_BYTES = 7


def board_config(name: str) -> HwConfig:
    """The HwConfig a board is built with (its JSON next to the board file, else DEFAULT)."""
    path = BOARDS[name].default_config_path()
    return load_config(path) if path else DEFAULT


def write_bytes(n: int) -> int:
    """Link bytes of writing `n` bytes with MEM_WRITE: requests of an address and up to
    MAX_PAYLOAD - 4 bytes each, an OK reply each."""
    chunk = protocol.MAX_PAYLOAD - 4
    return n + math.ceil(n / chunk) * (FRAME_BYTES + 4 + FRAME_BYTES)


def link_bytes(image_bytes: int, read_bytes: int) -> int:
    """Bytes both ways for one frame: MEM_WRITE requests of the image (`write_bytes`),
    MEM_READ requests of the heads and trace (DATA frames of MAX_PAYLOAD bytes, then an OK
    with the rest), PROGRAM_RUN."""
    out = write_bytes(image_bytes)
    frames = math.ceil(read_bytes / protocol.MAX_PAYLOAD) + 1
    inb = read_bytes + frames * FRAME_BYTES + FRAME_BYTES + 8
    return out + inb + 2 * FRAME_BYTES + 10


def projection(cycles: int, cfg: HwConfig, link_bytes: int, ethernet: bool) -> dict[str, float]:
    """Frame time and fps of `cycles` at `cfg.clock_hz` plus `link_bytes` over the config's
    UART (8N1: 10 bits a byte) and, with `ethernet`, over 100 Mbit Ethernet
    (`ETHERNET_BYTES_S`): link and compute not overlapped."""
    compute = cycles / cfg.clock_hz
    out = {"cycles": cycles, "compute_s": compute,
           "fps_uart": 1 / (link_bytes * 10 / cfg.uart_baud + compute),
           "fps_compute": 1 / compute}
    if ethernet:
        out["fps_ethernet"] = 1 / (link_bytes / ETHERNET_BYTES_S + compute)
    return out


def model_cycles(image: NetworkImage, cfg: HwConfig) -> int:
    """A compiled network's cycles per frame in the schedule model: every pass's no-stall
    schedule plus its parameter block's beats (one a cycle)."""
    return sum(p.cycles(cfg) + p.param_len // cfg.param_beat for p in image.passes)


def fps(board: str, bundle: Bundle, heads_bytes: int | None = None,
        extra_cycles: int = 0) -> dict[str, object]:
    """The figures of one board (module docstring). `heads_bytes` replaces the bytes of
    the heads read per frame and `extra_cycles` adds device cycles (for a projection of a
    device-side head filter, `bench.head_filter`)."""
    cfg = board_config(board)
    b = BOARDS[board]
    image = compile_network(bundle, cfg)
    cycles = model_cycles(image, cfg) + extra_cycles
    h, w, c = bundle.input_shape
    heads = (sum(image.layer_views[i].nbytes for i in image.heads) if heads_bytes is None
             else heads_bytes)
    link = link_bytes(h * w * c, heads + TRACE_BYTES * len(image.passes))
    dsp = "DSP48E1" if b.family == "xc7" else "MULT18X18D"
    proj = projection(cycles, cfg, link, ethernet=b.family == "xc7")
    out: dict[str, object] = {
        "board": board, "macs": cfg.macs_per_cycle, "dsp_used": cfg.multipliers,
        "dsp_total": b.capacity[dsp], "clock_hz": cfg.clock_hz, "cycles_per_frame": cycles,
        "utilization": sum(image.macs) / (cfg.macs_per_cycle * cycles),
        "fps_compute": proj["fps_compute"], "link_bytes_per_frame": link,
        "fps_uart": proj["fps_uart"]}
    if "fps_ethernet" in proj:
        out["fps_ethernet"] = proj["fps_ethernet"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", required=True, choices=sorted(BOARDS))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--bundle", help="bundle (default: the shipped default bundle)")
    args = ap.parse_args(argv)
    cfg = board_config(args.board)
    bundle = Bundle.load(args.bundle or shipped_bundle(cfg), expect=cfg)
    r = fps(args.board, bundle)
    if args.json:
        print(json.dumps(r))
        return 0
    for k, v in r.items():
        print(f"{k:>22}: {v:,.3f}" if isinstance(v, float) else f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
