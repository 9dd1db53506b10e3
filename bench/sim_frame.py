"""Benchmark: one 416x416 Tiny-YOLOv3 frame through the simulated RTL.

    python bench/sim_frame.py [--image assets/dog.jpg] [--bundle PATH]

Prints the machine, the wall time of the whole-frame simulation (Verilator harness of
DeviceTop driven over the framed protocol), and per conv layer: groups, engine cycles
(measured, and the no-stall schedule of hw.spec.engine.engine_cycles), MAC utilization and
bytes on the link; then the projected frame time on a board at the UART's baud and at the
engine clock of the HwConfig.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.golden_frame import machine  # noqa: E402
from hw.spec import intmath  # noqa: E402
from sw.quant.pipeline import default_bundle  # noqa: E402
from sw.runtime.bundle import Bundle  # noqa: E402
from sw.runtime.device import Device  # noqa: E402
from sw.runtime.link import SimLink  # noqa: E402
from sw.runtime.postprocess import letterbox, load_image  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(ROOT / "assets" / "dog.jpg"))
    p.add_argument("--bundle", help="bundle (default: the default bundle)")
    args = p.parse_args()
    bundle = Bundle.load(args.bundle or default_bundle())
    cfg = bundle.config
    x = intmath.quantize_input(letterbox(load_image(args.image), bundle.input_shape[0])[0])
    t0 = time.perf_counter()
    link = SimLink(cfg)   # builds the harness on first use
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime   # the harness build's too
    host0 = time.process_time()
    with link:
        run = Device(link, timeout=60.0).run_network(bundle, x, fuse_pool=True)
    wall = time.perf_counter() - t0
    sim_cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu0
    host_cpu = time.process_time() - host0
    print(f"machine: {machine()}")
    print(f"HwConfig {cfg.config_id_hex}: {cfg.array_rows}x{cfg.array_cols} array, "
          f"{cfg.clock_hz / 1e6:.0f} MHz, UART {cfg.uart_baud / 1e6:.0f} Mbaud")
    print(f"harness ready in {t_build:.1f} s; whole frame simulated in {wall:.1f} s")
    print(f"CPU time: simulator {sim_cpu:.1f} s ({link.cycles / sim_cpu / 1e6:.2f} M simulated "
          f"cycles per CPU second, {link.cycles:,} cycles), host {host_cpu:.1f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| layer | groups | cycles | no-stall cycles | MAC util. (no-stall) | link bytes |")
    print("|---|---|---|---|---|---|")
    tot_c = tot_m = tot_b = macs = 0
    for s in run.stats:
        nbytes = s.bytes_in + s.bytes_out
        util = s.macs / (cfg.macs_per_cycle * s.model_cycles)
        print(f"| {s.layer} | {s.groups} | {s.cycles:,} | {s.model_cycles:,} | {util:.1%} "
              f"| {nbytes:,} |")
        tot_c, tot_m, tot_b, macs = tot_c + s.cycles, tot_m + s.model_cycles, \
            tot_b + nbytes, macs + s.macs
    print(f"| total | | {tot_c:,} | {tot_m:,} | {macs / (cfg.macs_per_cycle * tot_m):.1%} "
          f"| {tot_b:,} |")
    link_s = tot_b * 10 / cfg.uart_baud
    print(f"projected on a board: link {link_s:.1f} s per frame at {cfg.uart_baud:,} baud "
          f"(8N1), engine {tot_m / cfg.clock_hz:.3f} s at {cfg.clock_hz / 1e6:.0f} MHz: "
          f"the link bounds the frame time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
