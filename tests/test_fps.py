"""bench/fps.py: one JSON object per board with the issue's keys, consistent with the
schedule model and the board's part."""

from __future__ import annotations

import json

import pytest

from bench import fps
from boards import BOARDS
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
    model = sum(engine_cycles(cfg, p.height, p.width, p.cin, p.cout, p.k, p.pool)
                for p in image.passes)
    assert model < r["cycles_per_frame"] < model * 1.05
    # Image in and heads out, plus a few percent of framing.
    h, w, c = bundle.input_shape
    payload = h * w * c + sum(image.layer_views[i].nbytes for i in image.heads)
    assert payload < r["link_bytes_per_frame"] < payload * 1.05
