"""Digilent Arty A7-35T and A7-100T: 100 MHz oscillator, FTDI USB-UART, 4 LEDs, RESET."""

from amaranth_boards.arty_a7 import ArtyA7_35Platform, ArtyA7_100Platform

from boards.board import Board

_COMMON = dict(
    family="xc7",
    clock=("clk100", 0), clock_hz=100_000_000,
    reset=("rst", 0),                       # the red RESET button (active low, PinsN)
    uart=("uart", 0),                       # second FTDI channel: /dev/ttyUSB1 on Linux
    leds=(("led", 0), ("led", 1), ("led", 2), ("led", 3)),
    loader_board="arty",
    dram="arty_a7", dram_resource=("ddr3", 0),   # both parts carry the same DDR3L
    # The TI DP83848 on MII (both parts); the FPGA drives its 25 MHz clock on eth_ref_clk.
    eth="arty_a7", eth_resource=("eth_mii", 0), eth_ref_clock=("eth_clk25", 0),
)

ARTY_A7_35 = Board(
    name="arty_a7", description="Digilent Arty A7-35T (xc7a35ticsg324-1L)",
    platform=ArtyA7_35Platform,
    capacity={"LUT": 20_800, "FF": 41_600, "DSP48E1": 90, "BRAM36": 50},
    hw_config="arty_a7_35.json",
    **_COMMON)

ARTY_A7_100 = Board(
    name="arty_a7_100", description="Digilent Arty A7-100T (xc7a100ticsg324-1L)",
    platform=ArtyA7_100Platform,
    capacity={"LUT": 63_400, "FF": 126_800, "DSP48E1": 240, "BRAM36": 135},
    hw_config="arty_a7_100.json",
    **_COMMON)
