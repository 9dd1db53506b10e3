"""bench/explore_arrays.py: the block-RAM estimate against Yosys's counts, and the search's
fit rules on the A7-100T."""

from __future__ import annotations

import dataclasses

import pytest

from bench import explore_arrays as ea
from hw.spec.config import DEFAULT


@pytest.mark.parametrize(("rows", "cols", "pack", "weights", "yosys"), [
    # Yosys synth_xilinx: the whole default device (README), 16x8 device (README), the
    # LayerEngine of 26x16 and 50x8 packed (docs/gateware.md) plus the device's 1.
    (8, 8, 1, 36864, 36.5),
    (16, 8, 1, 73728, 53.0),
    (26, 16, 2, 425984, 134.0),
    (50, 8, 2, 409600, 121.0),
])
def test_bram_estimate_matches_yosys(rows: int, cols: int, pack: int, weights: int,
                                     yosys: float) -> None:
    cfg = dataclasses.replace(DEFAULT, array_rows=rows, array_cols=cols, mac_pack=pack,
                              weight_mem_bytes=weights)
    assert abs(sum(ea.bram_estimate(cfg).values()) - yosys) <= 1


def test_bram_estimate_ecp5_matches_yosys() -> None:
    # synth_ecp5 of the whole default device: 73 DP16KD (README)
    assert sum(ea.bram_estimate(DEFAULT, "ecp5").values()) * 2 == 73


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
