"""A whole 416x416 Tiny-YOLOv3 frame (dog.jpg) through the simulated RTL of the device
with its memory (MemDeviceTop in the Verilator harness with its memory model): the network
preloaded through the harness's backdoor, the frame run by the host driver over the framed
protocol (input written, program run, heads read), every stored layer output compared with
the golden model bit for bit from the device memory dumped at the end, and the whole tensor
region byte for byte against the program reference's memory. The program runs in two spans
on two simulators side by side (`tests.split_frame`: the memory at each span's end equals
the reference's, so the spans compose into one run), the A7-100T's whole in one.

Three configs: the default (8x8, one multiplier per MAC; what `make demo` runs), and the
two Arty boards' (`boards/arty_a7_35.json`: 12x9, `boards/arty_a7_100.json`: 16x28, both
with `mac_pack = 2`, two int8 MACs per DSP48E1-shaped multiplier, `hw.packed_mul`), so the
packed arrays run a whole frame bit-exact too, with C = 9 and C = 28 dividing none of the
layers' channel counts (the flat walk's vectors cross input channels and taps)."""

from __future__ import annotations

import numpy as np
import pytest

from boards import BOARDS
from hw.spec import intmath
from hw.spec.config import DEFAULT, load_config
from sw.runtime.bundle import Bundle
from sw.runtime.detect import CALIB_DIR, shipped_bundle
from sw.runtime.golden import GoldenModel
from sw.runtime.postprocess import letterbox, load_image
from sw.runtime.program import compile_network
from tests.reference import check_layers
from tests.split_frame import run_split_frame


@pytest.mark.parametrize("board", ["default", "arty_a7", "arty_a7_100"])
def test_full_frame_bit_exact(tmp_path, board: str) -> None:
    cfg = DEFAULT if board == "default" else load_config(BOARDS[board].default_config_path())
    # what each case is for: the default config, and the boards' packed arrays
    assert cfg.mac_pack == (1 if board == "default" else 2)
    bundle = Bundle.load(shipped_bundle(cfg), expect=cfg)
    lb, _ = letterbox(load_image(CALIB_DIR / "dog.jpg"), bundle.input_shape[0])
    x = intmath.quantize_input(lb)
    golden = GoldenModel(bundle).run(x, keep=True)
    image = compile_network(bundle, cfg)
    # two simulators side by side (as bench/sim_frame.py runs it), the A7-100T's frame in
    # one (so one frame crosses the cut): the memory at each span's end checked byte for
    # byte
    spans = 1 if board == "arty_a7_100" else 2
    split = run_split_frame(cfg, bundle, image, x, tmp_path, spans=spans)
    compared = check_layers(bundle, image, split.memory, golden)
    # 24 layers: 5 convs ran with their max pool fused, conv 18 wrote its upsample; the
    # yolo layers are their heads' tensors
    assert compared == sum(v is not None for v in image.layer_views) >= 18
    run = split.run
    for i, head in run.heads.items():
        assert np.array_equal(head, golden[i]), f"head {i} as read over the link"
    assert sorted(run.heads) == image.heads
    f = run.frame
    assert f["link_bytes_per_frame"] <= 1_000_000, f
    assert f["passes"] == len(image.passes) and f["cycles"] > f["model_cycles"]
    assert f["input_bytes_sent"] == x.size and f["spans"] == spans
