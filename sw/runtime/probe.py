"""First contact with a device: IDENTIFY with a short timeout, and an error that says what
is most likely wrong when no answer comes or the device was built for another HwConfig.

The HwConfig files of this checkout (boards/*.json, build/*/hw_config.json) are read as
JSON files to name the config a device id belongs to; `boards` is not imported."""

from __future__ import annotations

from pathlib import Path

from hw.spec.config import DEFAULT, ConfigError, HwConfig
from hw.spec.protocol import Identity, ProtocolError
from sw.runtime.device import ConfigMismatchError, Device
from sw.runtime.link import Link, LinkError, LinkTimeout

__all__ = ["PROBE_SECONDS", "NoAnswerError", "config_sources", "identify"]

ROOT = Path(__file__).resolve().parents[2]
#: How long the first IDENTIFY may take in all (two tries).
PROBE_SECONDS = 5.0


class NoAnswerError(LinkTimeout):
    """No valid answer to IDENTIFY within the probe's time."""


def _known_configs() -> list[tuple[str, HwConfig]]:
    """(name, config) of the default config and every readable config file here."""
    found = [("the default config", DEFAULT)]
    files = sorted(ROOT.glob("boards/*.json")) + sorted(ROOT.glob("build/*/hw_config.json"))
    for f in files:
        try:
            found.append((str(f.relative_to(ROOT)), HwConfig.load(f)))
        except (ConfigError, UnicodeDecodeError):
            continue      # an unreadable file names no config; the probe's error stands
    return found


def config_sources(config_id: int) -> list[str]:
    """The names of the configs of this checkout with `config_id` (the default config,
    boards/*.json, build/*/hw_config.json)."""
    return [name for name, cfg in _known_configs() if cfg.config_id == config_id]


def _named(config_id: int) -> str:
    names = config_sources(config_id)
    return f"{config_id:08x} ({', '.join(names) if names else 'no config file of this checkout'})"


def _rates(expect: HwConfig) -> str:
    others = sorted({(cfg.uart_baud, name) for name, cfg in _known_configs()
                     if cfg.uart_baud != expect.uart_baud})
    return "; ".join(f"{name}: {baud} baud" for baud, name in others)


def identify(link: Link, expect: HwConfig, seconds: float = PROBE_SECONDS) -> Identity:
    """IDENTIFY the device behind `link` within `seconds` (two tries), refusing one built
    for another config than `expect`. NoAnswerError names the link, its baud rate, the
    expected config and the usual causes; ConfigMismatchError names both ids and the
    config files of each."""
    dev = Device(link, timeout=seconds / 2, retries=1)
    baud = getattr(link, "baud", None)
    at = f" at {baud} baud" if baud else ""
    try:
        return dev.identify(expect=expect)
    except ConfigMismatchError as e:
        err = ConfigMismatchError(e.expected, e.actual)
        names = config_sources(e.actual)
        files = [n for n in names if n.endswith(".json")]
        advice = ("leave --hw-config out (the device runs the default config)"
                  if "the default config" in names else
                  f"pass --hw-config {files[0]}" if files else
                  "pass the --hw-config the device was built with")
        err.args = (f"{link.name} answers as HwConfig {_named(e.actual)}, the host expects "
                    f"{_named(e.expected)}: {advice}, or load a bitstream built for "
                    f"{e.expected:08x}",)
        raise err from None
    except ProtocolError as e:
        raise LinkError(f"{link.name}{at}: the answer to IDENTIFY is not this project's "
                        f"({e}): another device, or gateware of another version") from None
    except LinkTimeout:
        if dev.bytes_in:
            what = (f"{dev.bytes_in} bytes came back but no valid frame: most likely a baud "
                    "rate other than the device's, or a noisy line")
        else:
            what = "nothing came back"
        if getattr(link, "session", None) is not None:      # a UDP link
            raise NoAnswerError(
                f"no answer from {link.name} within {seconds:g} s ({what}). The host expects "
                f"HwConfig {_named(expect.config_id)}. Usual causes: the cable or link LED; "
                "the host's interface without an address on the device's subnet (ip addr add "
                "192.168.1.1/24 dev IFACE); another IP or port than the build's (--host "
                "IP:PORT); no bitstream with Ethernet loaded") from None
        rates = _rates(expect)
        raise NoAnswerError(
            f"no answer from {link.name}{at} within {seconds:g} s (IDENTIFY sent twice, "
            f"{what}). The host expects HwConfig {_named(expect.config_id)}. Usual causes: "
            "the wrong port (the Arty's UART is its second port, e.g. /dev/ttyUSB1); a baud "
            "rate or --hw-config other than the board's build"
            + (f" ({rates})" if rates else "")
            + "; no bitstream loaded (LED0 does not blink: python -m hw.build --board NAME "
            "--program)") from None
