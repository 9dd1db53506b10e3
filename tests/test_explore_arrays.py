"""bench/explore_arrays.py: the block-RAM estimate against Yosys's counts, and the search's
fit rules on the A7-100T."""

from __future__ import annotations

import pytest

from bench import explore_arrays as ea
from bench.fps import board_config
from hw.spec.config import DEFAULT


@pytest.mark.parametrize(("name", "yosys", "tolerance"), [
    # Yosys synth_xilinx, 2026-11-28 (weight words written in `weight_lane_bytes` lanes):
    # the whole default streaming device (`hw.build --board arty_a7 --system streaming`
    # with the default config), and the Arty systems with LiteDRAM and LiteEth
    # (`hw.build --board NAME --no-pnr`): the 100T's measures half a BRAM36 above the
    # estimate, the 35T's 2 (not broken down; it was 2 before the weight lanes too)
    ("default", 35.0, 1),
    ("arty_a7", 36.0, 2),
    ("arty_a7_100", 114.5, 1),
])
def test_bram_estimate_matches_yosys(name: str, yosys: float, tolerance: float) -> None:
    cfg = DEFAULT if name == "default" else board_config(name)
    assert abs(sum(ea.bram_estimate(cfg).values()) - yosys) <= tolerance


def test_bram_estimate_ecp5_matches_yosys() -> None:
    # synth_ecp5 of the whole default streaming device (`hw.build --board ulx3s_85f
    # --system streaming` with the default config, 2026-11-28): 70 DP16KD (73 before the
    # weight words were written in `weight_lane_bytes` lanes)
    assert sum(ea.bram_estimate(DEFAULT, "ecp5").values()) * 2 == 70


def test_memory_tiling() -> None:
    assert ea.memory_bram36(576, 384) == 8          # the default reorder buffer
    assert ea.memory_bram36(64, 576) == 2
    assert ea.memory_bram36(16, 1024) == 0.5        # one RAMB18


def test_search_fits_the_part() -> None:
    found = ea.explore("arty_a7_100", min_macs=400)
    assert found and found == sorted(found, key=lambda k: (k.cycles, k.bram36))
    for k in found:
        assert k.macs >= 400 and k.dsp <= 240 and k.bram36 <= 135 - ea.DRAM_RESERVE_BRAM36
        assert k.fps == pytest.approx(1e8 / k.cycles)
