"""LiteDRAM behind the memory device (docs/dram.md): each board's DRAM config generates a
standalone core with a native port of HwConfig.mem_data_bits and an init program from
LiteDRAM's own init data. In Verilator, the board's core (`hw.build.BoardCore`: its UART
with the 16-byte FIFO, the LEDs) around `hw.dram.system.DramSystem` with LiteDRAM's PHY
model, the host's bytes crossing a simulated serial line (`hw.simulator.UartBoard`):

- the Arty's DDR3 system comes up (init replayed on wb_ctrl) and the host driver's
  MEM_WRITE / MEM_READ / MEM_CRC round trips are bit-exact;
- the ULX3S's system (as `python -m hw.build --board ulx3s_85f` builds it, with
  SDRAMPHYModel in place of GENSDRPHY) reports its DRAM init through IDENTIFY / STATUS,
  round-trips the end of its 32 MB and runs the small network bit-exact;
- every byte costs its 10 bits of the UART divisor's cycles (the UART is in the path);
- the contract's DRAM CSR layouts (hw.spec.dram) match every generated core's csr.json,
  core.json and sdram_phy.h; over CSR_READ / CSR_WRITE through the unchanged host driver
  the simulated controllers (ULX3S SDR 1:1, Arty DDR3 1:4) take a DFII software-control
  write and read it back bit-exact, MEM_READ sees it after hardware control is back, the
  leveling's data path runs (SDRAMPHYModel has no delay or bitslip registers: the scan
  itself is tested against a model in tests/test_leveling.py) and the bad requests are
  answered with ERROR, without a hang."""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest

from boards import BOARDS
from hw.dram import DramError, check_csr_map, configs, csr_map, generate, init_program
from hw.spec import intmath, protocol
from hw.spec.config import DEFAULT, load_config
from hw.spec.dram import CSR_MAPS, DfiiCommand, DfiiControl, DramPhy
from hw.spec.engine import param_bytes
from hw.spec.memory import Pass
from hw.spec.protocol import DramFlag, Err, Feature, Op, ProgramFlag
from sw.runtime.device import Device, DeviceError
from sw.runtime.golden import GoldenModel
from sw.runtime.leveling import Dfii, level
from sw.runtime.link import SimLink
from sw.runtime.resident import ResidentNetwork
from tests.conftest import random_images, small_bundle

ULX3S = BOARDS["ulx3s_85f"]
#: Bytes each board's DRAM moves per controller cycle at most.
PEAK_BYTES = {"arty_a7": 16, "orangecrab_85f": 8, "ulx3s_85f": 2}


def test_every_board_names_a_dram_config() -> None:
    assert {b.dram for b in BOARDS.values()} == set(configs())
    assert all(b.dram_resource for b in BOARDS.values())


@pytest.mark.parametrize("config", configs())
def test_board_cores_generate(config: str) -> None:
    core = generate(config, DEFAULT.mem_data_bits)
    assert core.data_bits == DEFAULT.mem_data_bits and core.verilog.exists()
    assert core.meta["ports"]["init_done"][0] == "output" and "wb_ctrl_adr" in core.meta["ports"]
    # the data pins are bidirectional in the module header (LiteX's ECP5 cores: fixed here)
    dq = next(v for k, v in core.meta["ports"].items() if k.endswith("_dq"))
    assert dq[0] == "inout" and f"inout  wire   [{dq[1] - 1}:0]" in core.verilog.read_text()
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
    # the DRAM's peak per sys cycle: Arty A7DDRPHY 1:4 x16 DDR3, OrangeCrab ECP5DDRPHY 1:2
    # x16 DDR3, ULX3S GENSDRPHY 1:1 x16 SDR (bench/sim_frame.py's DRAM efficiency)
    assert core.peak_bytes_per_cycle == PEAK_BYTES[config]
    assert core.peak_bytes_s == PEAK_BYTES[config] * core.meta["sys_clk_freq"]


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


@pytest.fixture(scope="module")
def ulx3s_cfg():
    return load_config(ULX3S.default_config_path())


@pytest.fixture(scope="module")
def ulx3s_link(ulx3s_cfg):
    with SimLink(ulx3s_cfg, top=f"dram-{ULX3S.dram}") as lk:
        yield lk
    assert lk.cycles


def test_ulx3s_system_reports_its_dram(ulx3s_link, ulx3s_cfg) -> None:
    dev = Device(ulx3s_link, timeout=30.0, retries=0)
    ident = dev.identify(ulx3s_cfg)
    assert ident.features == Feature.MEMORY | Feature.DRAM
    st = dev.status()
    assert st.dram == DramFlag.INIT_DONE
    dev.check_memory(ident)                 # the driver accepts it
    # the end of the board's 32 MB, across the last row, and one byte past it refused
    top = ulx3s_cfg.mem_bytes
    data = np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    dev.mem_write(top - 2000, data[:1000])
    dev.mem_write(top - 1000, data[1000:])
    assert dev.mem_read(top - 2000, 2000) == data
    assert dev.mem_crc(top - 2000, 2000) == zlib.crc32(data)


def test_ulx3s_system_runs_the_small_network(ulx3s_link, ulx3s_cfg, small_net,
                                             small_model) -> None:
    """Uploaded once, one frame: the heads bit-exact through the driver, every stored layer
    with a contiguous view checked in DRAM by MEM_CRC. (A byte costs 150 cycles on the
    3 Mbaud line: reading every layer back as tests/test_memory_device.py does would take
    about 50 M cycles, over 2 minutes of CPU.)"""
    dev = Device(ulx3s_link, timeout=60.0, retries=0)
    bundle = small_bundle(small_net, small_model, hw=ulx3s_cfg)
    net = ResidentNetwork(dev, ulx3s_cfg, bundle)
    assert net.upload() > 0 and net.resident()
    x = intmath.quantize_input(random_images(1, small_net.width, seed=1)[0])
    run = net.run(x)
    want = GoldenModel(bundle).run(x, keep=True)
    assert run.heads and all(np.array_equal(h, want[i]) for i, h in run.heads.items())
    checked = 0
    for i, view in enumerate(net.image.layer_views):
        if view is None or view.pitch != view.channels * view.value_bytes:
            continue
        raw = np.zeros(view.nbytes, np.uint8)
        replace(view, addr=0).write(raw, want[i])
        assert dev.mem_crc(view.addr, view.nbytes) == zlib.crc32(raw.tobytes()), f"layer {i}"
        checked += 1
    assert checked >= len(small_net.layers) // 2




#: The layout each board's core has (board build, and the --sim core of the system
#: simulations).
LAYOUTS = {("arty_a7", False): DramPhy.A7DDRPHY, ("orangecrab_85f", False): DramPhy.ECP5DDRPHY,
           ("ulx3s_85f", False): DramPhy.GENSDRPHY, ("arty_a7", True): DramPhy.SIM_DDR3,
           ("ulx3s_85f", True): DramPhy.SIM_SDR}


@pytest.mark.parametrize(("config", "sim"), sorted(LAYOUTS))
def test_csr_layouts_match_the_cores(config: str, sim: bool) -> None:
    core = generate(config, DEFAULT.mem_data_bits, sim=sim)
    cmap = check_csr_map(core)              # every address, size, phase and range
    assert cmap.phy == LAYOUTS[config, sim] and cmap is CSR_MAPS[cmap.phy]
    assert (cmap.leveling is not None) == (core.meta["read_leveling"] and not sim)
    # a layout that differs from the core is refused, naming the register
    moved = {**core.meta, "phy": "A7DDRPHY" if cmap.phy == DramPhy.ECP5DDRPHY else "ECP5DDRPHY",
             "sim": False}
    with pytest.raises(DramError, match="does not match"):
        check_csr_map(type(core)(core.directory, moved))
    with pytest.raises(DramError, match="no CSR layout"):
        csr_map(type(core)(core.directory, {**core.meta, "phy": "K7DDRPHY", "sim": False}))


def _dfii_round_trip(dev: Device, cmap, seed: int) -> bytes:
    """Software control; one burst written to each of the first columns of row 0 (bank
    0) through the DFII phases' wrdata, all read back through rddata bit-exact (the phases
    the PHY reports: `DramCsrMap.read_phases`); hardware control back. The bytes they
    make at DRAM address 0 (LiteDRAM's order: column, then phase, then beat;
    little-endian), which MEM_READ must see: all of each burst."""
    dfii = Dfii(dev, cmap)
    dfii.prepare()
    beats = cmap.phases * cmap.beats           # one burst: a native word of the controller
    bursts = 16 // (beats * cmap.databits // 8)
    rng = random.Random(seed)
    values = [[rng.getrandbits(cmap.dfi_databits) for _ in range(cmap.phases)]
              for _ in range(bursts)]
    step = beats                                  # columns a burst covers
    dfii.command(0, DfiiCommand.RAS | DfiiCommand.CS)                # activate row 0
    for n, v in enumerate(values):
        dfii.address(cmap.wrphase, n * step)
        for p, x in enumerate(v):
            dfii.set_wrdata(p, x)
        dfii.command(cmap.wrphase, DfiiCommand.CAS | DfiiCommand.WE | DfiiCommand.CS
                     | DfiiCommand.WRDATA)
    for n, v in enumerate(values):
        dfii.address(cmap.rdphase, n * step)
        dfii.command(cmap.rdphase, DfiiCommand.CAS | DfiiCommand.CS | DfiiCommand.RDDATA)
        assert [dfii.get_rddata(p) for p in range(cmap.read_phases)] == v[:cmap.read_phases], n
    dfii.address(0, 0)
    dfii.command(0, DfiiCommand.RAS | DfiiCommand.WE | DfiiCommand.CS)     # precharge
    dfii.hardware_control()
    assert dev.csr_read(cmap.control) == DfiiControl.SEL
    return b"".join(sum(x << (cmap.dfi_databits * p) for p, x in enumerate(v)).to_bytes(
        beats * cmap.databits // 8, "little") for v in values)


def test_arty_dfii_through_csr_requests(dram_link) -> None:
    dev = Device(dram_link, timeout=30.0, retries=0)
    ident = dev.identify(DEFAULT)
    assert ident.dram_phy == DramPhy.SIM_DDR3
    cmap = CSR_MAPS[DramPhy(ident.dram_phy)]
    want = _dfii_round_trip(dev, cmap, 41)
    assert dev.mem_read(0, len(want)) == want       # the controller reads what DFII wrote
    res = level(dev, cmap)                          # the leveling's data path
    assert [(r.bitslip, r.delay) for r in res.lanes] == [(0, 0)] * cmap.lanes
    assert dev.status().dram == DramFlag.INIT_DONE | DramFlag.LEVELED


def test_ulx3s_csr_requests(ulx3s_link, ulx3s_cfg) -> None:
    dev = Device(ulx3s_link, timeout=30.0, retries=0)
    ident = dev.identify(ulx3s_cfg)
    assert ident.dram_phy == DramPhy.SIM_SDR
    cmap = CSR_MAPS[DramPhy(ident.dram_phy)]
    csr = generate(ULX3S.dram, ulx3s_cfg.mem_data_bits, sim=True).meta["csr"]
    assert dev.csr_read(csr["ddrctrl_init_done"] // 4) == 1
    assert dev.csr_read(csr["ddrctrl_init_error"] // 4) == 0
    assert dev.csr_read(cmap.control) == DfiiControl.SEL

    def err(op: Op, payload: bytes) -> int:
        with pytest.raises(DeviceError) as e:
            dev.request(op, payload)
        return e.value.code

    # bad requests: ERROR, nothing done, the device answers on
    window = protocol.CSR_WINDOW_WORDS
    assert err(Op.CSR_READ, struct.pack("<I", window)) == Err.BAD_ADDRESS
    assert err(Op.CSR_READ, struct.pack("<I", 0xFFFF_FFFF)) == Err.BAD_ADDRESS
    assert err(Op.CSR_WRITE, struct.pack("<II", window + 5, 1)) == Err.BAD_ADDRESS
    assert err(Op.CSR_READ, b"") == Err.BAD_LENGTH
    assert err(Op.CSR_READ, struct.pack("<II", 0, 0)) == Err.BAD_LENGTH
    assert err(Op.CSR_WRITE, struct.pack("<I", cmap.control)) == Err.BAD_LENGTH   # short
    assert err(Op.CSR_WRITE, struct.pack("<IIB", cmap.control, 0, 0)) == Err.BAD_LENGTH
    assert dev.csr_read(cmap.control) == DfiiControl.SEL          # nothing was written
    # a frame that stops mid-way: TIMEOUT, then the device answers on
    dram_frame = protocol.encode_frame(Op.CSR_WRITE, struct.pack("<II", cmap.control, 0))
    ulx3s_link.write(dram_frame[:9])
    dec = protocol.FrameDecoder()
    got = []
    while not got:
        got = dec.feed(ulx3s_link.read(10.0))
    assert got[0].opcode == protocol.Reply.ERROR and got[0].payload[0] == Err.TIMEOUT
    assert dev.csr_read(cmap.control) == DfiiControl.SEL
    # while a program runs: BUSY (a 3x3 conv of 256 x 256 x 8 -> 8: about 600k cycles)
    conv = Pass(width=256, height=256, cin=8, cout=8, k3=1, leaky=0, head=0, pool=0, in_pitch=8,
                out_pitch=8, upsample=0, param_addr=1 << 20,
                param_len=param_bytes(ulx3s_cfg, 3, 8, 8), in_addr=2 << 20, out_addr=3 << 20)
    dev.mem_write(4 << 20, conv.encode())
    dev.program_run(4 << 20, 1, 5 << 20)
    assert err(Op.CSR_READ, struct.pack("<I", cmap.control)) == Err.BUSY
    assert err(Op.CSR_WRITE, struct.pack("<II", protocol.CSR_LEVELED_WORD, 1)) == Err.BUSY
    st = dev.status()
    while st.program & ProgramFlag.RUNNING:
        st = dev.status()
    assert st.program_error == Err.NONE and st.dram == DramFlag.INIT_DONE
    # software control: a DFII write read back bit-exact, then the controller's MEM_READ
    want = _dfii_round_trip(dev, cmap, 40)
    assert dev.mem_read(0, len(want)) == want
    # the leveling's data path through the simulator, then the leveled flag
    res = level(dev, cmap)
    assert res.lanes and all((r.bitslip, r.delay) == (0, 0) for r in res.lanes)
    assert dev.csr_read(protocol.CSR_LEVELED_WORD) == 1
    assert dev.status().dram == DramFlag.INIT_DONE | DramFlag.LEVELED
    dev.csr_write(protocol.CSR_LEVELED_WORD, 0)
    assert dev.status().dram == DramFlag.INIT_DONE
    # hardware control again: the DFII's data is there but for the first burst, the test
    # row's column 0 the leveling wrote its patterns to
    burst = cmap.phases * cmap.beats * cmap.databits // 8
    assert dev.mem_crc(burst, len(want) - burst) == zlib.crc32(want[burst:])


def test_the_uart_is_in_the_path(ulx3s_cfg) -> None:
    """The ULX3S's system simulation carries the link's bytes over the UART: every byte in
    and out costs at least its 10 bits of `uart_divisor` cycles: 2,000+ bytes, at least
    300k cycles (this session took 377k; 66k on the same system without the UART, the
    bench's `dram-ulx3s_85f-nouart`, measured 2026-11-28)."""
    data = np.random.default_rng(5).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    with SimLink(ulx3s_cfg, top=f"dram-{ULX3S.dram}") as lk:
        moved = [0]
        write, read = lk.write, lk.read

        def counted_write(b: bytes) -> None:
            moved[0] += len(b)
            write(b)

        def counted_read(timeout: float) -> bytes:
            b = read(timeout)
            moved[0] += len(b)
            return b

        lk.write, lk.read = counted_write, counted_read
        dev = Device(lk, timeout=30.0, retries=0)
        assert dev.status().dram == DramFlag.INIT_DONE
        dev.mem_write(5000, data)
        assert dev.mem_read(5000, len(data)) == data
    assert moved[0] > 2 * len(data)
    assert lk.cycles >= 10 * ulx3s_cfg.uart_divisor * moved[0]
