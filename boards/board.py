"""What a board file declares: platform, oscillator, pins, part capacity, programmer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from amaranth.build import Platform

__all__ = ["Board", "Family"]

#: FPGA families hw.build knows: "xc7" (Artix-7: MMCME2_BASE, synth_xilinx, Vivado) and
#: "ecp5" (EHXPLLL, synth_ecp5, nextpnr-ecp5).
Family = Literal["xc7", "ecp5"]


@dataclass(frozen=True)
class Board:
    """One supported board.

    Resources are `(name, number)` pairs of the amaranth-boards platform. `capacity` is the
    part's totals under the keys of the resource estimate of its family. `dram` names the
    board's LiteDRAM config (hw/dram, docs/dram.md).
    """

    name: str
    description: str
    platform: type[Platform]
    family: Family
    clock: tuple[str, int]
    clock_hz: int
    reset: tuple[str, int] | None
    uart: tuple[str, int]
    leds: tuple[tuple[str, int], ...]
    capacity: dict[str, int]
    loader_board: str                       # openFPGALoader's `-b` name
    hw_config: str | None = None            # default HwConfig JSON, next to the board file
    #: The board's DRAM: its LiteDRAM config (boards/dram/<dram>.yml) and the
    #: amaranth-boards resource of its pins; None: a board built without DRAM.
    dram: str | None = None
    dram_resource: tuple[str, int] | None = None
    #: The board's Ethernet: its LiteEth config (boards/eth/<eth>.yml, `hw.eth`), the
    #: amaranth-boards resources of the MII PHY's pins and of the 25 MHz reference clock the
    #: FPGA drives; None: no Ethernet (docs/ethernet.md).
    eth: str | None = None
    eth_resource: tuple[str, int] | None = None
    eth_ref_clock: tuple[str, int] | None = None
    #: What each of `leds` shows (hw.build.BoardTop): "heartbeat", "rx", "tx", "link"
    #: (rx or tx), "ready" (clock locked, out of reset, DRAM up; blinks on a DRAM error).
    led_roles: tuple[str, ...] = ("heartbeat", "rx", "tx", "ready")
    #: nextpnr-ecp5's placement seed (``--seed``) where its default does not route the
    #: board's system (router2 diverging); None: nextpnr's default.
    nextpnr_seed: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def vendor_toolchain(self) -> bool:
        """True when the bitstream step needs a vendor tool (Vivado), not the open flow."""
        return self.family == "xc7"

    def default_config_path(self) -> Path | None:
        return None if self.hw_config is None else Path(__file__).parent / self.hw_config
