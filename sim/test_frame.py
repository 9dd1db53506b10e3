"""A whole 416x416 Tiny-YOLOv3 frame (dog.jpg) through the simulated RTL of the device
with its memory (MemDeviceTop in the Verilator harness with its memory model): the network
preloaded through the harness's backdoor, the frame run by the host driver over the framed
protocol (input written, program run, heads read), every stored layer output compared with
the golden model bit for bit from the device memory dumped at the end.

Two boards' configs: the Arty A7-35T's (the default: 8x8, one multiplier per MAC) and the
A7-100T's (`boards/arty_a7_100.json`: 16x28 with `mac_pack = 2`, two int8 MACs per
DSP48E1-shaped multiplier, `hw.packed_mul`), so the packed array runs a whole frame
bit-exact too, with C = 28 dividing none of the layers' channel counts (the flat walk's
vectors cross input channels and taps)."""

from __future__ import annotations

import numpy as np
import pytest

from boards import BOARDS
from hw.spec import intmath
from hw.spec.config import DEFAULT, load_config
from sw.runtime.bundle import Bundle
from sw.runtime.detect import CALIB_DIR, shipped_bundle
from sw.runtime.device import Device
from sw.runtime.golden import GoldenModel
from sw.runtime.link import SimLink
from sw.runtime.postprocess import letterbox, load_image
from sw.runtime.program import compile_network
from sw.runtime.resident import ResidentNetwork
from tests.reference import check_layers


@pytest.mark.parametrize("board", ["arty_a7", "arty_a7_100"])
def test_full_frame_bit_exact(tmp_path, board: str) -> None:
    cfg = load_config(BOARDS[board].default_config_path())
    # what each case is for: the default config, and the packed array
    assert (cfg == DEFAULT) if board == "arty_a7" else (cfg.mac_pack == 2)
    bundle = Bundle.load(shipped_bundle(cfg), expect=cfg)
    lb, _ = letterbox(load_image(CALIB_DIR / "dog.jpg"), bundle.input_shape[0])
    x = intmath.quantize_input(lb)
    golden = GoldenModel(bundle).run(x, keep=True)
    image = compile_network(bundle, cfg)
    pre, dump = tmp_path / "network.bin", tmp_path / "memory.bin"
    pre.write_bytes(ResidentNetwork.preload_image_of(image, bundle, cfg))
    args = ["--load", f"0:{pre}", "--dump", f"0:{image.end}:{dump}"]
    with SimLink(cfg, top="memory", harness_args=args) as link:
        net = ResidentNetwork(Device(link, timeout=60.0), cfg, bundle)
        run = net.run(x)                            # preloaded: no upload
    compared = check_layers(bundle, image, np.fromfile(dump, np.uint8), golden)
    # 24 layers: 5 convs ran with their max pool fused, conv 18 wrote its upsample; the
    # yolo layers are their heads' tensors
    assert compared == sum(v is not None for v in image.layer_views) >= 18
    for i, head in run.heads.items():
        assert np.array_equal(head, golden[i]), f"head {i} as read over the link"
    f = run.frame
    assert f["link_bytes_per_frame"] <= 1_000_000, f
    assert f["passes"] == len(image.passes) and f["cycles"] > f["model_cycles"]
