"""bench/input_rows.py: the link bytes of the changed-rows input against the whole image."""

from __future__ import annotations

import json

import numpy as np

from bench import input_rows as ir
from bench.fps import FRAME_BYTES

CRC = FRAME_BYTES + 8 + FRAME_BYTES + 4


def test_sequence_counts_rows_requests_and_the_crc() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (8, 5, 3), dtype=np.int8)
    b = a.copy()
    b[2] += 1                                       # one row of 15 bytes
    c = rng.integers(-128, 128, (8, 5, 3), dtype=np.int8)   # every row
    s = ir.sequence([a, a, b, c])
    whole = ir.write_bytes(a.nbytes)
    assert whole == a.nbytes + 2 * FRAME_BYTES + 4
    assert s["whole_bytes"] == whole
    assert s["rows_bytes"] * 3 == CRC + (ir.write_bytes(15) + CRC) + whole
    assert s["skipped_bytes"] * 3 == a.nbytes + 7 * 15 + 0
    assert ir.write_bytes(3000) == 3000 + 3 * (2 * FRAME_BYTES + 4)   # 1,020 bytes a request


def test_crop_and_main(tmp_path, capsys) -> None:
    tall = np.zeros((90, 100, 3), np.uint8)
    assert ir.crop_16_9(tall).shape == (56, 100, 3)
    wide = np.zeros((50, 100, 3), np.uint8)
    assert ir.crop_16_9(wide) is wide
    out = tmp_path / "r.json"
    assets = sorted((ir.ROOT / "assets").glob("*.jpg"))[:3]
    assert ir.main(["--images", *map(str, assets), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    video = r["sequences"]["16:9 video"]
    assert video["rows_bytes"] < video["whole_bytes"] and video["frames"] == 3
    assert "ulx3s_85f" in capsys.readouterr().out
