"""The host's UDP link to a device on Ethernet (`UdpLink`, docs/protocol.md "Over UDP"), and
the simulated device on simulated Ethernet (`EthSimLink`: the Verilator harness of
`hw.eth.system.EthDeviceTop` behind a local UDP socket, its UART's bytes on a pipe).

`UdpLink` carries each frame `Device` writes in one datagram with the session and a new
sequence number (`hw.spec.udp`), and resends that same datagram until its reply arrives:
after `interval` seconds, doubling each time, at most `tries` sends in all, then
`LinkTimeout`. Replies to other sequence numbers (late or duplicated) are dropped; the
device never runs a request twice (a resent one gets its stored reply back). A STALE or
BAD_DATAGRAM answer raises `LinkError`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from hw.spec import protocol, udp
from hw.spec.config import HwConfig
from sw.runtime.link import (
    BUILD_ROOT,
    ROOT,
    SIM_TIMEOUT_CYCLES,
    Link,
    LinkError,
    LinkTimeout,
    PipeLink,
    build_simulator,
    simulator_key,
)

__all__ = ["DEFAULT_UDP_PORT", "EthSimLink", "UdpLink", "eth_harness_binary", "parse_host"]

#: The device's UDP port unless `--host IP:PORT` says otherwise (boards/eth/arty_a7.yml).
DEFAULT_UDP_PORT = 7777
#: What the Ethernet simulator is made of besides hw/**/*.py.
ETH_SOURCES = ("sim/harness_cpp/main.cpp", "sim/harness_cpp/eth_wire.h", "boards/eth/arty_a7.yml")
ETH_DISTS = ("liteeth", "litex", "migen")


def parse_host(text: str) -> tuple[str, int]:
    """``IP[:PORT]`` as (address, port); the port defaults to `DEFAULT_UDP_PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_UDP_PORT)
    try:
        ipaddress.IPv4Address(host)
        value = int(port)
    except ValueError as e:
        raise ValueError(f"--host {text!r}: expected IPv4[:PORT], e.g. 192.168.1.50:7777") from e
    if not 1 <= value <= 65535:
        raise ValueError(f"--host {text!r}: port outside 1..65535")
    return host, value


class UdpLink(Link):
    """A device at `host`:`port` over UDP (see the module docstring). `max_reply`: the
    largest MEM_READ one request may ask for (one reply datagram). Counts: `sent`,
    `resent`, `replays` (stored replies received), `dropped` (datagrams ignored)."""

    max_reply = protocol.MAX_PAYLOAD

    def __init__(self, host: str, port: int, interval: float = 0.2, tries: int = 8) -> None:
        if interval <= 0 or tries < 1:
            raise ValueError("interval must be positive and tries at least 1")
        self.name = f"UDP {host}:{port}"
        self.addr = (host, port)
        self.interval, self.tries = interval, tries
        self.session = secrets.randbits(32) or 1
        self.seq = -1
        self.sent = self.resent = self.replays = self.dropped = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.connect(self.addr)      # only the device's datagrams are received
        except OSError as e:
            self._sock.close()
            raise LinkError(f"cannot reach {self.name}: {e}") from e
        self._datagram = b""                   # the request in flight
        self._answered = True
        self._sends = 0
        self._next_send = 0.0
        self._reply = b""

    def write(self, data: bytes) -> None:
        if len(data) > udp.MAX_REQUEST_BYTES:
            raise LinkError(f"{self.name}: a {len(data)}-byte request does not fit a datagram")
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self._datagram = udp.Header(0, self.session, self.seq).encode() + data
        self._answered, self._reply, self._sends = False, b"", 0
        self._send()

    def _send(self) -> None:
        try:
            self._sock.send(self._datagram)
        except OSError as e:   # e.g. ECONNREFUSED from an earlier ICMP port unreachable
            if self._sends + 1 >= self.tries:
                raise LinkError(f"{self.name}: {e}") from e
        self.resent += self._sends > 0
        self.sent += 1
        self._next_send = time.monotonic() + self.interval * (1 << self._sends)
        self._sends += 1

    def _take(self, datagram: bytes) -> bytes | None:
        """The reply body of `datagram` if it answers the request in flight."""
        try:
            head, body = udp.Header.decode(datagram)
        except udp.UdpProtocolError:
            self.dropped += 1
            return None
        if (self._answered or head.session != self.session or head.seq != self.seq
                or head.version != udp.UDP_VERSION):
            self.dropped += 1
            return None
        what = f"{self.name}: request {self.seq} of session {self.session:#010x}"
        if head.flags == udp.Status.STALE:
            raise LinkError(f"{what} refused as stale (the device was reset, or another host "
                            "opened a session)")
        if head.flags == udp.Status.BAD_DATAGRAM:
            raise LinkError(f"{what} refused as a malformed datagram")
        if head.flags == udp.Status.TOO_LONG:
            raise LinkError(f"{what}: its reply overflowed the device's reply buffer "
                            "(the request ran)")
        if head.flags not in (udp.Status.OK, udp.Status.REPLAY):
            raise LinkError(f"{what}: unknown reply status {head.flags}")
        self.replays += head.flags == udp.Status.REPLAY
        self._answered = True
        return body

    def read(self, timeout: float) -> bytes:
        if self._reply:
            out, self._reply = self._reply, b""
            return out
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            now = time.monotonic()
            if not self._answered and now >= self._next_send:
                if self._sends >= self.tries:
                    raise LinkTimeout(f"{self.name}: no reply to request {self.seq} after "
                                      f"{self._sends} sends")
                self._send()
                continue
            wait = deadline - now
            if not self._answered:
                wait = min(wait, self._next_send - now)
            ready, _, _ = select.select([self._sock], [], [], max(wait, 0.0))
            if ready:
                try:
                    datagram = self._sock.recv(65536)
                except ConnectionRefusedError:
                    continue                   # ICMP port unreachable: resent on schedule
                body = self._take(datagram)
                if body is not None:
                    return body
            elif time.monotonic() >= deadline:
                return b""

    def close(self) -> None:
        self._sock.close()


def eth_harness_key(cfg: HwConfig, timeout_cycles: int) -> str:
    """The Ethernet simulator's cache key: everything its binary depends on, read as files."""
    return simulator_key(cfg, timeout_cycles, [ROOT / f for f in ETH_SOURCES], dists=ETH_DISTS)


def eth_harness_binary(cfg: HwConfig, timeout_cycles: int = SIM_TIMEOUT_CYCLES) -> Path:
    """The Ethernet simulator's binary for `cfg`, built first (`python -m hw.eth.simulator`)
    unless a build with the current key exists (sim/sim_build/eth_harness-<id>-<timeout>/)."""
    build_dir = BUILD_ROOT / f"eth_harness-{cfg.config_id_hex}-{timeout_cycles}"
    return build_simulator(cfg, timeout_cycles, build_dir, eth_harness_key(cfg, timeout_cycles),
                           "hw.eth.simulator", "Ethernet")


class EthSimLink(UdpLink):
    """The memory device on simulated Ethernet: the harness (LiteEth's core on MII, the
    bridge, the UART's bytes, the link arbiter, the device, the harness's memory model) is
    a child process listening on a local UDP port; this link talks UDP to it (`via`, if
    given, maps that port to another local address, e.g. a fault-injecting proxy's), and
    `uart` (a `PipeLink` on the harness's stdin / stdout) is the device's other link. After
    `close`: `cycles`, `mem_stats` and `eth_stats` (the wire's counts,
    sim/harness_cpp/eth_wire.h)."""

    def __init__(self, cfg: HwConfig, timeout_cycles: int = SIM_TIMEOUT_CYCLES,
                 harness_args: list[str] | tuple[str, ...] = (), interval: float = 0.5,
                 tries: int = 8, via: object = None) -> None:
        binary = eth_harness_binary(cfg, timeout_cycles)
        idle_limit = 2 * timeout_cycles + 1000
        self.cycles: int | None = None
        self.mem_stats: dict[str, int] = {}
        self.eth_stats: dict[str, int] = {}
        self._proc = subprocess.Popen([str(binary), str(idle_limit), "--udp-port", "0",
                                       *harness_args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self._proc.stdout.readline().decode(errors="replace").split()
        if len(line) != 3 or line[:2] != ["harness-eth:", "udp"]:
            self._proc.kill()
            err = self._proc.communicate()[1].decode(errors="replace")
            raise LinkError(f"the Ethernet simulator did not start: {err[-1000:]}")
        host, port = line[2].rsplit(":", 1)
        self.harness_addr = (host, int(port))
        self.uart = PipeLink(self._proc, f"simulated UART (HwConfig {cfg.config_id_hex})")
        if via is not None:
            host, port = via(self.harness_addr)
        super().__init__(host, int(port), interval=interval, tries=tries)
        self.name = f"simulated Ethernet (HwConfig {cfg.config_id_hex}, {self.name})"

    def close(self) -> None:
        super().close()
        if self._proc.returncode is not None:
            return
        try:   # closes stdin: the harness stops once the device is idle
            _, err = self._proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        for line in err.decode(errors="replace").splitlines():
            words = line.split()
            if line.startswith("harness:") and line.endswith("cycles"):
                self.cycles = int(words[1])
            elif line.startswith(("harness-mem:", "harness-eth:")):
                stats = {k: int(v) for k, v in zip(words[1::2], words[2::2], strict=True)}
                (self.mem_stats if words[0] == "harness-mem:" else self.eth_stats).update(stats)
        if self._proc.returncode:
            raise LinkError(f"the Ethernet simulator exited with status {self._proc.returncode}:"
                            f" {err.decode(errors='replace')[-1000:]}")

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, 9)


def main(argv: list[str] | None = None) -> int:
    """``python -m sw.runtime.udplink --udp-port N``: the simulated device on simulated
    Ethernet, listening on 127.0.0.1:N until Ctrl-C (then ``sw/host.py --host
    127.0.0.1:N`` drives it like a board)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m sw.runtime.udplink",
                                description="the simulated device on simulated Ethernet, "
                                            "on a local UDP port")
    p.add_argument("--udp-port", type=int, default=DEFAULT_UDP_PORT,
                   help=f"local port to listen on (default {DEFAULT_UDP_PORT}; 0: any)")
    p.add_argument("--hw-config", help="HwConfig JSON (default: the default config)")
    args = p.parse_args(argv)
    if not 0 <= args.udp_port <= 65535:
        p.error("--udp-port outside 0..65535")
    try:
        cfg = HwConfig.load(args.hw_config) if args.hw_config else HwConfig()
        binary = eth_harness_binary(cfg)
    except (LinkError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    idle_limit = 2 * SIM_TIMEOUT_CYCLES + 1000
    proc = subprocess.Popen([str(binary), str(idle_limit), "--udp-port", str(args.udp_port)],
                            stdin=subprocess.PIPE)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.stdin.close()
        proc.wait()
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
