"""pytest side of the block tests: Verilog generation, cached Verilator builds, test runs.

Each (block, top-level parameters, HwConfig) gets one build directory under
sim/sim_build/; the build is redone only when the generated Verilog changes (its hash is
kept in a stamp file), so repeated tests of one config reuse one simulator binary.
WAVES=1 in the environment builds a tracing variant (own directory) and writes dump.vcd.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring
from cocotb_tools.runner import get_runner

from hw.simulator import VERILATOR_ARGS
from hw.spec.config import HwConfig

__all__ = ["BUILD_ROOT", "run_block"]

BUILD_ROOT = Path(__file__).resolve().parent / "sim_build"
MODELS = Path(__file__).resolve().parent / "models"


def _waves() -> bool:
    return os.environ.get("WAVES", "0") == "1"


def _build(top: wiring.Component | str, toplevel: str, build_dir: Path, platform: object = None,
           models: tuple[str | Path, ...] = ()) -> None:
    source = top if isinstance(top, str) else verilog.convert(
        top, name=toplevel, emit_src=False, platform=platform)
    extra = [MODELS / m for m in models]
    digest = hashlib.sha256((source + " ".join(VERILATOR_ARGS) + "".join(
        f.read_text() for f in extra)).encode()).hexdigest()
    stamp = build_dir / "stamp.sha256"
    binary = build_dir / toplevel
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:    # parallel test workers build once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and stamp.exists() and stamp.read_text() == digest:
            return
        stamp.unlink(missing_ok=True)
        vfile = build_dir / f"{toplevel}.v"
        vfile.write_text(source)
        runner = get_runner("verilator")
        runner.build(sources=[vfile, *extra], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=list(VERILATOR_ARGS), waves=_waves(), always=True,
                     log_file=build_dir / "build.log")
        stamp.write_text(digest)


def run_block(top: wiring.Component | str, toplevel: str, variant: str, cfg: HwConfig,
              test_module: str, params: dict[str, object], seed: int,
              testcase: str | None = None, platform: object = None,
              models: tuple[str | Path, ...] = ()) -> None:
    """Build (or reuse) the simulator of `top` and run the cocotb tests of `test_module`.

    `variant` names the top-level's own parameters (with `cfg` it keys the build cache);
    `params` reaches the cocotb side as JSON in the environment variable TEST_PARAMS and
    `cfg` as JSON in HWCFG. `platform` is passed to the Verilog conversion (for blocks
    that instantiate vendor primitives) and `models` names Verilog files in sim/models/
    (or gives their paths) simulating those primitives. `top` may also be Verilog source
    text whose top module is `toplevel` (a synthesized netlist). A failing cocotb test makes
    this function raise.
    """
    name = f"{toplevel}-{variant}-{cfg.config_id_hex}" + ("-waves" if _waves() else "")
    build_dir = BUILD_ROOT / name
    _build(top, toplevel, build_dir, platform, models)
    runner = get_runner("verilator")
    env = {"HWCFG": json.dumps(cfg.to_dict()), "TEST_PARAMS": json.dumps(params)}
    runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=build_dir, test_dir=build_dir, extra_env=env, seed=seed,
                testcase=testcase, waves=_waves())
