"""Benchmark: one 416x416 Tiny-YOLOv3 frame on the simulated device with its memory.

    python bench/sim_frame.py [--image assets/dog.jpg] [--bundle PATH] [--json FILE]

The network is preloaded into the simulated memory (the harness's backdoor; the upload
itself is measured for its size only); the frame runs as on a board: the host writes the
int8 image, starts the program, polls STATUS and reads the two heads over the framed
protocol. Prints the machine, the simulation's wall time for the frame, the frame's
cycles (measured, engine, no-stall schedule), memory stall and overhead cycles, DRAM and
link bytes, the memory model's counts, the per-layer table, and projected frames per
second of the A7-35T (default) and A7-100T configs over a 12 Mbaud UART and over 100 Mbit
Ethernet (`bench.fps.ETHERNET_BYTES_S`, measured by `bench.eth_link`): a frame takes its
link time plus its compute time (link and compute not overlapped), compute as measured
here for the default config and from the no-stall schedule scaled by the measured overhead
for the A7-100T config.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fps import ETHERNET_BYTES_S  # noqa: E402
from bench.golden_frame import machine  # noqa: E402
from hw.spec import intmath  # noqa: E402
from hw.spec.config import DEFAULT, HwConfig  # noqa: E402
from hw.spec.engine import engine_cycles  # noqa: E402
from sw.runtime.bundle import Bundle  # noqa: E402
from sw.runtime.detect import shipped_bundle  # noqa: E402
from sw.runtime.device import Device  # noqa: E402
from sw.runtime.link import SimLink  # noqa: E402
from sw.runtime.postprocess import letterbox, load_image  # noqa: E402
from sw.runtime.program import compile_network  # noqa: E402
from sw.runtime.resident import ResidentNetwork  # noqa: E402


def link_seconds(nbytes: int, baud: int) -> float:
    """Seconds to move `nbytes` over a UART at `baud`, 8N1 (10 bits a byte)."""
    return nbytes * 10 / baud


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(ROOT / "assets" / "dog.jpg"))
    p.add_argument("--bundle", help="bundle (default: the shipped default bundle)")
    p.add_argument("--json", help="also write the numbers as JSON here")
    args = p.parse_args()
    cfg = DEFAULT
    bundle = Bundle.load(args.bundle or shipped_bundle(cfg), expect=cfg)
    x = intmath.quantize_input(letterbox(load_image(args.image), bundle.input_shape[0])[0])
    image = compile_network(bundle, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "network.bin"
        pre.write_bytes(ResidentNetwork.preload_image_of(image, bundle, cfg))
        t0 = time.perf_counter()
        with SimLink(cfg, top="memory", harness_args=["--load", f"0:{pre}"]) as link:
            t_ready = time.perf_counter() - t0      # the harness's build on first use
            dev = Device(link, timeout=120.0)
            net = ResidentNetwork(dev, cfg, bundle)
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
            t0 = time.perf_counter()
            run = net.run(x)
            wall = time.perf_counter() - t0
        sim_cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu0
    f = run.frame
    upload = image.tensors_addr - image.program_addr + 64
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"HwConfig {cfg.config_id_hex}: {cfg.array_rows}x{cfg.array_cols} array, "
          f"{cfg.clock_hz / 1e6:.0f} MHz, memory port {cfg.mem_data_bits} bits")
    print(f"simulator ready in {t_ready:.1f} s; frame simulated in {wall:.1f} s wall "
          f"({link.cycles:,} simulated cycles in the session, simulator CPU "
          f"{sim_cpu:.1f} s)")
    print(f"frame: {f['cycles']:,} cycles = engine {f['engine_cycles']:,} (no-stall "
          f"schedule {f['model_cycles']:,}; memory stalls {f['memory_stall_cycles']:,}, "
          f"{f['memory_stall_cycles'] / f['cycles']:.1%}) + overhead "
          f"{f['overhead_cycles']:,} ({f['overhead_cycles'] / f['cycles']:.1%}: descriptors, "
          f"parameter loading, pass start and drain)")
    conv = [e for e in run.layers if e["macs"]]
    conv_util = sum(e["macs"] for e in conv) / (cfg.macs_per_cycle
                                                * sum(e["model_cycles"] for e in conv))
    print(f"MAC utilization: {f['utilization']:.1%} of the frame's cycles; no-stall schedule "
          f"{f['model_utilization']:.1%} (its conv passes alone {conv_util:.1%})")
    print(f"{f['passes']} passes; DRAM {f['dram_read_bytes']:,} bytes read, "
          f"{f['dram_write_bytes']:,} written; link {f['link_bytes_per_frame']:,} bytes per "
          f"frame; upload {upload:,} bytes once")
    print(f"memory model: {link.mem_stats}")
    print("| layer | passes | cycles | engine | no-stall | MAC util. (no-stall) | DRAM read | "
          "DRAM write |")
    print("|---|---|---|---|---|---|---|---|")
    for e in run.layers:
        print(f"| {e['layer']} | {e['passes']} | {e['cycles']:,} | {e['engine_cycles']:,} | "
              f"{e['model_cycles']:,} | {e['utilization']:.1%} ({e['model_utilization']:.1%}) "
              f"| {e['dram_read_bytes']:,} | {e['dram_write_bytes']:,} |")
    rows = {}
    overhead = f["cycles"] / f["model_cycles"]
    for name, c in (("A7-35T", cfg), ("A7-100T", HwConfig.load(ROOT / "boards" /
                                                               "arty_a7_100.json"))):
        if c is cfg:
            cyc = f["cycles"]
        else:
            im = compile_network(bundle, c)
            cyc = round(overhead * sum(engine_cycles(c, q.height, q.width, q.cin, q.cout, q.k,
                                                     q.pool) for q in im.passes))
        compute = cyc / c.clock_hz
        uart = link_seconds(f["link_bytes_per_frame"], c.uart_baud)
        eth = f["link_bytes_per_frame"] / ETHERNET_BYTES_S
        rows[name] = {"cycles": cyc, "compute_s": compute, "fps_uart": 1 / (uart + compute),
                      "fps_ethernet": 1 / (eth + compute), "fps_compute": 1 / compute}
    print("| config | cycles per frame | compute | fps, 12 Mbaud UART | fps, 100 Mbit Ethernet "
          "| fps, compute alone |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['cycles']:,} | {r['compute_s']:.3f} s | {r['fps_uart']:.2f} | "
              f"{r['fps_ethernet']:.2f} | {r['fps_compute']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "wall_s": wall,
                                               "frame": f, "projections": rows,
                                               "memory_model": link.mem_stats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
