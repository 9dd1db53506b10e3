"""The device on (simulated) Ethernet: LiteEth's generated core on the MII pins, the UDP
bridge and the memory device in Verilator, the harness playing the cable and the host's
stack (sim/harness_cpp/eth_wire.h), the unchanged driver over `UdpLink`, and the UART's
bytes on the harness's pipe through the link arbiter. A small network's frame end to end,
bit-exact; IDENTIFY's Ethernet address on both links; the bridge's sequence rules datagram by
datagram; a fault-injecting proxy that drops, duplicates and delays (reorders) datagrams
both ways."""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from boards import BOARDS
from hw.eth import EthError, configs, device_defaults, generate
from hw.eth.simulator import SIM_CONFIG
from hw.spec import intmath, protocol, udp
from hw.spec.config import DEFAULT
from hw.spec.protocol import Err, Feature, Op, Reply
from sw.runtime.device import Device
from sw.runtime.golden import GoldenModel
from sw.runtime.link import LinkError, LinkTimeout
from sw.runtime.resident import ResidentNetwork
from sw.runtime.udplink import EthSimLink, UdpLink, parse_host
from tests.conftest import random_images, small_bundle

ROOT = Path(__file__).resolve().parent.parent


def test_generated_cores() -> None:
    for sim in (True, False):
        core = generate("arty_a7", sim=sim)
        ports = core.meta["ports"]
        assert core.meta["phy"] == "LiteEthPHYMII" and core.meta["sim"] == sim
        for name in ("mii_tx_en", "mii_rx_data", "ip_address", "mac_address",
                     "link_source_src_port", "link_sink_length"):
            assert name in ports, name
        assert ports["mii_tx_data"] == ["output", 4] and ports["ip_address"] == ["input", 32]
        text = core.verilog.read_text()
        # the board core uses the vendor's reset synchronisers, the sim core plain logic
        assert ("FDPE" in text) == (not sim)
    # both Arty parts name the one config (the same PHY): one generated core serves both
    assert BOARDS["arty_a7_100"].eth == BOARDS["arty_a7"].eth == "arty_a7"
    assert configs() == ["arty_a7"]


def test_settings_and_host_parsing() -> None:
    s = device_defaults("arty_a7")
    assert (s.ip, s.udp_port) == ("192.168.1.50", 7777) and s.ip_int == 0xC0A80132
    assert device_defaults("arty_a7", ip="10.0.0.2", udp_port=9).ip_int == 0x0A000002
    for bad in ({"ip": "192.168.1"}, {"ip": "224.0.0.1"}, {"mac": "01:00:00:00:00:01"},
                {"mac": "zz:00:00:00:00:01"}, {"udp_port": 70000}):
        with pytest.raises(EthError):
            device_defaults("arty_a7", **bad)
    with pytest.raises(EthError, match="no Ethernet config"):
        generate("ulx3s_85f")
    assert parse_host("192.168.1.50") == ("192.168.1.50", 7777)
    assert parse_host("127.0.0.1:4000") == ("127.0.0.1", 4000)
    for bad in ("localhost:x", "1.2.3:5", "1.2.3.4:0", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match="--host"):
            parse_host(bad)


@pytest.fixture(scope="module")
def link():
    with EthSimLink(DEFAULT) as lk:
        yield lk
    assert lk.cycles and lk.mem_stats["reads"] > 0
    assert lk.eth_stats["bad_frames"] == 0 and lk.eth_stats["arp_replies"] >= 1


def test_network_frame_bit_exact(link, small_net, small_model) -> None:
    dev = Device(link, timeout=60.0)
    dev.identify(expect=DEFAULT)
    bundle = small_bundle(small_net, small_model)
    net = ResidentNetwork(dev, DEFAULT, bundle)
    assert net.upload() > 0
    x = intmath.quantize_input(random_images(1, small_net.width, seed=4)[0])
    run = net.run(x)
    want = GoldenModel(bundle).run(x, keep=True)
    for i, h in run.heads.items():
        assert np.array_equal(h, want[i]), f"head {i}"
    assert run.frame["passes"] == len(net.image.passes)
    assert ResidentNetwork(dev, DEFAULT, bundle).resident()
    # a clean wire: no reply lost (a resend, if the simulation outran the interval, met a
    # busy device or came after the reply)
    assert link.replays == 0


def test_both_links_identify_the_built_address(link) -> None:
    """IDENTIFY over UDP and over the UART (the harness's pipe, through the link arbiter)
    reports the build's IPv4 address and UDP port; both links reach one device memory."""
    want = device_defaults(SIM_CONFIG)
    assert link.harness_addr[0] == "127.0.0.1"
    for lk in (link, link.uart):
        ident = Device(lk, timeout=30.0).identify(expect=DEFAULT)
        assert ident.features == Feature.MEMORY | Feature.ETHERNET, lk.name
        assert (ident.ip, ident.udp_port) == (want.ip_int, want.udp_port), lk.name
        assert ident.ethernet == f"{want.ip}:{want.udp_port}" == "192.168.1.50:7777"
    addr = DEFAULT.mem_bytes - 3000
    data = np.random.default_rng(16).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    Device(link.uart, timeout=30.0).mem_write(addr, data)
    assert Device(link, timeout=30.0).mem_read(addr, 3000) == data
    assert Device(link.uart, timeout=30.0).mem_crc(addr, 3000) == protocol.crc32(data)


def _exchange(sock: socket.socket, datagram: bytes,
              timeout: float = 20.0) -> tuple[udp.Header, bytes]:
    sock.send(datagram)
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, "no reply"
    return udp.Header.decode(sock.recv(65536))


def test_sequence_rules(link) -> None:
    """Datagram by datagram: the next seq runs, the last one is answered from the stored
    reply (the device counts one frame), others are STALE, malformed ones BAD_DATAGRAM."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(link.harness_addr)
    session = 0x5EED0001

    def dgram(seq: int, body: bytes, sess: int = session, flags: int = 0) -> bytes:
        return udp.Header(flags, sess, seq).encode() + body

    status = protocol.encode_frame(Op.STATUS)
    head, body0 = _exchange(sock, dgram(0, status))
    assert (head.flags, head.session, head.seq) == (udp.Status.OK, session, 0)
    frames0 = protocol.FrameDecoder().feed(body0)
    assert [f.opcode for f in frames0] == [Reply.OK]
    before = protocol.Status.decode(frames0[0].payload)
    head, again = _exchange(sock, dgram(0, status))
    assert head.flags == udp.Status.REPLAY and again == body0
    for seq in (2, 0xFFFFFFFF):                                   # neither last nor next
        assert _exchange(sock, dgram(seq, status))[0].flags == udp.Status.STALE
    assert _exchange(sock, dgram(7, status, sess=9))[0].flags == udp.Status.STALE
    echo = protocol.encode_frame(Op.ECHO, b"abc")
    for bad in (b"XY" + dgram(1, echo)[2:], dgram(1, echo, flags=1), dgram(1, echo[:-1]),
                dgram(1, echo + echo), dgram(1, b"junk" + echo), dgram(1, b""),
                udp.Header(0, session, 1, version=9).encode() + echo,
                dgram(1, protocol.SYNC + struct.pack("<BH", Op.ECHO, 1100) + bytes(1102))):
        head, body = _exchange(sock, bad)
        assert (head.flags, body) == (udp.Status.BAD_DATAGRAM, b""), bad[:16]
    head, body = _exchange(sock, dgram(1, echo))
    assert head.flags == udp.Status.OK
    assert protocol.FrameDecoder().feed(body)[0].payload == b"abc"
    corrupt = bytearray(echo)
    corrupt[-1] ^= 0xFF                              # the device's own CRC check answers
    head, body = _exchange(sock, dgram(2, bytes(corrupt)))
    err = protocol.FrameDecoder().feed(body)[0]
    assert head.flags == udp.Status.OK
    assert err.opcode == Reply.ERROR and err.payload[0] == Err.BAD_CRC
    # MEM_READ replies: DATA + OK frames up to the stored reply's size; past it TOO_LONG,
    # also when resent
    most = udp.MAX_REPLY_BYTES - 2 * protocol.FRAME_OVERHEAD
    read = protocol.encode_frame(Op.MEM_READ, struct.pack(protocol.MEM_RANGE_FORMAT, 0, most))
    head, body = _exchange(sock, dgram(3, read))
    frames = protocol.FrameDecoder().feed(body)
    assert head.flags == udp.Status.OK and [f.opcode for f in frames] == [Reply.DATA, Reply.OK]
    assert len(body) == udp.MAX_REPLY_BYTES and len(body) + udp.HEADER_BYTES <= 1472
    read = protocol.encode_frame(Op.MEM_READ, struct.pack(protocol.MEM_RANGE_FORMAT, 0, most + 1))
    assert _exchange(sock, dgram(4, read)) == (udp.Header(udp.Status.TOO_LONG, session, 4), b"")
    assert _exchange(sock, dgram(4, read)) == (udp.Header(udp.Status.TOO_LONG, session, 4), b"")
    head, body = _exchange(sock, dgram(5, status))
    after = protocol.Status.decode(protocol.FrameDecoder().feed(body)[0].payload)
    # run once each, nothing else: seq 1, 3, 4 and 5 good frames, seq 2 a bad one
    assert (after.frames_ok - before.frames_ok, after.frames_bad - before.frames_bad) == (4, 1)
    sock.close()


class FaultProxy:
    """A local UDP proxy between a client and `target` that, per datagram and direction,
    drops it, sends it twice, or holds it back for a random time (so later ones overtake
    it), with seeded probabilities."""

    def __init__(self, target: tuple[str, int], seed: int, drop: float, dup: float,
                 delay: float) -> None:
        self.target, self.rng = target, random.Random(seed)
        self.drop, self.dup, self.delay = drop, dup, delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.addr = self.sock.getsockname()
        self.client: tuple[str, int] | None = None
        self.held: list[tuple[float, bytes, tuple[str, int]]] = []
        self.counts = {"dropped": 0, "duplicated": 0, "delayed": 0, "passed": 0}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _forward(self, data: bytes, to: tuple[str, int]) -> None:
        r = self.rng.random()
        if r < self.drop:
            self.counts["dropped"] += 1
        elif r < self.drop + self.dup:
            self.counts["duplicated"] += 1
            self.sock.sendto(data, to)
            self.sock.sendto(data, to)
        elif r < self.drop + self.dup + self.delay:
            self.counts["delayed"] += 1
            self.held.append((time.monotonic() + self.rng.uniform(0.02, 0.6), data, to))
        else:
            self.counts["passed"] += 1
            self.sock.sendto(data, to)

    def _run(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock], [], [], 0.02)
            if ready:
                data, src = self.sock.recvfrom(65536)
                if src == self.target:
                    if self.client is not None:
                        self._forward(data, self.client)
                else:
                    self.client = src
                    self._forward(data, self.target)
            now = time.monotonic()
            for item in [h for h in self.held if h[0] <= now]:
                self.held.remove(item)
                self.sock.sendto(item[1], item[2])

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def test_fault_injection(small_net, small_model) -> None:
    """Drops, duplicates and reordering both ways: every request runs exactly once (the
    device's frame counter), the frame is bit-exact; a dead device is a clear error."""
    proxies = []

    def via(addr):
        proxies.append(FaultProxy(addr, seed=11, drop=0.12, dup=0.12, delay=0.12))
        return proxies[0].addr

    bundle = small_bundle(small_net, small_model)
    with EthSimLink(DEFAULT, interval=0.15, tries=12, via=via) as lk:
        dev = Device(lk, timeout=120.0, retries=0)
        dev.identify(expect=DEFAULT)
        first = dev.status().frames_ok
        for k in range(40):
            assert dev.echo(bytes([k]) * (k * 20 + 1))
        assert dev.status().frames_ok - first == 41        # 40 echoes + this STATUS, once each
        net = ResidentNetwork(dev, DEFAULT, bundle)
        net.upload()
        x = intmath.quantize_input(random_images(1, small_net.width, seed=5)[0])
        want = GoldenModel(bundle).run(x, keep=True)
        for i, h in net.run(x).heads.items():
            assert np.array_equal(h, want[i]), f"head {i}"
        p = proxies[0]
        assert min(p.counts.values()) > 0, p.counts
        assert lk.resent > 0 and lk.replays > 0 and lk.dropped > 0
        print(p.counts, lk.sent, lk.resent, lk.replays, lk.dropped)
    proxies[0].close()
    # nothing answers: bounded retries, then a clear error
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    with UdpLink(*dead.getsockname(), interval=0.02, tries=3) as lk:
        with pytest.raises(LinkTimeout, match="no reply to request 0 after 3 sends"):
            Device(lk, timeout=5.0, retries=0).identify()
    dead.close()


def test_stale_session_is_a_clear_error(link) -> None:
    """A second host session takes the device over; the first one's next request is
    refused as stale (not run), with a message saying why."""
    a = UdpLink(*link.harness_addr)
    b = UdpLink(*link.harness_addr)
    try:
        Device(a, timeout=20.0).identify()
        Device(b, timeout=20.0).identify()
        with pytest.raises(LinkError, match="stale"):
            Device(a, timeout=20.0).status()
        Device(b, timeout=20.0).status()
    finally:
        a.close()
        b.close()


def test_sim_backend_over_udp(link, small_net, small_model,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """`detect.make_backend("sim", host=...)`, what `sw/host.py --host` uses: the same heads
    as the golden backend; it names the device's Ethernet address."""
    from sw.runtime import detect

    bundle = small_bundle(small_net, small_model)
    host, port = link.harness_addr
    board = detect.make_backend("sim", bundle, DEFAULT, host=f"{host}:{port}")
    assert "Ethernet: 192.168.1.50:7777" in capsys.readouterr().err.splitlines()
    golden = detect.make_backend("golden", bundle)
    img = random_images(1, small_net.width, seed=6)[0]
    assert board.name == "board"
    for a, b in zip(board.heads(img), golden.heads(img), strict=True):
        assert np.array_equal(a, b)
    assert board.reports and board.reports[0]["frame"]["passes"] > 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sw" / "host.py"), "--image", "dog.jpg",
                           *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ""})


def test_host_cli_errors(pretrained_bundle) -> None:
    """Bad --host values are refused before anything runs; an address where nothing
    answers ends after the probe with one error line naming the usual causes."""
    for args, msg in ((("--host", "1.2.3"), "--host"),
                      (("--host", "1.2.3.4", "--backend", "golden"), "--host needs --backend sim"),
                      (("--host", "1.2.3.4", "--port", "/dev/null"), "give one")):
        r = _cli(*args)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    r = _cli("--host", f"127.0.0.1:{port}")
    dead.close()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: no answer from UDP 127.0.0.1:{port}"), line
    assert "ip addr add" in line
