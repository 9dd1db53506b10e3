"""What every measurement report records and how it is written: the machine it ran on,
and the OUT.md / OUT.png / OUT.json triple (`sw.eval.study`, `sw.eval.sensitivity`)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from sw.runtime.util import atomic_file

__all__ = ["machine_info", "write_report"]


def machine_info() -> dict:
    """The machine, Python and torch a run used (node, platform, CPUs, torch threads)."""
    return {"node": platform.node(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__}


def write_report(out: Path, report: dict, md: str, png: bytes) -> None:
    """OUT.json (the report), OUT.png and OUT.md, each written atomically."""
    with atomic_file(out.with_name(out.name + ".json")) as f:
        f.write(json.dumps(report, indent=1).encode())
    with atomic_file(out.with_name(out.name + ".png")) as f:
        f.write(png)
    with atomic_file(out.with_name(out.name + ".md"), "w") as f:
        f.write(md)
