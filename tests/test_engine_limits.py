"""bench/engine_limits.py: its schedule is `engine_cycles` when nothing changes, the split
of a layer's cycles adds up, and the changes it projects never cost cycles."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench import engine_limits as el
from hw.spec.config import DEFAULT
from hw.spec.engine import POOL_NONE, POOL_S1, POOL_S2, engine_cycles
from sw.runtime.bundle import Bundle
from sw.runtime.detect import shipped_bundle
from sw.runtime.program import compile_network

CONFIGS = [DEFAULT,
           dataclasses.replace(DEFAULT, array_rows=4, array_cols=4, weight_mem_bytes=2304),
           dataclasses.replace(DEFAULT, array_rows=50, mac_pack=2, weight_mem_bytes=409600)]
SHAPES = [(13, 13, 512, 8, 3, POOL_NONE), (13, 13, 1024, 32, 1, POOL_NONE),
          (32, 32, 3, 16, 3, POOL_S2), (13, 13, 256, 16, 3, POOL_S1), (5, 7, 3, 5, 3, POOL_S2),
          (1, 1, 1, 1, 3, POOL_NONE), (9, 4, 20, 3, 1, POOL_S2)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["8x8", "4x4", "50x8p2"])
def test_unchanged_schedule_is_engine_cycles(cfg) -> None:
    for h, w, cin, cout, k, pool in SHAPES:
        if cout > 4 and cfg.array_rows == 4 and cin * 9 > 200:
            continue
        for pairs in (False, True):
            base = el.schedule(cfg, h, w, cin, cout, k, pool, pairs)
            assert base == engine_cycles(cfg, h, w, cin, cout, k, pool, pairs)
            for ch in el.CHANGES:
                assert el.schedule(cfg, h, w, cin, cout, k, pool, pairs, ch) <= base


def test_breakdown_adds_up_and_names_the_default_limits() -> None:
    bundle = Bundle.load(shipped_bundle(DEFAULT), expect=DEFAULT)
    rows = {k.layer: k for k in el.breakdown(DEFAULT, bundle)}
    for k in rows.values():
        parts = k.ideal + k.row_pad + k.lane_pad + k.serial + k.fill
        assert parts == pytest.approx(k.cycles, rel=1e-9)
        assert k.ideal * DEFAULT.macs_per_cycle == pytest.approx(k.macs)
    # Layer 0: 27 of 32 lanes in the packed walk; layer 12: the 128 groups' fills.
    assert rows[0].lane_pad / rows[0].cycles == pytest.approx(5 / 32, abs=0.002)
    assert 0.03 < rows[12].fill / rows[12].cycles < 0.05 and rows[12].bound == "array"
    assert rows[13].bound == "input"
    # The frame adds the max-pool passes (no MACs) that the per-layer split leaves out.
    image = compile_network(bundle, DEFAULT)
    pools = sum(p.cycles(DEFAULT)
                for p, macs in zip(image.passes, image.macs, strict=True) if not macs)
    fr = el.frame(DEFAULT, bundle)
    assert fr["engine_cycles"] == sum(k.cycles for k in rows.values()) + pools


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert el.main(["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["config_id"] == DEFAULT.config_id_hex
    assert [p["change"]["name"] for p in r["projections"]] == [c.name for c in el.CHANGES]
    assert r["projections"][0]["cycles_per_frame"] > r["projections"][-1]["cycles_per_frame"]


def test_search_ranks_shapes_within_the_part() -> None:
    found = el.search("arty_a7_100", el.CHANGES[-2], top=5)
    assert len(found) == 5 and found == sorted(found, reverse=True)
    for fps, util, r, c in found:
        assert r * c // 2 + 2 <= 240 and r * c >= 300 and 0 < util < 1 and fps > 9


def test_flat_walk_and_parameter_beats() -> None:
    # The flat walk as built: ceil(k*k*cin / C) vectors a row block, not k*k * ceil(cin / C).
    wide = dataclasses.replace(DEFAULT, array_rows=16, array_cols=26, mac_pack=2,
                               weight_mem_bytes=1024 * 16 * 26)
    assert el._per_pixel(wide, 13, 16, 32, 3, POOL_NONE, el.Change()) == (2 * 6, 32)  # 144/26
    assert el._per_pixel(wide, 13, 512, 32, 1, POOL_NONE, el.Change()) == (2 * 20, 32)
    assert el._per_pixel(wide, 13, 3, 32, 3, POOL_NONE, el.Change(split=True)) == (2 * 1.5, 32)
    # Parameter beats: whole memory words where R x C allows (16 x 26 = 416 = 26 x 16).
    assert wide.param_beat == DEFAULT.param_beat == DEFAULT.mem_word_bytes == 16
    bundle = Bundle.load(shipped_bundle(DEFAULT), expect=DEFAULT)
    image = compile_network(bundle, DEFAULT)
    assert el.frame(DEFAULT, bundle)["param_beats"] == sum(p.param_len // 16
                                                           for p in image.passes)
