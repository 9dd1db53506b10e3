"""OrangeCrab r0.2 with an LFE5U-85F (speed 8): 48 MHz oscillator, UART on the Feather
header (pins 0 = RX, 1 = TX, for a 3.3 V USB-serial adapter: the board's own USB port
goes straight to the FPGA), RGB LED, user button.

Capacity as for the ULX3S's LFE5U-85F (same die). The amaranth-boards platform adds a
`dfu-suffix` step for dfu-util; openFPGALoader (`-b orangecrab`, over the DFU bootloader)
takes the plain bitstream, so this board's platform leaves that step out.
"""

from typing import ClassVar

from amaranth.build import Attrs, DiffPairs, Pins, PinsN, Resource, Subsignal
from amaranth.vendor import LatticeECP5Platform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
from amaranth_boards.resources import UARTResource

from boards.board import Board

#: The DDR3L's pins as LiteX's OrangeCrab r0.2 platform (litex-boards) has them: the
#: amaranth-boards 0.0.21 resource ``ddr3`` disagrees on the bank address (it gives the
#: ECP5 Versa board's P5 N3 M3, M3 being the green LED), the DQS pairs and the DM order.
#: DM is in LiteX's order with ``dm_swap`` in boards/dram/orangecrab_85f.yml; the
#: ``vccio`` / ``gnd`` pins are tied high / low (pseudo power pins next to the DRAM bank).
_DDRAM = Resource(
    "ddram", 0,
    Subsignal("rst", PinsN("L18", dir="o")),
    Subsignal("clk", DiffPairs("J18", "K18", dir="o"), Attrs(IO_TYPE="SSTL135D_I")),
    Subsignal("clk_en", Pins("D18", dir="o")),
    Subsignal("cs", PinsN("A12", dir="o")),
    Subsignal("we", PinsN("B12", dir="o")),
    Subsignal("ras", PinsN("C12", dir="o")),
    Subsignal("cas", PinsN("D13", dir="o")),
    Subsignal("a", Pins("C4 D2 D3 A3 A4 D4 C3 B2 B1 D1 A7 C2 B6 C1 A2 C7", dir="o")),
    Subsignal("ba", Pins("D6 B7 A6", dir="o")),
    Subsignal("dqs", DiffPairs("B15 G18", "A16 H17", dir="io"),
              Attrs(IO_TYPE="SSTL135D_I", TERMINATION="OFF", DIFFRESISTOR="100")),
    Subsignal("dq", Pins("C17 D15 B17 C16 A15 B13 A17 A13 F17 F16 G15 F15 J16 C18 H16 F18",
                         dir="io"), Attrs(TERMINATION="OFF")),
    Subsignal("dm", Pins("D16 G16", dir="o")),
    Subsignal("odt", Pins("C13", dir="o")),
    Subsignal("vccio", Pins("K16 D17 K15 K17 B18 C6", dir="o"), Attrs(IO_TYPE="SSTL135_II")),
    Subsignal("gnd", Pins("L15 L16", dir="o"), Attrs(IO_TYPE="SSTL135_II")),
    Attrs(IO_TYPE="SSTL135_I", SLEWRATE="FAST"),
)


class _Platform(OrangeCrabR0_2_85FPlatform):
    resources: ClassVar[list] = [
        *[r for r in OrangeCrabR0_2_85FPlatform.resources
          if r.name not in ("ddr3", "ddr3_pseudo_power")],
        _DDRAM,
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
    # 48 MHz: the DRAM controller's system clock (boards/dram/orangecrab_85f.yml), which
    # the accelerator shares; 3 Mbaud (divisor 16), what common USB-serial adapters do.
    # (A 54 MHz build placed at 68.06 MHz, 2026-11-28; its routing was not finished.)
    hw_config="orangecrab_85f.json",
    dram="orangecrab_85f", dram_resource=("ddram", 0),
    # three LEDs (the RGB LED): red heartbeat, green ready (DRAM up), blue link activity
    led_roles=("heartbeat", "ready", "link"),
    # with nextpnr's default seed router2 diverged on the system with the CSR requests
    # (overuse rising from 3,712 wires at iteration 13 to 7,865 at 25, 2026-11-28); seed 3
    # routed it in 70 iterations
    nextpnr_seed=3,
)
