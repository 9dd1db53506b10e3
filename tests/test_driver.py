"""sw/runtime/device.py over SimLink: the Verilator simulator of DeviceTop behind a pipe.

The simulator is built once (cached in sim/sim_build/) for the default HwConfig.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from hw.spec import protocol
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import PassError, group_params
from hw.spec.protocol import MAX_PAYLOAD, SYNC, Err, Frame, FrameDecoder, Op, Reply, encode_frame
from hw.top import identity
from sw.runtime.device import ConfigMismatchError, Device, DeviceError, DeviceModeError
from sw.runtime.link import Link, LinkError, LinkTimeout, SerialLink, SimLink
from sw.runtime.scheduler import run_network


@pytest.fixture(scope="module")
def link():
    with SimLink(DEFAULT) as lk:
        yield lk
    assert lk.cycles and lk.cycles > 0


@pytest.fixture
def dev(link):
    return Device(link, timeout=5.0, retries=1)


def exchange(link: Link, wire: bytes, n: int, timeout: float = 5.0) -> list[Frame]:
    """Write raw bytes, collect `n` reply frames (fails on a timeout)."""
    link.write(wire)
    dec = FrameDecoder()
    got: list[Frame] = []
    while len(got) < n:
        data = link.read(timeout)
        assert data, f"timeout: got {len(got)} of {n} replies"
        got += dec.feed(data)
    assert dec.errors == 0, dec.last_error
    assert len(got) == n and not link.read(0.05), "more replies than requests"
    return got


def error(code: Err, opcode: int) -> Frame:
    return Frame(Reply.ERROR, bytes([code, opcode]))


def test_identify(dev):
    ident = dev.identify(DEFAULT)
    assert ident == identity(DEFAULT)
    assert ident.config_id == DEFAULT.config_id and ident.max_payload == MAX_PAYLOAD
    assert ident.array_rows == DEFAULT.array_rows


def test_config_mismatch_refused(dev):
    other = HwConfig(array_rows=4, array_cols=4)
    msg = f"{DEFAULT.config_id_hex} differs from the expected {other.config_id_hex}"
    with pytest.raises(ConfigMismatchError, match=msg):
        dev.identify(other)
    with pytest.raises(ConfigMismatchError):
        dev.identify(DEFAULT.config_id ^ 1)


def test_status_counts_frames_and_cycles(dev, link):
    before = dev.status()
    exchange(link, encode_frame(0x77), 1)
    after = dev.status()
    assert after.frames_ok == before.frames_ok + 1      # the first STATUS
    assert after.frames_bad == before.frames_bad + 1
    assert after.last_error == Err.UNKNOWN_OPCODE
    assert after.cycles > before.cycles


@pytest.mark.parametrize("n", [0, 1, 7, MAX_PAYLOAD])
def test_echo(dev, n):
    payload = bytes(random.Random(n).randrange(256) for _ in range(n))
    assert dev.echo(payload) == payload


def test_error_replies_then_resync(link):
    good = encode_frame(Op.IDENTIFY)
    ident = Frame(Reply.OK, identity(DEFAULT).encode())
    bad_crc = bytearray(encode_frame(Op.ECHO, b"abc"))
    bad_crc[-1] ^= 0xFF
    too_long = SYNC + struct.pack("<BH", Op.ECHO, MAX_PAYLOAD + 1) + bytes(8)
    cases = [
        (bytes(bad_crc), error(Err.BAD_CRC, Op.ECHO)),
        (encode_frame(0x55, b"zz"), error(Err.UNKNOWN_OPCODE, 0x55)),
        (encode_frame(Op.STATUS, b"x"), error(Err.BAD_LENGTH, Op.STATUS)),
        (encode_frame(Op.RUN, b"x"), error(Err.NOT_ARMED, Op.RUN)),
        (encode_frame(Op.LAYER_CONFIG, b"x"), error(Err.BAD_LENGTH, Op.LAYER_CONFIG)),
        (too_long, error(Err.LENGTH_TOO_LONG, Op.ECHO)),
        # the DRAM controller's CSRs: not on the streaming device
        (encode_frame(Op.CSR_READ, bytes(4)), error(Err.UNSUPPORTED, Op.CSR_READ)),
        (encode_frame(Op.CSR_WRITE, bytes(8)), error(Err.UNSUPPORTED, Op.CSR_WRITE)),
        (b"\x00\x13\xa5\xa5\x99" + b"\xff" * 9, None),      # garbage: skipped, no reply
    ]
    for wire, reply in cases:
        want = [reply, ident] if reply else [ident]
        assert exchange(link, wire + good, len(want)) == want, wire.hex()


def test_truncated_frame_times_out_then_resyncs(link):
    frame = encode_frame(Op.ECHO, b"hello")
    ident = Frame(Reply.OK, identity(DEFAULT).encode())
    # the truncated frame stalls; the device gives up after SIM_TIMEOUT_CYCLES of silence
    assert exchange(link, frame[:-3], 1) == [error(Err.TIMEOUT, Op.ECHO)]
    assert exchange(link, encode_frame(Op.IDENTIFY), 1) == [ident]


def test_random_corruption_no_hang_no_wrong_result(link):
    """Corrupted requests get error replies or none, never a wrong OK, and the device
    always answers a following IDENTIFY (with the driver's retries: a corrupted length
    may swallow the first one)."""
    rng = random.Random(1)
    dev = Device(link, timeout=2.0, retries=2)
    errors = 0
    for trial in range(40):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24)))
        wire = bytearray(encode_frame(Op.ECHO, payload))
        for _ in range(rng.randrange(1, 3)):
            wire[rng.randrange(len(wire))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.3:
            del wire[rng.randrange(len(wire)):]        # truncated as well
        link.write(bytes(wire))
        dec = FrameDecoder()
        got: list[Frame] = []
        while data := link.read(0.15):                  # replies to the corrupted bytes
            got += dec.feed(data)
        assert dec.errors == 0, dec.last_error
        for f in got:                                  # a flipped sync bit can leave it intact
            assert f.opcode == Reply.ERROR or f == Frame(Reply.OK, payload), (trial, f)
        errors += sum(f.opcode == Reply.ERROR for f in got)
        assert dev.identify(DEFAULT) == identity(DEFAULT), trial
    assert errors >= 15


def test_device_errors_are_clear(dev):
    with pytest.raises(DeviceError, match="NOT_ARMED.*LOAD_PARAMS"):
        dev.request(Op.LOAD_PARAMS, b"\x00")


class _DeafLink(Link):
    name = "deaf link"

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def read(self, timeout: float) -> bytes:
        return b""

    def close(self) -> None:
        """Nothing to release: the fake link holds no process or port."""


class _ScriptLink(_DeafLink):
    """Answers each write with the next scripted bytes."""

    def __init__(self, replies: list[bytes]) -> None:
        super().__init__()
        self.replies = replies
        self.queue = b""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.queue += self.replies.pop(0)

    def read(self, timeout: float) -> bytes:
        out, self.queue = self.queue, b""
        return out


def test_retries_are_bounded():
    lk = _DeafLink()
    with pytest.raises(LinkTimeout, match="IDENTIFY on deaf link: no reply.*3 attempts"):
        Device(lk, timeout=0.01, retries=2).identify()
    assert lk.writes == 3


def test_retry_after_transmission_error():
    ok = encode_frame(Reply.OK, protocol.Status(5, 1, 1, 1).encode())
    lk = _ScriptLink([encode_frame(Reply.ERROR, bytes([Err.BAD_CRC, Op.STATUS])), ok])
    dev = Device(lk, timeout=0.5, retries=1)
    assert dev.status().cycles == 5 and dev.retried == 1 and lk.writes == 2
    lk = _ScriptLink([encode_frame(0x55, b"?")])
    with pytest.raises(LinkError, match="unexpected reply code 0x55"):
        Device(lk, timeout=0.5, retries=0).status()


@pytest.mark.parametrize("flags, message", [
    (protocol.DramFlag.INIT_ERROR, "the DRAM controller's init failed"),
    (0, "the DRAM controller's init has not finished"),
])
def test_driver_refuses_a_device_whose_dram_is_not_up(flags, message):
    """A device on a DRAM (Feature.DRAM) whose init failed or is still running is refused
    by name before any memory command; one whose init is done is accepted."""
    ident = protocol.Identity(DEFAULT.config_id, protocol.PROTOCOL_VERSION, 2, MAX_PAYLOAD,
                              protocol.Feature.MEMORY | protocol.Feature.DRAM, 8, 8)
    status = protocol.Status(5, 1, 0, 0, dram=flags)
    lk = _ScriptLink([encode_frame(Reply.OK, status.encode())])
    with pytest.raises(DeviceModeError, match=message):
        Device(lk, timeout=0.5, retries=0).check_memory(ident)
    ok = protocol.Status(5, 1, 0, 0, dram=protocol.DramFlag.INIT_DONE)
    Device(_ScriptLink([encode_frame(Reply.OK, ok.encode())]), timeout=0.5).check_memory(ident)
    streaming = protocol.Identity(DEFAULT.config_id, protocol.PROTOCOL_VERSION, 2, MAX_PAYLOAD,
                                  protocol.Feature.ENGINE, 8, 8)
    with pytest.raises(DeviceModeError, match="streaming device"):
        Device(_ScriptLink([]), timeout=0.5).check_memory(streaming)


def test_serial_link_errors_clearly():
    try:
        import serial  # noqa: F401
    except ImportError:
        with pytest.raises(LinkError, match="pip install pyserial"):
            SerialLink("/dev/does-not-exist", 115200)
    else:
        with pytest.raises(LinkError, match="cannot open serial port /dev/does-not-exist"):
            SerialLink("/dev/does-not-exist", 115200)


# -- the layer engine behind the link ---------------------------------------------------
@pytest.mark.parametrize("h,w,cin,cout,k,leaky,head,pool", [
    (5, 6, 10, 12, 3, True, False, 0),      # 3x3, cin and cout past one array tile
    (4, 4, 16, 9, 1, False, True, 0),       # 1x1 detection head: int16 on the link
    (6, 6, 3, 8, 3, True, False, 1),        # fused 2x2 stride-2 max pool
    (5, 5, 8, 4, 3, False, False, 2),       # stride-1 max pool (Darknet border rule)
    (40, 40, 1, 1, 3, True, False, 0),      # 1600 outputs: DATA frames plus the final OK
])
def test_engine_pass_matches_golden(dev, h, w, cin, cout, k, leaky, head, pool):
    from hw.spec.engine import engine_cycles
    from tests.reference import ref_engine

    rng = np.random.default_rng(h * 1000 + cin)
    x = rng.integers(-128, 128, (h, w, cin)).astype(np.int8)
    wt = rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
    b = rng.integers(-3000, 3000, cout).astype(np.int32)
    sh = rng.integers(4, 10, cout)
    y, cycles = dev.run_group(x, wt, b, sh, leaky=leaky, head=head, pool=pool, cfg=DEFAULT)
    want = ref_engine(x, wt, b, sh, leaky=leaky, head=head, pool=pool, cfg=DEFAULT)
    assert y.shape == want.shape and np.array_equal(y.astype(np.int64), want)
    # the link feeds the input with gaps (frames, 2 cycles per byte): stalls only add
    assert cycles >= 0.99 * engine_cycles(DEFAULT, h, w, cin, cout, k, pool)
    assert dev.status().engine & protocol.EngineFlag.DONE


def test_engine_order_errors(dev):
    from tests.reference import ref_engine

    x = np.ones((2, 2, 1), np.int8)
    wt = np.ones((1, 1, 1, 1), np.int8)
    dev.run_group(x, wt, np.zeros(1, np.int32), np.zeros(1), leaky=False, head=False, cfg=DEFAULT)
    with pytest.raises(DeviceError, match="NOT_ARMED.*RUN"):
        dev.request(Op.RUN, b"\x00", idempotent=False)
    dev.request(Op.LAYER_CONFIG, struct.pack(protocol.LAYER_FORMAT, 2, 2, 1, 1, 0, 0, 0, 0))
    with pytest.raises(DeviceError, match="BUSY.*LAYER_CONFIG"):
        dev.request(Op.LAYER_CONFIG, struct.pack(protocol.LAYER_FORMAT, 2, 2, 1, 1, 0, 0, 0, 0))
    with pytest.raises(DeviceError, match="NOT_ARMED.*RUN"):
        dev.request(Op.RUN, b"\x00", idempotent=False)     # parameters not complete yet
    # finish the pass so the device is clean for the next test
    dev.request(Op.LOAD_PARAMS, group_params(DEFAULT, wt, np.zeros(1), np.zeros(1)),
                idempotent=False)
    out = dev.request(Op.RUN, bytes([2, 3, 4, 5]), idempotent=False)
    while len(out) < 4:
        out += dev.request(Op.RUN, b"", idempotent=False)
    want = ref_engine(np.array([2, 3, 4, 5], np.int8).reshape(2, 2, 1), wt, np.zeros(1),
                      np.zeros(1), leaky=False, head=False, pool=0, cfg=DEFAULT)
    assert list(np.frombuffer(out, np.int8)) == list(want.reshape(-1))


@pytest.mark.parametrize("shape", [
    (0, 2, 1, 1, 0, 0, 0, 0), (2, 0, 1, 1, 0, 0, 0, 0), (2, 2, 0, 1, 0, 0, 0, 0),
    (2, 2, 1, 0, 0, 0, 0, 0), (DEFAULT.max_width + 1, 2, 1, 1, 0, 0, 0, 0),
    (2, 2, DEFAULT.max_in_channels + 1, 1, 0, 0, 0, 0), (2, 2, 1, 1, 0, 0, 0, 3),
    (2, 2, 1, 1, 0, 0, 1, 1),                                        # pooled head
    (DEFAULT.max_width, 2, DEFAULT.line_buffer_depth // DEFAULT.max_width + 1, 1, 1, 0, 0, 0),
])
def test_layer_config_outside_limits_is_refused(dev, shape):
    from tests.reference import ref_engine

    with pytest.raises(DeviceError, match="BAD_LAYER.*LAYER_CONFIG"):
        dev.request(Op.LAYER_CONFIG, struct.pack(protocol.LAYER_FORMAT, *shape))
    assert not dev.status().engine & protocol.EngineFlag.BUSY
    # the refused registers stay in place while idle; the next legal pass is exact
    x = np.arange(12, dtype=np.int8).reshape(2, 3, 2)
    wt = np.arange(-9, 9, dtype=np.int8).reshape(1, 3, 3, 2)
    got, _ = dev.run_group(x, wt, np.array([5], np.int32), np.array([1]), leaky=True, head=False,
                        cfg=DEFAULT)
    want = ref_engine(x, wt, np.array([5]), np.array([1]), leaky=True, head=False, pool=0,
                      cfg=DEFAULT)
    assert np.array_equal(np.asarray(got).reshape(want.shape), want)


def test_run_network_matches_golden(link, small_net, small_model):
    from hw.spec import intmath
    from sw.runtime.golden import GoldenModel

    from .conftest import random_images, small_bundle

    bundle = small_bundle(small_net, small_model)
    xq = intmath.quantize_input(random_images(1, small_net.width, seed=4)[0])
    dev = Device(link, timeout=10.0)
    run = run_network(dev, DEFAULT, bundle, xq)
    want = GoldenModel(bundle).run(xq)
    assert len(run.outputs) == len(want)
    for i, (a, e) in enumerate(zip(run.outputs, want, strict=True)):
        assert a.shape == e.shape and np.array_equal(a.astype(np.int64), e.astype(np.int64)), i
    convs = [i for i, layer in enumerate(bundle.layers) if layer["kind"] == "conv"]
    assert [s.layer for s in run.stats] == convs
    for s in run.stats:
        assert s.cycles >= 0.99 * s.model_cycles > 0 and 0 < s.utilization <= 1
        assert s.bytes_out > 0 and s.bytes_in > 0
    # with fused max pools: the same outputs, the fused convs' own outputs left out
    fused = run_network(dev, DEFAULT, bundle, xq, fuse_pool=True)
    pools = {s.layer: s.pool for s in fused.stats if s.pool}
    assert 1 in pools.values()                  # (its stride-1 pool follows a route source)
    for i, (a, e) in enumerate(zip(fused.outputs, want, strict=True)):
        if i in pools:
            assert a is None
        else:
            assert np.array_equal(a.astype(np.int64), e.astype(np.int64)), i
    assert sum(s.bytes_in for s in fused.stats) < sum(s.bytes_in for s in run.stats)


def test_run_network_refuses_other_config(link, small_net, small_model):
    """The device must identify as the config the host expects, and the bundle must be
    quantized for that config's number formats."""
    from sw.runtime.bundle import BundleError

    from .conftest import small_bundle

    bundle = small_bundle(small_net, small_model)
    x = np.zeros(bundle.input_shape, np.int8)
    with pytest.raises(ConfigMismatchError):
        run_network(Device(link), HwConfig(array_rows=4, array_cols=4), bundle, x)
    other = small_bundle(small_net, small_model, hw=HwConfig(head_bits=12))
    with pytest.raises(BundleError, match="made for numerics"):
        run_network(Device(link), DEFAULT, other, x)


def test_sim_backend_equals_golden(small_net, small_model):
    """The pipeline's "sim" backend gives the golden backend's head outputs exactly."""
    from sw.quant.pipeline import make_backend

    from .conftest import random_images, small_bundle

    bundle = small_bundle(small_net, small_model)
    img = random_images(1, small_net.width, seed=9)[0]
    sim, gold = make_backend("sim", bundle), make_backend("golden", bundle)
    for a, e in zip(sim.heads(img), gold.heads(img), strict=True):
        assert np.array_equal(a, e)


def test_run_group_rejects_what_the_engine_cannot_run(dev):
    x = np.zeros((4, 4, 256), np.int8)
    sent = dev.bytes_out
    with pytest.raises(PassError, match="exceeds the engine's group size 16"):
        dev.run_group(x, np.zeros((17, 3, 3, 256), np.int8), np.zeros(17), np.zeros(17),
                      leaky=True, head=False, cfg=DEFAULT)
    with pytest.raises(PassError, match="pools only int8"):
        dev.run_group(x, np.zeros((1, 1, 1, 256), np.int8), np.zeros(1), np.zeros(1),
                      leaky=False, head=True, pool=1, cfg=DEFAULT)
    assert dev.bytes_out == sent                  # refused before anything was sent


def test_host_cli_sim_backend_errors(pretrained_bundle):
    import os
    import subprocess
    import sys
    from pathlib import Path

    host = Path(__file__).resolve().parent.parent / "sw" / "host.py"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(host), "--image", "dog.jpg", *args],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": ""})

    r = run("--backend", "golden", "--port", "/dev/does-not-exist")
    assert r.returncode == 2 and "--port needs --backend sim" in r.stderr
    r = run("--port", "/dev/does-not-exist")  # the default backend is sim
    assert r.returncode == 2
    assert "pip install pyserial" in r.stderr or "cannot open serial port" in r.stderr


def test_host_cli_sim_backend_writes_layer_report(tmp_path, small_net, small_model):
    """`sw/host.py --backend sim --out DIR` on a small bundle: detections, annotated image
    and the per-layer report (cycles, utilization, link bytes)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import small_bundle

    root = Path(__file__).resolve().parent.parent
    bundle = tmp_path / "small.npz"
    small_bundle(small_net, small_model).save(bundle)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(root / "sw" / "host.py"), "--image",
                        str(root / "assets" / "dog.jpg"), "--bundle", str(bundle), "--out",
                        str(out), "--conf", "0.5"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert "(sim," in r.stdout and (out / "dog.png").exists()
    json.loads((out / "detections.json").read_text())
    report = json.loads((out / "layer_report.json").read_text())
    frame = report["frame"]
    for key in ("link_bytes_per_frame", "upload_bytes", "dram_read_bytes", "dram_write_bytes",
                "cycles", "memory_stall_cycles", "clock_hz"):
        assert frame[key] >= 0, key
    assert frame["cycles"] >= frame["engine_cycles"] >= frame["model_cycles"] > 0
    assert frame["upload_bytes"] > frame["link_bytes_per_frame"] > 3 * 32 * 32
    assert [e["file_name"] for e in report["images"]] == ["dog.jpg"]
    layers = report["layers"]
    convs = [i for i in small_net.conv_indices]
    assert [s["layer"] for s in layers if s["layer"] in convs] == convs
    for s in layers:
        assert s["cycles"] >= s["engine_cycles"] >= s["model_cycles"] > 0
        if s["layer"] in convs:
            assert 0 < s["utilization"] <= s["model_utilization"] <= 1
        else:                             # a max pool pass multiplies nothing
            assert s["utilization"] == s["model_utilization"] == 0
        assert s["dram_read_bytes"] > 0 and s["dram_write_bytes"] > 0


class _MaskLink(_DeafLink):
    """Answers MEM_MASK requests from a record array, as the device does; keeps them."""

    max_reply = 16                       # as a UDP link's: a reply is one datagram

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data, self.queue, self.requests = data, b"", []

    def write(self, data: bytes) -> None:
        super().write(data)
        frame = protocol.FrameDecoder().feed(data)[0]
        args = struct.unpack(protocol.MEM_MASK_FORMAT, frame.payload)
        self.requests.append(args)
        addr, n, size, key, thr = args
        self.queue += encode_frame(Reply.OK, protocol.record_mask(
            self.data[addr:addr + n * size], size, key, thr))

    def read(self, timeout: float) -> bytes:
        out, self.queue = self.queue, b""
        return out


def test_mem_mask_in_requests_a_reply_can_hold():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 300 * 6, dtype=np.uint8).tobytes()
    lk = _MaskLink(data)
    got = Device(lk, timeout=0.5).mem_mask(0, 300, 6, 2, 50)
    keys = np.frombuffer(data, np.uint8).reshape(300, 6)[:, 2:4].copy().view("<i2")[:, 0]
    assert np.array_equal(got, keys > 50) and 0 < got.sum() < 300
    assert [r[:2] for r in lk.requests] == [(0, 128), (768, 128), (1536, 44)]
    short = _ScriptLink([encode_frame(Reply.OK, b"\x01")])
    with pytest.raises(LinkError, match="MEM_MASK on .*: 1 bytes, expected 2"):
        Device(short, timeout=0.5).mem_mask(0, 9, 4, 0, 0)
