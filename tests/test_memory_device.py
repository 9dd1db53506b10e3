"""The device with its memory in the Verilator harness (MemDeviceTop behind SimLink, the
harness's LiteDRAM-like memory model): a network uploaded once through the link and run
bit-exact (every stored layer read back from device memory), kept resident, replaced by
another bundle; protocol errors answered without a hang and without touching memory
outside a refused write."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest

from hw.spec import intmath, protocol
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.memory import Pass
from hw.spec.protocol import Err, Op, ProgramFlag
from sw.runtime.detect import head_filters, head_specs
from sw.runtime.device import Device, DeviceError
from sw.runtime.golden import GoldenModel
from sw.runtime.link import SimLink
from sw.runtime.postprocess import detect, letterbox
from sw.runtime.resident import ResidentNetwork
from tests.conftest import random_images, random_params, small_bundle


@pytest.fixture(scope="module")
def link():
    with SimLink(DEFAULT, top="memory") as lk:
        yield lk
    assert lk.cycles and lk.mem_stats["reads"] > 0


def test_network_uploaded_once_and_bit_exact(link, small_net, small_model,
                                              cfg: HwConfig = DEFAULT) -> None:
    """(`cfg`: the device's HwConfig, for the callers in tests/test_dram.py.)"""
    from sw.quant.model import FloatModel

    dev = Device(link, timeout=30.0)
    bundle = small_bundle(small_net, small_model, hw=cfg)
    net = ResidentNetwork(dev, cfg, bundle)
    sent = net.upload()
    assert sent == net.image.tensors_addr - net.image.program_addr + 64
    golden = GoldenModel(bundle)
    for seed in (1, 2):
        x = intmath.quantize_input(random_images(1, small_net.width, seed=seed)[0])
        run = net.run(x)
        want = golden.run(x, keep=True)
        for i, h in run.heads.items():
            assert np.array_equal(h, want[i]), f"head {i}"
        for i, view in enumerate(net.image.layer_views):     # every stored layer
            if view is None:
                continue
            raw = np.frombuffer(dev.mem_read(view.addr, view.nbytes), np.uint8)
            assert np.array_equal(replace(view, addr=0).read(raw), want[i]), f"layer {i}"
        f = run.frame
        assert f["passes"] == len(net.image.passes) and f["cycles"] >= f["engine_cycles"] > 0
        assert f["engine_cycles"] >= f["model_cycles"] > 0
        assert f["link_bytes_per_frame"] < 3 * (x.size + sum(
            net.image.layer_views[i].nbytes for i in net.image.heads))
        assert [e["layer"] for e in run.layers] == sorted(set(net.image.pass_layers))
    # the same network again: resident, nothing sent; another bundle replaces it
    again = ResidentNetwork(dev, cfg, bundle)
    assert again.resident() and again.upload() == 0
    other = small_bundle(small_net, FloatModel(small_net, random_params(small_net, 5)).eval(),
                         hw=cfg)
    net2 = ResidentNetwork(dev, cfg, other)
    assert not net2.resident() and net2.upload() > 0 and not again.resident()
    x = intmath.quantize_input(random_images(1, small_net.width, seed=3)[0])
    want = GoldenModel(other).run(x, keep=True)
    for i, h in net2.run(x).heads.items():
        assert np.array_equal(h, want[i])


def test_heads_filtered_on_the_device(link, small_net, small_model) -> None:
    """`ResidentNetwork.run(filters=)`: the device's MEM_MASK picks the head candidates
    over the threshold; those come back bit-exact, the others as key int16 min and zeros;
    the detections equal the unfiltered ones and the link carries fewer bytes."""
    dev = Device(link, timeout=30.0)
    bundle = small_bundle(small_net, small_model)
    net = ResidentNetwork(dev, DEFAULT, bundle)
    net.upload()
    x = intmath.quantize_input(random_images(1, small_net.width, seed=4)[0])
    full = net.run(x)
    specs = head_specs(bundle)
    per = [5 + s.num_classes for s in specs]
    objs = np.concatenate([full.heads[i].reshape(-1, n)[:, 4] * 2.0 ** -bundle.layers[i]["f_out"]
                           for i, n in zip(bundle.head_indices, per, strict=True)])
    _, box = letterbox(np.zeros((small_net.height, small_net.width, 3), np.uint8),
                       small_net.width)

    def dets(run, conf):  # type: ignore[no-untyped-def]
        return detect([run.heads[i] * 2.0 ** -bundle.layers[i]["f_out"]
                       for i in bundle.head_indices], specs, box, conf)
    # objectness percentiles as thresholds: about half the candidates kept, then a few
    for pct in (50, 97):
        conf = float(1 / (1 + np.exp(-np.percentile(objs, pct))))
        filters = head_filters(bundle, conf)
        got = net.run(x, filters=filters)
        kept = 0
        for i, n in zip(bundle.head_indices, per, strict=True):
            want, recs = full.heads[i].reshape(-1, n), got.heads[i].reshape(-1, n)
            keep = want[:, 4] > filters[i].threshold
            assert keep.sum() < len(keep), f"head {i}: all {len(keep)} kept"
            assert np.array_equal(recs[keep], want[keep]), f"head {i}: kept records differ"
            assert (recs[~keep, 4] == np.iinfo(np.int16).min).all()
            assert not np.delete(recs[~keep], 4, axis=1).any()
            kept += keep.sum()
        assert kept > 0, f"percentile {pct}: nothing kept"
        assert dets(got, conf) == dets(full, conf)
    # the few kept at the 97th percentile cost fewer link bytes than the whole heads (the
    # heads' own bytes: the frame's total also counts a timing-dependent number of polls)
    assert got.frame["head_link_bytes"] < full.frame["head_link_bytes"]
    assert got.frame["heads_filtered"] == sorted(bundle.head_indices)
    assert full.frame["heads_filtered"] == []


def test_memory_protocol_errors(link) -> None:
    dev = Device(link, timeout=10.0, retries=0)
    dev.mem_write(1000, bytes(range(64)))
    top = DEFAULT.mem_bytes

    def err(op: Op, payload: bytes) -> int:
        with pytest.raises(DeviceError) as e:
            dev.request(op, payload)
        return e.value.code

    assert err(Op.MEM_WRITE, struct.pack("<I", top - 3) + b"abcd") == Err.BAD_ADDRESS
    assert err(Op.MEM_WRITE, struct.pack("<I", 1000)) == Err.BAD_LENGTH
    assert err(Op.MEM_READ, struct.pack("<I", 1000)) == Err.BAD_LENGTH      # truncated
    assert err(Op.MEM_READ, struct.pack("<II", top - 8, 9)) == Err.BAD_ADDRESS
    assert err(Op.MEM_CRC, struct.pack("<II", 0, 0)) == Err.BAD_LENGTH
    assert err(Op.PROGRAM_RUN, struct.pack("<IHI", 0, 0, 0)) == Err.BAD_PROGRAM
    assert err(Op.PROGRAM_RUN, struct.pack("<IHI", top - 16, 1, 0)) == Err.BAD_ADDRESS
    assert err(Op.RUN, b"x") == Err.UNSUPPORTED
    # the DRAM controller's CSRs: this device has no DRAM
    assert err(Op.CSR_READ, struct.pack("<I", 0)) == Err.UNSUPPORTED
    assert err(Op.CSR_WRITE, struct.pack("<II", protocol.CSR_LEVELED_WORD, 1)) == Err.UNSUPPORTED
    assert dev.status().dram == 0
    # an oversize frame: LENGTH_TOO_LONG, then the device still answers
    link.write(protocol.SYNC + struct.pack("<BH", Op.MEM_WRITE, protocol.MAX_PAYLOAD + 1))
    frame = protocol.FrameDecoder()
    got = []
    while not got:
        got = frame.feed(link.read(5.0))
    assert got[0].opcode == protocol.Reply.ERROR and got[0].payload[0] == Err.LENGTH_TOO_LONG
    assert dev.mem_read(1000, 64) == bytes(range(64))         # the refused writes touched nothing
    assert dev.mem_read(top - 8, 8) == bytes(8)
    # a program whose pass the engine refuses: STATUS says which, memory untouched
    bad = Pass(width=500, height=4, cin=8, cout=8, k3=0, leaky=0, head=0, pool=0, in_pitch=8,
               out_pitch=8, upsample=0, param_addr=4096, param_len=104, in_addr=8192,
               out_addr=16384)
    dev.mem_write(2048, bad.encode())
    before = dev.mem_read(16384, 64)
    dev.program_run(2048, 1, 30000)
    st = dev.status()
    while st.program & ProgramFlag.RUNNING:
        st = dev.status()
    assert st.program_error == Err.BAD_PROGRAM and st.passes == 0 and not st.program & 2
    assert dev.mem_read(16384, 64) == before
    assert dev.identify(expect=DEFAULT).features & protocol.Feature.MEMORY


def test_input_rows_sent_only_when_changed(link, small_net, small_model) -> None:
    """After the first frame only the input rows that changed are written; the device's
    CRC-32 of the whole input catches memory that no longer holds the last image (here
    overwritten behind the network's back), and the image is then written whole."""
    dev = Device(link, timeout=30.0)
    bundle = small_bundle(small_net, small_model)
    net = ResidentNetwork(dev, DEFAULT, bundle)
    net.upload()
    golden = GoldenModel(bundle)
    x1 = intmath.quantize_input(random_images(1, small_net.width, seed=7)[0])
    x2 = x1.copy()
    x2[2:5] = intmath.quantize_input(random_images(1, small_net.width, seed=8)[0])[2:5]
    row = x1[0].nbytes
    addr = net.image.input.addr

    def check(x: np.ndarray, sent: int) -> None:
        run = net.run(x)
        assert run.frame["input_bytes_sent"] == sent
        assert dev.mem_read(addr, x.nbytes) == x.tobytes()
        want = golden.run(x)
        for i, h in run.heads.items():
            assert np.array_equal(h, want[i]), f"head {i}"

    check(x1, x1.nbytes)                            # the first frame: whole
    check(x2, 3 * row)                              # rows 2-4 changed
    check(x2, 0)                                    # nothing changed
    dev.mem_write(addr + 6 * row, bytes(row))       # the device's copy spoiled
    check(x2, x2.nbytes)                            # CRC mismatch: written whole
    net.upload(force=True)                          # an upload forgets the last input
    check(x1, x1.nbytes)
