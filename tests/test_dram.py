"""LiteDRAM behind the memory device (docs/dram.md): each board's DRAM config generates a
standalone core with a native port of HwConfig.mem_data_bits and an init program from
LiteDRAM's own init data; in Verilator, the memory device on the generated controller with
its SDRAM PHY model comes up (init replayed on wb_ctrl) and the host driver's MEM_WRITE /
MEM_READ / MEM_CRC round trips are bit-exact, and the small network of
tests/test_memory_device.py runs bit-exact through it."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from hw.dram import BOARDS, generate, init_program
from hw.spec.config import DEFAULT
from sw.runtime.device import Device
from sw.runtime.link import SimLink
from tests.test_memory_device import test_network_uploaded_once_and_bit_exact as _network_test


@pytest.mark.parametrize("board", sorted(set(BOARDS.values())))
def test_board_cores_generate(board: str) -> None:
    core = generate(board, DEFAULT.mem_data_bits)
    assert core.data_bits == DEFAULT.mem_data_bits and core.verilog.exists()
    assert core.meta["ports"]["init_done"][0] == "output" and "wb_ctrl_adr" in core.meta["ports"]
    prog = init_program(core)
    csr = {v // 4: k for k, v in core.meta["csr"].items()}
    assert [csr[w.adr] for w in prog[-2:]] == ["sdram_dfii_control", "ddrctrl_init_done"]
    assert prog[-1].value == 1
    # every step of LiteDRAM's sequence is replayed with its delay
    delays = [s["delay"] for s in core.meta["init_sequence"]]
    assert sum(w.delay for w in prog) == sum(delays) + (2000 if "ddrphy_rst" in csr.values()
                                                        else 0)
    # DDR3 PHYs need read leveling on the board; SDR SDRAM does not (docs/dram.md)
    assert core.meta["read_leveling"] == (core.meta["memtype"] == "DDR3")


@pytest.fixture(scope="module")
def dram_link():
    with SimLink(DEFAULT, top="dram") as lk:
        yield lk
    assert lk.cycles


def test_mem_round_trips_through_litedram(dram_link) -> None:
    dev = Device(dram_link, timeout=30.0, retries=0)
    rng = np.random.default_rng(15)
    top = DEFAULT.mem_bytes
    # partial words, word-crossing ranges, several banks and rows, the end of the memory
    spans = [(0, 1), (3, 15), (16, 16), (45, 17), (1000, 1020), (8191, 3000),
             (1 << 20, 512), ((1 << 24) + 7, 777), (top - 1500, 1500)]
    mem: dict[int, int] = {}
    for addr, n in spans:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        for k in range(0, n, 1020):
            dev.mem_write(addr + k, data[k:k + 1020])
        mem.update(zip(range(addr, addr + n), data, strict=True))
    # an overwrite inside written words keeps their other bytes (byte enables)
    dev.mem_write(1005, b"\xa5" * 7)
    mem.update((a, 0xA5) for a in range(1005, 1012))
    for addr, n in spans:
        want = bytes(mem[a] for a in range(addr, addr + n))
        assert dev.mem_read(addr, n) == want, (addr, n)
        assert dev.mem_crc(addr, n) == zlib.crc32(want), (addr, n)


def test_small_network_through_litedram(dram_link, small_net, small_model) -> None:
    """tests/test_memory_device.py's upload-once, run-bit-exact, keep-resident test, with
    the device memory behind LiteDRAM's controller."""
    _network_test(dram_link, small_net, small_model)
