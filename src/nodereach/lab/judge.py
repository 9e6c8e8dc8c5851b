"""Compare what the check reported (a typed CheckView) with a scenario's ground truth, fact by fact.

Each fact names one thing the ground truth asserts (NAT layers, CGNAT, RFC 4787 mapping and filtering, UDP
blocked, provider-filtered ports; per IPv6: public address, translation, filtering) with the truth and the
finding both typed, and one status: `match`, `mismatch`, or `untested` (the check does not test it yet:
neither right nor wrong). The texts are only for people; no decision is made on a rendered string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nodereach.lab.checkview import CheckView
from nodereach.lab.scenarios import GroundTruth
from nodereach.net import Family

Status = Literal["match", "mismatch", "untested"]
NOT_YET_TESTED = "not yet tested"
UNOBSERVABLE_NOTE = "'?' is right: mapping/filtering are unobservable without UDP"

SHORT = {"endpoint-independent": "EI", "address-dependent": "AD", "address-and-port-dependent": "APD",
         "no-nat": "no-nat", "unknown": "?"}


@dataclass(frozen=True)
class Fact:
    """One ground-truth fact next to what the check found about it."""

    name: str
    family: Family
    truth: str
    found: str
    status: Status
    note: str = ""
    """Why a match that looks different is right (e.g. '?' where UDP is blocked)."""

    @property
    def ok(self) -> bool:
        return self.status != "mismatch"


def _short(value: str) -> str:
    return SHORT.get(value, value)


def _layers_text(present: bool | None, layers: int | None) -> str:
    if present is False:
        return "no NAT"
    if present is None:
        return "NAT unknown"
    n = "?" if layers is None else str(layers)
    return f"{n} NAT layer{'s' if (layers or 0) > 1 else ''}"


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


def _ports_text(ports: set[int]) -> str:
    return ",".join(map(str, sorted(ports))) if ports else "none"


def _status(ok: bool) -> Status:
    return "match" if ok else "mismatch"


def judge(truth: GroundTruth, found: CheckView) -> tuple[Fact, ...]:
    """Every fact of `truth` the check reports on, compared field by field with `found`."""
    return (*_ipv4_facts(truth, found), *_ipv6_facts(truth, found))


def _ipv4_facts(truth: GroundTruth, found: CheckView) -> list[Fact]:
    nat = found.nat
    facts = [Fact("NAT", 4, _layers_text(truth.nat_present, truth.layers), _layers_text(nat.present, nat.layers),
                  _status(nat.present == truth.nat_present
                          and (not truth.nat_present or nat.layers == truth.layers)))]
    if truth.nat_present:
        facts.append(Fact("CGNAT", 4, _yes_no(truth.cgnat), _yes_no(nat.cgnat), _status(nat.cgnat == truth.cgnat)))
        for name, want, got in (("mapping", truth.mapping, nat.mapping), ("filtering", truth.filtering, nat.filtering)):
            # RFC 4787 behaviour is a UDP property: with UDP blocked, "unknown" is the right answer.
            unobservable = truth.udp_blocked and got == "unknown"
            facts.append(Fact(name, 4, _short(want), _short(got), _status(got == want or unobservable),
                              note=UNOBSERVABLE_NOTE if unobservable and got != want else ""))
    else:
        wall = "firewall" in found.causes
        facts.append(Fact("host firewall", 4, _yes_no(truth.firewall), _yes_no(wall), _status(wall == truth.firewall)))
    blocked = found.udp.outbound is False
    facts.append(Fact("UDP blocked", 4, _yes_no(truth.udp_blocked), _yes_no(blocked),
                      _status(blocked == truth.udp_blocked)))
    got_ports = {*found.udp.blocked_ports, *found.tcp.blocked_ports}
    facts.append(Fact("filtered ports", 4, _ports_text(set(truth.filtered_ports)), _ports_text(got_ports),
                      _status(got_ports == set(truth.filtered_ports))))
    return facts


def _ipv6_facts(truth: GroundTruth, found: CheckView) -> list[Fact]:
    v6 = truth.ipv6
    tested = found.ipv6_tested
    if v6 is None:
        # The client has no IPv6: a right answer says so (untested or no connectivity), never "unreachable".
        if not tested:
            return [Fact("IPv6", 6, "none", NOT_YET_TESTED, "untested")]
        got = found.reachability.ipv6 if found.reachability is not None else None
        return [Fact("IPv6", 6, "none", str(got), _status(got in ("untested", "no-connectivity")
                                                          and found.public.ipv6 is None))]
    if not tested or found.ipv6 is None:
        return [Fact(name, 6, want, NOT_YET_TESTED, "untested") for name, want in (
            ("IPv6 public address", v6.public_address), ("IPv6 translation", v6.translation),
            ("IPv6 filtering", _short(v6.filtering)))]
    return [
        Fact("IPv6 public address", 6, v6.public_address, found.public.ipv6 or "?",
             _status(found.public.ipv6 == v6.public_address)),
        Fact("IPv6 translation", 6, v6.translation, found.ipv6.translation,
             _status(found.ipv6.translation == v6.translation)),
        Fact("IPv6 filtering", 6, _short(v6.filtering), _short(found.ipv6.filtering),
             _status(found.ipv6.filtering == v6.filtering)),
    ]


def verdict(facts: tuple[Fact, ...]) -> bool | None:
    """True: every tested fact matches; False: one does not; None: nothing was tested."""
    tested = [f for f in facts if f.status != "untested"]
    if not tested:
        return None
    return all(f.ok for f in tested)


# --- the same facts as text, for people --------------------------------------------------------------------
def truth_text(t: GroundTruth, *, observable_only: bool = False) -> str:
    """The IPv4 ground truth in the demo's words, e.g. "2 NAT layers (CGNAT), EI mapping, APD filtering"."""
    if not t.nat_present:
        text = "no NAT" + (", host firewall" if t.firewall else "")
    else:
        text = f"{t.layers} NAT layer{'s' if t.layers > 1 else ''}{' (CGNAT)' if t.cgnat else ''}"
        if observable_only and t.udp_blocked:
            text += ", ? mapping, ? filtering"
        else:
            text += f", {_short(t.mapping)} mapping, {_short(t.filtering)} filtering"
    if t.udp_blocked:
        text += ", UDP blocked"
    if t.filtered_ports:
        text += f", ports {','.join(map(str, t.filtered_ports))} filtered"
    return text


def found_text(found: CheckView) -> str:
    """What the check found about IPv4, in the same words as `truth_text`."""
    nat = found.nat
    if nat.present is False:
        text = "no NAT" + (", host firewall" if "firewall" in found.causes else "")
    elif nat.present is None:
        text = "NAT unknown"
    else:
        text = _layers_text(nat.present, nat.layers) + (" (CGNAT)" if nat.cgnat else "")
        text += f", {_short(nat.mapping)} mapping, {_short(nat.filtering)} filtering"
    if found.udp.outbound is False:
        text += ", UDP blocked"
    ports = {*found.udp.blocked_ports, *found.tcp.blocked_ports}
    if ports:
        text += f", ports {_ports_text(ports)} filtered"
    return text


def truth_text6(t: GroundTruth) -> str:
    """The IPv6 ground truth in a few words ("none" without IPv6)."""
    v6 = t.ipv6
    if v6 is None:
        return "none"
    translation = {"none": "no translation", "nptv6": "NPTv6", "nat66": "NAT66"}[v6.translation]
    wall = "firewall" if v6.firewall else "no filter"
    return f"{v6.public_address}, {translation}, {wall} ({_short(v6.filtering)} filtering)"


def found_text6(facts: tuple[Fact, ...]) -> str:
    """What the check found about IPv6 ("not yet tested" while the check does not test it)."""
    six = [f for f in facts if f.family == 6]
    if not six or all(f.status == "untested" for f in six):
        return NOT_YET_TESTED
    return ", ".join(f"{f.name.removeprefix('IPv6 ')}: {f.found}" for f in six)


@dataclass(frozen=True)
class Finding:
    """What one demo probe found in one scenario: judged facts, and extra columns for people."""

    facts: tuple[Fact, ...] = ()
    columns: tuple[tuple[str, str], ...] = ()
    """(column, text) pairs, e.g. ("reachable", "unreachable (udp no, tcp no)"), shown as they are."""
