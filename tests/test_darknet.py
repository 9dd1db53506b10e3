"""Darknet cfg parser, weights reader/writer and BN fusing."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from sw.runtime.darknet import (
    BN_EPS,
    Conv,
    DarknetError,
    MaxPool,
    Route,
    YoloHead,
    fuse_bn,
    load_cfg,
    parse_cfg,
    read_weights,
    write_weights,
)
from sw.runtime.weights import default_cfg
from tests.conftest import SMALL_CFG, random_params


def test_tiny_yolov3_cfg_shapes_and_size():
    net = load_cfg(default_cfg())
    assert (net.width, net.height, net.channels) == (416, 416, 3)
    assert len(net.layers) == 24
    assert net.shapes[0] == (416, 416, 16) and net.shapes[11] == (13, 13, 512)
    assert net.shapes[15] == (13, 13, 255) and net.shapes[22] == (26, 26, 255)
    assert net.shapes[20] == (26, 26, 384)
    assert net.layers[20] == Route((19, 8))
    assert net.layers[11] == MaxPool(size=2, stride=1, padding=1)
    assert net.head_indices == [15, 22]
    # the cfg as released with the weights: mask 1,2,3 on the second head
    assert net.layers[23].anchors == ((23.0, 27.0), (37.0, 58.0), (81.0, 82.0))
    assert net.layers[16].anchors == ((81.0, 82.0), (135.0, 169.0), (344.0, 319.0))
    # 2.78 GMAC and 8.85 M parameters per frame (the brief's figures)
    assert round(net.macs() / 1e9, 2) == 2.78
    assert round(net.param_count() / 1e6, 2) == 8.85


TINY_YOLOV2_REGION = """
[net]
width=64
height=64
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=35
size=1
stride=1
pad=1
activation=linear
[region]
anchors = 1.08,1.19,  3.42,4.41,  6.63,11.38,  9.42,5.11,  16.62,10.52
classes=2
coords=4
num=5
softmax=1
"""


def test_region_layer_parses():
    net = parse_cfg(TINY_YOLOV2_REGION)
    head = net.layers[-1]
    assert isinstance(head, YoloHead) and head.region and len(head.anchors) == 5
    assert net.shapes[-1] == (32, 32, 35)


def _cfg_with(replace: str, by: str) -> str:
    assert replace in SMALL_CFG
    return SMALL_CFG.replace(replace, by, 1)


@pytest.mark.parametrize("text, line, needle", [
    (_cfg_with("[maxpool]", "[shortcut]"), 15, "unsupported layer type [shortcut]"),
    (_cfg_with("filters=8", "filters=eight"), 9, "'filters' must be an integer"),
    (_cfg_with("activation=leaky", "activation=mish"), 13, "activation 'mish'"),
    (_cfg_with("size=3", "size 3"), 10, "expected 'key=value'"),
    (_cfg_with("layers = -3", "layers = -30"), 72, "points outside layers"),
    (_cfg_with("layers = -1, 2", "layers = -1, 0"), 85, "different sizes"),
    (_cfg_with("filters=21", "filters=20"), 65, "expects 3 x (5 + 2) = 21"),
    (_cfg_with("mask = 3,4,5", "mask = 3,4,9"), 66, "outside 0..5"),
    (_cfg_with("[convolutional", "[convolutional"), None, None),
])
def test_cfg_errors_name_file_and_line(text, line, needle):
    if needle is None:  # sanity: the untouched cfg parses
        parse_cfg(text, "x.cfg")
        return
    with pytest.raises(DarknetError) as e:
        parse_cfg(text, "x.cfg")
    msg = str(e.value)
    assert needle in msg
    assert msg.startswith(f"x.cfg:{line}:"), msg


@pytest.mark.parametrize("text, needle", [
    ("", "must start with a [net]"),
    ("width=3\n[net]", "option before the first [section]"),
    ("[net]\nwidth=32\nheight=32\n", "no layers"),
    ("[net]\nwidth=32\n[maxpool]\n", "missing required option 'height'"),
    ("[net\nwidth=1", "malformed section header"),
])
def test_cfg_structure_errors(text, needle):
    with pytest.raises(DarknetError, match=needle.replace("[", r"\[")):
        parse_cfg(text, "y.cfg")


def test_unreadable_cfg(tmp_path):
    with pytest.raises(DarknetError, match="cannot read cfg"):
        load_cfg(tmp_path / "missing.cfg")
    binary = tmp_path / "bin.cfg"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DarknetError, match="not a text cfg"):
        load_cfg(binary)


@pytest.mark.parametrize("version, header", [((0, 1, 0), 16), ((0, 2, 0), 20), ((1, 0, 0), 20),
                                             ((0, 2, 5), 20)])
def test_weights_round_trip_all_header_versions(tmp_path, small_net, version, header):
    params = random_params(small_net)
    path = tmp_path / "w.weights"
    write_weights(path, small_net, params, version=version, seen=12345)
    n_floats = sum(p.weights.size + p.biases.size + (3 * p.biases.size if p.scales is not None
                                                     else 0) for p in params)
    assert path.stat().st_size == header + 4 * n_floats
    back = read_weights(path, small_net)
    for a, b in zip(params, back, strict=True):
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(a.biases, b.biases)
        if a.scales is not None:
            np.testing.assert_array_equal(a.var, b.var)
        else:
            assert b.scales is None


def test_weights_size_mismatch_errors(tmp_path, small_net):
    path = tmp_path / "w.weights"
    write_weights(path, small_net, random_params(small_net))
    data = path.read_bytes()
    (tmp_path / "short.weights").write_bytes(data[:-8])
    with pytest.raises(DarknetError, match=r"short.weights: truncated at byte \d+: layer 15"):
        read_weights(tmp_path / "short.weights", small_net)
    (tmp_path / "long.weights").write_bytes(data + b"\0" * 8)
    with pytest.raises(DarknetError, match=f"8 bytes left after the last layer .byte offset "
                                           f"{len(data)}"):
        read_weights(tmp_path / "long.weights", small_net)
    (tmp_path / "tiny.weights").write_bytes(data[:10])
    with pytest.raises(DarknetError, match="too short for a weights header"):
        read_weights(tmp_path / "tiny.weights", small_net)
    with pytest.raises(DarknetError, match="cannot read weights"):
        read_weights(tmp_path / "none.weights", small_net)


def test_weights_nan_rejected(tmp_path, small_net):
    params = random_params(small_net)
    params[2].weights[0, 0, 0, 0] = np.nan
    write_weights(tmp_path / "nan.weights", small_net, params)
    with pytest.raises(DarknetError, match="layer 4 weights contain NaN"):
        read_weights(tmp_path / "nan.weights", small_net)


def test_header_layout_is_darknets(tmp_path, small_net):
    write_weights(tmp_path / "w", small_net, random_params(small_net), (0, 2, 0), seen=7)
    assert struct.unpack_from("<3iQ", (tmp_path / "w").read_bytes()) == (0, 2, 0, 7)


def test_fuse_bn_matches_darknet_batchnorm(small_net):
    cw = random_params(small_net)[0]
    conv: Conv = small_net.layers[0]
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    w = torch.from_numpy(cw.weights.astype(np.float64))
    y = torch.nn.functional.conv2d(x, w, padding=conv.pad)
    # Darknet: (y - mean) / (sqrt(var) + eps) * scale + bias
    shape = (1, -1, 1, 1)
    t = lambda a: torch.from_numpy(a.astype(np.float64)).reshape(shape)  # noqa: E731
    want = (y - t(cw.mean)) / (torch.sqrt(t(cw.var)) + BN_EPS) * t(cw.scales) + t(cw.biases)
    fw, fb = fuse_bn(cw)
    got = torch.nn.functional.conv2d(x, torch.from_numpy(fw), torch.from_numpy(fb),
                                     padding=conv.pad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
