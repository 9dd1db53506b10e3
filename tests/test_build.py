"""hw.build: CLI, clock plans, fit check, and the board trees it writes (no Vivado, no PnR):
the boards' DRAM systems (LiteDRAM's core, its pins and clocking) and the streaming device."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from boards import BOARDS
from hw import build as hwb
from hw import clocking, nextpnr
from hw.build import BoardCore, check_fit, main
from hw.clocking import ClockError, ecp5_pll, mmcm_plan
from hw.nextpnr import parse_nextpnr_fmax
from hw.spec.config import DEFAULT, HwConfig

#: The ULX3S's own config (3 Mbaud; its clock as its DRAM config's sys_clk_freq).
ULX3S_CFG = HwConfig.load(BOARDS["ulx3s_85f"].default_config_path())
#: The OrangeCrab's (its clock: its DRAM controller's).
ORANGECRAB_CFG = HwConfig.load(BOARDS["orangecrab_85f"].default_config_path())


def _write_config(tmp_path: Path, **fields: int) -> Path:
    path = tmp_path / "cfg.json"
    HwConfig(**fields).save(path)
    return path


# -- CLI ----------------------------------------------------------------------------------

def test_help_lists_boards(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name, board in BOARDS.items():
        assert name in out and board.description in out
    assert {"arty_a7", "arty_a7_100", "ulx3s_85f", "orangecrab_85f"} <= set(BOARDS)


def test_unknown_board_exits_2_with_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--board", "de10_nano"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown board 'de10_nano'" in err
    for name in BOARDS:
        assert name in err


def test_board_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    assert "--board" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "cannot read HwConfig"),
    ("{not json", "invalid JSON"),
    ('{"array_rowz": 8}', "unknown HwConfig field(s): array_rowz"),
    ('{"act_bits": 4}', "the hardware is int8"),
    ("\udcff\udcfe{", "not a JSON text file"),
])
def test_bad_hw_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        content: str | None, message: str) -> None:
    path = tmp_path / "cfg.json"
    if content is not None:
        path.write_bytes(content.encode(errors="surrogateescape"))
    with pytest.raises(SystemExit) as e:
        main(["--board", "arty_a7", "--hw-config", str(path), "--build-dir",
              str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--hw-config" in err and message in err
    assert not (tmp_path / "out").exists()


def test_impossible_clock_fails_before_building(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path, clock_hz=600_000_000)
    assert main(["--board", "arty_a7", "--hw-config", str(cfg), "--system", "streaming",
                 "--no-estimate", "--build-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "cannot make 600 MHz from 100 MHz" in err
    assert not (tmp_path / "out" / "tinyyolo.v").exists()


# -- board trees --------------------------------------------------------------------------

def test_arty_tree_without_vivado(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))          # no vivado anywhere
    out = tmp_path / "arty"
    assert main(["--board", "arty_a7", "--system", "streaming", "--no-estimate",
                 "--build-dir", str(out)]) == 0
    said = capsys.readouterr().out
    assert "needs Vivado" in said and str(out) in said
    for f in ("tinyyolo.v", "tinyyolo.tcl", "tinyyolo.xdc", "build_tinyyolo.sh"):
        assert (out / f).stat().st_size > 0, f
    assert not (out / "tinyyolo.bit").exists()
    xdc = (out / "tinyyolo.xdc").read_text()
    for pin in ("E3", "C2", "A9", "D10", "H5", "J5", "T9", "T10"):   # clk, rst, uart, leds
        assert f"LOC {pin} " in xdc
    assert "create_clock" in xdc and "-period 10.0" in xdc
    assert "xc7a35ticsg324-1L" in (out / "tinyyolo.tcl").read_text()
    verilog = (out / "tinyyolo.v").read_text()
    assert "BUFG" in verilog and "MMCME2_BASE" not in verilog  # 100 MHz: no MMCM
    # the board's own config (boards/arty_a7_35.json), not the default
    assert HwConfig.load(out / "hw_config.json") == HwConfig.load(
        BOARDS["arty_a7"].default_config_path()) != DEFAULT


def test_arty_100_uses_its_config_and_an_mmcm(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    board_cfg = HwConfig.load(BOARDS["arty_a7_100"].default_config_path())
    assert board_cfg.macs_per_cycle > DEFAULT.macs_per_cycle
    cfg = _write_config(tmp_path, **{**board_cfg.to_dict(), "clock_hz": 50_000_000})
    out = tmp_path / "a100"
    assert main(["--board", "arty_a7_100", "--hw-config", str(cfg), "--system", "streaming",
                 "--no-estimate", "--build-dir", str(out)]) == 0
    verilog = (out / "tinyyolo.v").read_text()
    assert "MMCME2_BASE" in verilog
    for param in (".CLKFBOUT_MULT_F(12.0)", ".CLKOUT0_DIVIDE_F(24.0)", ".DIVCLK_DIVIDE(32'd1)"):
        assert param in verilog             # 100 MHz * 12 / 24 = 50 MHz
    assert "xc7a100ticsg324-1L" in (out / "tinyyolo.tcl").read_text()


def test_arty_dram_tree_without_vivado(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The Arty's system: LiteDRAM's A7DDRPHY core with its own CRG (PLL from the 100 MHz
    oscillator, IDELAYCTRL) in the Vivado tree, its pins the board's DDR3L."""
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "arty"
    assert main(["--board", "arty_a7", "--no-estimate", "--build-dir", str(out)]) == 0
    assert "A7DDRPHY MT41K128M16 (256 MB)" in capsys.readouterr().out
    core = (out / "litedram_core.v").read_text()
    assert "module litedram_core" in core and "ISERDESE2" in core and "IDELAYCTRL" in core
    tcl = (out / "tinyyolo.tcl").read_text()
    assert "litedram_core.v" in tcl and "tinyyolo_dram.xdc" in tcl
    assert "INTERNAL_VREF 0.675" in (out / "tinyyolo_dram.xdc").read_text()
    xdc = (out / "tinyyolo.xdc").read_text()
    for pin in ("U9", "R2", "K5", "N2", "L1", "R5", "K6"):  # clk, a0, dq0, dqs0, dm0, odt, rst
        assert f"LOC {pin} " in xdc
    verilog = (out / "tinyyolo.v").read_text()
    assert "litedram_core" in verilog and "MMCME2_BASE" not in verilog
    stamp = json.loads((out / hwb.STAMP).read_text())
    assert stamp["tree"]["system"] == "dram" and stamp["tree"]["dram"] == "arty_a7"


def test_ulx3s_tree_without_pnr(tmp_path: Path) -> None:
    """The ULX3S's system: the project's PLL makes the clock the SDRAM controller
    (GENSDRPHY) and the accelerator share; the SDRAM clock pin is that clock, inverted,
    through a DDR output register; the synchronised reset goes on a global (DCCA)."""
    out = tmp_path / "ulx3s"
    assert main(["--board", "ulx3s_85f", "--no-estimate", "--no-pnr",
                 "--build-dir", str(out)]) == 0
    lpf = (out / "tinyyolo.lpf").read_text()
    for pin in ("G2", "R1", "M1", "L4", "B2"):
        assert f'SITE "{pin}"' in lpf
    for pin in ("F19", "M20", "P20", "P19", "J16", "U19"):  # SDRAM clk, a0, cs, ba0, dq0, dm0
        assert f'SITE "{pin}"' in lpf
    il = (out / "tinyyolo.il").read_text()
    assert "EHXPLLL" in il and "CLKFB_DIV" in il and "ODDRX1F" in il and "DCCA" in il
    assert "litedram_core" in il and "read_verilog  litedram_core.v" in (
        out / "tinyyolo.ys").read_text()
    assert (out / "build_tinyyolo.sh").exists() and not (out / "tinyyolo.bit").exists()
    assert "--seed" not in (out / "build_tinyyolo.sh").read_text()     # nextpnr's default
    stamp = json.loads((out / hwb.STAMP).read_text())        # the tree, no bitstream yet
    assert stamp["tree"]["config_id"] == ULX3S_CFG.config_id_hex and "bitstream" not in stamp
    assert stamp["tree"]["system"] == "dram" and stamp["tree"]["dram"] == "ulx3s_85f"
    assert stamp["tree"]["design"] == hwb.design_hash(BOARDS["ulx3s_85f"], ULX3S_CFG)


def test_dram_build_refuses_a_config_the_dram_cannot_run(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--board", "ulx3s_85f", "--hw-config", str(_write_config(tmp_path)),
                 "--no-estimate", "--no-pnr", "--build-dir", str(tmp_path / "a")]) == 1
    assert (f"runs its controller at {ULX3S_CFG.clock_hz / 1e6:g} MHz (sys_clk_freq) but "
            "HwConfig clock_hz is 100 MHz") in capsys.readouterr().err
    big = _write_config(tmp_path, **{**ULX3S_CFG.to_dict(), "mem_bytes": 1 << 26})
    assert main(["--board", "ulx3s_85f", "--hw-config", str(big), "--no-estimate", "--no-pnr",
                 "--build-dir", str(tmp_path / "b")]) == 1
    assert "exceeds ulx3s_85f's DRAM (33554432 bytes)" in capsys.readouterr().err
    # the streaming device needs no DRAM: any config the clock can make
    assert main(["--board", "ulx3s_85f", "--hw-config", str(big), "--system", "streaming",
                 "--no-estimate", "--no-pnr", "--build-dir", str(tmp_path / "c")]) == 0


def test_orangecrab_tree_without_pnr(tmp_path: Path) -> None:
    """The OrangeCrab's system: LiteDRAM's ECP5DDRPHY core with its own CRG (its PLL makes
    the system clock from the 48 MHz oscillator), the DDR3L pins as litex-boards has them."""
    out = tmp_path / "orangecrab"
    assert main(["--board", "orangecrab_85f", "--no-estimate", "--no-pnr",
                 "--build-dir", str(out)]) == 0
    lpf = (out / "tinyyolo.lpf").read_text()
    # 48 MHz oscillator, Feather pins 0/1 (UART), RGB LED, user button
    for pin in ("A9", "N17", "M18", "K4", "M3", "J3", "J17"):
        assert f'SITE "{pin}"' in lpf
    # DDR3L: clk P, bank address, DQS P, dq0, dm0, odt, reset, a pseudo power pin
    for pin in ("J18", "D6", "B7", "A6", "B15", "G18", "C17", "D16", "C13", "L18", "K16"):
        assert f'SITE "{pin}"' in lpf
    assert "EHXPLLL" in (out / "litedram_core.v").read_text()
    il = (out / "tinyyolo.il").read_text()
    assert "EHXPLLL" not in il and "DCCA" in il     # the core's CRG, not ours; reset global
    script = (out / "build_tinyyolo.sh").read_text()
    assert "--85k" in script and "--speed 8" in script and "dfu-suffix" not in script
    assert "--router router2" in script and "--seed 3" in script     # the board's seed
    # Yosys maps the LUTs with its classic ABC, not ABC9 (hw.build.SYNTH_AFTER)
    ys = (out / "tinyyolo.ys").read_text()
    assert "synth_ecp5 -run begin:map_luts" in ys and "abc -dress -lut 4:7" in ys
    assert "synth_ecp5 -run map_cells:" in ys and ys.index("map_cells") < ys.index("write_json")
    assert not (out / "tinyyolo.bit").exists()


# -- clock plans --------------------------------------------------------------------------

@pytest.mark.parametrize("f_out", [100_000_000, 50_000_000, 125_000_000, 150_000_000,
                                   200_000_000, 83_333_333, 5_000_000])
def test_mmcm_plan(f_out: int) -> None:
    p = mmcm_plan(100_000_000, f_out)
    assert abs(float(p.f_out) - f_out) <= 1e-4 * f_out
    assert 600e6 <= p.f_vco <= 1200e6
    assert 10e6 <= 100e6 / p.divclk <= 450e6
    assert 1 <= p.divclk <= 106 and 2 <= p.mult <= 64 and 1 <= p.div <= 128


def test_mmcm_plan_known_values() -> None:
    assert (mmcm_plan(100_000_000, 200_000_000).mult, mmcm_plan(100_000_000, 200_000_000).div) \
        == (12, 6)
    assert float(mmcm_plan(100_000_000, 83_333_333).f_out) == pytest.approx(250e6 / 3)


@pytest.mark.parametrize("f_out, message", [
    (1_000_000, "4.69-464 MHz"), (600_000_000, "4.69-464 MHz"),
    (101_234_567, "within 100 ppm"),
])
def test_mmcm_plan_impossible(f_out: int, message: str) -> None:
    with pytest.raises(ClockError, match=message):
        mmcm_plan(100_000_000, f_out)


@pytest.mark.parametrize("f_out, want", [
    (100_000_000, (1, 4, 6)), (50_000_000, (1, 2, 12)), (125_000_000, (1, 5, 5)),
    (200_000_000, (1, 8, 3)),
])
def test_ecp5_pll(f_out: int, want: tuple[int, int, int]) -> None:
    p = ecp5_pll(25_000_000, f_out)
    assert (p.ref_div, p.fb_div, p.op_div) == want
    assert p.f_out == f_out and 400e6 <= p.f_vco <= 800e6


def test_ecp5_pll_fraction_and_impossible() -> None:
    p = ecp5_pll(25_000_000, 83_333_333)
    assert float(p.f_out) == pytest.approx(250e6 / 3) and 400e6 <= p.f_vco <= 800e6
    with pytest.raises(ClockError, match="3.125-400 MHz"):
        ecp5_pll(25_000_000, 450_000_000)
    with pytest.raises(ClockError, match="nearest 12.5"):
        ecp5_pll(25_000_000, 12_000_000)     # would need a 1 MHz phase detector


def test_board_clock_straight_when_equal() -> None:
    assert clocking.clock_plan(BOARDS["arty_a7"], 100_000_000) is None
    assert clocking.clock_plan(BOARDS["ulx3s_85f"], 25_000_000) is None
    assert isinstance(clocking.clock_plan(BOARDS["ulx3s_85f"], 100_000_000), clocking.EcpPll)


# -- fit check ----------------------------------------------------------------------------

def test_check_fit_synthetic() -> None:
    cap = BOARDS["arty_a7"].capacity
    assert check_fit({"LUT": 20_800, "FF": 1, "DSP48E1": 90, "BRAM36": 50}, cap) == []
    problems = check_fit({"LUT": 100, "FF": 1, "DSP48E1": 128, "BRAM36": 50.5}, cap)
    assert len(problems) == 2
    assert problems[0].startswith("DSP48E1: 128 used > 90 available")
    assert problems[1].startswith("BRAM36: 50.5 used > 50 available")
    assert check_fit({"DSP48E1": 128}, BOARDS["arty_a7_100"].capacity) == []


def test_build_fails_when_design_does_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # Synthetic estimate (a 16x16 array's DSPs) instead of a slow synthesis.
    seen = {}
    monkeypatch.setattr(hwb, "estimate", lambda board, cfg, dram=None, eth=None: seen.update(
        dram=dram, eth=eth) or {"LUT": 9000, "FF": 12000, "DSP48E1": 256, "BRAM36": 30})
    out = tmp_path / "big"
    assert main(["--board", "arty_a7", "--build-dir", str(out)]) == 1
    captured = capsys.readouterr()
    assert "does not fit Digilent Arty A7-35T" in captured.err
    assert "DSP48E1: 256 used > 90 available" in captured.err
    assert "| DSP48E1 | 256 | 90 | 284.4% |" in captured.out
    report = json.loads((out / "resources.json").read_text())
    assert report["fits"] is False and report["used"]["DSP48E1"] == 256
    assert not (out / "tinyyolo.v").exists()
    # The Arty's estimate is of the whole system: the DRAM core and the Ethernet core.
    assert seen["dram"] is not None and seen["eth"][1].ip == report["eth"]["ip"]


def test_a_failing_estimate_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def fail(board, cfg, dram=None, eth=None):
        raise RuntimeError("yosys failed for core:\nwasm trap: call stack exhausted")
    monkeypatch.setattr(hwb, "estimate", fail)
    assert main(["--board", "ulx3s_85f", "--no-pnr", "--build-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "the Yosys resource estimate failed" in err and "--no-estimate skips it" in err


def test_parse_nextpnr_fmax() -> None:
    log = ("Info: Max frequency for clock '$glbnet$clk': 87.10 MHz (FAIL at 100.00 MHz)\n"
           "Info: Max frequency for clock '$glbnet$clk': 112.45 MHz (PASS at 100.00 MHz)\n"
           "Info: Max frequency for clock 'clk25_0__io': 250.00 MHz (PASS at 25.00 MHz)\n")
    assert parse_nextpnr_fmax(log) == {"$glbnet$clk": (112.45, 100.0),
                                       "clk25_0__io": (250.0, 25.0)}
    assert parse_nextpnr_fmax("no timing here") == {}


def test_critical_path_is_the_clock_report() -> None:
    log = ("Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):\n"
           "Info:   clk-to-q  5.61  5.61 Source engine.pool.rows.DOA4\n"
           "Info:                          Defined in:\n"
           "Info:                               /share/lattice/cells_map_trellis.v:108\n"
           "Info:                               /work/main/hw/maxpool.py:138\n"
           "Info: 10.64 ns logic, 9.76 ns routing\n\n"
           "Info: Critical path report for cross-domain path 'posedge clk' -> '<async>':\n"
           "Info: 1.49 ns logic, 5.26 ns routing\n")
    assert nextpnr.critical_path(log).splitlines() == [
        "Critical path report for clock '$glbnet$clk' (posedge -> posedge):",
        "  clk-to-q  5.61  5.61 Source engine.pool.rows.DOA4",
        "                              /work/main/hw/maxpool.py:138",
        "10.64 ns logic, 9.76 ns routing"]
    assert nextpnr.critical_path("nothing") == ""


#: A nextpnr log of a system with several clock domains (the OrangeCrab's kind): an LPF
#: constraint on the oscillator's pin, constraints derived through the PLL and divider.
_TIM = """Info: constraining clock net 'clk_0__io' to 48.00 MHz
Info:     Derived frequency constraint of 96.0 MHz for net crg_sys2x
Info:     Derived frequency constraint of 48.0 MHz for net crg_sys
Info:     Derived frequency constraint of 24.0 MHz for net crg_init
Info: Max frequency for clock '$glbnet$crg_sys': 55.10 MHz (PASS at 48.00 MHz)
Info: Max frequency for clock '$glbnet$crg_sys2x': 140.00 MHz (PASS at 96.00 MHz)
Info: Max frequency for clock    '$glbnet$crg_init': 90.00 MHz (PASS at 24.00 MHz)
Info: Max frequency for clock 'clk_0__io$TRELLIS_IO_IN': 300.00 MHz (PASS at 48.00 MHz)
Info: Max frequency for clock '$glbnet$clk_buf.i': 422.48 MHz (PASS at 48.00 MHz)
"""


def test_parse_nextpnr_constraints() -> None:
    assert nextpnr.parse_nextpnr_constraints(_TIM) == {
        "clk_0__io": 48.0, "crg_sys2x": 96.0, "crg_sys": 48.0, "crg_init": 24.0}
    assert nextpnr.parse_nextpnr_constraints("nothing") == {}
    constrained = nextpnr.parse_nextpnr_constraints(_TIM)
    assert nextpnr.constrained_net("$glbnet$crg_sys", 48.0, constrained) == "crg_sys"
    assert nextpnr.constrained_net("clk_0__io$TRELLIS_IO_IN", 48.0, constrained) == "clk_0__io"
    assert nextpnr.constrained_net("crg_init", 24.0, constrained) == "crg_init"
    # an input buffer's output carries the pin's constraint, unlogged: its target says so
    assert nextpnr.constrained_net("$glbnet$clk_buf.i", 48.0, constrained) == "$glbnet$clk_buf.i"
    assert nextpnr.constrained_net("$glbnet$other", 12.0, constrained) is None


def test_timing_problems_every_domain_met() -> None:
    assert len(parse_nextpnr_fmax(_TIM)) == 5
    assert nextpnr.timing_problems(_TIM) == []


def test_timing_problems_a_domain_below_its_target() -> None:
    log = _TIM.replace("55.10 MHz (PASS", "47.90 MHz (FAIL")
    assert nextpnr.timing_problems(log) == [
        "clock '$glbnet$crg_sys': Fmax 47.90 MHz below its target 48.00 MHz"]


def test_timing_problems_an_unconstrained_domain_is_a_failure() -> None:
    """nextpnr "passes" a clock without a constraint at its default 12 MHz: not met."""
    log = _TIM + "Info: Max frequency for clock '$glbnet$dqs0': 200.00 MHz (PASS at 12.00 MHz)\n"
    problems = nextpnr.timing_problems(log)
    assert len(problems) == 1 and "'$glbnet$dqs0' has no frequency constraint" in problems[0]
    # without the derived constraint nextpnr times the clock at its default target
    log = _TIM.replace("Info:     Derived frequency constraint of 24.0 MHz for net crg_init\n",
                       "").replace("(PASS at 24.00 MHz)", "(PASS at 12.00 MHz)")
    assert ["crg_init" in p for p in nextpnr.timing_problems(log)] == [True]


def test_timing_problems_without_a_report() -> None:
    assert nextpnr.timing_problems("Info: constraining clock net 'clk' to 25.00 MHz\n") == [
        "nextpnr reported no Fmax (no clock, or the log is incomplete)"]


#: Amaranth 0.5's ECP5 build script, as `platform.build` writes it.
_SCRIPT = """#!/bin/sh
# Automatically generated by Amaranth 0.5.10. Do not edit.
set -e
[ -n "$AMARANTH_ENV_TRELLIS" ] && . "$AMARANTH_ENV_TRELLIS"
: ${YOSYS:=yosys}
: ${NEXTPNR_ECP5:=nextpnr-ecp5}
: ${ECPPACK:=ecppack}
"$YOSYS" -q -l tinyyolo.rpt tinyyolo.ys
"$NEXTPNR_ECP5" --quiet --timing-allow-fail --router router2 --log tinyyolo.tim --85k \
--package CSFBGA285 --speed 8 --json tinyyolo.json --lpf tinyyolo.lpf --textcfg tinyyolo.config
"$ECPPACK" --compress --freq 38.8 --input tinyyolo.config --bit tinyyolo.bit --svf tinyyolo.svf
"""


def test_flow_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOSYS", "/opt/y")
    monkeypatch.delenv("NEXTPNR_ECP5", raising=False)
    monkeypatch.setenv("ECPPACK", "/opt/e")
    steps = hwb.flow_commands(_SCRIPT)
    assert [s for s, _ in steps] == ["yosys", "nextpnr", "ecppack"]
    assert steps[0][1] == ["/opt/y", "-q", "-l", "tinyyolo.rpt", "tinyyolo.ys"]
    assert steps[1][1][:4] == ["nextpnr-ecp5", "--quiet", "--timing-allow-fail", "--router"]
    assert steps[2][1][0] == "/opt/e" and steps[2][1][-1] == "tinyyolo.svf"
    with pytest.raises(hwb.BuildError, match="unexpected line"):
        hwb.flow_commands(_SCRIPT + "dfu-suffix -a tinyyolo.bit\n")
    with pytest.raises(hwb.BuildError, match="expected"):
        hwb.flow_commands(_SCRIPT.replace('"$ECPPACK"', "# "))


def _fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nextpnr_rc: int = 0) -> None:
    """Stand-ins for the three tools: nextpnr burns a little CPU and writes its log."""
    for var, body in (("YOSYS", "touch tinyyolo.json"),
                      ("NEXTPNR_ECP5", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done\n"
                       f"echo 'new run' > tinyyolo.tim\nexit {nextpnr_rc}"),
                      ("ECPPACK", "echo bits > tinyyolo.bit")):
        tool = tmp_path / f"fake-{var}"
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
        monkeypatch.setenv(var, str(tool))


def test_run_open_flow_times_each_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "b"
    d.mkdir()
    (d / "build_tinyyolo.sh").write_text(_SCRIPT)
    (d / "tinyyolo.tim").write_text("an old run's log\n")
    _fake_tools(tmp_path, monkeypatch)
    steps = hwb.run_open_flow(d, log=lambda s: None)
    assert list(steps) == ["yosys", "nextpnr", "ecppack"]
    assert all(wall >= 0 and cpu >= 0 for wall, cpu in steps.values())
    assert steps["nextpnr"][1] > 0                    # the busy loop's CPU is counted
    assert (d / "tinyyolo.tim").read_text() == "new run\n" and (d / "tinyyolo.bit").exists()


def test_run_open_flow_stops_at_a_failing_step(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "b"
    d.mkdir()
    (d / "build_tinyyolo.sh").write_text(_SCRIPT)
    _fake_tools(tmp_path, monkeypatch, nextpnr_rc=3)
    with pytest.raises(hwb.BuildError, match=r"nextpnr failed \(exit 3\)"):
        hwb.run_open_flow(d, log=lambda s: None)
    assert not (d / "tinyyolo.bit").exists()


# -- status LEDs --------------------------------------------------------------------------

def test_every_board_shows_the_dram_state_on_an_led() -> None:
    for b in BOARDS.values():
        roles = b.led_roles[:len(b.leds)]
        assert len(roles) == len(b.leds) and "ready" in roles and "heartbeat" in roles, b.name
        assert set(roles) <= {"heartbeat", "rx", "tx", "link", "ready"}, b.name


def test_core_leds() -> None:
    # A tiny clock keeps the stretch (clock_hz // 20 cycles) and heartbeat short.
    cfg = HwConfig(clock_hz=200, uart_baud=100)
    dut = BoardCore(cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await ctx.tick().repeat(4)
        assert ctx.get(dut.leds[1]) == 0 and ctx.get(dut.leds[2]) == 0
        assert ctx.get(dut.leds[0]) == 0
        ctx.set(dut.rxd, 0)                 # one low cycle on the receive line
        await ctx.tick()
        ctx.set(dut.rxd, 1)
        await ctx.tick().repeat(2)          # through the 2-stage synchronizer
        assert ctx.get(dut.leds[1]) == 1
        await ctx.tick().repeat(9)
        assert ctx.get(dut.leds[1]) == 1
        await ctx.tick()
        assert ctx.get(dut.leds[1]) == 0
        await ctx.tick().repeat(128 - 18)   # 8-bit heartbeat counter: MSB after 128 cycles
        assert ctx.get(dut.leds[0]) == 0
        await ctx.tick()
        assert ctx.get(dut.leds[0]) == 1

    sim.add_testbench(bench)
    sim.run()


def test_ready_led() -> None:
    """Steady when ready; a slow blink (64-cycle period at a 64 Hz clock) while the DRAM
    waits for its leveling; four times as fast when its init failed."""
    dut = hwb.ReadyLed(64)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen: dict[str, list[int]] = {}

    async def bench(ctx):
        for name, ok, unleveled, error in (("ready", 1, 0, 0), ("unleveled", 1, 1, 0),
                                           ("error", 0, 0, 1), ("off", 0, 0, 0)):
            ctx.set(dut.ok, ok)
            ctx.set(dut.unleveled, unleveled)
            ctx.set(dut.error, error)
            seen[name] = []
            for _ in range(128):
                await ctx.tick()
                seen[name].append(ctx.get(dut.led))

    sim.add_testbench(bench)
    sim.run()
    assert seen["ready"] == [1] * 128 and seen["off"] == [0] * 128

    def edges(v: list[int]) -> int:
        return sum(a != b for a, b in itertools.pairwise(v))
    assert sum(seen["unleveled"]) == 64 and edges(seen["unleveled"]) in (3, 4)
    assert sum(seen["error"]) == 64 and edges(seen["error"]) in (15, 16)


# -- programming --------------------------------------------------------------------------

def _fake_loader(tmp_path: Path, rc: int, text: str) -> Path:
    tool = tmp_path / "fake-openfpgaloader"
    tool.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/args"\necho "{text}"\nexit {rc}\n')
    tool.chmod(0o755)
    return tool


def _built(tmp_path: Path, board: str = "ulx3s_85f", cfg: HwConfig | None = None) -> Path:
    """A fake build folder: a bitstream and its build record, as `build` leaves them."""
    b = BOARDS[board]
    cfg = cfg or (HwConfig.load(b.default_config_path()) if b.hw_config else DEFAULT)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "tinyyolo.bit").write_bytes(b"\xff" * 16 + board.encode())
    (tmp_path / "hw_config.json").write_text(cfg.to_json())
    hwb.write_stamp(tmp_path, b, cfg, tmp_path / "tinyyolo.bit")
    return tmp_path / "tinyyolo.bit"


@pytest.fixture
def loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in openFPGALoader that records its arguments in `<tmp_path>/args`."""
    monkeypatch.setenv("OPENFPGALOADER", str(_fake_loader(tmp_path, 0, "done")))
    return tmp_path / "args"


def test_program_without_bitstream(tmp_path: Path) -> None:
    with pytest.raises(hwb.BuildError, match="no bitstream .* need Vivado"):
        hwb.program(BOARDS["arty_a7"], tmp_path)


def test_program_loads_a_recorded_bitstream(tmp_path: Path, loader: Path) -> None:
    bit = _built(tmp_path / "build")
    stamp = json.loads((tmp_path / "build" / hwb.STAMP).read_text())
    assert stamp["bitstream"]["config_id"] == ULX3S_CFG.config_id_hex
    assert stamp["bitstream"]["sha256"] == hwb._sha256(bit)
    hwb.program(BOARDS["ulx3s_85f"], tmp_path / "build")
    assert loader.read_text().split() == ["-b", "ulx3s", str(bit)]


@pytest.mark.parametrize("spoil, message", [
    (lambda d: (d / "tinyyolo.bit").write_bytes(b"\0" * 16), "not the bitstream its build "
                                                              "recorded .* stale or foreign"),
    (lambda d: (d / hwb.STAMP).unlink(), "no build record"),
    (lambda d: (d / hwb.STAMP).write_text("{"), "unreadable build record"),
])
def test_program_refuses_a_stale_or_unrecorded_bitstream(tmp_path: Path, loader: Path,
                                                         spoil, message: str) -> None:
    _built(tmp_path / "build")
    spoil(tmp_path / "build")
    with pytest.raises(hwb.BuildError, match=message):
        hwb.program(BOARDS["ulx3s_85f"], tmp_path / "build")
    assert not loader.exists()                     # the loader never ran


def test_program_refuses_another_config_board_or_sources(tmp_path: Path, loader: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "build"
    _built(d)
    with pytest.raises(hwb.BuildError, match=f"built for HwConfig {ULX3S_CFG.config_id_hex}, "
                                             f"the requested config is {DEFAULT.config_id_hex}"):
        hwb.program(BOARDS["ulx3s_85f"], d, DEFAULT)
    with pytest.raises(hwb.BuildError, match="built for board ulx3s_85f, not orangecrab_85f"):
        hwb.program(BOARDS["orangecrab_85f"], d, ULX3S_CFG)
    monkeypatch.setattr(hwb, "design_hash", lambda board, cfg, system=None: "0" * 64)
    with pytest.raises(hwb.BuildError, match="other gateware sources"):
        hwb.program(BOARDS["ulx3s_85f"], d)
    assert not loader.exists()


def test_main_programs_a_current_bitstream_without_rebuilding(tmp_path: Path, loader: Path,
                                                              capsys, monkeypatch) -> None:
    d = tmp_path / "build"
    _built(d)
    monkeypatch.setattr(hwb, "build", lambda *a, **k: pytest.fail("rebuilt"))
    assert main(["--board", "ulx3s_85f", "--build-dir", str(d), "--program"]) == 0
    assert "not rebuilding" in capsys.readouterr().out and loader.exists()


def test_main_refuses_a_stale_bitstream_after_a_tree_only_build(tmp_path: Path, loader: Path,
                                                                capsys, monkeypatch) -> None:
    """--no-pnr rewrites the tree for another config; the old bitstream is not loaded."""
    d = tmp_path / "build"
    _built(d)
    other = _write_config(tmp_path, array_rows=4, array_cols=4)
    monkeypatch.setattr(hwb, "build", lambda board, cfg, build_dir, **k: hwb.write_stamp(
        build_dir, board, cfg) or hwb.BuildResult(build_dir, None, None, {}, 0.0))
    assert main(["--board", "ulx3s_85f", "--build-dir", str(d), "--hw-config", str(other),
                 "--no-pnr", "--program"]) == 1
    assert "the requested config is" in capsys.readouterr().err and not loader.exists()


def test_record_a_vivado_bitstream(tmp_path: Path, loader: Path, capsys) -> None:
    """The Arty's tree goes to a Vivado machine; its bitstream comes back and is recorded."""
    d = tmp_path / "build"
    d.mkdir()
    arty = BOARDS["arty_a7"]
    hwb.write_stamp(d, arty, HwConfig.load(arty.default_config_path()))  # the tree-only build
    (d / "tinyyolo.bit").write_bytes(b"vivado made this")
    with pytest.raises(hwb.BuildError, match="no build record"):
        hwb.program(arty, d)
    assert main(["--board", "arty_a7", "--build-dir", str(d), "--record-bitstream",
                 "--program"]) == 0
    assert "recorded" in capsys.readouterr().out and loader.exists()
    assert main(["--board", "arty_a7", "--build-dir", str(d), "--record-bitstream",
                 "--hw-config", str(_write_config(tmp_path, array_rows=4))]) == 1
    assert "does not hold this checkout's tree" in capsys.readouterr().err


def test_program_without_cable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _built(tmp_path, "arty_a7")
    monkeypatch.setenv("OPENFPGALOADER",
                       str(_fake_loader(tmp_path, 1, "unable to open ftdi device")))
    with pytest.raises(hwb.BuildError, match="plugged in") as e:
        hwb.program(BOARDS["arty_a7"], tmp_path)
    assert "unable to open ftdi device" in str(e.value)


def test_program_names_missing_system_libraries(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _built(tmp_path)
    monkeypatch.setenv("OPENFPGALOADER", str(_fake_loader(
        tmp_path, 127, "error while loading shared libraries: libusb-1.0.so.0")))
    with pytest.raises(hwb.BuildError, match="libusb-1.0-0 and libftdi1-2"):
        hwb.program(BOARDS["ulx3s_85f"], tmp_path)
