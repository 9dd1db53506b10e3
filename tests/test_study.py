"""The PTQ study: quantizer and integer model per style/method/bits, its arithmetic, CLI."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from hw.spec import intmath
from hw.spec.config import HwConfig
from sw.eval.study import (
    METHODS,
    STYLES,
    StudyConfig,
    StudyModel,
    main,
    markdown,
    mse_clip,
    parse_bits,
    parse_list,
    plot,
    split_images,
)
from sw.quant.calib import Calibration, act_clip, calibrate
from sw.quant.ptq import QuantOptions, quantize_network
from sw.runtime.golden import GoldenModel
from tests.conftest import random_images

BITS = (4, 6, 8, 12, 16)


@pytest.fixture(scope="module")
def small_cal(small_net, small_model):
    return calibrate(small_model, random_images(4, small_net.width))


@pytest.fixture(scope="module")
def frame(small_net):
    return random_images(1, small_net.width, seed=7)[0]


def _float_heads(net, model, img):
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        outs = model(x)
    return [outs[i][0].permute(1, 2, 0).double().numpy() for i in net.head_indices]


def _sqnr(ref, x):
    return 10 * math.log10(sum(float(np.sum(r ** 2)) for r in ref) /
                           sum(float(np.sum((r - y) ** 2)) for r, y in zip(ref, x, strict=True)))


# -- consistency with the hardware's model ---------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("weights, bc", [("channel", True), ("tensor", False)])
def test_pow2_8_bits_is_the_golden_model(small_net, small_model, small_cal, frame, method,
                                         weights, bc):
    """pow2 at 8 bits: the same integers as golden on quantize_network's bundle, every layer."""
    cfg = StudyConfig(8, method, "pow2", weights, bc)
    assert (cfg.acc_bits, cfg.max_shift, cfg.bias_limit, cfg.head_bits) == (
        HwConfig().acc_bits, HwConfig().max_shift, HwConfig().bias_limit, HwConfig().head_bits)
    bundle = quantize_network(small_net, small_model, small_cal, HwConfig(), cfg.quant_options())
    study = StudyModel(small_net, small_model, small_cal, cfg)
    for img in (frame, random_images(1, small_net.width, seed=3)[0]):
        gold = GoldenModel(bundle).run(intmath.quantize_input(img))
        mine = study.ints(img)
        for i, (g, m) in enumerate(zip(gold, mine, strict=True)):
            assert np.array_equal(g.astype(np.int64), m), f"layer {i}"
    for i in small_net.conv_indices:
        assert study.layers[i].s_out == 2.0 ** -bundle.layers[i]["f_out"]


# -- every configuration -----------------------------------------------------------------------

@pytest.mark.parametrize("bits", BITS)
def test_every_method_and_style_runs(small_net, small_model, small_cal, frame, bits):
    ref = _float_heads(small_net, small_model, frame)
    for style in STYLES:
        for method in METHODS:
            cfg = StudyConfig(bits, method, style)
            m = StudyModel(small_net, small_model, small_cal, cfg)
            outs = m.ints(frame)
            for i in small_net.conv_indices:
                lo, hi = intmath.int_range(m.layers[i].out_bits)
                assert outs[i].min() >= lo and outs[i].max() <= hi
                assert m.layers[i].out_bits == (cfg.head_bits if i in small_net.head_indices
                                                else bits)
            heads = m.heads(frame)
            assert [h.shape for h in heads] == [r.shape for r in ref]
            assert all(np.isfinite(h).all() for h in heads)


def test_more_bits_track_the_float_model(small_net, small_model, small_cal, frame):
    ref = _float_heads(small_net, small_model, frame)
    for style in STYLES:
        q = [_sqnr(ref, StudyModel(small_net, small_model, small_cal,
                                   StudyConfig(b, "max", style)).heads(frame)) for b in (4, 8, 16)]
        assert q[0] < q[1] < q[2], (style, q)
        assert q[2] > 25, (style, q)  # 16 bits: limited by the 13/128 vs 0.1 leaky slope


def test_weights_use_their_range_at_any_width(small_net, small_model, small_cal):
    for style in STYLES:
        for bits in (4, 12):
            m = StudyModel(small_net, small_model, small_cal, StudyConfig(bits, "max", style))
            w = m.layers[0].w.numpy()
            peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
            hi = 2 ** (bits - 1) - 1
            assert peak.max() <= hi
            # real scales use the whole range; power-of-two ones lose at most one bit
            assert peak.min() >= (hi if style != "pow2" else (hi + 1) // 2)


def test_intmul_approximates_the_float_style(small_net, small_model, small_cal):
    fl = StudyModel(small_net, small_model, small_cal, StudyConfig(8, "mse", "float"))
    im = StudyModel(small_net, small_model, small_cal, StudyConfig(8, "mse", "intmul"))
    for i, q in im.layers.items():
        ratio = q.mult.double() / torch.pow(2.0, q.shift.double())
        rel = ((ratio - fl.layers[i].ratio) / fl.layers[i].ratio).abs().max()
        assert rel <= 2.0 ** -15
        assert torch.equal(q.w, fl.layers[i].w) and torch.equal(q.b, fl.layers[i].b)


def test_routes_share_one_real_scale(small_net, small_model, small_cal):
    m = StudyModel(small_net, small_model, small_cal, StudyConfig(8, "percentile", "float"))
    # route 13 concatenates layer 12 (conv 11 upsampled) and conv 2
    assert tuple(small_net.layers[13].layers) == (12, 2)
    assert m.layers[11].s_out == m.layers[2].s_out


def test_accumulator_bound_is_checked(small_net, small_model, small_cal, monkeypatch):
    import sw.eval.study
    monkeypatch.setattr(sw.eval.study, "FLOAT_EXACT", 1 << 30)
    with pytest.raises(ValueError, match="not exact in float64"):
        StudyModel(small_net, small_model, small_cal, StudyConfig(16, "max", "float"))


def test_bad_configs():
    with pytest.raises(ValueError, match="bits must be"):
        StudyConfig(3)
    with pytest.raises(ValueError, match="bits must be"):
        StudyConfig(17)
    with pytest.raises(ValueError, match="style"):
        StudyConfig(8, "max", "log")
    with pytest.raises(ValueError, match="method"):
        StudyConfig(8, "kl")
    with pytest.raises(ValueError, match="std_m"):
        StudyConfig(8, "std", std_m=-1)
    assert StudyConfig(6, "std", "intmul").tag == "intmul-6-channel-std3-bc"
    assert StudyConfig(12).head_bits == 16 and StudyConfig(4).head_bits == 12


# -- arithmetic ----------------------------------------------------------------------------------

def test_find_shift_scale_properties():
    rng = np.random.default_rng(0)
    for mbits in (8, 16, 24):
        for r in np.exp(rng.uniform(math.log(1e-9), math.log(200.0), 300)):
            m, n = intmath.find_shift_scale(float(r), mbits)
            assert 0 <= m < 2 ** mbits and 0 <= n <= 56
            assert abs(Fraction(m, 2 ** n) - Fraction(float(r))) <= Fraction(1, 2 ** (n + 1))
            if n < 56:
                assert m >= 2 ** (mbits - 1)  # so the relative error is below 2**-mbits
                assert abs(m / 2 ** n - r) / r <= 2.0 ** -mbits
                assert math.floor(r * 2.0 ** (n + 1) + 0.5) >= 2 ** mbits  # n is the largest
    assert intmath.find_shift_scale(0.5, 16) == (32768, 16)
    assert intmath.find_shift_scale(1e-30, 16, max_shift=40) == (0, 40)
    for bad in (0.0, -1.0, math.nan, math.inf, 70000.0):
        with pytest.raises(ValueError):
            intmath.find_shift_scale(bad, 16)


def test_requant_styles_agree_on_dyadic_ratios():
    """With r = M / 2**n exact, the three requantizers give the same integers."""
    rng = np.random.default_rng(1)
    acc = rng.integers(-2 ** 30, 2 ** 30, 4000)
    acc[:6] = [-5, -4, -3, 3, 4, 5]
    for m, n in ((1, 7), (3, 9), (13, 12), (1, 0)):
        for leaky in (False, True):
            mul = intmath.requant_mul(acc, np.int64(m), n, leaky, 12)
            flt = intmath.requant_float(acc.astype(np.float64), m / 2 ** n, leaky, 12)
            assert np.array_equal(mul, flt)
            if m == 1:
                assert np.array_equal(mul, intmath.requant(acc, n, leaky, 12))
    # Python-int reference for one negative leaky value
    a, m, n = -1_234_567, 40_000, 30
    ref = math.floor(Fraction(a * m * 13, 2 ** (n + 7)) + Fraction(1, 2))
    assert intmath.requant_mul(np.array([a]), np.int64(m), n, True, 16)[0] == ref
    with pytest.raises(ValueError, match="int64"):
        intmath.requant_mul(np.array([2 ** 50]), np.int64(2 ** 15), 20, True, 16)


def test_quantize_pixels():
    p = np.arange(256, dtype=np.uint8)
    assert np.array_equal(intmath.quantize_pixels(p, 128, 8), intmath.quantize_input(p))
    q = intmath.quantize_pixels(p, 2 ** 11 - 1, 12)
    ref = [math.floor(Fraction(int(v) * (2 ** 11 - 1), 255) + Fraction(1, 2)) for v in p]
    assert q.tolist() == ref and q[255] == 2 ** 11 - 1
    with pytest.raises(TypeError):
        intmath.quantize_pixels(p.astype(np.int32), 127, 8)


# -- calibration methods -------------------------------------------------------------------------

def test_std_method_definition():
    x = np.concatenate([np.random.default_rng(0).normal(1.0, 2.0, 10_000), [40.0]])
    cal = Calibration({0: 40.0}, {0: x.astype(np.float32)}, 1)
    mean, std = float(x.astype(np.float32).astype(np.float64).mean()), float(
        x.astype(np.float32).astype(np.float64).std())
    assert act_clip(cal, 0, "std", std_m=3.0) == pytest.approx(abs(mean) + 3 * std)
    assert act_clip(cal, 0, "std", std_m=100.0) == 40.0  # never beyond max |x|
    neg = Calibration({0: 40.0}, {0: -x.astype(np.float32)}, 1)
    assert act_clip(neg, 0, "std", std_m=3.0) == pytest.approx(abs(mean) + 3 * std)
    assert act_clip(cal, 0, "max") == 40.0
    with pytest.raises(ValueError):
        act_clip(cal, 0, "mse")


def test_mse_clip_cuts_outliers_only_when_it_pays():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 50_000)
    c4, c8 = mse_clip(x, 60.0, 4), mse_clip(x, 60.0, 8)
    assert c4 < 10 and c4 < c8  # the two samples at +-60 cost less than a coarse step
    uniform = rng.uniform(-1, 1, 50_000)
    assert mse_clip(uniform, 1.0, 8) == 1.0
    assert mse_clip(x, 0.0, 8) == 0.0


# -- CLI -----------------------------------------------------------------------------------------

def test_list_parsers():
    assert parse_bits("8, 4,16") == [8, 4, 16]
    for bad, msg in (("3", "outside"), ("17", "outside"), ("8,x", "not an integer"),
                     ("", "empty"), ("8,8", "repeated")):
        with pytest.raises(ValueError, match=msg):
            parse_bits(bad)
    assert parse_list("mse,max", METHODS, "methods") == ["mse", "max"]
    with pytest.raises(ValueError, match="not one of"):
        parse_list("max,kl", METHODS, "methods")


@pytest.mark.parametrize("extra", [["--bits", "2,8"], ["--methods", "max,kl"],
                                   ["--styles", "shift"], ["--calib-images", "0"],
                                   ["--bootstrap", "-1"], ["--std-m", "0"],
                                   ["--bits", "8,20"], ["--limit", "0"]])
def test_cli_rejects_bad_arguments(tmp_path, extra, capsys):
    ann = tmp_path / "a.json"
    ann.write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["--images", str(tmp_path), "--ann", str(ann), *extra])
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_rejects_missing_files(tmp_path):
    for args in (["--images", str(tmp_path / "no"), "--ann", str(tmp_path)],
                 ["--images", str(tmp_path), "--ann", str(tmp_path / "none.json")]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2


def test_split_images(tmp_path):
    names = [f"{k:03d}.jpg" for k in range(5)]
    for n in [*names, "other.jpg"]:
        (tmp_path / n).write_bytes(b"")
    gt = {"images": [{"id": k, "file_name": n} for k, n in enumerate(reversed(names))]}
    calib, ev = split_images(tmp_path, gt, 2, None)
    assert [p.name for p in calib] == names[:2] and [p.name for p in ev] == names[2:]
    assert [p.name for p in split_images(tmp_path, gt, 2, 1)[1]] == names[2:3]
    with pytest.raises(SystemExit, match="need more than"):
        split_images(tmp_path, gt, 5, None)


def test_report_outputs():
    rows = [{"tag": f"{s}-{b}-{m}", "bits": b, "method": m, "style": s, "mAP50": 0.3 + b / 100,
             "mAP50_95": 0.1, "fidelity50": 0.8, "fidelity50_95": 0.5,
             "ci": {"mAP50": [0.2, 0.4], "mAP50_95": [0.05, 0.15], "diff50": [-0.01, 0.02],
                    "diff50_95": [0.0, 0.01]}}
            for b in (4, 8) for m in ("max", "mse") for s in ("float", "pow2")]
    rows.append({"tag": "intmul-8-max", "bits": 8, "method": "max", "style": "intmul",
                 "error": "too big"})
    report = {"settings": {"eval_images": 3, "calib_images": ["a", "b"], "weights": "channel",
                           "bias_correction": True, "std_m": 3.0, "percentile": 99.99,
                           "mult_bits": 16, "bootstrap": 10, "seed": 0},
              "float": {"mAP50": 0.5, "mAP50_95": 0.2, "ci": {"mAP50": [0.4, 0.6],
                                                              "mAP50_95": [0.1, 0.3]}},
              "rows": rows, "started": "now", "seconds": 60.0,
              "machine": {"node": "x", "cpus": 2, "torch_threads": 1}}
    md = markdown(report)
    assert "| 8 | mse | 0.3800 | 0.1000 | 0.5000 | - | - | - | 0.3800 |" in md
    assert "| 8 | max | 0.3800 | 0.1000 | 0.5000 | error | - | - |" in md
    assert "[-0.0100, 0.0200]" in md
    png = plot(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(report)


def test_quant_options_of_the_study():
    assert StudyConfig(8, "std", std_m=2.5).quant_options() == QuantOptions(
        "channel", "std", 99.99, "max", True, 2.5)
