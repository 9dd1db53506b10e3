"""`hw.simulator.UartBoard`, the DRAM system simulation's top (docs/dram.md): the board's
core (`hw.build.BoardCore`, its UART, FIFO and LEDs) with the host's side of the UART,
around a stand-in device (Amaranth's simulator: LiteDRAM's Verilog needs Verilator,
tests/test_dram.py runs the real one)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.simulator import UartBoard
from hw.spec.config import HwConfig

#: 4 cycles a bit; the LEDs' stretch is 20 cycles (clock_hz // 20).
CFG = HwConfig(clock_hz=400, uart_baud=100)
BOOT = 300


class EchoDevice(wiring.Component):
    """Busy (``active``) for `BOOT` cycles after reset, then ``init_done`` (or
    ``init_error`` with `fail`; ``unleveled`` stays low, as on a DRAM without leveling);
    answers each byte with the byte + 1."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "active": Out(1), "init_done": Out(1), "init_error": Out(1),
                          "unleveled": Out(1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        boot = Signal(range(BOOT + 1), init=BOOT)
        with m.If(boot != 0):
            m.d.sync += boot.eq(boot - 1)
        settled = boot == 0
        m.d.comb += [self.active.eq(~settled), self.init_done.eq(settled & (not self.fail)),
                     self.init_error.eq(settled & self.fail),
                     self.rx.ready.eq(settled & ~self.tx.valid)]
        with m.If(self.tx.ready):
            m.d.sync += self.tx.valid.eq(0)
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += [self.tx.valid.eq(1), self.tx.payload.eq(self.rx.payload + 1)]
        return m


def run_board(fail: bool, data: bytes) -> dict[str, object]:
    dut = UartBoard(CFG, EchoDevice(fail))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen: dict[str, object] = {"sent": [], "got": []}

    async def bench(ctx):
        ctx.set(dut.tx.ready, 1)
        ctx.set(dut.rx.valid, 1)
        ctx.set(dut.rx.payload, data[0])
        cycle, k, flags, leds = 0, 0, set(), set()
        while len(seen["got"]) < len(data) and cycle < 5000:
            # the inputs of this cycle are set: sample the outputs, then the edge
            taken = k < len(data) and ctx.get(dut.rx.ready)
            if ctx.get(dut.tx.valid):
                seen["got"].append((cycle, ctx.get(dut.tx.payload)))
            if cycle < BOOT - 2:
                assert not taken, "a byte left before the device had booted"
                assert ctx.get(dut.active)
            flags.add((ctx.get(dut.dram_done), ctx.get(dut.dram_error)))
            leds.add(ctx.get(dut.leds) & 0b110)
            await ctx.tick()
            if taken:
                seen["sent"].append(cycle)
                k += 1
                ctx.set(dut.rx.valid, k < len(data))
                ctx.set(dut.rx.payload, data[k] if k < len(data) else 0)
            cycle += 1
        seen["flags"], seen["leds"] = flags, leds
        await ctx.tick().repeat(10 * CFG.uart_divisor + 40)
        seen["idle_active"] = ctx.get(dut.active)

    sim.add_testbench(bench)
    sim.run()
    return seen


def test_bytes_cross_both_uarts_after_boot() -> None:
    data = bytes([0x00, 0x55, 0xFE, 0x80, 0x3C])
    seen = run_board(False, data)
    assert [b for _, b in seen["got"]] == [(b + 1) & 0xFF for b in data]
    byte = 10 * CFG.uart_divisor
    assert seen["sent"][0] >= BOOT - 2
    # each echo: the byte through the board's receiver, the device, back through its
    # transmitter and the host's receiver; the host's line is busy a byte time each
    for (t_in, (t_out, _)) in zip(seen["sent"], seen["got"], strict=True):
        assert t_out - t_in >= 2 * byte - CFG.uart_divisor
    assert all(b - a >= byte for a, b in zip(seen["sent"], seen["sent"][1:], strict=False))
    # the DRAM flags reach the core's pins; both activity LEDs lit
    assert (1, 0) in seen["flags"] and (0, 1) not in seen["flags"]
    assert any(v & 0b010 for v in seen["leds"]) and any(v & 0b100 for v in seen["leds"])
    assert not seen["idle_active"]


def test_init_error_reaches_the_pins() -> None:
    seen = run_board(True, b"\x07")
    assert [b for _, b in seen["got"]] == [8]
    assert (0, 1) in seen["flags"] and (1, 0) not in seen["flags"]
