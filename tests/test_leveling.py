"""The host's read leveling (sw/runtime/leveling.py) against a Python model of a LiteDRAM
controller's CSRs (`PhyModel`): its DFII in software control stores what a write burst
carries and answers a read burst with it, each byte lane's bits correct only where the
lane's PHY setting (bitslip, delay: set through the model's dly_sel / rdly_* strobe
registers, as A7DDRPHY and ECP5DDRPHY have them) lies in a configurable window, garbage
elsewhere. Corner cases (windows at the edges, two bitslips with windows, none, lone
working delays as noise, a setting that fails its check) and seeded random windows;
the driver's automatic leveling before an upload (`Device.check_memory`) over a link
that speaks the protocol to the model."""

from __future__ import annotations

import random
import struct

import pytest

from hw.spec import protocol
from hw.spec.config import DEFAULT
from hw.spec.dram import CSR_MAPS, DfiiCommand, DfiiControl, DramCsrMap, DramPhy
from hw.spec.protocol import (
    CSR_LEVELED_WORD,
    DramFlag,
    Feature,
    FrameDecoder,
    Identity,
    Op,
    Reply,
    Status,
    encode_frame,
)
from sw.runtime.device import Device
from sw.runtime.leveling import LevelingError, level
from sw.runtime.link import Link

A7 = CSR_MAPS[DramPhy.A7DDRPHY]
ECP5 = CSR_MAPS[DramPhy.ECP5DDRPHY]


class PhyModel:
    """The CSRs of a controller laid out as `cmap`. ``windows[lane]``: the (bitslip, delay)
    settings at which the lane reads correctly; ``fail_after``: every read is wrong after
    that many read bursts. It checks the protocol: commands only in software control, a
    write or read only to an activated row of bank 0, strobes only with lanes selected."""

    def __init__(self, cmap: DramCsrMap, windows: list[set[tuple[int, int]]],
                 seed: int = 0, fail_after: int | None = None) -> None:
        self.cmap, self.windows = cmap, windows
        self.rng = random.Random(seed)
        self.fail_after = fail_after
        self.regs: dict[int, int] = {cmap.control: DfiiControl.SEL}
        self.lev = cmap.leveling
        self.bitslip = [0] * cmap.lanes
        self.delay = [0] * cmap.lanes
        self.row_open = False
        self.stored: list[int] | None = None
        self.reads = 0
        self.leveled = 0
        self.seen = 0

    # -- CsrPort
    def csr_read(self, addr: int) -> int:
        if addr == CSR_LEVELED_WORD:
            return self.leveled
        if self.lev is not None and addr == self.lev.burstdet_seen:
            return self.seen
        return self.regs.get(addr, 0)

    def csr_write(self, addr: int, value: int) -> None:
        assert 0 <= value < 1 << 32
        cm, lev = self.cmap, self.lev
        if addr == CSR_LEVELED_WORD:
            self.leveled = value & 1
            return
        if lev is not None and addr in (lev.rdly_dq_rst, lev.rdly_dq_inc,
                                        lev.rdly_dq_bitslip_rst, lev.rdly_dq_bitslip):
            sel = self.regs.get(lev.dly_sel, 0)
            assert sel, "a delay/bitslip strobe with no lane selected"
            for lane in range(cm.lanes):
                if sel >> lane & 1:
                    if addr == lev.rdly_dq_rst:
                        self.delay[lane] = 0
                    elif addr == lev.rdly_dq_inc:
                        self.delay[lane] = (self.delay[lane] + 1) % lev.delays
                    elif addr == lev.rdly_dq_bitslip_rst:
                        self.bitslip[lane] = 0
                    else:
                        self.bitslip[lane] = (self.bitslip[lane] + 1) % lev.bitslips
            return
        if lev is not None and addr == lev.burstdet_clr:
            self.seen = 0
            return
        self.regs[addr] = value
        for p in range(cm.phases):
            if addr == cm.phase_reg(p, "command_issue"):
                self._command(p, self.regs.get(cm.phase_reg(p, "command"), 0))

    def _data(self, p: int, reg: str) -> int:
        base, n = self.cmap.phase_reg(p, reg), self.cmap.data_words
        return sum(self.regs.get(base + k, 0) << (32 * (n - 1 - k)) for k in range(n))

    def _command(self, p: int, cmd: int) -> None:
        cm = self.cmap
        assert not self.regs[cm.control] & DfiiControl.SEL, "DFII command in hardware control"
        cmd = DfiiCommand(cmd)
        addr = self.regs.get(cm.phase_reg(p, "address"), 0)
        bank = self.regs.get(cm.phase_reg(p, "baddress"), 0)
        if cmd == DfiiCommand.RAS | DfiiCommand.CS:
            assert (p, addr, bank) == (0, 0, 0) and not self.row_open
            self.row_open = True
        elif cmd == DfiiCommand.RAS | DfiiCommand.WE | DfiiCommand.CS:
            self.row_open = False
        elif cmd == DfiiCommand.CAS | DfiiCommand.WE | DfiiCommand.CS | DfiiCommand.WRDATA:
            assert self.row_open and p == cm.wrphase and (addr, bank) == (0, 0)
            self.stored = [self._data(q, "wrdata") for q in range(cm.phases)]
        elif cmd == DfiiCommand.CAS | DfiiCommand.CS | DfiiCommand.RDDATA:
            assert self.row_open and p == cm.rdphase and (addr, bank) == (0, 0)
            self._read()
        else:
            raise AssertionError(f"unexpected DFII command {cmd!r}")

    def _read(self) -> None:
        cm = self.cmap
        assert self.stored is not None, "a read before any write"
        self.reads += 1
        broken = self.fail_after is not None and self.reads > self.fail_after
        self.seen = 0
        for p in range(cm.phases):
            value = self.stored[p]
            for lane in range(cm.lanes):
                if not broken and (self.bitslip[lane], self.delay[lane]) in self.windows[lane]:
                    self.seen |= 1 << lane
                    continue
                for b in range(cm.beats):     # a wrong byte on every beat of the lane
                    value ^= self.rng.randrange(1, 256) << (b * cm.databits + 8 * lane)
            base, n = cm.phase_reg(p, "rddata"), cm.data_words
            for k in range(n):
                self.regs[base + k] = (value >> (32 * (n - 1 - k))) & 0xFFFF_FFFF


def window(bitslip: int, first: int, last: int) -> set[tuple[int, int]]:
    return {(bitslip, d) for d in range(first, last + 1)}


def run(cmap: DramCsrMap, windows: list[set[tuple[int, int]]], **kw):
    model = PhyModel(cmap, windows, seed=kw.pop("model_seed", 1), fail_after=kw.pop(
        "fail_after", None))
    return model, level(model, cmap, **kw)


def assert_applied(model: PhyModel, res) -> None:
    """The model's PHY holds the result, hardware control is back, the flag is set."""
    assert [(r.bitslip, r.delay) for r in res.lanes] == list(zip(model.bitslip, model.delay,
                                                                 strict=True))
    assert model.regs[model.cmap.control] == DfiiControl.SEL
    assert model.leveled == 1 and not model.row_open


def test_windows_at_the_edges() -> None:
    # lane 0 works at the first delays of the last bitslip, lane 1 at the last of the first
    model, res = run(A7, [window(7, 0, 5), window(0, 26, 31)])
    assert [(r.lane, r.bitslip, r.window, r.delay) for r in res.lanes] == [
        (0, 7, (0, 5), 2), (1, 0, (26, 31), 28)]
    assert res.lanes[0].runs == (0,) * 7 + (6,) and res.lanes[1].runs == (6,) + (0,) * 7
    assert res.checks == 8 * 32 + 4          # the scan, then the check of the setting
    assert_applied(model, res)
    assert "lane 1: bitslip 0, delays 26..31 work, set 28" in res.describe()


def test_two_bitslips_with_windows_take_the_longer() -> None:
    model, res = run(A7, [window(1, 4, 10) | window(2, 12, 25),
                          window(3, 0, 31) | window(4, 0, 30)])
    assert [(r.bitslip, r.window, r.delay) for r in res.lanes] == [
        (2, (12, 25), 18), (3, (0, 31), 15)]
    assert res.lanes[0].runs[1:3] == (7, 14)
    assert_applied(model, res)


def test_no_window_is_an_error_and_leaves_hardware_control() -> None:
    model = PhyModel(A7, [window(2, 3, 9), set()])
    with pytest.raises(LevelingError, match=r"no working read window .* lane\(s\) 1"):
        level(model, A7)
    assert model.regs[A7.control] == DfiiControl.SEL and model.leveled == 0
    model = PhyModel(A7, [set(), set()])
    with pytest.raises(LevelingError, match=r"lane\(s\) 0, 1: the DRAM cannot be read"):
        level(model, A7)


def test_lone_working_delays_are_noise() -> None:
    # glitches: single working delays at other bitslips, one beside the real window's
    # bitslip; lane 1 has nothing but lone working delays: no window
    lane0 = window(5, 10, 20) | {(1, 3), (6, 31), (5, 25), (0, 0)}
    model, res = run(A7, [lane0, window(2, 8, 9) | {(7, 1)}])
    assert [(r.bitslip, r.window, r.delay) for r in res.lanes] == [(5, (10, 20), 15),
                                                                   (2, (8, 9), 8)]
    assert res.lanes[0].runs[1] == 0 and res.lanes[0].runs[6] == 0
    assert_applied(model, res)
    with pytest.raises(LevelingError, match="lane"):
        level(PhyModel(A7, [lane0, {(1, 3), (2, 5), (2, 7)}]), A7)


def test_a_window_split_by_a_glitch_takes_the_longer_part() -> None:
    model, res = run(A7, [window(0, 2, 20) - {(0, 9)}, window(6, 0, 31) - {(6, 4)}])
    assert [(r.bitslip, r.window, r.delay) for r in res.lanes] == [(0, (10, 20), 15),
                                                                   (6, (5, 31), 18)]
    assert_applied(model, res)


def test_ecp5_layout_with_burst_detector() -> None:
    # 4 bitslips x 8 delays, 64-bit phases in two CSR words, the DQS burst detector
    model, res = run(ECP5, [window(3, 0, 7), window(1, 2, 5)])
    assert [(r.bitslip, r.window, r.delay) for r in res.lanes] == [(3, (0, 7), 3),
                                                                   (1, (2, 5), 3)]
    assert res.checks == 4 * 8 + 4
    assert_applied(model, res)


def test_an_unstable_setting_fails_its_check() -> None:
    model = PhyModel(A7, [window(1, 4, 12), window(1, 4, 12)], fail_after=8 * 32 + 1)
    with pytest.raises(LevelingError, match="failed check 2 of 4"):
        level(model, A7)
    assert model.regs[A7.control] == DfiiControl.SEL and model.leveled == 0


@pytest.mark.parametrize("phy", [DramPhy.SIM_SDR, DramPhy.SIM_DDR3, DramPhy.GENSDRPHY])
def test_layouts_without_leveling_check_the_data_path(phy: DramPhy) -> None:
    cmap = CSR_MAPS[phy]
    full = [{(0, 0)}] * cmap.lanes
    model, res = run(cmap, full)
    assert [(r.bitslip, r.window, r.delay) for r in res.lanes] == [(0, (0, 0), 0)] * 2
    assert res.checks == 1 + 4 and model.leveled == 1
    with pytest.raises(LevelingError, match="lane"):
        level(PhyModel(cmap, [{(0, 0)}, set()]), cmap)


@pytest.mark.parametrize("seed", range(12))
def test_seeded_random_windows(seed: int) -> None:
    rng = random.Random(seed)
    cmap = rng.choice([A7, ECP5])
    lev = cmap.leveling
    windows, want = [], []
    for _ in range(cmap.lanes):
        bs = rng.randrange(lev.bitslips)
        n = rng.randrange(2, lev.delays + 1)
        first = rng.randrange(lev.delays - n + 1)
        w = window(bs, first, first + n - 1)
        # noise: lone working delays at other bitslips, never beside each other
        for _ in range(rng.randrange(4)):
            b = rng.choice([b for b in range(lev.bitslips) if b != bs])
            d = rng.randrange(lev.delays)
            if not {(b, d - 1), (b, d + 1)} & w:
                w.add((b, d))
        windows.append(w)
        want.append((bs, (first, first + n - 1), first + (n - 1) // 2))
    model, res = run(cmap, windows, seed=seed, model_seed=seed)
    assert [(r.bitslip, r.window, r.delay) for r in res.lanes] == want
    assert_applied(model, res)


# -- the driver: leveling before the upload ----------------------------------------------

class ModelLink(Link):
    """A link to a device answering IDENTIFY, STATUS, CSR_READ and CSR_WRITE from a
    `PhyModel` (the DRAM up, UNLEVELED until the leveled flag is set)."""

    name = "model link"

    def __init__(self, model: PhyModel) -> None:
        self.model, self.out = model, b""
        self.decoder = FrameDecoder()
        self.ops: list[int] = []

    def write(self, data: bytes) -> None:
        for f in self.decoder.feed(data):
            self.ops.append(f.opcode)
            m = self.model
            if f.opcode == Op.IDENTIFY:
                reply = Identity(DEFAULT.config_id, protocol.PROTOCOL_VERSION, 1,
                                 protocol.MAX_PAYLOAD, Feature.MEMORY | Feature.DRAM,
                                 DEFAULT.array_rows, DEFAULT.array_cols,
                                 dram_phy=m.cmap.phy).encode()
            elif f.opcode == Op.STATUS:
                flags = DramFlag.INIT_DONE | (DramFlag.LEVELED if m.leveled
                                              else DramFlag.UNLEVELED)
                reply = Status(0, 0, 0, 0, dram=flags).encode()
            elif f.opcode == Op.CSR_READ:
                reply = struct.pack("<I", m.csr_read(*struct.unpack("<I", f.payload)))
            else:
                assert f.opcode == Op.CSR_WRITE
                m.csr_write(*struct.unpack("<II", f.payload))
                reply = b""
            self.out += encode_frame(Reply.OK, reply)

    def read(self, timeout: float) -> bytes:
        out, self.out = self.out, b""
        return out

    def close(self) -> None:
        """Nothing to release: the link is a Python object."""


def test_driver_levels_an_unleveled_dram_before_use() -> None:
    model = PhyModel(A7, [window(4, 9, 17), window(5, 11, 21)])
    dev = Device(ModelLink(model), timeout=1.0, retries=0)
    dev.check_memory(dev.identify(DEFAULT))
    assert dev.leveling is not None
    assert [(r.bitslip, r.delay) for r in dev.leveling.lanes] == [(4, 13), (5, 16)]
    assert_applied(model, dev.leveling)
    assert dev.status().dram == DramFlag.INIT_DONE | DramFlag.LEVELED
    # once leveled, a second check runs nothing
    n = len(dev.link.ops)
    dev.check_memory(dev.identify(DEFAULT))
    assert dev.link.ops[n:] == [Op.IDENTIFY, Op.STATUS]


def test_driver_leveling_can_be_skipped_and_fails_clearly() -> None:
    model = PhyModel(A7, [window(4, 9, 17), window(5, 11, 21)])
    dev = Device(ModelLink(model), timeout=1.0, retries=0, level=False)
    dev.check_memory(dev.identify(DEFAULT))
    assert dev.leveling is None and model.reads == 0 and model.leveled == 0
    dev = Device(ModelLink(PhyModel(A7, [set(), window(0, 0, 3)])), timeout=1.0, retries=0)
    with pytest.raises(LevelingError, match=r"lane\(s\) 0"):
        dev.check_memory(dev.identify(DEFAULT))


def test_host_levels_unless_told_not_to(monkeypatch) -> None:
    """sw/host.py asks the device backend to level (the default) or not (--no-level)."""
    import sw.host as host
    seen: dict[str, object] = {}
    monkeypatch.setattr(host, "get_bundle", lambda args, hw: None)
    monkeypatch.setattr(host.detect, "make_backend", lambda *a, **k: seen.update(k))
    for extra, want in (([], True), (["--no-level"], False)):
        host.make_backend(host.parse_args(["--image", "dog.jpg", "--port", "/dev/null",
                                           *extra]), DEFAULT)
        assert seen["level"] is want
