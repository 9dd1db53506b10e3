"""Benchmark: one 416x416 Tiny-YOLOv3 frame on the simulated device with its memory, or on a
board's simulated DRAM system.

    python bench/sim_frame.py [--system memory|dram-BOARD [--uart]] [--board NAME]
                              [--spans N] [--image assets/dog.jpg] [--bundle PATH]
                              [--json FILE]

`--system memory` (default): the device with the harness's model of its memory (the
default config, or with `--board NAME` that board's HwConfig). The network is preloaded
into the simulated memory (the harness's backdoor; the upload itself is measured for its
size only); the frame runs as on a board:
the host writes the int8 image, starts the program, polls STATUS and reads the two heads
over the framed protocol. `--spans N` (default 2, for the 2-core machines) runs the program
in N spans on N simulators side by side (`tests.split_frame`: span j > 0 starts from the
program reference's memory after the passes before it, and the memory at each span's end
must equal the reference's byte for byte); `--spans 1` runs it whole in one. The frame is
checked bit-exact (every stored layer output and both heads against the golden model; exit
1 when not). Prints the machine, the simulation's wall time for the frame (the simulators'
start to the last one's end), each span's CPU seconds, the frame's cycles (measured,
engine, no-stall schedule), memory stall and overhead cycles, DRAM and link bytes, the
memory model's counts, the per-layer table, and projected frames per second of the
default, A7-35T and A7-100T configs over a 12 Mbaud UART and over 100 Mbit Ethernet
(`bench.fps.ETHERNET_BYTES_S`, measured by `bench.eth_link`): a frame takes its link time
plus its compute time (link and compute not overlapped), compute as measured here for the
config run; for the other configs their schedule model's cycles with the
parameter beats (`bench.fps.model_cycles`) scaled by what the measured frame adds to the
run config's.

`--system dram-BOARD` (e.g. `dram-arty_a7`, `dram-ulx3s_85f`): the board's system
simulation (`SimLink(top="dram-CONFIG-nouart")`, docs/dram.md: the memory device on
LiteDRAM's controller with its SDRAM PHY model, the board's HwConfig; without the board's
UART, whose byte time would make the 8.9 MB upload hours of simulation: `--uart` runs the
system as tests/test_dram.py has it, UART included; the link's time is projected from its
bytes either way). The
unchanged host driver uploads the network through the link (checked by the device's
CRC-32) and runs the frame. Besides the figures above: the heads checked bit-exact against
the golden model (exit 1 when not), the upload's and the frame's simulator CPU seconds, the
DRAM efficiency (bytes the engine moved per frame, the achieved bandwidth over the frame
against the peak of the board's DRAM at its clock: DFI phases x data bits x sys clock) and
the board's projected fps over its UART and (Arty) over Ethernet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.fps import ETHERNET_BYTES_S, board_config, model_cycles, projection  # noqa: E402
from bench.golden_frame import machine  # noqa: E402
from boards import BOARDS  # noqa: E402
from hw.spec import intmath  # noqa: E402
from hw.spec.config import DEFAULT, HwConfig  # noqa: E402
from sw.runtime.bundle import Bundle  # noqa: E402
from sw.runtime.detect import shipped_bundle  # noqa: E402
from sw.runtime.device import Device  # noqa: E402
from sw.runtime.golden import GoldenModel  # noqa: E402
from sw.runtime.link import SimLink, harness_binary  # noqa: E402
from sw.runtime.postprocess import letterbox, load_image  # noqa: E402
from sw.runtime.program import compile_network  # noqa: E402
from sw.runtime.resident import FrameRun, ResidentNetwork, memory_training  # noqa: E402
from tests.reference import check_layers  # noqa: E402
from tests.split_frame import run_split_frame  # noqa: E402


def parse_system(system: str) -> str | None:
    """The board of ``dram-BOARD`` (None for ``memory``); exits with a message otherwise."""
    if system == "memory":
        return None
    board = system.removeprefix("dram-")
    if not system.startswith("dram-") or board not in BOARDS:
        names = ", ".join(f"dram-{b}" for b in sorted(BOARDS))
        raise SystemExit(f"error: unknown --system {system!r} (memory, {names})")
    if BOARDS[board].dram is None:
        raise SystemExit(f"error: board {board} has no DRAM config")
    return board


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", default="memory",
                   help="memory (the harness's memory model) or dram-BOARD (the board's "
                        "LiteDRAM system simulation)")
    p.add_argument("--uart", action="store_true",
                   help="dram-BOARD: through the board's UART as tests/test_dram.py (the "
                        "upload alone is 10 x uart_divisor cycles a byte: hours)")
    p.add_argument("--image", default=str(ROOT / "assets" / "dog.jpg"))
    p.add_argument("--bundle", help="bundle (default: the shipped default bundle)")
    p.add_argument("--json", help="also write the numbers as JSON here")
    p.add_argument("--board", choices=sorted(BOARDS),
                   help="memory: the frame on this board's HwConfig (default: the default "
                        "config)")
    p.add_argument("--spans", type=int, default=2,
                   help="memory: simulators side by side, each running a span of the "
                        "program (default 2: the machines have 2 cores; 1: one process)")
    args = p.parse_args()
    if args.spans < 1:
        p.error("--spans must be at least 1")
    board = parse_system(args.system)
    if board is not None and args.board:
        p.error("--board is for --system memory (dram-BOARD names its board)")
    cfg = board_config(board or args.board) if board or args.board else DEFAULT
    bundle = Bundle.load(args.bundle or shipped_bundle(cfg), expect=cfg)
    x = intmath.quantize_input(letterbox(load_image(args.image), bundle.input_shape[0])[0])
    image = compile_network(bundle, cfg)
    if board is None:
        return memory_frame(args, cfg, bundle, image, x)
    return dram_frame(args, board, cfg, bundle, x)


def print_frame(run: FrameRun, cfg: HwConfig) -> None:
    """The frame's cycles, utilization, bytes and per-layer table."""
    f = run.frame
    print(f"frame: {f['cycles']:,} cycles = engine {f['engine_cycles']:,} (no-stall "
          f"schedule {f['model_cycles']:,}; memory stalls {f['memory_stall_cycles']:,}, "
          f"{f['memory_stall_cycles'] / f['cycles']:.1%}) + overhead "
          f"{f['overhead_cycles']:,} ({f['overhead_cycles'] / f['cycles']:.1%}: descriptors, "
          f"parameter loading, pass start and drain); "
          f"{1 - f['model_cycles'] / f['cycles']:.1%} of the frame beyond the no-stall schedule")
    conv = [e for e in run.layers if e["macs"]]
    conv_util = sum(e["macs"] for e in conv) / (cfg.macs_per_cycle
                                                * sum(e["model_cycles"] for e in conv))
    print(f"MAC utilization: {f['utilization']:.1%} of the frame's cycles; no-stall schedule "
          f"{f['model_utilization']:.1%} (its conv passes alone {conv_util:.1%})")
    print(f"{f['passes']} passes; DRAM {f['dram_read_bytes']:,} bytes read, "
          f"{f['dram_write_bytes']:,} written; link {f['link_bytes_per_frame']:,} bytes per "
          f"frame")
    print("| layer | passes | cycles | engine | no-stall | MAC util. (no-stall) | DRAM read | "
          "DRAM write |")
    print("|---|---|---|---|---|---|---|---|")
    for e in run.layers:
        print(f"| {e['layer']} | {e['passes']} | {e['cycles']:,} | {e['engine_cycles']:,} | "
              f"{e['model_cycles']:,} | {e['utilization']:.1%} ({e['model_utilization']:.1%}) "
              f"| {e['dram_read_bytes']:,} | {e['dram_write_bytes']:,} |")


def memory_frame(args: argparse.Namespace, cfg: HwConfig, bundle: Bundle, image: Any,
                 x: np.ndarray) -> int:
    """The frame on the memory top (the harness's memory model; module docstring)."""
    golden = GoldenModel(bundle).run(x, keep=True)
    t0 = time.perf_counter()
    harness_binary(cfg, top="memory", train=memory_training)   # built first if need be
    t_ready = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            split = run_split_frame(cfg, bundle, image, x, Path(tmp), spans=args.spans)
            wall = time.perf_counter() - t0
            compared = check_layers(bundle, image, split.memory, golden)
            for i, head in split.run.heads.items():
                assert np.array_equal(head, golden[i]), f"head {i} as read over the link"
        except AssertionError as e:
            print(f"error: not bit-exact: {e}", file=sys.stderr)
            return 1
    run = split.run
    f = run.frame
    upload = image.tensors_addr - image.program_addr + 64
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"HwConfig {cfg.config_id_hex}: {cfg.array_rows}x{cfg.array_cols} array, "
          f"{cfg.clock_hz / 1e6:.0f} MHz, memory port {cfg.mem_data_bits} bits")
    spans = "; ".join(f"passes {a}..{b - 1}: {c:.1f} s CPU, {w:.1f} s wall" for (a, b), c, w
                      in zip(split.spans, split.cpu_s, split.wall_s, strict=True))
    sims = (f"{len(split.spans)} simulators side by side" if len(split.spans) > 1
            else "one simulator")
    print(f"simulator ready in {t_ready:.1f} s; frame simulated in {wall:.1f} s wall on "
          f"{sims} ({spans}); simulator CPU {sum(split.cpu_s):.1f} s in all")
    print(f"bit-exact: the memory after each span equals the program reference's; "
          f"{compared} layer outputs and {len(run.heads)} heads equal the golden model's")
    print_frame(run, cfg)
    print(f"upload {upload:,} bytes once; memory model per span: "
          + "; ".join(str(m) for m in split.mem_stats))
    rows = {}
    # the model's cycles (schedule and parameter beats) scaled by what the measured frame
    # adds to them on the default config (stalls, descriptors, pass starts)
    measured = f["cycles"] / model_cycles(image, cfg)
    label = args.board or "default"
    for name, c in ((f"{label} {cfg.array_rows}x{cfg.array_cols} (measured)", cfg),
                    *((n, board_config(b)) for n, b in (("A7-35T", "arty_a7"),
                                                         ("A7-100T", "arty_a7_100"))
                      if b != args.board)):
        cyc = f["cycles"] if c is cfg else round(
            measured * model_cycles(compile_network(bundle, c), c))
        rows[name] = projection(cyc, c, f["link_bytes_per_frame"], ethernet=True)
    print("| config | cycles per frame | compute | fps, 12 Mbaud UART | fps, 100 Mbit Ethernet "
          "| fps, compute alone |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['cycles']:,} | {r['compute_s']:.3f} s | {r['fps_uart']:.2f} | "
              f"{r['fps_ethernet']:.2f} | {r['fps_compute']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "wall_s": wall, "spans": split.spans,
            "span_cpu_s": split.cpu_s, "span_wall_s": split.wall_s, "frame": f,
            "projections": rows, "memory_model": split.mem_stats}, indent=1))
    return 0


def dram_frame(args: argparse.Namespace, board: str, cfg: HwConfig, bundle: Bundle,
               x: np.ndarray) -> int:
    """The frame on the board's DRAM system simulation (module docstring)."""
    from hw.dram import generate
    from hw.simulator import DRAM_SIM_BOARD, NO_UART

    b = BOARDS[board]
    # the simulator tests/test_dram.py builds ("dram": the Arty's DRAM config), without its
    # UART unless --uart
    top = ("dram" if b.dram == DRAM_SIM_BOARD else f"dram-{b.dram}") + ("" if args.uart
                                                                        else NO_UART)
    sim_core = generate(b.dram, cfg.mem_data_bits, sim=True)
    board_core = generate(b.dram, cfg.mem_data_bits)
    golden = GoldenModel(bundle)
    t0 = time.process_time()
    want = golden.run(x, keep=False)
    golden_cpu = time.process_time() - t0
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    with SimLink(cfg, top=top) as link:
        t_ready = time.perf_counter() - t0          # the simulator's build on first use
        dev = Device(link, timeout=120.0)
        net = ResidentNetwork(dev, cfg, bundle)
        t0 = time.perf_counter()
        upload = net.upload()
        upload_wall = time.perf_counter() - t0
        cpu_up = link.cpu_seconds()
        t0 = time.perf_counter()
        run = net.run(x)
        wall = time.perf_counter() - t0
        cpu_end = link.cpu_seconds()
    f = run.frame
    exact = {i: bool(np.array_equal(h, want[i])) for i, h in run.heads.items()}
    moved = f["dram_read_bytes"] + f["dram_write_bytes"]
    frame_s = f["cycles"] / cfg.clock_hz
    achieved = moved / frame_s
    peak = board_core.peak_bytes_s
    proj = projection(f["cycles"], cfg, f["link_bytes_per_frame"], ethernet=b.eth is not None)
    load = os.getloadavg()[0]
    print(f"machine: {machine()}; load average {load:.1f}; {date}")
    print(f"system: {board} (HwConfig {cfg.config_id_hex}: {cfg.array_rows}x{cfg.array_cols} "
          f"array, {cfg.clock_hz / 1e6:g} MHz, {cfg.uart_baud / 1e6:g} Mbaud); LiteDRAM "
          f"{b.dram}: {board_core.meta['phy']} {board_core.meta['sdram_module']} "
          f"({board_core.meta['memtype']}, {board_core.meta['databits']} DQ, "
          f"{board_core.meta['nphases']} DFI phases) simulated by {sim_core.meta['phy']} "
          f"({sim_core.meta['nphases']} phases); simulator top {top} "
          f"({'through' if args.uart else 'without'} the board's UART)")
    print(f"simulator ready in {t_ready:.1f} s; upload {upload:,} bytes in {upload_wall:.1f} s "
          f"wall ({cpu_up:.1f} s simulator CPU); frame simulated in {wall:.1f} s wall "
          f"({cpu_end - cpu_up:.1f} s simulator CPU); {link.cycles:,} simulated cycles in "
          f"the session; golden model {golden_cpu:.1f} s CPU")
    print("heads vs golden: " + ", ".join(f"layer {i} {'bit-exact' if ok else 'DIFFERS'}"
                                          for i, ok in exact.items()))
    print_frame(run, cfg)
    print(f"DRAM efficiency: {moved:,} bytes moved by the engine in {frame_s:.3f} s "
          f"= {achieved / 1e6:.1f} MB/s of the DRAM's peak {peak / 1e6:.0f} MB/s "
          f"({board_core.peak_bytes_per_cycle} bytes per cycle at "
          f"{board_core.meta['sys_clk_freq'] / 1e6:g} MHz): {achieved / peak:.1%}")
    eth = (f"; 100 Mbit Ethernet ({ETHERNET_BYTES_S / 1e6:.1f} MB/s) "
           f"{proj['fps_ethernet']:.2f} fps" if "fps_ethernet" in proj else "")
    print(f"projected at {cfg.clock_hz / 1e6:g} MHz: compute {proj['compute_s']:.3f} s "
          f"({proj['fps_compute']:.2f} fps alone); over the {cfg.uart_baud / 1e6:g} Mbaud UART "
          f"{proj['fps_uart']:.2f} fps{eth}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "load_average": load, "date": date, "system": args.system,
            "board": board, "simulator_top": top, "config_id": cfg.config_id_hex,
            "clock_hz": cfg.clock_hz, "uart_baud": cfg.uart_baud,
            "heads_bit_exact": all(exact.values()),
            "frame_cycles": f["cycles"], "model_cycles": f["model_cycles"],
            "stall_share": f["memory_stall_cycles"] / f["cycles"],
            "beyond_model_share": 1 - f["model_cycles"] / f["cycles"],
            "overhead_share": f["overhead_cycles"] / f["cycles"],
            "dram": {"bytes_per_frame": moved, "read_bytes": f["dram_read_bytes"],
                     "write_bytes": f["dram_write_bytes"], "achieved_bytes_s": achieved,
                     "peak_bytes_s": peak, "efficiency": achieved / peak,
                     "phy": board_core.meta["phy"], "sim_phy": sim_core.meta["phy"]},
            "simulator": {"upload_cpu_s": cpu_up, "frame_cpu_s": cpu_end - cpu_up,
                          "upload_wall_s": upload_wall, "frame_wall_s": wall,
                          "session_cycles": link.cycles, "upload_bytes": upload},
            "projection": proj, "frame": f, "layers": run.layers}, indent=1))
    if not all(exact.values()):
        print("error: the heads differ from the golden model's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
