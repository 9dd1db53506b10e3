"""Radiona ULX3S with an LFE5U-85F: 25 MHz oscillator, FTDI USB-UART (US1), 8 LEDs.

Capacity of the LFE5U-85F as nextpnr-ecp5 reports it (TRELLIS_COMB, TRELLIS_FF,
MULT18X18D, DP16KD); the same figures as Lattice's ECP5 family data sheet (FPGA-DS-02012:
84K LUTs, 156 18x18 multipliers, 208 EBR blocks of 18 kbit).
"""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from boards.board import Board

ULX3S_85F = Board(
    name="ulx3s_85f", description="Radiona ULX3S, LFE5U-85F (CABGA381, speed 6)",
    platform=ULX3S_85F_Platform,
    family="ecp5",
    clock=("clk25", 0), clock_hz=25_000_000,
    reset=("button_fire", 0),               # F1; the PWR button belongs to the power logic
    uart=("uart", 0),
    leds=(("led", 0), ("led", 1), ("led", 2), ("led", 3)),
    capacity={"LUT4": 83_640, "FF": 83_640, "MULT18X18D": 156, "DP16KD": 208},
    loader_board="ulx3s",
    # 3 Mbaud (the FT231X's limit, not 12 Mbaud) at 45 MHz (divisor 15): the DRAM system
    # places at 51-53 MHz on this speed-6 part (README, Boards); the project's PLL makes
    # nothing from 48 to 57 MHz out of 25 MHz with an exact 3 Mbaud divisor, and 60 MHz
    # is not met.
    hw_config="ulx3s_85f.json",
    dram="ulx3s_85f", dram_resource=("sdram", 0),
)
