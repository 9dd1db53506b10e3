"""UartDevice (hw/uart.py: UART PHY + DeviceTop) over its serial pins, cocotb + Verilator.

The testbench is the host's UART: it bit-bangs request frames on `rxd` at the config's
divisor (4 cycles per bit here) and decodes `txd` into reply frames.
"""

from __future__ import annotations

import random
from typing import Any

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from streams import config, params, start

from hw.spec.config import HwConfig
from hw.spec.protocol import Err, Frame, FrameDecoder, Op, Reply, encode_frame

#: 100 MHz / 25 Mbaud: a 4-cycle bit, small enough for a quick simulation.
CFG = HwConfig(uart_baud=25_000_000)
TIMEOUT = 400


async def send(dut: Any, data: bytes, divisor: int, rng: random.Random) -> None:
    for byte in data:
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        for b in bits:
            dut.rxd.value = b
            await ClockCycles(dut.clk, divisor)
        await ClockCycles(dut.clk, rng.randrange(3))   # random gaps between bytes


async def receive(dut: Any, divisor: int, out: bytearray) -> None:
    """Decode txd forever: wait for a start bit, sample mid-bit, check the stop bit."""
    while True:
        await FallingEdge(dut.txd)
        await ClockCycles(dut.clk, divisor // 2)
        assert int(dut.txd.value) == 0, "start bit glitch"
        byte = 0
        for i in range(8):
            await ClockCycles(dut.clk, divisor)
            byte |= int(dut.txd.value) << i
        await ClockCycles(dut.clk, divisor)
        assert int(dut.txd.value) == 1, "stop bit is 0"
        out.append(byte)


async def replies(dut: Any, out: bytearray, dec: FrameDecoder, n: int, limit: int) -> list[Frame]:
    got: list[Frame] = []
    for _ in range(limit):
        await RisingEdge(dut.clk)
        if out:
            got += dec.feed(bytes(out))
            out.clear()
        if len(got) >= n:
            return got
    raise AssertionError(f"timeout: {len(got)} of {n} replies")


@cocotb.test()
async def uart_frames(dut: Any) -> None:
    cfg, p = config(), params()
    div = cfg.uart_divisor
    rng = random.Random(p["seed"])
    dut.rxd.value = 1
    await start(dut)
    out = bytearray()
    cocotb.start_soon(receive(dut, div, out))
    dec = FrameDecoder()
    await ClockCycles(dut.clk, 20)

    await send(dut, encode_frame(Op.IDENTIFY), div, rng)
    (r,) = await replies(dut, out, dec, 1, 20_000)
    assert r.opcode == Reply.OK and int.from_bytes(r.payload[:4], "little") == cfg.config_id

    payload = bytes(rng.randrange(256) for _ in range(40))
    await send(dut, encode_frame(Op.ECHO, payload), div, rng)
    assert await replies(dut, out, dec, 1, 40_000) == [Frame(Reply.OK, payload)]

    bad = bytearray(encode_frame(Op.ECHO, b"xyz"))
    bad[6] ^= 4
    await send(dut, bytes(bad) + encode_frame(Op.STATUS), div, rng)
    got = await replies(dut, out, dec, 2, 40_000)
    assert got[0] == Frame(Reply.ERROR, bytes([Err.BAD_CRC, Op.ECHO]))
    assert got[1].opcode == Reply.OK and got[1].payload[4:6] == (2).to_bytes(2, "little")

    # truncated frame: the device times out and answers TIMEOUT
    await send(dut, encode_frame(Op.ECHO, b"abc")[:-2], div, rng)
    assert await replies(dut, out, dec, 1, 20_000) == [
        Frame(Reply.ERROR, bytes([Err.TIMEOUT, Op.ECHO]))]
    await ClockCycles(dut.clk, 200)
    assert not out and dec.errors == 0 and dec.pending == 0


def test_uart_device() -> None:
    from harness import run_block

    from hw.uart import UartDevice

    assert CFG.uart_divisor == 4
    run_block(UartDevice(CFG, timeout_cycles=TIMEOUT, engine=False), "uart_device",
              f"link-t{TIMEOUT}", CFG,
              "test_uart", {"seed": 5}, seed=5)
