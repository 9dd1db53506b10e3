"""HwConfig: frozen, validated, serialisable, with a stable id."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hw.spec.config import DEFAULT, ConfigError, HwConfig, load_config


def test_frozen_and_derived():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.array_rows = 4
    assert DEFAULT.macs_per_cycle == DEFAULT.array_rows * DEFAULT.array_cols
    assert (DEFAULT.act_min, DEFAULT.act_max, DEFAULT.weight_max) == (-128, 127, 127)
    assert DEFAULT.max_product == 128 * 127
    assert DEFAULT.max_shift == 31
    # the accumulator bound holds for the longest Tiny-YOLOv3 reduction (3*3*512)
    assert DEFAULT.max_dot_terms >= 4608
    assert 4608 * DEFAULT.max_product + DEFAULT.bias_limit < 2 ** 31


def test_id_is_stable_and_sensitive():
    assert HwConfig().config_id == DEFAULT.config_id
    assert HwConfig(array_rows=4).config_id != DEFAULT.config_id
    assert HwConfig(uart_baud=3_000_000).config_id != DEFAULT.config_id
    assert len(DEFAULT.config_id_hex) == 8 and 0 <= DEFAULT.config_id < 2 ** 32


def test_later_fields_keep_older_ids():
    """Fields added after schema 1 (`out_lanes`, `reorder_lutram`) at their defaults leave
    the id as it was (the default build's and the 35T's ids from before them), and
    change it otherwise."""
    assert DEFAULT.config_id_hex == "5e3b4da5"
    boards = Path(__file__).resolve().parents[1] / "boards"
    assert HwConfig.load(boards / "arty_a7_35.json").config_id_hex == "95ebffee"
    assert HwConfig(out_lanes=2).config_id != DEFAULT.config_id
    assert HwConfig(reorder_lutram=1).config_id != DEFAULT.config_id
    for bad in ({"out_lanes": 3}, {"out_lanes": 2, "array_rows": 5}, {"reorder_lutram": 2},
                {"reorder_lutram": -1}):
        with pytest.raises(ConfigError):
            HwConfig(**bad)


def test_weight_lane_bytes():
    """Whole parameter beats, at most 128 bytes, dividing a weight word."""
    assert DEFAULT.weight_lane_bytes == 64                     # 8x8: the whole word
    assert HwConfig(array_rows=16, array_cols=28).weight_lane_bytes == 112   # 7 beats of 16
    assert HwConfig(array_rows=12, array_cols=9).weight_lane_bytes == 108    # 27 beats of 4
    assert HwConfig(array_rows=16, array_cols=16).weight_lane_bytes == 128
    for rows, cols in ((16, 28), (12, 9), (4, 6), (50, 8)):
        cfg = HwConfig(array_rows=rows, array_cols=cols)
        g = cfg.weight_lane_bytes
        assert g % cfg.param_beat == 0 and rows * cols % g == 0 and g <= 128


def test_json_round_trip(tmp_path):
    cfg = HwConfig(array_rows=4, array_cols=4)
    path = tmp_path / "hw.json"
    cfg.save(path)
    assert HwConfig.load(path) == cfg
    assert load_config(path) == cfg and load_config(None) == DEFAULT
    assert json.loads(path.read_text())["array_rows"] == 4


@pytest.mark.parametrize("text, needle", [
    ('{"array_rows": 4,', "invalid JSON"),
    ('{"array_rowz": 4}', "unknown HwConfig field(s): array_rowz"),
    ('{"array_rows": 0}', "array_rows must be a positive integer"),
    ('{"array_rows": "8"}', "array_rows must be a positive integer"),
    ('{"act_bits": 4}', "int8"),
    ('{"head_bits": 40}', "head_bits"),
    ('[1, 2]', "JSON object"),
])
def test_bad_config_files(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.json") as e:
        HwConfig.load(path)
    assert needle in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        HwConfig.load(tmp_path / "nope.json")


def test_mac_pack():
    assert DEFAULT.mac_pack == 1 and DEFAULT.multipliers == DEFAULT.macs_per_cycle
    packed = HwConfig(mac_pack=2)
    assert packed.multipliers == 32 and packed.macs_per_cycle == 64
    assert packed.config_id != DEFAULT.config_id
    assert packed.numerics_id == DEFAULT.numerics_id     # same integers, other build
    with pytest.raises(ConfigError, match="mac_pack must be 1 or 2"):
        HwConfig(mac_pack=3)
    with pytest.raises(ConfigError, match="array_rows to be a multiple"):
        HwConfig(array_rows=3, mac_pack=2)
    with pytest.raises(ConfigError, match="mac_pack must be a positive integer"):
        HwConfig(mac_pack=True)
