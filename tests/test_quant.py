"""PTQ with power-of-two scales."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hw.spec.config import HwConfig
from sw.quant.calib import frac_bits_for_max
from sw.quant.ptq import QuantOptions
from tests.conftest import small_bundle


@pytest.mark.parametrize("m, bits, f", [(1.0, 8, 6), (127.0, 8, 0), (127.4, 8, 0),
                                        (127.5, 8, -1), (0.99, 8, 7), (64.0, 8, 0),
                                        (63.7, 8, 1), (63.9, 8, 0), (1000.0, 16, 5), (3e-6, 8, 25)])
def test_frac_bits_for_max(m, bits, f):
    assert frac_bits_for_max(m, bits) == f
    hi = 2 ** (bits - 1) - 1
    assert m * 2.0 ** f < hi + 0.5 <= m * 2.0 ** (f + 1)


def test_bad_options():
    with pytest.raises(ValueError, match="weights must be one of"):
        QuantOptions(weights="row")
    with pytest.raises(ValueError, match="activations must be one of"):
        QuantOptions(activations="kl")
    with pytest.raises(ValueError, match="percentile"):
        QuantOptions(percentile=0)


def test_option_tags_round_trip():
    for tag in ("channel-mse-bc", "tensor-max", "channel-percentile"):
        assert QuantOptions.from_tag(tag).tag == tag
    assert QuantOptions().tag == "channel-mse-bc"
    for bad in ("channel", "channel-mse-xx", "row-max", "channel-kl"):
        with pytest.raises(ValueError):
            QuantOptions.from_tag(bad)


def test_per_tensor_weights_share_one_scale(small_net, small_model):
    b = small_bundle(small_net, small_model, QuantOptions("tensor", "max"))
    pc = small_bundle(small_net, small_model, QuantOptions("channel", "max"))
    for i, layer in enumerate(b.layers):
        if layer["kind"] == "conv":
            assert len(set(b.f_w(i).tolist())) == 1
            # per channel uses each channel's own range: never coarser than per tensor
            assert (pc.f_w(i) >= b.f_w(i)).all()
    assert any(len(set(pc.f_w(i).tolist())) > 1 for i in pc.head_indices)


def test_weights_use_their_range(small_net, small_model):
    b = small_bundle(small_net, small_model, QuantOptions("channel", "max"))
    w = b.weight(0).astype(np.int64)
    peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    assert (peak >= 64).all() and (peak <= 127).all()  # pow2 loses at most one bit


def test_quantization_error_is_small(small_net, small_model):
    """Dequantized weights and biases stay within half a step of the float values."""
    b = small_bundle(small_net, small_model, QuantOptions(bias_correction=False))
    params = small_model.fused_params()
    for i, layer in enumerate(b.layers):
        if layer["kind"] != "conv":
            continue
        w, bias = params[i]
        fw = b.f_w(i)
        wq = b.weight(i).transpose(0, 3, 1, 2) * np.exp2(-fw)[:, None, None, None]
        assert np.abs(wq - w).max() <= np.exp2(-fw).max() / 2 + 1e-12
        bq = b.bias(i) * np.exp2(-(layer["f_in"] + fw))
        assert np.abs(bq - bias).max() <= np.exp2(-(layer["f_in"] + fw)).max() / 2 + 1e-12


def test_shift_range_respected_for_narrow_shift_config(small_net, small_model):
    hw = HwConfig(shift_bits=3)  # max shift 7 forces the constraint loop to act
    b = small_bundle(small_net, small_model, hw=hw)
    assert b.manifest["numerics_id"] == hw.numerics_id_hex
    for i, layer in enumerate(b.layers):
        if layer["kind"] == "conv":
            assert 0 <= b.shift(i).min() and b.shift(i).max() <= 7


def test_pretrained_bundle_route_scales(pretrained_bundle):
    layers = pretrained_bundle.layers
    assert layers[19]["f_out"] == layers[8]["f_out"] == layers[20]["f_out"]
    assert layers[15]["out_bits"] == layers[22]["out_bits"] == HwConfig().head_bits


def test_bias_correction_removes_mean_error_of_first_layer(small_net, small_model):
    """Layer 0 sees the image itself: corrected biases cancel the mean weight error."""
    import torch

    from tests.conftest import random_images
    imgs = random_images(4, small_net.width)
    w, b = small_model.fused_params()[0]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).double() / 255.0
    pad = small_net.layers[0].pad

    def mean_error(bundle):
        fw = bundle.f_w(0)
        wq = bundle.weight(0).transpose(0, 3, 1, 2) * np.exp2(-fw)[:, None, None, None]
        bq = bundle.bias(0) * np.exp2(-(bundle.layers[0]["f_in"] + fw))
        conv = torch.nn.functional.conv2d
        ref = conv(x, torch.from_numpy(w), torch.from_numpy(b), padding=pad)
        got = conv(x, torch.from_numpy(wq), torch.from_numpy(bq), padding=pad)
        # interior only: the calibration means ignore the zero padding at the borders
        return np.abs((got - ref)[:, :, 1:-1, 1:-1].mean(dim=(0, 2, 3)).numpy())

    plain = mean_error(small_bundle(small_net, small_model,
                                    QuantOptions("tensor", "max", bias_correction=False)))
    corrected = mean_error(small_bundle(small_net, small_model,
                                        QuantOptions("tensor", "max", bias_correction=True)))
    assert corrected.mean() < 0.5 * plain.mean(), (plain, corrected)


def test_std_option_tags_and_validation():
    for tag in ("channel-std3-bc", "tensor-std2.5", "channel-std0.5-bc"):
        opts = QuantOptions.from_tag(tag)
        assert opts.activations == "std" and opts.tag == tag
    assert QuantOptions.from_tag("channel-std").tag == "channel-std3"
    assert QuantOptions.from_tag("channel-std4").std_m == 4.0
    for bad in ("channel-stdx", "channel-std-1", "channel-std0"):
        with pytest.raises(ValueError):
            QuantOptions.from_tag(bad)
    with pytest.raises(ValueError, match="std_m"):
        QuantOptions(std_m=math.nan)


def test_std_m_recorded_only_where_used(small_net, small_model):
    """Bundles of the other methods keep their manifest (and hash) as before std existed."""
    plain = small_bundle(small_net, small_model, QuantOptions("channel", "max"))
    assert "std_m" not in plain.manifest["quantization"]
    std = small_bundle(small_net, small_model, QuantOptions("channel", "std", std_m=2.0))
    assert std.manifest["quantization"]["std_m"] == 2.0
    # clipping at |mean| + 2 std is never coarser than max, and finer somewhere
    pairs = [(std.layers[i]["f_out"], plain.layers[i]["f_out"])
             for i, layer in enumerate(plain.layers) if layer["kind"] == "conv"
             and not layer["head"]]
    assert all(s >= p for s, p in pairs) and any(s > p for s, p in pairs)


def test_pow2_frac_bits_matches_the_bundle(small_net, small_model):
    from sw.quant.calib import calibrate
    from sw.quant.ptq import pow2_frac_bits
    from tests.conftest import random_images

    cal = calibrate(small_model, random_images(4, small_net.width))
    hw = HwConfig()
    opts = QuantOptions("channel", "percentile")
    b = small_bundle(small_net, small_model, opts)
    f_in, f_out, f_w = pow2_frac_bits(small_net, small_model.fused_params(), cal, opts,
                                      hw.act_bits, hw.weight_bits, hw.head_bits, hw.max_shift,
                                      hw.bias_limit)
    for i in small_net.conv_indices:
        assert (f_in[i], f_out[i]) == (b.layers[i]["f_in"], b.layers[i]["f_out"])
        assert np.array_equal(f_w[i], b.f_w(i))
