"""bench.head_filter: the projected device-side head filter drops nothing the host keeps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.head_filter import filter_heads, filtered_bytes
from sw.runtime.postprocess import HeadSpec, detect, letterbox, objectness_floor

SPECS = [HeadSpec("yolo", ((81, 82), (135, 169), (344, 319)), 80),
         HeadSpec("yolo", ((10, 14), (23, 27), (37, 58)), 80)]


def _heads(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    heads = []
    for n in (13, 26):
        h = rng.integers(-6000, 600, size=(n, n, 255)).astype(np.int16)
        h.reshape(n, n, 3, 85)[..., 4] = rng.integers(-9000, 1000, size=(n, n, 3))
        heads.append(h)
    return heads


def test_obj_threshold_is_below_the_logit():
    for conf in (0.001, 0.1, 0.25, 0.5, 0.9):
        for f in (0, 4, 9):
            t = objectness_floor(conf, f)
            assert t < math.log(conf / (1 - conf)) * 2 ** f <= t + 2
    with pytest.raises(ValueError):
        objectness_floor(0.0, 9)


@pytest.mark.parametrize("seed", range(2))
def test_filtered_heads_give_the_same_detections(seed):
    heads = _heads(seed)
    _, box = letterbox(np.zeros((300, 500, 3), np.uint8), 416)
    for conf in (0.25, 0.05):
        filt, masks = filter_heads(heads, SPECS, [9, 9], conf)
        want = detect(heads, SPECS, box, conf)
        assert want and detect(filt, SPECS, box, conf) == want
        assert 0 < sum(int(m.sum()) for m in masks) < sum(h.size // 85 for h in heads)
    # a filter tuned for a higher threshold than the host's does lose detections
    filt, _ = filter_heads(heads, SPECS, [9, 9], 0.6)
    assert detect(filt, SPECS, box, 0.25) != detect(heads, SPECS, box, 0.25)


def test_filtered_bytes_count_the_requests_and_replies():
    # head 0: MEM_MASK (7 + 12) and its 1-byte mask (7 + 1); MEM_READs of candidates 0-1
    # (7 + 8, then 7 + 340) and 3 (7 + 8, then 7 + 170); head 1: the mask only
    masks = [np.array([1, 1, 0, 1], bool), np.zeros(8, bool)]
    assert filtered_bytes(masks, SPECS) == 19 + 8 + 15 + 347 + 15 + 177 + 19 + 8
    # a run longer than a frame comes back as DATA frames and an OK
    assert filtered_bytes([np.ones(7, bool), np.zeros(1, bool)], SPECS) == (
        19 + 8 + 15 + 7 * 170 + 2 * 7 + 19 + 8)
