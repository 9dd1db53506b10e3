"""Calibration-time tuning (sw.quant.tune): equalization keeps the float function, tuned bundles
stay bit-exact in the golden model, and the f search never worsens its objective."""

from __future__ import annotations

import numpy as np
import pytest

from hw.spec import intmath
from hw.spec.config import HwConfig
from sw.quant import tune
from sw.quant.calib import calibrate
from sw.quant.model import FakeQuantModel, float_heads
from sw.quant.ptq import QuantOptions, quantize_network
from sw.runtime.golden import GoldenModel
from sw.runtime.graph import conv_inputs, network_kinds, scale_groups
from tests.conftest import random_images, small_bundle


def test_conv_inputs_follow_the_route_graph(small_net, small_model):
    kinds = network_kinds(small_net)
    channels = {i: w.shape[0] for i, (w, _) in small_model.fused_params().items()}
    ins = conv_inputs(kinds, channels)
    assert ins[0] == []                       # the network input
    assert ins[2] == [(0, 0)]                 # through a maxpool
    assert ins[8] == [(7, 0)]
    assert ins[11] == [(7, 0)]                # route -3
    # route [-1, 2]: upsample of conv 11 first, then conv 2's output behind it
    assert ins[14] == [(11, 0), (2, channels[11])]


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_equalization_keeps_the_float_function(small_net, small_model, alpha):
    imgs = random_images(3, small_net.width, seed=5)
    ranges = tune.channel_ranges(small_model, imgs)
    scales = tune.equalization_scales(ranges, small_net.head_indices, alpha)
    assert all((scales[i] == 1).all() for i in small_net.head_indices)
    assert any((s != 1).any() for s in scales.values())
    # also arbitrary positive scales on every layer but the heads
    rng = np.random.default_rng(0)
    wild = {i: rng.uniform(0.1, 10, len(s)) for i, s in scales.items()
            if i not in small_net.head_indices}
    ref = [float_heads(small_model)(i) for i in imgs]
    for sc in (scales, wild):
        eq = tune.equalize(small_model, sc)
        for a, b in zip(ref, [float_heads(eq)(i) for i in imgs], strict=True):
            for x, y in zip(a, b, strict=True):
                assert np.allclose(x, y, rtol=1e-4, atol=1e-4 * np.abs(x).max())
    # the original model is untouched
    w0 = small_model.fused_params()[0][0]
    tune.equalize(small_model, wild)
    assert np.array_equal(w0, small_model.fused_params()[0][0])


def test_fill_scales_put_clips_on_pow2_grids(small_net):
    kinds = network_kinds(small_net)
    clips = {i: 3.0 + i for i in small_net.conv_indices}
    g = tune.fill_scales(clips, kinds, small_net.head_indices)
    for i in small_net.conv_indices:
        if i in small_net.head_indices:
            assert g[i] == 1.0
            continue
        assert g[i] >= 1.0
        top = clips[i] * g[i] / 127
        assert np.isclose(np.log2(top), np.round(np.log2(top)))


@pytest.mark.parametrize("tag", ["channel-mse-bc-eq0.5", "channel-mse-bc-eq1-fill",
                                 "channel-max-fill-fs"])
def test_tuned_bundles_are_bit_exact(small_net, small_model, tag):
    bundle = small_bundle(small_net, small_model, QuantOptions.from_tag(tag))
    q = bundle.manifest["quantization"]
    assert q.get("equalize", 0) == QuantOptions.from_tag(tag).equalize
    golden, fq = GoldenModel(bundle), FakeQuantModel(bundle)
    for img in random_images(2, small_net.width, seed=11):
        x = intmath.quantize_input(img)
        g = golden.run(x)
        f = fq.ints(fq(x, keep=True))
        for i, (a, b) in enumerate(zip(g, f, strict=True)):
            assert np.array_equal(a, b), f"layer {i}"
    for i, layer in enumerate(bundle.layers):
        if layer["kind"] == "conv":
            assert 0 <= bundle.shift(i).min() and bundle.shift(i).max() <= HwConfig().max_shift
    assert bundle.layers[14]["f_in"] == bundle.layers[11]["f_out"] == bundle.layers[2]["f_out"]


def test_search_never_worsens_its_objective(small_net, small_model):
    imgs = random_images(3, small_net.width, seed=3)
    cal = calibrate(small_model, imgs)
    hw, opts = HwConfig(), QuantOptions()
    refs = [float_heads(small_model)(i) for i in imgs]

    def build(d):
        return quantize_network(small_net, small_model, cal, hw, opts, f_out_delta=d)

    def objective(b):
        return tune.head_sqnr(b, imgs, refs)

    start = objective(build({}))
    delta, best = tune.search_frac_bits(build, objective, network_kinds(small_net),
                                        small_net.head_indices)
    assert best >= start
    assert best == pytest.approx(objective(build(delta)))
    # a synthetic objective with a known optimum (every f_out = 3; calibrated: 5): the
    # search walks there one step per pass and never accepts a worse point
    seen = []

    def synthetic(b):
        v = -sum((layer["f_out"] - 3) ** 2 for layer in b.layers
                 if layer["kind"] == "conv" and not layer["head"])
        seen.append(v)
        return v

    s0 = synthetic(build({}))
    delta, s1 = tune.search_frac_bits(build, synthetic, network_kinds(small_net),
                                      small_net.head_indices, max_passes=8)
    assert s0 < 0 and s1 == 0 == max(seen) and delta
    assert synthetic(build(delta)) == s1
    for g in scale_groups(network_kinds(small_net)):  # a route group moves together
        assert len({delta.get(i, 0) for i in g}) == 1
    assert len({delta[i] for i in (2, 11)}) == 1


def test_tuning_tags_round_trip_and_manifest():
    for tag in ("channel-mse-bc-eq0.5", "channel-mse-bc-eq1-fill-fs", "tensor-max-fs",
                "channel-std3-bc-fill"):
        assert QuantOptions.from_tag(tag).tag == tag
    opts = QuantOptions.from_tag("channel-mse-bc-eq0.5-fill-fs")
    assert (opts.equalize, opts.fill, opts.fsearch) == (0.5, True, True)
    for bad in ("channel-mse-eq", "channel-mse-bc-eq0", "channel-mse-fs-bc", "channel-mse-eqx",
                "channel-mse-bc-eq2"):
        with pytest.raises(ValueError):
            QuantOptions.from_tag(bad)
    plain = QuantOptions().manifest_dict()
    assert not {"equalize", "fill", "fsearch", "search_images"} & set(plain)


def test_equalize_rejects_bad_scales(small_model):
    with pytest.raises(ValueError, match="positive"):
        tune.equalize(small_model, {0: np.zeros(8)})
