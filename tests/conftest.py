"""Shared fixtures: a small synthetic network with every layer type, and the pretrained one."""

from __future__ import annotations

import numpy as np
import pytest

from hw.spec.config import HwConfig
from sw.quant.calib import calibrate
from sw.quant.model import FloatModel
from sw.quant.ptq import QuantOptions, quantize_network
from sw.runtime.darknet import ConvWeights, Network, parse_cfg

# Every layer type the project supports: 3x3 and 1x1 convs, a reduction longer than the
# golden model's exact float32 chunk (layer 5: 3*3*130 = 1170 terms), maxpool stride 2 and
# stride 1 (Darknet's border rule), route (single and concat), upsample, two yolo heads.
SMALL_CFG = """
[net]
width=32
height=32
channels=3

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
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
batch_normalize=1
filters=130
size=1
stride=1
pad=1
activation=leaky

[convolutional]
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 3,4,5
anchors = 4,5,  8,9,  10,12,  14,16,  20,20,  30,28
classes=2
num=6

[route]
layers = -3

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

[upsample]
stride=2

[route]
layers = -1, 2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 0,1,2
anchors = 4,5,  8,9,  10,12,  14,16,  20,20,  30,28
classes=2
num=6
"""


def random_params(net: Network, seed: int = 0) -> list[ConvWeights]:
    """He-initialised weights and plausible batch-norm statistics."""
    rng = np.random.default_rng(seed)
    out = []
    for i in net.conv_indices:
        conv = net.layers[i]
        cin = net.in_shape(i)[2]
        fan_in = cin * conv.size ** 2
        w = rng.normal(0, np.sqrt(2.0 / fan_in), (conv.filters, cin, conv.size, conv.size))
        cw = ConvWeights(weights=w.astype(np.float32),
                         biases=rng.normal(0, 0.1, conv.filters).astype(np.float32))
        if conv.batch_normalize:
            cw.scales = rng.uniform(0.5, 1.5, conv.filters).astype(np.float32)
            cw.mean = rng.normal(0, 0.2, conv.filters).astype(np.float32)
            cw.var = rng.uniform(0.5, 2.0, conv.filters).astype(np.float32)
        out.append(cw)
    return out


def random_images(n: int, size: int, seed: int = 1) -> list[np.ndarray]:
    """Smooth random uint8 images (blocky noise upsampled), HWC."""
    rng = np.random.default_rng(seed)
    imgs = []
    for _ in range(n):
        small = rng.integers(0, 256, (size // 4, size // 4, 3))
        img = small.repeat(4, 0).repeat(4, 1) + rng.integers(-20, 21, (size, size, 3))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return imgs


@pytest.fixture(scope="session")
def small_net() -> Network:
    return parse_cfg(SMALL_CFG, "small.cfg")


@pytest.fixture(scope="session")
def small_params(small_net: Network) -> list[ConvWeights]:
    """The small network's (random) Darknet weights."""
    return random_params(small_net)


@pytest.fixture(scope="session")
def small_model(small_net: Network, small_params: list[ConvWeights]) -> FloatModel:
    return FloatModel(small_net, small_params).eval()


def small_bundle(net: Network, model: FloatModel, opts: QuantOptions = QuantOptions(),
                 hw: HwConfig | None = None):
    cal = calibrate(model, random_images(4, net.width))
    return quantize_network(net, model, cal, hw or HwConfig(), opts)


@pytest.fixture(scope="session")
def pretrained():
    """(network, float model) of the fetched pretrained Tiny-YOLOv3 (fetched on first use)."""
    from sw.quant.pipeline import load_float
    net, model, _ = load_float()
    return net, model


@pytest.fixture(scope="session")
def pretrained_bundle():
    from sw.quant.pipeline import default_bundle
    from sw.runtime.bundle import Bundle
    return Bundle.load(default_bundle())
