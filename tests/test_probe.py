"""The first IDENTIFY (sw/runtime/probe.py): within 5 s, and an error that says what is
likely wrong. Boards are stood in for by pseudo-terminals: one that never answers, one
that answers noise (a wrong baud rate), one that answers as another build, one of an older
protocol version, one on Ethernet too (the host names its address)."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hw.spec.config import DEFAULT, HwConfig
from hw.spec.protocol import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Err,
    Feature,
    FrameDecoder,
    Identity,
    Op,
    Reply,
    encode_frame,
)
from sw.runtime import probe
from sw.runtime.device import ConfigMismatchError
from sw.runtime.link import SimLink

ROOT = Path(__file__).resolve().parent.parent
ULX3S = HwConfig.load(ROOT / "boards" / "ulx3s_85f.json")


@contextlib.contextmanager
def fake_port(answer: Callable[[bytes], bytes]) -> Iterator[str]:
    """A pseudo-terminal whose far end answers every chunk the host writes with
    `answer(chunk)`; yields the port's path."""
    master, slave = os.openpty()
    stop = threading.Event()

    def serve() -> None:
        os.set_blocking(master, False)
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            except OSError:
                return
            if reply := answer(data):
                os.write(master, reply)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield os.ttyname(slave)
    finally:
        stop.set()
        t.join()
        os.close(master)
        os.close(slave)


def as_device(cfg: HwConfig) -> Callable[[bytes], bytes]:
    """Answers IDENTIFY like a device built for `cfg`."""
    dec = FrameDecoder()
    ident = Identity(cfg.config_id, PROTOCOL_VERSION, 1, MAX_PAYLOAD, Feature.ENGINE,
                     cfg.array_rows, cfg.array_cols)
    return lambda data: b"".join(encode_frame(Reply.OK, ident.encode())
                                 for f in dec.feed(data) if f.opcode == Op.IDENTIFY)


def answering(ident: bytes) -> Callable[[bytes], bytes]:
    """Answers IDENTIFY with the payload `ident`, every other request with ERROR
    UNSUPPORTED."""
    dec = FrameDecoder()
    return lambda data: b"".join(
        encode_frame(Reply.OK, ident) if f.opcode == Op.IDENTIFY else
        encode_frame(Reply.ERROR, bytes([Err.UNSUPPORTED, f.opcode])) for f in dec.feed(data))


def host_on(port: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(ROOT / "sw" / "host.py"), "--image", "dog.jpg",
                        "--port", port, *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": ""}, cwd=ROOT)
    return r, time.monotonic() - t0


def last_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), r.stderr
    return line


@pytest.fixture(scope="module", autouse=True)
def _bundle_ready(pretrained_bundle):
    """The default bundle is built before the timed runs."""


def test_silent_port_is_diagnosed_within_10_s():
    with fake_port(lambda data: b"") as port:
        r, seconds = host_on(port)
    line = last_error(r)
    assert seconds < 10, seconds
    for needle in (f"no answer from serial port {port} at 12000000 baud within 5 s",
                   "nothing came back", f"HwConfig {DEFAULT.config_id_hex} (the default config",
                   "wrong port", "boards/ulx3s_85f.json: 3000000 baud", "no bitstream"):
        assert needle in line, (needle, line)


def test_wrong_baud_noise_is_diagnosed():
    with fake_port(lambda data: bytes(b ^ 0x5A for b in data) * 3) as port:
        r, seconds = host_on(port)
    line = last_error(r)
    assert seconds < 10, seconds
    assert "bytes came back but no valid frame" in line and "baud rate" in line, line


def test_other_build_names_both_configs_and_their_files():
    with fake_port(as_device(ULX3S)) as port:
        r, _ = host_on(port)
    line = last_error(r)
    assert (f"answers as HwConfig {ULX3S.config_id_hex} (boards/ulx3s_85f.json)" in line
            and f"expects {DEFAULT.config_id_hex} (the default config" in line
            and "pass --hw-config boards/ulx3s_85f.json" in line), line
    # and the other way round: the host given the board's config, a default device
    with fake_port(as_device(DEFAULT)) as port:
        r, _ = host_on(port, "--hw-config", str(ROOT / "boards" / "ulx3s_85f.json"))
    line = last_error(r)
    assert f"answers as HwConfig {DEFAULT.config_id_hex} (the default config" in line, line
    assert "leave --hw-config out" in line, line
    assert "at 3000000 baud" not in line          # it answered: no baud advice


def test_simulator_of_another_config():
    other = HwConfig(array_rows=4, array_cols=4)
    with SimLink(DEFAULT) as link:
        assert probe.identify(link, DEFAULT).config_id == DEFAULT.config_id
        t0 = time.monotonic()
        with pytest.raises(ConfigMismatchError) as e:
            probe.identify(link, other)
        assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert f"{DEFAULT.config_id_hex} (the default config" in msg
    assert f"{other.config_id_hex} (no config file of this checkout)" in msg
    assert "leave --hw-config out" in msg


def test_older_protocol_is_refused_by_name():
    """A device of protocol version 4 (its IDENTIFY reply 6 bytes shorter) is refused naming
    both versions, not as a malformed reply."""
    old = struct.pack("<IBBHBBB", DEFAULT.config_id, 4, 3, MAX_PAYLOAD,
                      Feature.MEMORY | Feature.DRAM, 8, 8)
    with fake_port(answering(old)) as port:
        r, _ = host_on(port)
    line = last_error(r)
    assert f"speaks protocol version 4, this host {PROTOCOL_VERSION}" in line, line


def test_host_names_the_ethernet_address():
    """A device with Feature.ETHERNET found on its UART: the host prints where it answers
    UDP before it goes on (here: to the fake's refusal of the memory commands)."""
    ident = Identity(DEFAULT.config_id, PROTOCOL_VERSION, 4, MAX_PAYLOAD,
                     Feature.MEMORY | Feature.ETHERNET, 8, 8, ip=0x0A010203, udp_port=4242)
    with fake_port(answering(ident.encode())) as port:
        r, _ = host_on(port)
    last_error(r)
    assert "Ethernet: 10.1.2.3:4242" in r.stderr.splitlines(), r.stderr
