"""The network compiled into a device program (sw/runtime/program.py, hw/spec/memory.py):
executed pass by pass on a memory image by the reference model, every stored layer output
equals the golden model's bit for bit."""

from __future__ import annotations

import pytest

from hw.spec import intmath
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import POOL_NONE, POOL_S1, POOL_S2
from hw.spec.memory import PASS_BYTES, PASS_FIELDS, Pass, ProgramError
from sw.runtime.program import HEADER_BYTES, compile_network
from tests.conftest import random_images, small_bundle
from tests.reference import check_program


def test_pass_descriptor_round_trip() -> None:
    assert PASS_BYTES == 48
    names = [n for n, fmt in PASS_FIELDS if not fmt.endswith("x")]
    p = Pass(*range(1, len(names) + 1))
    assert Pass.decode(p.encode()) == p
    with pytest.raises(ProgramError, match="does not fit"):
        Pass(*([70000] * len(names))).encode()
    with pytest.raises(ProgramError, match="48 bytes"):
        Pass.decode(b"\0" * 31)


def test_small_network_program_equals_golden(small_net, small_model) -> None:
    """Every layer kind: 3x3 and 1x1, fused and standalone max pools (a pooled conv that a
    route also reads), routes, a concatenation, heads."""
    bundle = small_bundle(small_net, small_model)
    image = compile_network(bundle, DEFAULT)
    assert image.program_addr == HEADER_BYTES and image.end <= DEFAULT.mem_bytes
    assert [p.param_addr for p in image.passes] == sorted(p.param_addr for p in image.passes)
    modes = {(bundle.layers[i]["kind"], p.pool) for i, p in zip(image.pass_layers,
                                                                image.passes, strict=True)}
    assert ("conv", POOL_S2) in modes and ("conv", POOL_NONE) in modes
    for seed in range(3):
        x = intmath.quantize_input(random_images(1, small_net.width, seed=seed)[0])
        assert check_program(bundle, image, x) >= len(bundle.layers) - 3


def test_small_groups_and_narrow_memory_word(small_net, small_model) -> None:
    """A 4x4 array with a small weight memory splits layers into many groups; a 32-bit
    memory word changes the alignment."""
    cfg = HwConfig(array_rows=4, array_cols=4, weight_mem_bytes=4800, mem_data_bits=32,
                   mem_bytes=1 << 20)
    bundle = small_bundle(small_net, small_model, hw=cfg)
    image = compile_network(bundle, cfg)
    per_layer = [image.pass_layers.count(i) for i in set(image.pass_layers)]
    assert max(per_layer) >= 4 and len(image.passes) > len(per_layer)
    assert all(a % 4 == 0 for a, _ in image.segments)
    x = intmath.quantize_input(random_images(1, small_net.width, seed=5)[0])
    check_program(bundle, image, x)


def test_too_small_memory_is_refused(small_net, small_model) -> None:
    cfg = HwConfig(mem_bytes=4096)
    with pytest.raises(ProgramError, match="bytes of device memory, the config has 4,096"):
        compile_network(small_bundle(small_net, small_model, hw=cfg), cfg)


def test_pretrained_network_program(pretrained_bundle) -> None:
    """Tiny-YOLOv3: the route 19+8 concatenation is written in place (conv 18 upsampled,
    conv 8 at channel offset 128, its max pool a standalone stride-2 pass), the 13x13
    stride-1 max pool runs fused, and the whole frame equals the golden model."""
    from sw.runtime.detect import CALIB_DIR
    from sw.runtime.postprocess import letterbox, load_image

    bundle = pretrained_bundle
    image = compile_network(bundle, DEFAULT)
    layers = [bundle.layers[i]["kind"] for i in image.pass_layers]
    concat = image.layer_views[20]
    pools = [p for p, kind in zip(image.passes, layers, strict=True) if kind == "maxpool"]
    # layer 9: identity convs on 64-channel slices of conv 8's output (in route 20)
    assert [(p.cin, p.cout, p.in_pitch) for p in pools] == [(64, 64, 384)] * 4
    assert [p.in_addr - concat.addr for p in pools] == [128, 192, 256, 320]
    ups = [p for p in image.passes if p.upsample]
    assert len(ups) == 1 and ups[0].out_pitch == 384
    assert image.layer_views[8].addr == concat.addr + 128 and image.layer_views[8].pitch == 384
    assert any(p.pool == POOL_S1 for p in image.passes)
    assert image.end < 32 << 20                    # fits the ULX3S's SDRAM too
    heads = [image.layer_views[i] for i in image.heads]
    assert [(v.height, v.width, v.channels, v.value_bytes) for v in heads] == [
        (13, 13, 255, 2), (26, 26, 255, 2)]
    lb, _ = letterbox(load_image(CALIB_DIR / "dog.jpg"), bundle.input_shape[0])
    assert check_program(bundle, image, intmath.quantize_input(lb)) >= 16
