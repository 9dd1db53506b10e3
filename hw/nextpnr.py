"""nextpnr's log, read: Fmax per clock, the design's clock constraints, whether timing
was met, and the critical path (`hw.build` and the ECP5 benches)."""

from __future__ import annotations

import re

__all__ = ["NEXTPNR_DEFAULT_MHZ", "constrained_net", "critical_path",
           "parse_nextpnr_constraints", "parse_nextpnr_fmax", "timing_problems"]

_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at "
                   r"([\d.]+) MHz\)")


def parse_nextpnr_fmax(log: str) -> dict[str, tuple[float, float]]:
    """{clock: (fmax MHz, target MHz)} from a nextpnr log; the last report of each clock wins."""
    return {m[1]: (float(m[2]), float(m[4])) for m in _FMAX.finditer(log)}


#: nextpnr's words for a clock constraint the design set: an LPF ``FREQUENCY`` (logged by
#: ``addClock``) or one it derived from such a constraint through a PLL, clock divider or
#: edge-clock buffer.
_CONSTRAINED = (re.compile(r"constraining clock net '([^']+)' to ([\d.]+) MHz"),
                re.compile(r"Derived frequency constraint of ([\d.]+) MHz for net (\S+)"))
#: nextpnr's target for a clock without a constraint (``--freq``, which the build does
#: not set): its "PASS" at this target checks nothing.
NEXTPNR_DEFAULT_MHZ = 12.0


def parse_nextpnr_constraints(log: str) -> dict[str, float]:
    """{net: MHz} of every clock constraint the design set, as nextpnr's log names them."""
    found = {m[1]: float(m[2]) for m in _CONSTRAINED[0].finditer(log)}
    found.update({m[2]: float(m[1]) for m in _CONSTRAINED[1].finditer(log)})
    return found


def constrained_net(clock: str, target: float, constrained: dict[str, float]) -> str | None:
    """The design's constraint behind a clock of nextpnr's Fmax report (`target` MHz), or
    None: the constrained net its log names (the report names the global net
    ``$glbnet$NET`` or the input buffer's output ``NET$TRELLIS_IO_IN``); else, for a target
    other than nextpnr's default, the clock itself (nextpnr carries a constraint through an
    input buffer without logging it, and sets a target only from a constraint)."""
    bare = clock.removeprefix("$glbnet$")
    for name in (clock, bare, bare.removesuffix("$TRELLIS_IO_IN")):
        if name in constrained:
            return name
    return clock if abs(target - NEXTPNR_DEFAULT_MHZ) > 0.005 else None


def timing_problems(log: str) -> list[str]:
    """What makes a nextpnr run's timing fail, one line each (empty: every clock met its
    constraint): a clock below its target, a clock without a constraint of the design's
    (nextpnr checked it against its default target only), no Fmax report at all."""
    fmax = parse_nextpnr_fmax(log)
    if not fmax:
        return ["nextpnr reported no Fmax (no clock, or the log is incomplete)"]
    constrained = parse_nextpnr_constraints(log)
    problems = []
    for clk, (f, target) in fmax.items():
        if constrained_net(clk, target, constrained) is None:
            problems.append(f"clock {clk!r} has no frequency constraint (Fmax {f:.2f} MHz "
                            f"against nextpnr's default {target:.2f} MHz checks nothing)")
        elif f < target:
            problems.append(f"clock {clk!r}: Fmax {f:.2f} MHz below its target {target:.2f} MHz")
    return problems


def critical_path(log: str) -> str:
    """nextpnr's last critical path report for a clock (clock to clock), without the
    library source lines; empty if the log has none."""
    i = log.rfind("Critical path report for clock")
    if i < 0:
        return ""
    keep = []
    for line in log[i:].splitlines():
        if "Defined in:" in line or "/share/" in line:
            continue
        keep.append(line.removeprefix("Info: "))
        if "ns logic," in line:
            break
    return "\n".join(keep)
