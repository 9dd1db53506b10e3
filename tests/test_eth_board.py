"""The Arty builds with Ethernet (hw.build, hw/eth/board.py; no Vivado): LiteEth's core, its
MII pins, the PHY's reference clock and constraints in the Vivado tree; --ip / --udp-port /
--mac validated, recorded and in IDENTIFY's reply; a bitstream built for other addresses is
refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from boards import BOARDS
from hw import build as hwb
from hw.build import main
from hw.eth import EthSettings, device_defaults
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.dram import DramPhy
from hw.top.device import identity


def _const(inst: str, port: str) -> int:
    """The constant a Verilog instance ties `port` to (``32'd...`` or ``16'h...``)."""
    m = re.search(rf"\.{port}\((\d+)'([dh])([0-9a-f]+)\)", inst)
    assert m, f"{port} is not tied to a constant"
    return int(m[3], 10 if m[2] == "d" else 16)


def test_arty_tree_carries_ethernet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))           # no Vivado
    out = tmp_path / "arty"
    assert main(["--board", "arty_a7", "--no-estimate", "--build-dir", str(out),
                 "--ip", "10.1.2.3", "--udp-port", "4242"]) == 0
    assert "UDP on 10.1.2.3:4242" in capsys.readouterr().out
    assert "module liteeth_core" in (out / "liteeth_core.v").read_text()
    tcl = (out / "tinyyolo.tcl").read_text()
    assert "liteeth_core.v" in tcl and "tinyyolo_eth.xdc" in tcl
    xdc = (out / "tinyyolo.xdc").read_text()
    # MII: rx_clk, tx_clk, rx_dv, rx_er, rx_data[0..3], col, crs, tx_en, tx_data[0..3],
    # reset, MDC, MDIO (Digilent's Arty A7 reference); the 25 MHz reference clock.
    for pin in ("F15", "H16", "G16", "C17", "D18", "E17", "E18", "G17", "D17", "G14", "H15",
                "H14", "J14", "J13", "H17", "C16", "F16", "K13", "G18"):
        assert f"LOC {pin} " in xdc, pin
    ports = set(re.findall(r'get_ports "([^"\\]+)', xdc))
    eth_xdc = (out / "tinyyolo_eth.xdc").read_text()
    named = set(re.findall(r"get_ports \{([^}]+)\}", eth_xdc))
    assert named == {"eth_mii_0__rx_clk__io", "eth_mii_0__tx_clk__io"} and named <= ports
    osc = re.search(r"-include_generated_clocks \{([^}]+)\}", eth_xdc)[1]
    assert f"create_clock -name {osc} " in xdc               # the oscillator's clock
    verilog = (out / "tinyyolo.v").read_text()
    inst = verilog[verilog.index("liteeth_core "):]
    assert _const(inst, "ip_address") == 0x0A010203
    assert _const(inst, "link_sink_src_port") == 4242
    assert _const(inst, "mac_address") == 0x025459000050
    # IDENTIFY's reply carries the same addresses (Feature.ETHERNET, IP and port) and the
    # A7DDRPHY's CSR layout (the host's read leveling)
    ident = identity(HwConfig.load(BOARDS["arty_a7"].default_config_path()), engine=False,
                     memory=True, dram=True,
                     eth=EthSettings(ip="10.1.2.3", mac="02:54:59:00:00:50", udp_port=4242),
                     dram_phy=DramPhy.A7DDRPHY)
    assert ident.ethernet == "10.1.2.3:4242"
    value = int.from_bytes(ident.encode(), "little")       # a reply register's constant
    assert re.search(rf"'h0*{value:x}\b", verilog), f"{value:x}"
    stamp = json.loads((out / hwb.STAMP).read_text())
    assert stamp["tree"]["eth"] == {"ip": "10.1.2.3", "mac": "02:54:59:00:00:50",
                                    "udp_port": 4242}


@pytest.mark.parametrize("args,message", [
    (["--ip", "10.1.2"], "bad IPv4 address '10.1.2'"),
    (["--ip", "224.0.0.1"], "cannot be a device's address"),
    (["--ip", "0.0.0.0"], "cannot be a device's address"),
    (["--udp-port", "0"], "UDP port 0 outside 1..65535"),
    (["--udp-port", "70000"], "UDP port 70000 outside"),
    (["--mac", "03:00:00:00:00:01"], "multicast MAC"),
    (["--mac", "02:00:00:00:01"], "bad MAC address"),
])
def test_bad_addresses_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--board", "arty_a7", "--no-estimate", "--build-dir", str(tmp_path), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / hwb.STAMP).exists()


def test_addresses_without_ethernet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--board", "ulx3s_85f", "--ip", "10.0.0.2", "--build-dir", str(tmp_path)])
    assert e.value.code == 2 and "ulx3s_85f has no Ethernet" in capsys.readouterr().err
    assert main(["--board", "arty_a7", "--system", "streaming", "--ip", "10.0.0.2",
                 "--no-estimate", "--build-dir", str(tmp_path)]) == 1
    assert "streaming system has no Ethernet" in capsys.readouterr().err


def test_only_the_arty_dram_system_has_ethernet() -> None:
    arty = BOARDS["arty_a7_100"]
    assert hwb.eth_settings(arty, "dram") == device_defaults(arty.eth)
    assert hwb.eth_settings(arty, "streaming") is None
    assert hwb.eth_settings(BOARDS["orangecrab_85f"], "dram") is None


def test_bitstream_for_other_addresses_is_refused(tmp_path: Path) -> None:
    arty = BOARDS["arty_a7"]
    other = EthSettings(ip="10.9.9.9", mac="02:00:00:00:00:09", udp_port=5000)
    hwb.write_stamp(tmp_path, arty, DEFAULT, system="dram", eth=other)
    (tmp_path / "tinyyolo.bit").write_bytes(b"made by vivado")
    hwb.record_bitstream(arty, DEFAULT, tmp_path, eth=other)
    assert hwb.bitstream_problem(arty, DEFAULT, tmp_path, eth=other) is None
    problem = hwb.bitstream_problem(arty, DEFAULT, tmp_path)      # the default addresses
    assert problem and "Ethernet at 10.9.9.9:5000" in problem and "192.168.1.50:7777" in problem
    with pytest.raises(hwb.BuildError, match="does not hold this checkout's tree"):
        hwb.record_bitstream(arty, DEFAULT, tmp_path)
