"""OrangeCrab r0.2 with an LFE5U-85F (speed 8): 48 MHz oscillator, UART on the Feather
header (pins 0 = RX, 1 = TX, for a 3.3 V USB-serial adapter: the board's own USB port
goes straight to the FPGA), RGB LED, user button.

Capacity as for the ULX3S's LFE5U-85F (same die). The amaranth-boards platform adds a
`dfu-suffix` step for dfu-util; openFPGALoader (`-b orangecrab`, over the DFU bootloader)
takes the plain bitstream, so this board's platform leaves that step out.
"""

from typing import ClassVar

from amaranth.build import Attrs, PinsN, Resource
from amaranth.vendor import LatticeECP5Platform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
from amaranth_boards.resources import UARTResource

from boards.board import Board


class _Platform(OrangeCrabR0_2_85FPlatform):
    resources: ClassVar[list] = [
        *OrangeCrabR0_2_85FPlatform.resources,
        UARTResource(0, rx="0", tx="1", conn=("io", 0), attrs=Attrs(IO_TYPE="LVCMOS33")),
        # the RGB LED's three cathodes as single LEDs (red, green, blue)
        *[Resource("led", i, PinsN(pin, dir="o"), Attrs(IO_TYPE="LVCMOS33"))
          for i, pin in enumerate(("K4", "M3", "J3"))],
    ]

    @property
    def required_tools(self) -> list[str]:
        return LatticeECP5Platform.required_tools.fget(self)

    @property
    def command_templates(self) -> list[str]:
        return LatticeECP5Platform.command_templates.fget(self)


ORANGECRAB_85F = Board(
    name="orangecrab_85f",
    description="OrangeCrab r0.2, LFE5U-85F (CSFBGA285, speed 8), UART on Feather pins 0/1",
    platform=_Platform,
    family="ecp5",
    clock=("clk", 0), clock_hz=48_000_000,
    reset=("button", 0),
    uart=("uart", 0),
    leds=(("led", 0), ("led", 1), ("led", 2)),
    capacity={"LUT4": 83_640, "FF": 83_640, "MULT18X18D": 156, "DP16KD": 208},
    loader_board="orangecrab",
)
