"""Benchmark: the speed of the memory device's simulator on the first N passes of the frame.

    python bench/sim_speed.py [--passes N] [--image assets/dog.jpg] [--binary PATH]
                              [--instructions CYCLES]

The network and the int8 image are preloaded into the simulated memory (the harness's
backdoor) and the one PROGRAM_RUN request is piped in at once, with no STATUS polls from a
host: the simulated cycles do not depend on wall time (bench/sim_frame.py's do, by a few
cycles a poll). The harness runs the program and exits once idle. Prints the harness's CPU
seconds, its cycles (the program's plus the idle limit's 41,000), cycles per CPU second,
the load average, and a SHA-256 of the tensors and the passes' trace records, equal for any
two simulator builds that behave the same.
`--binary` times another build of the harness (same HwConfig and timeout).
`--instructions CYCLES` counts instead of timing (needs valgrind): the machine
instructions the harness executes per simulated cycle over CYCLES cycles from the start of
the program (valgrind's cachegrind, runs of CYCLES and 2 x CYCLES cycles, so that the
start-up cancels). The count does not depend on the load of the machine: on shared cores
it tells changes of a few percent apart, which CPU seconds do not.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hw.spec import intmath, protocol  # noqa: E402
from hw.spec.config import DEFAULT  # noqa: E402
from hw.spec.memory import TRACE_BYTES  # noqa: E402
from sw.runtime.bundle import Bundle  # noqa: E402
from sw.runtime.detect import shipped_bundle  # noqa: E402
from sw.runtime.link import SIM_TIMEOUT_CYCLES, harness_binary  # noqa: E402
from sw.runtime.postprocess import letterbox, load_image  # noqa: E402
from sw.runtime.program import compile_network  # noqa: E402
from sw.runtime.resident import ResidentNetwork, memory_training  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--passes", type=int, help="passes to run (default: all)")
    p.add_argument("--image", default=str(ROOT / "assets" / "dog.jpg"))
    p.add_argument("--binary", help="harness binary (default: the memory top's, built if "
                                    "needed)")
    p.add_argument("--instructions", type=int, metavar="CYCLES",
                   help="count instructions per simulated cycle over CYCLES cycles (valgrind)")
    args = p.parse_args()
    if args.instructions is not None and args.instructions < 1:
        p.error("--instructions must be a positive cycle count")
    valgrind = shutil.which("valgrind")
    if args.instructions and not valgrind:
        p.error("--instructions needs valgrind on PATH")
    cfg = DEFAULT
    bundle = Bundle.load(shipped_bundle(cfg), expect=cfg)
    image = compile_network(bundle, cfg)
    passes = args.passes or len(image.passes)
    if not 0 < passes <= len(image.passes):
        p.error(f"--passes must be 1..{len(image.passes)}")
    x = intmath.quantize_input(letterbox(load_image(args.image), bundle.input_shape[0])[0])
    binary = Path(args.binary) if args.binary else harness_binary(
        cfg, SIM_TIMEOUT_CYCLES, "memory", train=memory_training)
    trace = image.end                         # as ResidentNetwork places the trace records
    lo, hi = image.tensors_addr, trace + TRACE_BYTES * passes
    request = protocol.encode_frame(protocol.Op.PROGRAM_RUN, struct.pack(
        protocol.PROGRAM_FORMAT, image.program_addr, passes, trace))
    with tempfile.TemporaryDirectory() as tmp:
        pre, inp, dump = (Path(tmp) / n for n in ("network.bin", "input.bin", "dump.bin"))
        pre.write_bytes(ResidentNetwork.preload_image_of(image, bundle, cfg))
        inp.write_bytes(x.tobytes())
        cmd = [str(binary), str(2 * SIM_TIMEOUT_CYCLES + 1000), "--load", f"0:{pre}",
               "--load", f"{image.input.addr}:{inp}", "--dump", f"{lo}:{hi - lo}:{dump}"]
        if args.instructions:
            counts = [_instructions(valgrind, cmd, request, n * args.instructions)
                      for n in (1, 2)]
            per = (counts[1] - counts[0]) / args.instructions
            print(f"{per:,.0f} instructions per simulated cycle (cycles "
                  f"{args.instructions:,} to {2 * args.instructions:,} of the program; "
                  f"valgrind cachegrind); harness {binary}")
            return 0
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        t0 = time.perf_counter()
        r = subprocess.run(cmd, input=request, capture_output=True)
        wall = time.perf_counter() - t0
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu0
        if r.returncode != 0:
            print(r.stderr.decode(errors="replace"), file=sys.stderr)
            return 1
        digest = hashlib.sha256(dump.read_bytes()).hexdigest()[:16]
    cycles = next(int(line.split()[1]) for line in r.stderr.decode().splitlines()
                  if line.startswith("harness:") and line.endswith("cycles"))
    reply = protocol.encode_frame(protocol.Reply.OK)
    if not r.stdout.startswith(reply):
        print(f"warning: unexpected reply {r.stdout[:16].hex()}", file=sys.stderr)
    print(f"{passes} passes: {cycles:,} cycles in {cpu:.1f} s of harness CPU ({wall:.1f} s "
          f"wall): {cycles / cpu / 1e6:.3f} M cycles per CPU second; load average "
          f"{os.getloadavg()[0]:.1f}; tensors and trace sha256 {digest}")
    return 0


def _instructions(valgrind: str, cmd: list[str], request: bytes, cycles: int) -> int:
    """Instructions the harness executes in its first `cycles` cycles (start-up included)."""
    r = subprocess.run([valgrind, "--tool=cachegrind", "--cache-sim=no",
                        "--cachegrind-out-file=/dev/null", *cmd, "--max-cycles", str(cycles)],
                       input=request, capture_output=True)
    err = r.stderr.decode(errors="replace")
    found = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if r.returncode != 0 or not found:
        raise SystemExit(f"error: valgrind run failed (exit {r.returncode}):\n{err[-2000:]}")
    return int(found.group(1).replace(",", ""))


if __name__ == "__main__":
    sys.exit(main())
