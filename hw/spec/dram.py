"""The DRAM controllers' CSR layouts as the host sees them over CSR_READ / CSR_WRITE
(`hw.spec.protocol`): where LiteDRAM's DFII (the controller's software-control port) and the
PHY's read-delay and bitslip registers are, and what the read leveling scans
(docs/dram.md). Part of the contract layer: nothing of ours is imported.

IDENTIFY's ``dram_phy`` byte names the layout (`DramPhy`); `CSR_MAPS` gives it. Addresses
are Wishbone word addresses (the core's CSR byte address / 4). tests/test_dram.py pins every
map against the csr.json, core.json and sdram_phy.h LiteDRAM writes for each board's core.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CSR_MAPS",
    "SOFTWARE_CONTROL",
    "DfiiCommand",
    "DfiiControl",
    "DramCsrMap",
    "DramPhy",
    "ReadLeveling",
]


class DramPhy(enum.IntEnum):
    """The DRAM controller's CSR layout (IDENTIFY ``dram_phy``): its PHY, and for LiteDRAM's
    simulation model the memory it models."""
    NONE = 0          # no DRAM
    GENSDRPHY = 1     # ULX3S: SDR SDRAM x16, 1:1
    A7DDRPHY = 2      # Arty A7: DDR3 x16, 1:4, IDELAY taps and bitslips per byte lane
    ECP5DDRPHY = 3    # OrangeCrab: DDR3L x16, 1:2, DQS delay steps and bitslips per lane
    SIM_SDR = 4       # SDRAMPHYModel as the ULX3S's SDR x16, 1:1 (system simulation)
    SIM_DDR3 = 5      # SDRAMPHYModel as the Arty's DDR3 x16, 1:4 (system simulation)


class DfiiControl(enum.IntFlag):
    """Bits of the DFII control register (LiteDRAM's DFII_CONTROL_*)."""
    SEL = 0x01        # 1: the controller drives the DRAM (hardware control)
    CKE = 0x02
    ODT = 0x04
    RESET_N = 0x08


class DfiiCommand(enum.IntFlag):
    """Bits of a DFII phase's command register (LiteDRAM's DFII_COMMAND_*)."""
    CS = 0x01
    WE = 0x02
    CAS = 0x04
    RAS = 0x08
    WRDATA = 0x10
    RDDATA = 0x20


#: DFII control in software control, the DRAM powered and out of reset (LiteX's
#: `sdram_software_control_on`).
SOFTWARE_CONTROL = DfiiControl.CKE | DfiiControl.ODT | DfiiControl.RESET_N


@dataclass(frozen=True)
class ReadLeveling:
    """A PHY's read-leveling registers (word addresses) and ranges. ``dly_sel`` selects
    the byte lanes (one bit each) that the strobe registers (write 1) act on: delay reset,
    delay increment, bitslip reset, bitslip increment. ``burstdet_clr`` /
    ``burstdet_seen`` (ECP5DDRPHY): a read burst's DQS was seen, one bit per lane."""

    dly_sel: int
    rdly_dq_rst: int
    rdly_dq_inc: int
    rdly_dq_bitslip_rst: int
    rdly_dq_bitslip: int
    bitslips: int
    delays: int
    burstdet_clr: int | None = None
    burstdet_seen: int | None = None


@dataclass(frozen=True)
class DramCsrMap:
    """One controller's CSR layout: the DFII at word ``dfii`` (its control register, then
    per phase: command, command_issue, address, baddress, wrdata, rddata; wrdata and rddata
    ``data_words`` CSR words each, the most significant word first, LiteX's CSR
    ordering), the DFI data path (``databits`` DQ lines, ``dfi_databits`` bits per phase,
    ``rdphase`` / ``wrphase`` the phases reads and writes are issued on), the PHY's read
    leveling where it needs one (``leveling``), and ``read_phases``: the phases whose
    rddata registers a read fills (all but on LiteDRAM's SDRAMPHYModel at 1:4, which
    flags phase 0's read data valid only: `Cat(rddata_valid).eq(banks_read)` in
    litedram/phy/model.py; its other phases' registers keep 0)."""

    phy: DramPhy
    dfii: int
    phases: int
    data_words: int
    databits: int
    dfi_databits: int
    rdphase: int
    wrphase: int
    leveling: ReadLeveling | None = None
    read_phases: int | None = None

    def __post_init__(self) -> None:
        if self.read_phases is None:
            object.__setattr__(self, "read_phases", self.phases)

    @property
    def phase_words(self) -> int:
        """CSR words from one phase's registers to the next's."""
        return 4 + 2 * self.data_words

    @property
    def control(self) -> int:
        return self.dfii

    def phase_reg(self, phase: int, name: str) -> int:
        """Word address of phase `phase`'s ``command``, ``command_issue``, ``address``,
        ``baddress``, ``wrdata`` or ``rddata`` (its first, most significant word)."""
        if not 0 <= phase < self.phases:
            raise ValueError(f"{self.phy.name} has phases 0..{self.phases - 1}, not {phase}")
        offsets = {"command": 0, "command_issue": 1, "address": 2, "baddress": 3,
                   "wrdata": 4, "rddata": 4 + self.data_words}
        if name not in offsets:
            raise ValueError(f"no DFII phase register {name!r}")
        return self.dfii + 1 + phase * self.phase_words + offsets[name]

    @property
    def lanes(self) -> int:
        """Byte lanes (DQS groups) of the data bus: the unit the PHY delays."""
        return self.databits // 8

    @property
    def beats(self) -> int:
        """DQ transfers carried by one phase's DFI data."""
        return self.dfi_databits // self.databits

    def lane_mask(self, lane: int) -> int:
        """The bits of one phase's DFI data that lane `lane` carries (8 per beat)."""
        return sum(0xFF << (b * self.databits + 8 * lane) for b in range(self.beats))


_DFII_BOARD = 0x1000 // 4     # after the ddrctrl and ddrphy CSR banks
_DFII_NO_PHY = 0x800 // 4     # a core whose PHY has no CSRs: after the ddrctrl bank

#: The layout of each `DramPhy` (tests/test_dram.py pins them against the generated cores).
CSR_MAPS: dict[DramPhy, DramCsrMap] = {
    DramPhy.GENSDRPHY: DramCsrMap(DramPhy.GENSDRPHY, _DFII_NO_PHY, 1, 1, 16, 16, 0, 0),
    DramPhy.A7DDRPHY: DramCsrMap(
        DramPhy.A7DDRPHY, _DFII_BOARD, 4, 1, 16, 32, 2, 3,
        ReadLeveling(dly_sel=0x804 // 4, rdly_dq_rst=0x814 // 4, rdly_dq_inc=0x818 // 4,
                     rdly_dq_bitslip_rst=0x81C // 4, rdly_dq_bitslip=0x820 // 4,
                     bitslips=8, delays=32)),
    DramPhy.ECP5DDRPHY: DramCsrMap(
        DramPhy.ECP5DDRPHY, _DFII_BOARD, 2, 2, 16, 64, 0, 1,
        ReadLeveling(dly_sel=0x800 // 4, rdly_dq_rst=0x804 // 4, rdly_dq_inc=0x808 // 4,
                     rdly_dq_bitslip_rst=0x80C // 4, rdly_dq_bitslip=0x810 // 4,
                     bitslips=4, delays=8, burstdet_clr=0x814 // 4,
                     burstdet_seen=0x818 // 4)),
    DramPhy.SIM_SDR: DramCsrMap(DramPhy.SIM_SDR, _DFII_NO_PHY, 1, 1, 16, 16, 0, 0),
    DramPhy.SIM_DDR3: DramCsrMap(DramPhy.SIM_DDR3, _DFII_NO_PHY, 4, 1, 16, 32, 2, 3,
                                 read_phases=1),
}
