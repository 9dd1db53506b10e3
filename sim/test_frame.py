"""A whole 416x416 Tiny-YOLOv3 frame (dog.jpg) through the simulated RTL, every layer
equal to the golden model bit for bit (DeviceTop + LayerEngine in the Verilator harness,
driven over the framed protocol by sw.runtime.device)."""

from __future__ import annotations

import numpy as np

from hw.spec import intmath
from hw.spec.config import DEFAULT
from sw.runtime.bundle import Bundle
from sw.runtime.detect import CALIB_DIR, shipped_bundle
from sw.runtime.device import Device
from sw.runtime.golden import GoldenModel
from sw.runtime.link import SimLink
from sw.runtime.postprocess import letterbox, load_image
from sw.runtime.scheduler import run_network


def test_full_frame_bit_exact() -> None:
    bundle = Bundle.load(shipped_bundle(DEFAULT), expect=DEFAULT)
    lb, _ = letterbox(load_image(CALIB_DIR / "dog.jpg"), bundle.input_shape[0])
    x = intmath.quantize_input(lb)
    golden = GoldenModel(bundle).run(x)
    with SimLink(DEFAULT) as link:
        run = run_network(Device(link, timeout=60.0), DEFAULT, bundle, x, fuse_pool=True)
    compared = 0
    for i, (got, want) in enumerate(zip(run.outputs, golden, strict=True)):
        if got is None:  # a conv whose max pool ran fused in the engine
            assert bundle.layers[i + 1]["kind"] == "maxpool" and run.outputs[i + 1] is not None
            continue
        assert got.shape == want.shape, f"layer {i}: shape {got.shape} != {want.shape}"
        diff = np.argwhere(got != want)
        assert diff.size == 0, (f"layer {i}: {len(diff)} values differ, first at "
                                f"{tuple(diff[0])}: expected {want[tuple(diff[0])]}, "
                                f"got {got[tuple(diff[0])]}")
        compared += 1
    assert compared >= len(bundle.layers) - 6
    convs = [s for s in run.stats]
    assert len(convs) == sum(layer["kind"] == "conv" for layer in bundle.layers)
    assert all(s.cycles > 0 and s.bytes_in > 0 for s in convs)
