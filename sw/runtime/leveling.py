"""Host-driven read leveling of a board's DDR3 (docs/dram.md): the scan LiteX's BIOS runs at
boot (liblitedram's `sdram_read_leveling`), run by the host over CSR_READ / CSR_WRITE.

With the DRAM controller in software control (LiteDRAM's DFII), for every read bitslip and
every read delay step of the PHY a fresh seeded pattern is written to a test row through
the DFII phases' wrdata registers and read back through their rddata registers; each byte
lane is scored on its own bits (the lanes' delays are independent, so all lanes are stepped
together and judged separately). Per lane, the bitslip with the longest run of working
delays wins (a run shorter than `min_window` is noise, as the BIOS ignores a lone working
delay at a window's edge); its delay goes to the run's centre. The result is checked with
more patterns, the controller goes back to hardware control and the device's leveled flag
is set (STATUS: `DramFlag.LEVELED`).

`level` takes anything with ``csr_read(addr) -> int`` and ``csr_write(addr, value)``: a
`sw.runtime.device.Device`, or a model (tests/test_leveling.py). No Amaranth here.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hw.spec.dram import SOFTWARE_CONTROL, DfiiCommand, DfiiControl, DramCsrMap, ReadLeveling
from hw.spec.protocol import CSR_LEVELED_WORD

__all__ = ["CsrPort", "Dfii", "LaneResult", "LevelingError", "LevelingResult", "level"]

#: Column address bit 10 of a precharge: all banks.
_PRECHARGE_ALL = 1 << 10


class CsrPort(Protocol):
    """Access to the DRAM controller's CSRs (word addresses, 32-bit values)."""

    def csr_read(self, addr: int) -> int: ...

    def csr_write(self, addr: int, value: int) -> None: ...


class LevelingError(RuntimeError):
    """The scan found no working read window for a lane, or the chosen setting failed its
    check: the DRAM cannot be read reliably."""


@dataclass(frozen=True)
class LaneResult:
    """One byte lane: the chosen ``bitslip``, the working delays of the chosen window
    (``window``: first, last, inclusive), the ``delay`` set (its centre), and per bitslip
    the longest window found (``runs``)."""

    lane: int
    bitslip: int
    window: tuple[int, int]
    delay: int
    runs: tuple[int, ...]


@dataclass(frozen=True)
class LevelingResult:
    """The leveling of one device: its layout's name, each lane's result, the write/read
    checks made and the CSR requests sent."""

    phy: str
    lanes: tuple[LaneResult, ...]
    checks: int
    requests: int

    def describe(self) -> str:
        """One line per lane, as the host prints it."""
        head = (f"DRAM read leveling ({self.phy}): {self.checks} pattern checks, "
                f"{self.requests} CSR requests")
        return "\n".join([head] + [
            f"  lane {r.lane}: bitslip {r.bitslip}, delays {r.window[0]}..{r.window[1]} "
            f"work, set {r.delay} (longest window per bitslip: "
            f"{' '.join(str(n) for n in r.runs)})" for r in self.lanes])


class Dfii:
    """LiteDRAM's DFII (software control) on a `CsrPort`, laid out as `cmap`; counts the
    requests it sends (``requests``)."""

    def __init__(self, port: CsrPort, cmap: DramCsrMap) -> None:
        self.port, self.cmap = port, cmap
        self.requests = 0

    def write(self, addr: int, value: int) -> None:
        self.requests += 1
        self.port.csr_write(addr, value)

    def read(self, addr: int) -> int:
        self.requests += 1
        return self.port.csr_read(addr)

    def software_control(self) -> None:
        self.write(self.cmap.control, SOFTWARE_CONTROL)

    def hardware_control(self) -> None:
        self.write(self.cmap.control, DfiiControl.SEL)

    def command(self, phase: int, cmd: DfiiCommand) -> None:
        """Issue `cmd` on `phase` (its address / bank registers as last written)."""
        self.write(self.cmap.phase_reg(phase, "command"), int(cmd))
        self.write(self.cmap.phase_reg(phase, "command_issue"), 1)

    def address(self, phase: int, address: int, bank: int = 0) -> None:
        self.write(self.cmap.phase_reg(phase, "address"), address)
        self.write(self.cmap.phase_reg(phase, "baddress"), bank)

    def set_wrdata(self, phase: int, value: int) -> None:
        """One phase's DFI write data (`DramCsrMap.dfi_databits` bits), its most
        significant CSR word first."""
        base, n = self.cmap.phase_reg(phase, "wrdata"), self.cmap.data_words
        for k in range(n):
            self.write(base + k, (value >> (32 * (n - 1 - k))) & 0xFFFF_FFFF)

    def get_rddata(self, phase: int) -> int:
        base, n = self.cmap.phase_reg(phase, "rddata"), self.cmap.data_words
        value = 0
        for k in range(n):
            value = (value << 32) | self.read(base + k)
        return value

    def prepare(self) -> None:
        """Software control, all banks precharged, the test row's addresses set (row 0,
        column 0 of bank 0 on the phases the tests use)."""
        cm = self.cmap
        self.software_control()
        self.address(0, _PRECHARGE_ALL)
        self.command(0, DfiiCommand.RAS | DfiiCommand.WE | DfiiCommand.CS)
        for phase in sorted({0, cm.wrphase, cm.rdphase}):
            self.address(phase, 0)

    def write_read(self, pattern: list[int], lev: ReadLeveling | None = None) -> list[int]:
        """Activate the test row, write one burst (`pattern`: each phase's DFI data), read
        it back, precharge; the data read, per phase (`DramCsrMap.read_phases`).
        ECP5DDRPHY's burst detector (``lev.burstdet_*``) is cleared before the read;
        `burst_seen` then tells."""
        cm = self.cmap
        self.command(0, DfiiCommand.RAS | DfiiCommand.CS)                       # activate
        for phase, value in enumerate(pattern):
            self.set_wrdata(phase, value)
        self.command(cm.wrphase, DfiiCommand.CAS | DfiiCommand.WE | DfiiCommand.CS
                     | DfiiCommand.WRDATA)
        if lev is not None and lev.burstdet_clr is not None:
            self.write(lev.burstdet_clr, 1)
        self.command(cm.rdphase, DfiiCommand.CAS | DfiiCommand.CS | DfiiCommand.RDDATA)
        self.command(0, DfiiCommand.RAS | DfiiCommand.WE | DfiiCommand.CS)      # precharge
        return [self.get_rddata(p) for p in range(cm.read_phases)]

    def burst_seen(self, lev: ReadLeveling | None) -> int:
        """Lanes (one bit each) whose read burst the PHY detected (all without a detector)."""
        if lev is None or lev.burstdet_seen is None:
            return (1 << self.cmap.lanes) - 1
        return self.read(lev.burstdet_seen)

    def lane_errors(self, seed: int, lev: ReadLeveling | None = None) -> list[int]:
        """One write/read of the pattern of `seed`: per lane, the bits read wrong in the
        phases whose read data the PHY reports (`DramCsrMap.read_phases`), plus one where
        the lane's burst went undetected."""
        cm = self.cmap
        rng = random.Random(seed)
        pattern = [rng.getrandbits(cm.dfi_databits) for _ in range(cm.phases)]
        got = self.write_read(pattern, lev)
        seen = self.burst_seen(lev)
        return [sum(bin((w ^ g) & cm.lane_mask(lane)).count("1")
                    for w, g in zip(pattern[:cm.read_phases], got[:cm.read_phases],
                                    strict=True)) + (0 if seen >> lane & 1 else 1)
                for lane in range(cm.lanes)]


def _strobe(dfii: Dfii, lev: ReadLeveling, lanes: int, reg: int, times: int = 1) -> None:
    """Write 1 `times` times to the strobe register `reg` for the lanes `lanes` (a mask)."""
    dfii.write(lev.dly_sel, lanes)
    for _ in range(times):
        dfii.write(reg, 1)
    dfii.write(lev.dly_sel, 0)


def _longest_run(ok: list[bool], min_window: int) -> tuple[int, int] | None:
    """The first longest run of True in `ok` (first, last), at least `min_window` long."""
    best: tuple[int, int] | None = None
    start = None
    for i, good in enumerate([*ok, False]):
        if good and start is None:
            start = i
        elif not good and start is not None:
            if i - start >= min_window and (best is None or i - start > best[1] - best[0] + 1):
                best = (start, i - 1)
            start = None
    return best


def level(port: CsrPort, cmap: DramCsrMap, *, seed: int = 0x5EED, min_window: int = 2,
          verify: int = 4, progress: Callable[[str], None] | None = None) -> LevelingResult:
    """Level the reads of the DRAM behind `port` (laid out as `cmap`), mark it leveled and
    return what was chosen; LevelingError (the controller back in hardware control, the
    flag not set) when a lane has no working window of `min_window` delays or the chosen
    setting fails one of `verify` further patterns. A layout without PHY leveling
    registers (SDR, the simulation model) gets the data-path check alone: one bitslip,
    one delay."""
    lev = cmap.leveling
    bitslips, delays = (lev.bitslips, lev.delays) if lev else (1, 1)
    min_window = min(min_window, delays)
    all_lanes = (1 << cmap.lanes) - 1
    dfii = Dfii(port, cmap)
    checks = 0
    # ok[lane][bitslip][delay], errors[lane][bitslip]: the scan
    ok = [[[False] * delays for _ in range(bitslips)] for _ in range(cmap.lanes)]
    errors = [[0] * bitslips for _ in range(cmap.lanes)]
    try:
        dfii.prepare()
        if lev:
            _strobe(dfii, lev, all_lanes, lev.rdly_dq_bitslip_rst)
        for bs in range(bitslips):
            if lev:
                _strobe(dfii, lev, all_lanes, lev.rdly_dq_rst)
            for d in range(delays):
                errs = dfii.lane_errors(seed + checks, lev)
                checks += 1
                for lane, e in enumerate(errs):
                    ok[lane][bs][d] = e == 0
                    errors[lane][bs] += e
                if lev and d + 1 < delays:
                    _strobe(dfii, lev, all_lanes, lev.rdly_dq_inc)
            if lev and bs + 1 < bitslips:
                _strobe(dfii, lev, all_lanes, lev.rdly_dq_bitslip)
            if progress:
                progress(f"read leveling: bitslip {bs + 1}/{bitslips} scanned")
        lanes = []
        for lane in range(cmap.lanes):
            runs = [_longest_run(ok[lane][bs], min_window) for bs in range(bitslips)]
            lengths = tuple(0 if r is None else r[1] - r[0] + 1 for r in runs)
            best = max(range(bitslips), key=lambda b: (lengths[b], -errors[lane][b], -b))
            win = runs[best]
            if win is None:
                continue
            lanes.append(LaneResult(lane, best, win, (win[0] + win[1]) // 2, lengths))
        missing = sorted(set(range(cmap.lanes)) - {r.lane for r in lanes})
        if missing:
            raise LevelingError(
                f"read leveling ({cmap.phy.name}): no working read window of {min_window} "
                f"delays at any of {bitslips} bitslips for byte lane(s) "
                f"{', '.join(map(str, missing))}: the DRAM cannot be read (check its "
                "clocking, pins and the board's DRAM config; docs/dram.md)")
        if lev:
            for r in lanes:
                _strobe(dfii, lev, 1 << r.lane, lev.rdly_dq_bitslip_rst)
                _strobe(dfii, lev, 1 << r.lane, lev.rdly_dq_bitslip, r.bitslip)
                _strobe(dfii, lev, 1 << r.lane, lev.rdly_dq_rst)
                _strobe(dfii, lev, 1 << r.lane, lev.rdly_dq_inc, r.delay)
        for k in range(verify):
            errs = dfii.lane_errors(seed + checks, lev)
            checks += 1
            bad = [lane for lane, e in enumerate(errs) if e]
            if bad:
                raise LevelingError(
                    f"read leveling ({cmap.phy.name}): the chosen setting of lane(s) "
                    f"{', '.join(map(str, bad))} failed check {k + 1} of {verify} "
                    f"({sum(errs)} bits wrong): the read window is unstable")
    except BaseException:
        # leave the controller running; the first error counts (the link itself may be
        # what failed, so a second one here is dropped)
        with contextlib.suppress(Exception):
            dfii.hardware_control()
        raise
    dfii.hardware_control()
    dfii.write(CSR_LEVELED_WORD, 1)
    return LevelingResult(cmap.phy.name, tuple(lanes), checks, dfii.requests)
