"""Benchmark: the host link over simulated Ethernet (LiteEth's core on the MII pins at the
Arty's 100 MHz sys clock and 25 MHz MII clocks, the UDP bridge, the memory device) and the
frame time it projects for the Arty boards.

    python -m bench.eth_link [--bytes N] [--turnaround-us T] [--json]

Writes N bytes with MEM_WRITE and reads them back with MEM_READ through the unchanged
driver (`Device` on `EthSimLink`), and takes the simulated time of each from the device's
cycle counter (STATUS before and after). The harness stops the clock while it waits for
the host, so these rates have a host that answers at once. Per request it also prints the
simulated cycles over Ethernet, the wire time of its two datagrams (computed) and the same
device's cycles on the pipe harness (a byte a cycle each way). `--turnaround-us` adds an
assumed per-request host turnaround (not measured here) to a second pair of figures. The
frame projection: the int8 image written and the heads and trace read at those rates
(PROGRAM_RUN and STATUS polls not counted), plus the engine's schedule of `bench.fps`, not
overlapped, for `arty_a7` and `arty_a7_100`, next to the UART's and to the wire's limit
(11.5 MB/s, `bench.fps`'s link bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fps import board_config, fps  # noqa: E402
from hw.spec import protocol, udp  # noqa: E402
from hw.spec.config import DEFAULT  # noqa: E402
from hw.spec.memory import TRACE_BYTES  # noqa: E402
from sw.runtime.bundle import Bundle  # noqa: E402
from sw.runtime.detect import shipped_bundle  # noqa: E402
from sw.runtime.device import Device  # noqa: E402
from sw.runtime.link import SimLink  # noqa: E402
from sw.runtime.program import compile_network  # noqa: E402
from sw.runtime.udplink import EthSimLink  # noqa: E402

#: UDP payload rate of 100 Mbit Ethernet with every datagram in flight (the brief's figure).
WIRE_LIMIT = 11.5e6
#: The MEM_WRITE data bytes one request carries.
WRITE_CHUNK = protocol.MAX_PAYLOAD - 4


def measure(nbytes: int) -> dict[str, float]:
    """Simulated seconds to write and read `nbytes` over the simulated link."""
    data = os.urandom(nbytes)
    clock = DEFAULT.clock_hz
    with EthSimLink(DEFAULT) as lk:
        dev = Device(lk, timeout=120.0)
        dev.identify(expect=DEFAULT)
        c0 = dev.status().cycles
        dev.mem_write(0, data)
        c1 = dev.status().cycles
        got = dev.mem_read(0, nbytes)
        c2 = dev.status().cycles
        if got != data:
            raise SystemExit("error: the bytes read back differ from those written")
        sent = lk.sent
    return {"write_s": (c1 - c0) / clock, "read_s": (c2 - c1) / clock,
            "write_requests": -(-nbytes // WRITE_CHUNK),
            "read_requests": -(-nbytes // protocol.MAX_PAYLOAD), "datagrams_sent": sent,
            "resent": lk.resent, "cycles": lk.cycles or 0, "eth": lk.eth_stats}


def pipe_cycles(nbytes: int) -> tuple[float, float]:
    """Cycles per MEM_WRITE and per 1,024-byte MEM_READ request of the same device on the
    pipe harness (a byte a cycle each way, `SimLink` memory top): the device's own time,
    receiving and sending its frames included."""
    data = os.urandom(nbytes)
    with SimLink(DEFAULT, top="memory") as lk:
        dev = Device(lk, timeout=120.0)
        c0 = dev.status().cycles
        dev.mem_write(0, data)
        c1 = dev.status().cycles
        for off in range(0, nbytes, protocol.MAX_PAYLOAD):
            dev.mem_read(off, min(protocol.MAX_PAYLOAD, nbytes - off))
        c2 = dev.status().cycles
    return ((c1 - c0) / -(-nbytes // WRITE_CHUNK),
            (c2 - c1) / -(-nbytes // protocol.MAX_PAYLOAD))


def wire_bytes(udp_payload: int) -> int:
    """Bytes one datagram takes on the wire: preamble and SFD, Ethernet header, IPv4 and
    UDP headers, padding to the 60-byte minimum, FCS, inter-frame gap."""
    return 8 + max(14 + 20 + 8 + udp_payload, 60) + 4 + 12


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes", type=int, default=256 * 1024, help="bytes each way")
    ap.add_argument("--turnaround-us", type=float, default=50.0,
                    help="assumed host turnaround per request, microseconds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.bytes < 1:
        print("error: --bytes must be positive", file=sys.stderr)
        return 2
    t0 = time.process_time()
    m = measure(args.bytes)
    pipe_w, pipe_r = pipe_cycles(args.bytes)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    n, ta = args.bytes, args.turnaround_us * 1e-6
    hdr, frame, clock_per_bit = udp.HEADER_BYTES, protocol.FRAME_OVERHEAD, DEFAULT.clock_hz / 100e6
    write_rate, read_rate = n / m["write_s"], n / m["read_s"]
    write_rate_t = n / (m["write_s"] + m["write_requests"] * ta)
    read_rate_t = n / (m["read_s"] + m["read_requests"] * ta)
    out: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "sys_clock_hz": DEFAULT.clock_hz, "bytes": n,
        "write_MB_s": write_rate / 1e6, "read_MB_s": read_rate / 1e6,
        "turnaround_us": args.turnaround_us,
        "write_MB_s_with_turnaround": write_rate_t / 1e6,
        "read_MB_s_with_turnaround": read_rate_t / 1e6,
        "simulated_cycles": m["cycles"], "wire": m["eth"],
        # per request: over Ethernet (measured), the two datagrams' wire time (computed),
        # the same device on the pipe harness (measured)
        "eth_cycles_per_write_request": m["write_s"] * DEFAULT.clock_hz / m["write_requests"],
        "wire_cycles_per_write_request": (wire_bytes(hdr + WRITE_CHUNK + 4 + frame)
                                          + wire_bytes(hdr + frame)) * 8 * clock_per_bit,
        "pipe_cycles_per_write_request": pipe_w,
        "eth_cycles_per_read_request": m["read_s"] * DEFAULT.clock_hz / m["read_requests"],
        "wire_cycles_per_read_request": (wire_bytes(hdr + 8 + frame)
                                         + wire_bytes(hdr + protocol.MAX_PAYLOAD + frame))
        * 8 * clock_per_bit,
        "pipe_cycles_per_read_request": pipe_r,
        "cpu_s": time.process_time() - t0 + child.ru_utime + child.ru_stime,
        "boards": {}}
    for board in ("arty_a7", "arty_a7_100"):
        cfg = board_config(board)
        bundle = Bundle.load(shipped_bundle(cfg), expect=cfg)
        image = compile_network(bundle, cfg)
        f = fps(board, bundle)
        h, w, c = bundle.input_shape
        heads = sum(image.layer_views[i].nbytes for i in image.heads)
        read = heads + TRACE_BYTES * len(image.passes)
        compute = 1 / float(f["fps_compute"])
        link = h * w * c / write_rate + read / read_rate
        link_t = h * w * c / write_rate_t + read / read_rate_t
        uart = 1 / float(f["fps_uart"]) - compute
        out["boards"][board] = {
            "image_bytes": h * w * c, "read_bytes": read, "compute_s": compute,
            "uart_link_s": uart, "eth_link_s": link, "eth_link_s_with_turnaround": link_t,
            "fps_uart": f["fps_uart"], "fps_eth": 1 / (link + compute),
            "fps_eth_with_turnaround": 1 / (link_t + compute),
            "fps_eth_at_wire_limit": 1 / (int(f["link_bytes_per_frame"]) / WIRE_LIMIT + compute)}
    if args.json:
        print(json.dumps(out))
        return 0
    for k, v in out.items():
        if k == "boards":
            for b, d in v.items():
                print(f"{b}:")
                for kk, vv in d.items():
                    print(f"  {kk:>28}: {vv:,.4f}" if isinstance(vv, float) else
                          f"  {kk:>28}: {vv}")
        else:
            print(f"{k:>30}: {v:,.3f}" if isinstance(v, float) else f"{k:>30}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
