"""The device top: host link protocol (hw/spec/protocol.py) over a byte stream, driving the
layer engine (hw/engine/, docs/engine.md).

`DeviceTop(cfg)` takes request bytes on `rx` and gives reply bytes on `tx`; boards put a
UART in front (hw/uart.py), the simulator harness (sim/harness_cpp/) a pipe. Every
request frame gets its reply, in order (docs/protocol.md):

- IDENTIFY (empty): OK with `Identity` (cfg.config_id, versions, MAX_PAYLOAD, features,
  array rows and cols).
- STATUS (empty): OK with `Status` (cycles since reset, good and bad frame counts, last
  error code, engine flags, engine cycles of the last pass).
- ECHO: OK with the same payload.
- LAYER_CONFIG (`LAYER_FORMAT`): sets the engine's layer registers and arms a pass
  (`start`); ERROR BUSY while a pass runs.
- LOAD_PARAMS: its payload goes to the engine's `params` stream; ERROR NOT_ARMED unless
  an armed pass still waits for parameters.
- RUN: its payload goes to the engine's input `i` (ERROR NOT_ARMED before the parameters
  are complete, or with input bytes after the pass has ended). Output values (1 byte, or
  `ceil(head_bits/8)` bytes little-endian in head mode) collect in a 2 KiB FIFO; whenever
  it holds MAX_PAYLOAD bytes they leave as a DATA frame; when the payload is consumed, the
  reply OK carries what the FIFO holds (up to MAX_PAYLOAD). A RUN with an empty payload
  collects the outputs still coming.
- anything else: ERROR with (error code, opcode byte): BAD_CRC, LENGTH_TOO_LONG, TIMEOUT
  (a frame stopped for `timeout_cycles`), BAD_LENGTH, UNKNOWN_OPCODE.

The device takes no request bytes while it works on a request (`rx.ready` low): a host
sends a request, then waits for its reply. `engine=False` builds the link alone
(LAYER_CONFIG, LOAD_PARAMS, RUN answer UNSUPPORTED; `Feature.ENGINE` clear).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.engine import LayerEngine
from hw.fifo import BlockRamFifo
from hw.link import FrameReceiver, FrameSender, PayloadReader
from hw.spec import protocol
from hw.spec.config import HwConfig
from hw.top.command import REPLY_VALUE_BYTES, CommandDecoder
from hw.top.layer_config import LayerConfigLoader
from hw.top.packer import BeatPacker, ValuePacker
from hw.top.reply import ReplySender

if TYPE_CHECKING:
    from hw.eth import EthSettings

__all__ = ["GATEWARE_VERSION", "OUT_FIFO_DEPTH", "DeviceTop", "identity", "link_endpoint"]

#: Bumped with every change of the device's observable behaviour.
GATEWARE_VERSION = 6
#: Output FIFO of RUN (bytes): two frames' worth, so the engine keeps running while one
#: DATA frame leaves.
OUT_FIFO_DEPTH = 2 * protocol.MAX_PAYLOAD


def link_endpoint(m: Module, top: wiring.Component, decoder: CommandDecoder,
                  timeout_cycles: int) -> ReplySender:
    """The protocol endpoint around a command decoder, added to `m`: `top`'s request bytes
    (``rx``) to checked frames and their payloads, to the decoder; its replies to frames
    and reply bytes (``tx``). Returns the reply sender, whose ``fifo`` stream the top
    feeds (RUN's and MEM_READ's bytes)."""
    m.submodules.receiver = rcv = FrameReceiver(protocol.MAX_PAYLOAD, timeout_cycles)
    m.submodules.reader = rdr = PayloadReader(protocol.MAX_PAYLOAD)
    m.submodules.decoder = decoder
    m.submodules.replies = rep = ReplySender(REPLY_VALUE_BYTES)
    m.submodules.sender = snd = FrameSender()
    wiring.connect(m, wiring.flipped(top.rx), rcv.rx)
    wiring.connect(m, rcv.frame, decoder.frame)
    m.d.comb += [rcv.rd_addr.eq(rdr.rd_addr), rdr.rd_data.eq(rcv.rd_data),
                 rdr.start.eq(decoder.read_start), rdr.length.eq(decoder.read_length)]
    wiring.connect(m, rdr.o, decoder.payload)
    wiring.connect(m, decoder.reply, rep.req)
    wiring.connect(m, decoder.echo, rep.payload)
    wiring.connect(m, rep.hdr, snd.hdr)
    wiring.connect(m, rep.data, snd.data)
    wiring.connect(m, snd.tx, wiring.flipped(top.tx))
    m.d.comb += decoder.reply_done.eq(rep.done)
    return rep


def identity(cfg: HwConfig, engine: bool = True, memory: bool = False,
             dram: bool = False, eth: EthSettings | None = None,
             dram_phy: int = 0) -> protocol.Identity:
    """The IDENTIFY reply of a device top built for `cfg`: `DeviceTop` (the streaming
    engine, or the link alone) or `MemDeviceTop` (``memory``; ``dram``: on a DRAM
    controller that initialises at boot, whose CSR layout is ``dram_phy``; ``eth``: also
    on Ethernet at these addresses, `Feature.ETHERNET` with the IPv4 address and UDP
    port)."""
    features = protocol.Feature(0)
    if engine:
        features |= protocol.Feature.ENGINE
    if memory:
        features |= protocol.Feature.MEMORY
    if dram:
        features |= protocol.Feature.DRAM
    if eth is not None:
        features |= protocol.Feature.ETHERNET
    return protocol.Identity(cfg.config_id, protocol.PROTOCOL_VERSION, GATEWARE_VERSION,
                             protocol.MAX_PAYLOAD, features, cfg.array_rows, cfg.array_cols,
                             eth.ip_int if eth else 0, eth.udp_port if eth else 0,
                             dram_phy if dram else 0)


class DeviceTop(wiring.Component):
    """Protocol endpoint over a byte stream (see the module docstring for the contract).

    Request bytes -> `FrameReceiver` -> `CommandDecoder` (payload through a
    `PayloadReader`) -> `ReplySender` -> `FrameSender` -> reply bytes; with the engine,
    LAYER_CONFIG payloads go through a `LayerConfigLoader` to the engine's ``layer``
    and ``start``, LOAD_PARAMS and RUN payloads to its ``params`` and ``i``, and its
    outputs through a `ValuePacker` into the output FIFO the RUN replies read.

    `timeout_cycles` is the inter-byte timeout of a frame; the default is the protocol's
    board value (`protocol.default_timeout_cycles`), simulations pass a smaller one.
    """

    def __init__(self, cfg: HwConfig, timeout_cycles: int | None = None,
                 engine: bool = True) -> None:
        self.cfg = cfg
        self.engine = engine
        self.timeout_cycles = timeout_cycles or protocol.default_timeout_cycles(
            cfg.uart_divisor)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "active": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        dec = CommandDecoder(identity(self.cfg, self.engine).encode(), self.engine)
        rep = link_endpoint(m, self, dec, self.timeout_cycles)
        m.d.comb += self.active.eq(dec.active)
        if not self.engine:
            return m

        m.submodules.engine = eng = LayerEngine(self.cfg)
        m.submodules.config = lcfg = LayerConfigLoader(self.cfg)
        m.submodules.packer = pack = ValuePacker(self.cfg)
        m.submodules.beats = beats = BeatPacker(self.cfg.param_beat)
        # The output queue: its block RAM's reads land in registers next to it and run
        # ahead into a small output queue before the sender's byte mux.
        m.submodules.out_fifo = fifo = BlockRamFifo(8, OUT_FIFO_DEPTH)

        # LAYER_CONFIG: the payload to the layer registers, then `start`.
        wiring.connect(m, dec.config, lcfg.payload)
        m.d.comb += [lcfg.go.eq(dec.config_go), dec.config_done.eq(lcfg.done),
                     dec.config_ok.eq(lcfg.ok), eng.layer.eq(lcfg.layer), eng.start.eq(lcfg.start),
                     lcfg.shape_ok.eq(eng.shape_ok)]

        # LOAD_PARAMS and RUN: payloads to the engine, its outputs as bytes to the FIFO.
        wiring.connect(m, dec.params, beats.i)
        wiring.connect(m, beats.o, eng.params)
        m.d.comb += beats.clear.eq(lcfg.start)
        m.d.comb += [eng.i.valid.eq(dec.pixels.valid), dec.pixels.ready.eq(eng.i.ready),
                     eng.i.payload.data[0].eq(dec.pixels.payload)]     # one value a transfer
        wiring.connect(m, eng.o, pack.i)
        wiring.connect(m, pack.o, fifo.w)
        wiring.connect(m, fifo.r, rep.fifo)
        m.d.comb += [pack.head.eq(lcfg.layer.head), dec.fifo_level.eq(fifo.level),
                     dec.engine_state.eq(Cat(eng.busy, eng.done, eng.loaded, eng.param_err,
                                             eng.cycles))]
        return m
