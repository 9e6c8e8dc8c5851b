"""The watcher's mind: observations in, declared state, changes and error kinds out. No I/O, no clock.

Every handler takes the current `WatchState` and one observation and returns a `Step` with the next state;
nothing is mutated, so a table of (observations -> changes) tests all of it without root or a network.

Rules (docs/watch.md):
- a cheap fact (public address, listener, advertised address and port) is declared after `hysteresis` consecutive
  probes agree; a fact only the full check sees (port reachability, verdict, NAT layers, CGNAT) after
  `check_confirmations` checks agree, or after one check when a declared cheap change triggered it;
- the keeper's reports on mappings are the gateway's word and are declared at once;
- the first value of a fact is its baseline: no event, unless it is a problem (a mapping that could not be
  made, a server that never answered). Node facts (listener, ports, reachability, peers, advertised address)
  raise no event during the start-up grace period; at its end the ones still in a problem state do;
- a server is declared unanswered after `hysteresis` failed probes in a row (spaced a full interval, then
  backing off), and answering again at its first answer: one event each way, never one per failed probe;
- "could not tell" (no answer, a failed check, an unreadable RPC) never changes a declared value.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace

from nodereach.net import Endpoint, Family, PortSpec, Transport, canonical, family_of
from nodereach.node.advertised import Observed, compare
from nodereach.watch.facts import Declared, Tracked, force, observe
from nodereach.watch.model import (
    Change,
    CheckObservation,
    ErrorKind,
    EventKind,
    MappingObservation,
    NodeView,
    PortKey,
    PortReach,
    PortState,
    ProbeObservation,
    Scalar,
    What,
)
from nodereach.watch.policy import Policy
from nodereach.watch.state import AdRef, Lease, MappingValue, PortRef, ServerHealth, Step, WatchState

__all__ = ["NODE_FACTS", "AdRef", "Lease", "MappingValue", "PortRef", "ServerHealth", "Step", "WatchState",
           "on_check", "on_mapping", "on_probe", "on_tick", "public_addresses", "start", "stop"]

NODE_FACTS: frozenset[What] = frozenset({"listener", "port", "reachable", "node_peers", "advertised"})
"""Facts that depend on the node itself: quiet during the start-up grace period."""

class _Out:
    """Collects the changes and errors of one step, applying the grace rule and the last-change times."""

    def __init__(self, state: WatchState, wall: float) -> None:
        self.state = state
        self.wall = wall
        self.changes: list[Change] = []
        self.errors: list[ErrorKind] = []
        self.last_change = dict(state.last_change)
        self.trigger = False

    def change(self, kind: EventKind, what: What, before: Scalar, after: Scalar, message: str, *,
               trigger: bool = False, port: int | None = None, protocol: Transport | None = None,
               family: Family | None = None, method: str | None = None, server: str | None = None) -> None:
        if trigger:
            self.trigger = True
        if what in NODE_FACTS and self.state.in_grace:
            return  # exported, not announced: the node has just started
        self.last_change[what] = self.wall
        self.changes.append(Change(kind, what, before, after, message, self.wall, port=port, protocol=protocol,
                                   family=family, method=method, server=server))

    def step(self, state: WatchState) -> Step:
        state = replace(state, last_change=self.last_change)
        if self.trigger:
            state = replace(state, check_requested=True, check_trusted=True)
        return Step(state, tuple(self.changes), tuple(self.errors))


# --- start and stop --------------------------------------------------------------------------------------
def start(policy: Policy, *, mono: float, wall: float, ports: Iterable[PortRef], servers: Iterable[str],
          message: str = "watching") -> tuple[WatchState, Change]:
    """The initial state (the first full check is due at once) and the `started` event."""
    port_list = tuple(dict.fromkeys(ports))
    state = WatchState(started_mono=mono, grace_until=mono + policy.grace, ports=port_list,
                       servers={s: ServerHealth(next_due=mono) for s in dict.fromkeys(servers)},
                       grace_over=policy.grace <= 0, next_check=mono)
    return state, Change("started", None, None, None, message, wall)


def stop(state: WatchState, wall: float, message: str = "stopped") -> Change:
    return Change("stopped", None, None, None, message, wall)


# --- cheap probes ----------------------------------------------------------------------------------------
def on_probe(state: WatchState, obs: ProbeObservation, policy: Policy) -> Step:
    out = _Out(state, obs.wall)
    state = _servers(state, obs, policy, out)
    state = _public(state, obs, policy, out)
    if obs.listening is not None:
        state = _listeners(state, obs.listening, policy, out)
        if obs.families is not None:
            state = replace(state, families=dict(obs.families))
    elif state.ports:
        out.errors.append("listeners-unreadable")
    if obs.node is not None:
        if obs.node.error is not None:
            out.errors.append("node-unreadable")
        else:
            state = _node(state, obs.node, obs.mono, policy, out)
    state = _inbound_threshold(state, obs.mono, policy, out)
    state = _grace(state, obs.mono, out)
    return out.step(state)


def _servers(state: WatchState, obs: ProbeObservation, policy: Policy, out: _Out) -> WatchState:
    answered: dict[str, bool] = {}
    for a in obs.answers:
        answered[a.server] = answered.get(a.server, False) or a.mapped is not None
    if not answered:
        return state
    servers = dict(state.servers)
    for name, ok in answered.items():
        h = servers.get(name, ServerHealth())
        if ok:
            up, declared = force(h.up, True)
            h = ServerHealth(up, 0, obs.mono + policy.interval)
            if declared is not None and not declared.baseline:
                out.change("server-answering", "server", False, True, f"the server {name} answers again",
                           trigger=True, server=name)
        else:
            out.errors.append("server-unanswered")
            failures = h.failures + 1
            up = h.up
            if failures >= policy.hysteresis:
                up, declared = force(h.up, False)
                if declared is not None:
                    out.change("server-unanswered", "server", None if declared.baseline else True, False,
                               f"the server {name} stopped answering ({failures} probes in a row); asking it "
                               "less often until it answers again", server=name)
            h = ServerHealth(up, failures, obs.mono + policy.server_delay(failures))
        servers[name] = h
    return replace(state, servers=servers)


def public_addresses(obs: ProbeObservation) -> dict[Family, str]:
    """Per family, the address most servers saw (ties: the first server's), from the answers that came."""
    seen: dict[Family, Counter[str]] = {}
    for a in obs.answers:
        if a.mapped is not None:
            seen.setdefault(a.family, Counter())[a.mapped.address] += 1
    return {fam: counts.most_common(1)[0][0] for fam, counts in seen.items()}


def _public(state: WatchState, obs: ProbeObservation, policy: Policy, out: _Out) -> WatchState:
    found = public_addresses(obs)
    if not found:
        return state
    public = dict(state.public)
    for fam, addr in sorted(found.items()):
        fact, declared = observe(public.get(fam, Tracked()), addr, policy.hysteresis)
        public[fam] = fact
        if declared is not None and not declared.baseline:
            out.change("public-address-changed", "public_address", declared.before, declared.after,
                       f"the public IPv{fam} address changed {declared.before} -> {declared.after}",
                       trigger=True, family=fam)
    return replace(state, public=public)


def _listeners(state: WatchState, listening: frozenset[PortRef], policy: Policy, out: _Out) -> WatchState:
    listeners = dict(state.listeners)
    for ref in state.ports:
        fact, declared = observe(listeners.get(ref, Tracked()), ref in listening, policy.hysteresis)
        listeners[ref] = fact
        if declared is None:
            continue
        port, proto = ref
        if declared.after:
            if not declared.baseline:
                out.change("listener-back", "listener", False, True, f"a program listens on {port}/{proto} again",
                           trigger=True, port=port, protocol=proto)
        else:
            out.change("listener-gone", "listener", None if declared.baseline else True, False,
                       f"nothing listens on {port}/{proto} any more" if not declared.baseline
                       else f"nothing listens on {port}/{proto}", trigger=not declared.baseline,
                       port=port, protocol=proto)
    return replace(state, listeners=listeners)


def _node(state: WatchState, view: NodeView, mono: float, policy: Policy, out: _Out) -> WatchState:
    zero_since = state.inbound_zero_since
    inbound_zero = state.inbound_zero
    if view.inbound is not None:
        if view.inbound > 0:
            zero_since = None
            inbound_zero, declared = force(inbound_zero, False)
            if declared is not None and declared.before is True:
                out.change("node-inbound-back", "node_peers", 0, view.inbound,
                           f"the node has inbound peers again ({view.inbound})")
        elif zero_since is None:
            zero_since = mono
    advertised = dict(state.advertised)
    for fam, fact in state.public.items():
        if not fact.known or fact.declared is None:
            continue
        mine = {_canon(a) for a in view.advertised if _family(a) == fam}
        mine.discard(None)
        if not mine:
            continue
        match = fact.declared in mine
        new, declared_adv = observe(advertised.get(fam, Tracked()), match, policy.hysteresis)
        advertised[fam] = new
        if declared_adv is None:
            continue
        listed = ", ".join(sorted(a for a in mine if a))
        if not match:
            out.change("advertised-address-mismatch", "advertised", None if declared_adv.baseline else True, False,
                       f"the node advertises {listed} but its public IPv{fam} address is {fact.declared}",
                       family=fam)
        elif not declared_adv.baseline:
            out.change("advertised-address-matches", "advertised", False, True,
                       f"the node advertises its public IPv{fam} address {fact.declared} again", family=fam)
    state = replace(state, node=view, inbound_zero_since=zero_since, inbound_zero=inbound_zero, advertised=advertised)
    return _advertised_ports(state, view, policy, out)


def _advertised_ports(state: WatchState, view: NodeView, policy: Policy, out: _Out) -> WatchState:
    """The advertised port against where peers get in, judged as the check judges it
    (nodereach.node.advertised.compare): the port a kept IPv4 mapping's external side has (the router may
    have given another one), and the node's ports something listens on."""
    public = {fam: f.declared for fam, f in state.public.items() if f.known and f.declared is not None}
    ads = [a for a in view.advertisements if a.host_kind == "ip" and a.address and a.port is not None
           and a.family in public and _canon(a.address) == public[a.family]]
    if not ads:
        return state
    endpoints: dict[PortSpec, Endpoint] = {}
    for key, m in state.mappings.items():
        if key.family == 4 and m.known and m.declared is not None and m.declared.present and m.declared.external:
            with contextlib.suppress(ValueError):
                endpoints[PortSpec(key.port, key.protocol)] = Endpoint.parse(m.declared.external)
    listening = tuple(PortSpec(p, t) for (p, t), f in sorted(state.listeners.items()) if f.declared is True)
    software = view.software or "the node"
    found = {(p.advertised.family, p.advertised.protocol): p for p in
             compare(software, ads, Observed(public, endpoints, listening))
             if p.code == "advertised-port-mismatch" and p.advertised is not None and p.advertised.family}
    facts, why = dict(state.advertised_ports), dict(state.advertised_port_why)
    for a in ads:
        assert a.family is not None
        ref: AdRef = (a.family, a.protocol)
        problem = found.get(ref)
        if problem is not None:
            why[ref] = problem.detail + (f" (set {problem.settings[0]})" if problem.settings else "")
        fact, declared = observe(facts.get(ref, Tracked()), problem is None, policy.hysteresis)
        facts[ref] = fact
        if declared is None:
            continue
        if not declared.after:
            out.change("advertised-port-mismatch", "advertised", None if declared.baseline else True, False,
                       why[ref], port=a.port, protocol=a.protocol, family=a.family)
        elif not declared.baseline:
            out.change("advertised-port-matches", "advertised", False, True,
                       f"{software} advertises {a.port}/{a.protocol} over IPv{a.family} where peers get in again",
                       port=a.port, protocol=a.protocol, family=a.family)
    return replace(state, advertised_ports=facts, advertised_port_why=why)


def _inbound_threshold(state: WatchState, mono: float, policy: Policy, out: _Out) -> WatchState:
    """Inbound peers at zero for `inbound_zero_after` (counted from the end of the grace period at the earliest)."""
    if state.inbound_zero_since is None or state.inbound_zero.declared is True:
        return state
    since = max(state.inbound_zero_since, state.grace_until)
    if mono - since < policy.inbound_zero_after:
        return state
    fact, declared = force(state.inbound_zero, True)
    if declared is not None:
        minutes = (mono - state.inbound_zero_since) / 60
        out.change("node-inbound-zero", "node_peers", None, 0,
                   f"the node has had no inbound peers for {minutes:.0f} min")
    return replace(state, inbound_zero=fact)


def _grace(state: WatchState, mono: float, out: _Out) -> WatchState:
    """At the end of the grace period, node facts still in a problem state are announced once."""
    if state.grace_over or mono < state.grace_until:
        return state
    state = replace(state, grace_over=True)
    out.state = state
    for (port, proto), fact in sorted(state.listeners.items()):
        if fact.known and fact.declared is False:
            out.change("listener-gone", "listener", None, False,
                       f"nothing listens on {port}/{proto} (start-up grace period over)", port=port, protocol=proto)
    for key, reach in sorted(state.port_reach.items()):
        if reach.known and reach.declared == "unreachable":
            out.change("port-unreachable", "port", None, False, f"{key} is not reachable from outside "
                       "(start-up grace period over)", port=key.port, protocol=key.protocol, family=key.family)
    if state.verdict.known and state.verdict.declared != "reachable":
        out.change("reachability-changed", "reachable", None, state.verdict.declared,
                   f"the node is {state.verdict.declared} (start-up grace period over)")
    for fam, adv in sorted(state.advertised.items()):
        if adv.known and adv.declared is False:
            pub = state.public.get(fam)
            out.change("advertised-address-mismatch", "advertised", None, False,
                       f"the node does not advertise its public IPv{fam} address "
                       f"{pub.declared if pub else '?'} (start-up grace period over)", family=fam)
    for (fam, proto), ad_port in sorted(state.advertised_ports.items()):
        if ad_port.known and ad_port.declared is False:
            out.change("advertised-port-mismatch", "advertised", None, False,
                       f"{state.advertised_port_why.get((fam, proto), 'the advertised port does not reach the node')}"
                       " (start-up grace period over)", protocol=proto, family=fam)
    return state


def on_tick(state: WatchState, mono: float, wall: float, policy: Policy) -> Step:
    """Time passing alone: the grace period ends, inbound peers have been at zero long enough."""
    out = _Out(state, wall)
    state = _inbound_threshold(state, mono, policy, out)
    state = _grace(state, mono, out)
    return out.step(state)


# --- full checks -----------------------------------------------------------------------------------------
def on_check(state: WatchState, obs: CheckObservation, policy: Policy, jitter_u: float = 0.5) -> Step:
    """One finished full check; `jitter_u` in [0, 1) places the next periodic check (0.5: no jitter)."""
    out = _Out(state, obs.wall)
    next_check = obs.mono + policy.check_spacing(jitter_u)
    trusted = state.check_trusted
    state = replace(state, next_check=next_check, check_requested=False, check_trusted=False,
                    last_check_end=obs.mono)
    out.state = state
    if obs.verdict is None:
        out.errors.append("check-failed")
        return out.step(state)
    need = 1 if trusted else policy.check_confirmations
    states = {pr.key: _port_state(pr, state) for pr in obs.ports}
    verdict, declared_v = observe(state.verdict, _verdict(obs.verdict, states), need)
    if declared_v is not None and not (declared_v.baseline and declared_v.after == "reachable"):
        was = f" (was {declared_v.before})" if declared_v.before is not None else ""
        out.change("reachability-changed", "reachable", declared_v.before, declared_v.after,
                   f"the node is {declared_v.after}{was}")
    reach = dict(state.port_reach)
    for pr in obs.ports:
        value = states[pr.key]
        if value is None:
            continue
        fact, declared = observe(reach.get(pr.key, Tracked()), value, need)
        reach[pr.key] = fact
        if declared is None or declared.after == "family-unused":
            continue  # the node does not listen over this family: neither reachable nor unreachable
        k = pr.key
        listening = state.listeners.get((k.port, k.protocol))
        reason = "nothing-listening" if not pr.reachable and listening is not None and listening.known \
            and listening.declared is False else pr.reason  # the watcher knows why: no program holds the port
        why = f" ({reason})" if reason else ""
        before = _was_reachable(declared.before)
        if declared.after == "unreachable":
            out.change("port-unreachable", "port", before, False,
                       f"{k} is not reachable from outside{why}", port=k.port, protocol=k.protocol, family=k.family)
        elif not declared.baseline:
            again = " again" if before is False else ""
            out.change("port-reachable", "port", before, True, f"{k} is reachable from outside{again}{why}",
                       port=k.port, protocol=k.protocol, family=k.family)
    nat_layers, cgnat = state.nat_layers, state.cgnat
    if obs.nat_layers is not None:
        nat_layers, d_layers = observe(nat_layers, obs.nat_layers, need)
        if d_layers is not None and not d_layers.baseline:
            out.change("nat-layers-changed", "nat_layers", d_layers.before, d_layers.after,
                       f"NAT layers between the node and the internet: {d_layers.before} -> {d_layers.after}")
    if obs.cgnat is not None:
        cgnat, d_cgnat = observe(cgnat, obs.cgnat, need)
        if d_cgnat is not None and not d_cgnat.baseline:
            out.change("cgnat-changed", "cgnat", d_cgnat.before, d_cgnat.after,
                       "the line is now behind carrier-grade NAT" if d_cgnat.after
                       else "the line is no longer behind carrier-grade NAT")
    state = replace(state, verdict=verdict, port_reach=reach, nat_layers=nat_layers, cgnat=cgnat)
    if verdict.pending or nat_layers.pending or cgnat.pending or any(f.pending for f in reach.values()):
        state = replace(state, next_check=min(next_check, obs.mono + policy.confirm_check_delay))
    state = _grace(state, obs.mono, out)
    return out.step(state)


def _port_state(pr: PortReach, state: WatchState) -> PortState | None:
    """The check's answer for one port and family, read with what the watcher knows of the node's sockets:
    not reachable over a family none of the port's sockets takes (they are the node's: the listener probe
    sees them) is `family-unused`, as the check says `ipv4-only` / `ipv6-only` when its own scan sees it."""
    if pr.reachable is None:
        return None
    if pr.family_unused:
        return "family-unused"
    if pr.reachable:
        return "reachable"
    taken = state.families.get((pr.key.port, pr.key.protocol))
    if taken and pr.key.family not in taken:
        return "family-unused"
    return "unreachable"


def _verdict(verdict: str, states: Mapping[PortKey, PortState | None]) -> str:
    """The check's verdict, except that a family the node does not listen on does not make it partly
    reachable (the check's own rule, applied where only the watcher's listener probe knew the families)."""
    if verdict != "partly-reachable":
        return verdict
    told = [s for s in states.values() if s is not None]
    if "reachable" in told and "unreachable" not in told:
        return "reachable"
    return verdict


def _was_reachable(before: PortState | None) -> bool | None:
    """An event's `before` for a port: true / false, or null where it was not the node's port over the family
    (or not known yet)."""
    return {"reachable": True, "unreachable": False}.get(before) if before is not None else None


# --- the keeper ------------------------------------------------------------------------------------------
def on_mapping(state: WatchState, obs: MappingObservation) -> Step:
    out = _Out(state, obs.wall)
    ref = PortKey(obs.port, obs.protocol, obs.family)
    leases = dict(state.leases)
    if obs.present:
        if obs.lifetime_s is not None:
            leases[ref] = Lease(obs.method, obs.mono + obs.lifetime_s if obs.lifetime_s > 0 else None)
    else:
        leases.pop(ref, None)
    if obs.error is not None:
        out.errors.append("mapping")
    value = MappingValue(obs.present, obs.external if obs.present else None, obs.method if obs.present else None)
    mappings = dict(state.mappings)
    fact, declared = force(mappings.get(ref, Tracked()), value)
    mappings[ref] = fact
    if declared is not None:
        _mapping_change(ref, declared, obs.error, out)
    return out.step(replace(state, mappings=mappings, leases=leases))


def _mapping_change(key: PortKey, d: Declared[MappingValue], error: str | None, out: _Out) -> None:
    port, proto, family = key.port, key.protocol, key.family
    before = d.before.external if d.before is not None else None
    method = d.after.method or (d.before.method if d.before else None)
    why = f": {error}" if error else ""
    what = "mapping" if family == 4 else "IPv6 pinhole"

    def change(kind: EventKind, old: Scalar, new: Scalar, message: str, trigger: bool = True) -> None:
        out.change(kind, "mapping", old, new, message, trigger=trigger, port=port, protocol=proto, family=family,
                   method=method)

    if d.baseline:
        if not d.after.present:
            change("mapping-failed", None, None, f"could not {'map' if family == 4 else 'open an IPv6 pinhole for'} "
                   f"{port}/{proto}{why}", trigger=False)
        else:
            out.trigger = True  # the first mapping changes what a check finds: look now, not at the next period
        return
    assert d.before is not None
    if d.before.present and not d.after.present:
        change("mapping-lost", before, None, f"the {what} of {port}/{proto} ({before}) is gone{why}")
    elif not d.before.present and d.after.present:
        again = "mapped again" if family == 4 else "open again over IPv6"
        change("mapping-restored", before, d.after.external,
               f"{port}/{proto} is {again}: {d.after.external} via {d.after.method}")
    elif d.after.present:
        change("mapping-changed", before, d.after.external,
               f"the {what} of {port}/{proto} changed {before} -> {d.after.external} via {d.after.method}")


# --- helpers ---------------------------------------------------------------------------------------------
def _canon(text: str) -> str | None:
    try:
        return canonical(text)
    except ValueError:
        return None


def _family(text: str) -> Family | None:
    try:
        return family_of(text)
    except ValueError:
        return None
