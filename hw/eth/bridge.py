"""The project's framed protocol in UDP datagrams (`hw.spec.udp`, docs/protocol.md "Over
UDP"): `UdpBridge` sits between LiteEth's raw UDP port and the device's byte streams.

A request datagram is stored whole (``rxbuf``), checked (header; exactly one frame whose
length field matches the datagram), and its seq decides: the session's next seq (or seq 0
of a new session) is fed to the device and its reply frames, up to and including the first
that is not DATA, are stored (``txbuf``) and sent back; the session's last seq gets the
stored reply again without executing anything; any other seq gets STALE. Datagrams that
arrive while a request runs or its reply leaves are not taken: LiteEth drops them (the host
resends)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.spec import protocol, udp

__all__ = ["UdpBridge", "udp_rx_layout", "udp_tx_layout"]

#: A received datagram's beat: a byte, the last flag, the sender and the payload length.
udp_rx_layout = data.StructLayout({"data": 8, "last": 1, "error": 1, "ip": 32, "port": 16,
                                   "length": 16})
#: A datagram to send: a byte, the last flag, the destination and the payload length.
udp_tx_layout = data.StructLayout({"data": 8, "last": 1, "ip": 32, "port": 16, "length": 16})

_BUF = 2048                                    # bytes in each of rxbuf and txbuf
_MAGIC = int.from_bytes(udp.MAGIC, "little")
_SYNC = int.from_bytes(protocol.SYNC, "little")


class UdpBridge(wiring.Component):
    """``udp_rx`` / ``udp_tx``: LiteEth's raw UDP port (received / to send);
    ``dev_rx`` / ``dev_tx``: the device's byte streams (to it / from it); ``busy``: a
    datagram is being taken, run or answered. ``dst_port``: the port LiteEth's raw port
    filters received datagrams by and sends to (the local port, but the requester's while
    a reply leaves)."""

    def __init__(self, local_port: int) -> None:
        self.local_port = local_port
        super().__init__({
            "udp_rx": In(stream.Signature(udp_rx_layout)),
            "udp_tx": Out(stream.Signature(udp_tx_layout)),
            "dst_port": Out(16),
            "dev_rx": Out(stream.Signature(8)),
            "dev_tx": In(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.rxbuf = rxbuf = Memory(shape=8, depth=_BUF, init=[])
        m.submodules.txbuf = txbuf = Memory(shape=8, depth=_BUF, init=[])
        rx_w, rx_r = rxbuf.write_port(), rxbuf.read_port()
        tx_w, tx_r = txbuf.write_port(), txbuf.read_port()
        urx, utx = self.udp_rx, self.udp_tx

        cnt = Signal(16)                      # bytes of the datagram taken
        hdr = Signal(8 * udp.HEADER_BYTES)    # its header (shifted in, first byte lowest)
        fhead = Signal(40)                    # its frame's first 5 bytes (sync, op, length)
        bad = Signal()                        # an error flag or a body past the buffer
        req_ip, req_port = Signal(32), Signal(16)
        magic, version, flags = hdr[0:16], hdr[16:24], hdr[24:32]
        session, seq = hdr[32:64], hdr[64:96]
        body = Signal(16)
        m.d.comb += body.eq(cnt - udp.HEADER_BYTES)

        cur_session, last_seq, have = Signal(32), Signal(32), Signal()
        stored_len, stored_status = Signal(range(_BUF + 1)), Signal(8)
        status = Signal(8)
        k = Signal(range(_BUF + 1))           # index into a buffer while feeding / sending
        rlen = Signal(16)                     # reply bytes taken from the device
        overflow = Signal()
        pos, flen, op = Signal(16), Signal(16), Signal(8)  # the reply frame being parsed

        frame_ok = Signal()
        m.d.comb += frame_ok.eq(
            (cnt >= udp.HEADER_BYTES + protocol.FRAME_OVERHEAD) & ~bad
            & (magic == _MAGIC) & (version == udp.UDP_VERSION) & (flags == 0)
            & (fhead[0:16] == _SYNC) & (fhead[24:40] <= protocol.MAX_PAYLOAD)
            & (fhead[24:40] + protocol.FRAME_OVERHEAD == body))
        same = Signal()
        m.d.comb += same.eq(have & (session == cur_session))
        m.d.comb += self.dst_port.eq(self.local_port)

        send_len = Signal(16)
        m.d.comb += send_len.eq(udp.HEADER_BYTES + Mux((status == udp.Status.OK)
                                                       | (status == udp.Status.REPLAY),
                                                       stored_len, 0))
        hout = Signal(8 * udp.HEADER_BYTES)   # the reply's header: the request's ids (zero
        short = cnt < udp.HEADER_BYTES        # for a datagram shorter than a header)
        m.d.comb += hout.eq(Cat(Const(_MAGIC, 16), Const(udp.UDP_VERSION, 8), status,
                                Mux(short, 0, session), Mux(short, 0, seq)))

        with m.FSM():
            with m.State("RECV"):
                m.d.comb += urx.ready.eq(1)
                with m.If(urx.valid):
                    m.d.sync += cnt.eq(Mux(cnt == 0xFFFF, cnt, cnt + 1))
                    with m.If(cnt == 0):
                        m.d.sync += [req_ip.eq(urx.payload.ip), req_port.eq(urx.payload.port),
                                     bad.eq(0)]
                    with m.If(cnt < udp.HEADER_BYTES):
                        m.d.sync += hdr.eq(Cat(hdr[8:], urx.payload.data))
                    with m.Else():
                        m.d.comb += [rx_w.addr.eq(body), rx_w.data.eq(urx.payload.data),
                                     rx_w.en.eq(body < _BUF)]
                        with m.If(body < 5):
                            m.d.sync += fhead.word_select(body[:3], 8).eq(urx.payload.data)
                        with m.If(body >= udp.MAX_REQUEST_BYTES):
                            m.d.sync += bad.eq(1)
                    with m.If(urx.payload.last):
                        with m.If(urx.payload.error):
                            m.d.sync += bad.eq(1)
                        m.next = "DECIDE"
            with m.State("DECIDE"):
                m.d.sync += k.eq(0)
                with m.If(~frame_ok):
                    m.d.sync += status.eq(udp.Status.BAD_DATAGRAM)
                    m.next = "SEND"
                with m.Elif(same & (seq == last_seq)):
                    m.d.sync += status.eq(Mux(stored_status == udp.Status.TOO_LONG,
                                              udp.Status.TOO_LONG, udp.Status.REPLAY))
                    m.next = "SEND"
                with m.Elif((same & (seq == last_seq + 1)) | (~same & (seq == 0))):
                    m.d.sync += [cur_session.eq(session), last_seq.eq(seq), have.eq(1),
                                 rlen.eq(0), overflow.eq(0), pos.eq(0)]
                    m.next = "FEED"
                with m.Else():
                    m.d.sync += status.eq(udp.Status.STALE)
                    m.next = "SEND"
            with m.State("FEED"):             # k - 1: the index of the byte presented
                take = self.dev_rx.ready
                with m.If(k == 0):            # prime the read port: rxbuf[0] next cycle
                    m.d.comb += rx_r.addr.eq(0)
                    m.d.sync += k.eq(1)
                with m.Else():
                    m.d.comb += [self.dev_rx.valid.eq(1), self.dev_rx.payload.eq(rx_r.data),
                                 rx_r.addr.eq(Mux(take, k, k - 1))]
                    with m.If(take):
                        m.d.sync += k.eq(k + 1)
                        with m.If(k == body):
                            m.next = "REPLY"
            with m.State("REPLY"):
                dev = self.dev_tx
                m.d.comb += [tx_w.addr.eq(rlen), tx_w.data.eq(dev.payload)]
                with m.If(dev.valid):
                    m.d.comb += tx_w.en.eq(rlen < udp.MAX_REPLY_BYTES)
                    with m.If(rlen >= udp.MAX_REPLY_BYTES):
                        m.d.sync += overflow.eq(1)
                    m.d.sync += [rlen.eq(Mux(rlen == 0xFFFF, rlen, rlen + 1)), pos.eq(pos + 1)]
                    with m.Switch(pos):
                        with m.Case(2):
                            m.d.sync += op.eq(dev.payload)
                        with m.Case(3):
                            m.d.sync += flen[:8].eq(dev.payload)
                        with m.Case(4):
                            m.d.sync += flen[8:].eq(dev.payload)
                    with m.If((pos > 4) & (pos == flen + protocol.FRAME_OVERHEAD - 1)):
                        m.d.sync += pos.eq(0)
                        with m.If(op != protocol.Reply.DATA):
                            ovf = overflow | (rlen >= udp.MAX_REPLY_BYTES)
                            st = Mux(ovf, udp.Status.TOO_LONG, udp.Status.OK)
                            m.d.sync += [status.eq(st), stored_status.eq(st),
                                         stored_len.eq(Mux(ovf, 0, rlen + 1)), k.eq(0)]
                            m.next = "SEND"
            with m.State("SEND"):             # header from hout, then txbuf (read a cycle ahead)
                m.d.comb += [utx.valid.eq(1), utx.payload.ip.eq(req_ip),
                             utx.payload.port.eq(req_port), utx.payload.length.eq(send_len),
                             utx.payload.last.eq(k == send_len - 1), self.dst_port.eq(req_port)]
                b = k - udp.HEADER_BYTES
                with m.If(k < udp.HEADER_BYTES):
                    m.d.comb += [utx.payload.data.eq(hout.word_select(k[:4], 8)),
                                 tx_r.addr.eq(0)]
                with m.Else():
                    m.d.comb += [utx.payload.data.eq(tx_r.data),
                                 tx_r.addr.eq(Mux(utx.ready, b + 1, b))]
                with m.If(utx.ready):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == send_len - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "RECV"
        m.d.comb += self.dev_tx.ready.eq(1)   # taken in REPLY, dropped elsewhere (none come)
        m.d.comb += self.busy.eq(cnt != 0)
        return m
