"""UART PHY (8N1) and the board-facing device: `UartDevice(cfg)` = UART + DeviceTop.

One bit lasts `divisor` clock cycles (`cfg.uart_divisor` unless given), LSB first, one
start bit (0) and one stop bit (1); the line idles high.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.spec.config import HwConfig
from hw.top import DeviceTop

__all__ = ["UartDevice", "UartRx", "UartTx"]


class UartTx(wiring.Component):
    """Bytes taken on `i` leave on `txd`; `i.ready` is high while the line is idle."""

    def __init__(self, divisor: int) -> None:
        if divisor < 2:
            raise ValueError("the UART divisor must be at least 2")
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "txd": Out(1, init=1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        shift = Signal(10, init=0x3FF)
        count = Signal(range(self.divisor))
        left = Signal(range(11))
        m.d.comb += self.txd.eq(shift[0])
        with m.FSM(name="uart_tx"):
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [shift.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                                 count.eq(self.divisor - 1), left.eq(10)]
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += [count.eq(self.divisor - 1), shift.eq(Cat(shift[1:], 1)),
                                 left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "IDLE"
        return m


class UartRx(wiring.Component):
    """Bytes from `rxd` (asynchronous: synchronised here) on `o`. A byte whose stop bit is
    0 is dropped; a byte not taken before the next one completes is overwritten."""

    def __init__(self, divisor: int) -> None:
        if divisor < 2:
            raise ValueError("the UART divisor must be at least 2")
        self.divisor = divisor
        super().__init__({"rxd": In(1, init=1), "o": Out(stream.Signature(8))})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        rxd = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rxd, rxd, init=1)
        count = Signal(range(self.divisor))
        bits = Signal(8)
        nbit = Signal(range(9))

        # Output register: a completed byte stays until taken.
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM(name="uart_rx"):
            with m.State("IDLE"):
                with m.If(~rxd):
                    m.d.sync += count.eq(self.divisor // 2 - 1 if self.divisor > 2 else 0)
                    m.next = "START"
            with m.State("START"):          # to the middle of the start bit
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += [count.eq(self.divisor - 1), nbit.eq(0)]
                    with m.If(rxd):
                        m.next = "IDLE"     # a glitch, not a start bit
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += [count.eq(self.divisor - 1), bits.eq(Cat(bits[1:], rxd)),
                                 nbit.eq(nbit + 1)]
                    with m.If(nbit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    with m.If(rxd):
                        m.d.sync += [self.o.payload.eq(bits), self.o.valid.eq(1)]
                    m.next = "IDLE"
        return m


class UartDevice(wiring.Component):
    """`DeviceTop` (or `device`, any component with byte streams ``rx`` and ``tx``, e.g.
    the memory device on its DRAM) behind a UART: `rxd` from the host, `txd` to the host.

    A 16-byte FIFO after the receiver absorbs bytes that arrive while the device is busy
    for a few cycles; the protocol's request/reply discipline bounds the rest.
    """

    def __init__(self, cfg: HwConfig, timeout_cycles: int | None = None,
                 divisor: int | None = None, engine: bool = True,
                 device: wiring.Component | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.device = device
        self.divisor = divisor or cfg.uart_divisor
        self.timeout_cycles = timeout_cycles
        super().__init__({"rxd": In(1, init=1), "txd": Out(1, init=1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.uart_rx = urx = UartRx(self.divisor)
        m.submodules.uart_tx = utx = UartTx(self.divisor)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=16)
        m.submodules.device = dev = self.device or DeviceTop(self.cfg, self.timeout_cycles,
                                                             self.engine)

        # Pins.
        m.d.comb += [urx.rxd.eq(self.rxd), self.txd.eq(utx.txd)]
        # Receiver -> FIFO -> device -> transmitter.
        wiring.connect(m, urx.o, fifo.w_stream)
        wiring.connect(m, fifo.r_stream, dev.rx)
        wiring.connect(m, dev.tx, utx.i)
        return m
