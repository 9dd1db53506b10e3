"""bench/fps.py: one JSON object per board with the issue's keys, consistent with the
schedule model and the board's part."""

from __future__ import annotations

import json

import pytest

from bench import fps
from boards import BOARDS
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import engine_cycles
from sw.runtime.bundle import Bundle
from sw.runtime.detect import shipped_bundle
from sw.runtime.program import compile_network


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_fps_json(board: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert fps.main(["--board", board, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    cfg = fps.board_config(board)
    keys = {"board", "macs", "dsp_used", "dsp_total", "clock_hz", "cycles_per_frame",
            "utilization", "fps_compute", "fps_uart", "link_bytes_per_frame"}
    assert keys <= r.keys() and ("fps_ethernet" in r) == (BOARDS[board].family == "xc7")
    assert r["board"] == board and r["macs"] == cfg.macs_per_cycle
    assert r["dsp_used"] == cfg.multipliers <= r["dsp_total"]
    assert r["fps_compute"] == pytest.approx(r["clock_hz"] / r["cycles_per_frame"])
    assert 0.5 < r["utilization"] < 1
    assert r["fps_uart"] < r["fps_compute"] and r["fps_uart"] < r.get("fps_ethernet", 1e9)
    # The cycles are the schedule of the compiled program plus its parameter beats.
    bundle = Bundle.load(shipped_bundle(cfg), expect=cfg)
    image = compile_network(bundle, cfg)
    model = sum(engine_cycles(cfg, p.height, p.width, p.cin, p.cout, p.k, p.pool,
                              p.input_pairs(cfg)) for p in image.passes)
    beats = sum(p.param_len // cfg.param_beat for p in image.passes)
    assert r["cycles_per_frame"] == model + beats < model * 1.15
    # Image in and heads out, plus a few percent of framing.
    h, w, c = bundle.input_shape
    payload = h * w * c + sum(image.layer_views[i].nbytes for i in image.heads)
    assert payload < r["link_bytes_per_frame"] < payload * 1.05


def test_a7_100_compute_target(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17's A7-100T figures: at least 400 MACs on at most 240 DSP48E1 and 12 frames/s
    of compute at 100 MHz (16x28 packed, two output lanes, 1,024 weight words: 12.55 in
    the schedule model)."""
    assert fps.main(["--board", "arty_a7_100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["macs"] >= 400 and r["dsp_used"] <= 240 and r["clock_hz"] == 100_000_000
    assert r["fps_compute"] >= 12.0, r


#: What each board config's no-stall schedule meets (docs/gateware.md, "Array sizes per
#: board"): overall utilization at least `util`, and every 3x3 layer except `below` at
#: least `util3` (the listed ones are bound by the serializer's one value a cycle, or by
#: R not dividing their 16-64 output channels).
MEETS: dict[str, dict[str, object]] = {
    "default": {"util": 0.95, "util3": 0.95, "below": {0: 0.84}},
    # 12x9: 12 rows pad the 16- and 32-channel layers (a third of a row block: 11% of
    # layers 2 and 4), the serializer bounds layer 0, the input's fill once per group (86
    # groups) layer 12
    "arty_a7": {"util": 0.80, "util3": 0.88, "below": {0: 0.49}},
    # 16x28, two output lanes, 1,024 weight words: the serializer bounds layer 0 (16
    # outputs a pixel at two a cycle, column-pooled: 4 cycles against the array's 1), the
    # input (16 values a pixel at one a cycle) layer 2
    "arty_a7_100": {"util": 0.77, "util3": 0.93, "below": {0: 0.24, 2: 0.63}},
}


def _board_or_default(name: str) -> HwConfig:
    return DEFAULT if name == "default" else fps.board_config(name)


@pytest.mark.parametrize("name", sorted(MEETS))
def test_schedule_utilization(name: str) -> None:
    """The schedule model's utilization of each board config, per 3x3 layer and overall,
    and its fit (multipliers, block-RAM estimate with room for the DRAM controller)."""
    from bench.explore_arrays import DRAM_RESERVE_BRAM36, ENGINE_DSP, bram_estimate, evaluate

    cfg = _board_or_default(name)
    bundle = Bundle.load(shipped_bundle(cfg), expect=cfg)
    _, util, util3 = evaluate(cfg, bundle)
    want = MEETS[name]
    assert util >= want["util"]
    assert set(util3) == {0, 2, 4, 6, 8, 10, 12, 14, 21}
    for layer, u in util3.items():
        assert u >= want["below"].get(layer, want["util3"]), (layer, u)
    board = BOARDS["arty_a7" if name == "default" else name]
    assert cfg.multipliers + ENGINE_DSP <= board.capacity["DSP48E1"]
    assert sum(bram_estimate(cfg).values()) <= board.capacity["BRAM36"] - DRAM_RESERVE_BRAM36


def test_default_3x3_layers_short_of_95_percent() -> None:
    """Issue 17 asks >= 95% for every 3x3 layer on the default config; the no-stall model
    gives layer 0 less (27 of 32 lanes in its flat walk, and the serializer's 8 values
    a pixel after column pooling: bench/engine_limits.py). Layer 12 reaches it with row 0
    filled at two values a cycle. Pinned so that a change that meets it updates the docs."""
    from bench.explore_arrays import evaluate

    bundle = Bundle.load(shipped_bundle(DEFAULT), expect=DEFAULT)
    _, _, util3 = evaluate(DEFAULT, bundle)
    assert sorted(i for i, u in util3.items() if u < 0.95) == [0]
    assert 0.95 <= util3[12] < 0.96


def test_sim_frame_systems_and_projection() -> None:
    """bench/sim_frame.py's --system names and its link-plus-compute projection."""
    from bench import sim_frame

    assert sim_frame.parse_system("memory") is None
    assert sim_frame.parse_system("dram-ulx3s_85f") == "ulx3s_85f"
    for bad in ("dram-nope", "ulx3s_85f"):
        with pytest.raises(SystemExit, match=f"unknown --system '{bad}'"):
            sim_frame.parse_system(bad)
    ulx3s = fps.board_config("ulx3s_85f")            # 3 Mbaud: 300 kB take 1 s
    r = sim_frame.projection(ulx3s.clock_hz, ulx3s, 300_000, ethernet=False)
    assert r["compute_s"] == 1.0 and r["fps_uart"] == pytest.approx(0.5)
    assert "fps_ethernet" not in r
    r = sim_frame.projection(50_000_000, DEFAULT, int(fps.ETHERNET_BYTES_S / 2), ethernet=True)
    assert r["fps_compute"] == 2.0 and r["fps_ethernet"] == pytest.approx(1.0)
