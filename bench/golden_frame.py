"""Benchmark: golden integer model, seconds per 416x416 Tiny-YOLOv3 frame and peak memory.

    python bench/golden_frame.py [--runs 5] [--bundle PATH]

Prints the machine, the per-run times, the median, per-layer times and the peak RSS.
torch is kept out of this process so the memory figure is the golden model's own.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from hw.spec import intmath  # noqa: E402
from sw.runtime.bundle import Bundle  # noqa: E402
from sw.runtime.golden import GoldenModel  # noqa: E402
from sw.runtime.postprocess import letterbox, load_image  # noqa: E402


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # no /proc (not Linux): the model name stays unknown
        cpu = "unknown cpu"
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, NumPy {np.__version__}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--bundle", help="bundle to run (default: the default bundle, built if missing)")
    p.add_argument("--image", default=str(ROOT / "assets" / "dog.jpg"))
    args = p.parse_args()
    path = args.bundle or subprocess.run(
        [sys.executable, "-c",
         "from sw.quant.pipeline import default_bundle; print(default_bundle())"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    bundle = Bundle.load(path)
    golden = GoldenModel(bundle)
    x = intmath.quantize_input(letterbox(load_image(args.image), bundle.input_shape[0])[0])
    golden.run(x)  # warm up
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        golden.run(x, keep=False)
        times.append(time.perf_counter() - t0)
    # per-layer times from one instrumented run
    stamps = [time.perf_counter()]
    golden.run(x, keep=False, progress=lambda i, n: stamps.append(time.perf_counter()))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {machine()}")
    print(f"bundle: {path} (HwConfig {bundle.manifest['hw_config_id']})")
    print(f"runs: {', '.join(f'{t:.3f}' for t in times)} s")
    print(f"golden model: {statistics.median(times):.3f} s per frame (median of {args.runs}), "
          f"peak RSS {peak_mb:.0f} MB")
    print("per layer (s): " + ", ".join(
        f"{i}:{layer['kind']}={stamps[i + 1] - stamps[i]:.3f}"
        for i, layer in enumerate(bundle.layers) if stamps[i + 1] - stamps[i] > 0.002))
    return 0


if __name__ == "__main__":
    sys.exit(main())
