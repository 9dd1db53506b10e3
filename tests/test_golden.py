"""Golden integer model: exact against naive integer loops and bit-exact to fake-quant."""

from __future__ import annotations

import numpy as np
import pytest

from hw.spec import intmath
from sw.quant.model import FakeQuantModel
from sw.quant.ptq import QuantOptions
from sw.runtime.golden import EXACT_TERMS, GoldenModel, conv_acc, maxpool, upsample
from tests.conftest import random_images, small_bundle


def naive_conv_acc(x, w, b, stride, pad):
    """Direct int64 loops over output pixels: the definition of the accumulator."""
    xp = np.pad(x.astype(np.int64), ((pad, pad), (pad, pad), (0, 0)))
    cout, k, _, _ = w.shape
    ho = (xp.shape[0] - k) // stride + 1
    wo = (xp.shape[1] - k) // stride + 1
    out = np.zeros((ho, wo, cout), np.int64)
    w64 = w.astype(np.int64)
    for r in range(ho):
        for c in range(wo):
            patch = xp[r * stride:r * stride + k, c * stride:c * stride + k]
            out[r, c] = np.einsum("ijc,oijc->o", patch, w64)
    return out + b.astype(np.int64)


@pytest.mark.parametrize("h, w, cin, cout, k, stride, pad", [
    (5, 7, 3, 4, 3, 1, 1), (6, 6, 8, 5, 1, 1, 0), (9, 5, 2, 3, 3, 2, 1),
    (4, 4, 130, 6, 3, 1, 1),  # 1170 terms: more than one exact float32 chunk
    (3, 3, 600, 2, 3, 1, 1),  # 5400 terms: longer than Tiny-YOLOv3's longest (4608)
])
def test_conv_acc_exact_at_extremes(h, w, cin, cout, k, stride, pad):
    rng = np.random.default_rng(h * w + cin)
    x = rng.integers(-128, 128, (h, w, cin)).astype(np.int8)
    wt = rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
    b = rng.integers(-(2 ** 30), 2 ** 30, cout).astype(np.int32)
    assert np.array_equal(conv_acc(x, wt, b, stride, pad), naive_conv_acc(x, wt, b, stride, pad))
    # worst case: every product at its maximum magnitude, same sign
    x[:] = -128
    wt[:] = -127
    want = naive_conv_acc(x, wt, b, stride, pad)
    assert want.max() > EXACT_TERMS * 127 * 128 or k * k * cin <= EXACT_TERMS
    assert np.array_equal(conv_acc(x, wt, b, stride, pad), want)


def naive_maxpool(x, size, stride, padding):
    h, w, _ = x.shape
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    off = -(padding // 2)
    out = np.empty((oh, ow, x.shape[2]), x.dtype)
    for i in range(oh):
        for j in range(ow):
            rows = [r for r in range(i * stride + off, i * stride + off + size) if 0 <= r < h]
            cols = [c for c in range(j * stride + off, j * stride + off + size) if 0 <= c < w]
            out[i, j] = x[np.ix_(rows, cols)].max(axis=(0, 1))
    return out


@pytest.mark.parametrize("h, w, size, stride", [(8, 6, 2, 2), (13, 13, 2, 1), (7, 5, 2, 2),
                                                (1, 1, 2, 1), (5, 9, 3, 2)])
def test_maxpool_darknet_border_rule(h, w, size, stride):
    rng = np.random.default_rng(h + w)
    x = rng.integers(-128, 128, (h, w, 3)).astype(np.int8)
    x[-1, -1] = -128  # a corner at the minimum must not be beaten by padding
    got = maxpool(x, size, stride, size - 1)
    assert np.array_equal(got, naive_maxpool(x, size, stride, size - 1))
    if (size, stride) == (2, 1):
        assert got.shape == x.shape  # layer 11 keeps 13x13


def test_upsample_nearest():
    x = np.arange(6, dtype=np.int8).reshape(1, 2, 3)
    y = upsample(x, 2)
    assert y.shape == (2, 4, 3) and np.array_equal(y[1, 3], x[0, 1])


def _first_diff(a: np.ndarray, b: np.ndarray) -> str:
    idx = tuple(np.argwhere(a != b)[0])
    return f"first difference at {idx}: golden {a[idx]}, fake-quant {b[idx]}"


@pytest.mark.parametrize("opts", [QuantOptions(), QuantOptions("tensor", "max"),
                                  QuantOptions("channel", "mse", head_activations="percentile"),
                                  QuantOptions("channel", "percentile", bias_correction=False)])
def test_golden_equals_fakequant_every_layer_small(small_net, small_model, opts):
    bundle = small_bundle(small_net, small_model, opts)
    golden, fq = GoldenModel(bundle), FakeQuantModel(bundle)
    for img in random_images(3, small_net.width, seed=11):
        x = intmath.quantize_input(img)
        g = golden.run(x)
        f = fq.ints(fq(x, keep=True))
        assert len(g) == len(f) == len(small_net.layers)
        for i, (a, b) in enumerate(zip(g, f, strict=True)):
            assert a.shape == b.shape, f"layer {i}: shapes {a.shape} vs {b.shape}"
            assert np.array_equal(a, b), f"layer {i}: {_first_diff(a, b)}"
        assert any(np.abs(g[i]).max() > 0 for i in bundle.head_indices)


def test_golden_rejects_wrong_input(small_net, small_model):
    golden = GoldenModel(small_bundle(small_net, small_model))
    with pytest.raises(ValueError, match="int8"):
        golden.run(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(32, 32, 3\)"):
        golden.run(np.zeros((16, 32, 3), np.int8))


def test_golden_equals_fakequant_full_frame_pretrained(pretrained_bundle):
    """A whole 416x416 Tiny-YOLOv3 frame (dog.jpg), every layer bit for bit."""
    from sw.runtime.detect import CALIB_DIR
    from sw.runtime.postprocess import letterbox, load_image
    lb, _ = letterbox(load_image(CALIB_DIR / "dog.jpg"), 416)
    x = intmath.quantize_input(lb)
    g = GoldenModel(pretrained_bundle).run(x)
    fq = FakeQuantModel(pretrained_bundle)
    f = fq.ints(fq(x, keep=True))
    for i, (a, b) in enumerate(zip(g, f, strict=True)):
        assert a.shape == b.shape and np.array_equal(a, b), f"layer {i}: {_first_diff(a, b)}"
    # the heads carry real signal (not saturated, not all zero)
    for i in pretrained_bundle.head_indices:
        lo, hi = intmath.int_range(pretrained_bundle.layers[i]["out_bits"])
        assert g[i].std() > 10 and lo < g[i].min() and g[i].max() < hi
