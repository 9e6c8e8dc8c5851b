"""The watcher's decisions as tables: observations in, declared changes, errors and metric samples out.

No root, no network, no clock: the detector is pure (nodereach.watch.detect)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nodereach.net import Endpoint, Family
from nodereach.p2p.advertised import Advertised
from nodereach.watch import detect, schedule
from nodereach.watch.facts import Tracked, force, observe
from nodereach.watch.model import (
    CheckObservation,
    MappingObservation,
    NodeView,
    PortKey,
    PortReach,
    ProbeObservation,
    StunAnswer,
)
from nodereach.watch.policy import Policy
from nodereach.watch.samples import GAUGES, samples

S1, S2 = "203.0.113.10:3478", "203.0.113.40:3478"
A, B = "198.51.100.2", "198.51.100.4"
P = Policy(interval=60, confirm_interval=5, hysteresis=3, check_confirmations=2, grace=300,
           inbound_zero_after=1800, server_backoff_max=900, check_period=900, check_jitter=0.1,
           confirm_check_delay=30, min_check_gap=30)
T0 = 1000.0
WALL0 = 1_700_000_000.0


def fresh(policy: Policy = P, ports: tuple[tuple[int, str], ...] = ((30303, "tcp"),),
          servers: tuple[str, ...] = (S1,)) -> detect.WatchState:
    state, started = detect.start(policy, mono=T0, wall=WALL0, ports=ports, servers=servers)  # type: ignore[arg-type]
    assert started.kind == "started"
    return state


def answer(server: str, address: str | None, family: int = 4) -> StunAnswer:
    return StunAnswer(server, family, Endpoint(address, 40000) if address else None,  # type: ignore[arg-type]
                      None if address else "timeout")


UP = {(30303, "tcp"), (30303, "udp")}


def probe(t: float, *answers: StunAnswer, listening: set[tuple[int, str]] | None = UP,
          node: NodeView | None = None) -> ProbeObservation:
    """A probe round; by default the node listens on its ports (`listening=None`: the table was unreadable)."""
    return ProbeObservation(T0 + t, WALL0 + t, tuple(answers),
                            frozenset(listening) if listening is not None else None, node)  # type: ignore[arg-type]


def check(t: float, verdict: str | None, reachable: bool | None = True, layers: int | None = 1,
          cgnat: bool | None = False, port: int = 30303) -> CheckObservation:
    ports = (PortReach(PortKey(port, "tcp", 4), reachable, None if reachable else "filtered"),)
    return CheckObservation(T0 + t, WALL0 + t, verdict, ports if verdict else (), layers, cgnat, 0.8)


def run(state: detect.WatchState, *steps: object, policy: Policy = P) -> tuple[detect.WatchState, list[str],
                                                                                list[str]]:
    """Feed observations in order; returns the final state, the change kinds and the error kinds."""
    kinds: list[str] = []
    errors: list[str] = []
    for obs in steps:
        if isinstance(obs, ProbeObservation):
            st = detect.on_probe(state, obs, policy)
        elif isinstance(obs, CheckObservation):
            st = detect.on_check(state, obs, policy)
        elif isinstance(obs, MappingObservation):
            st = detect.on_mapping(state, obs)
        else:
            raise TypeError(obs)
        state = st.state
        kinds += [c.kind for c in st.changes]
        errors += list(st.errors)
    return state, kinds, errors


def listening(t: float, up: bool) -> ProbeObservation:
    return probe(t, answer(S1, A), listening={(30303, "tcp")} if up else set())


# --- one fact --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("values", "need", "declared", "changes"), [
    (["a"], 3, "a", 0),                          # the first value is the baseline
    (["a", "b", "b"], 3, "a", 0),                # two of three: still pending
    (["a", "b", "b", "b"], 3, "b", 1),           # three in a row: declared
    (["a", "b", "b", "a", "b", "b"], 3, "a", 0),  # the old value in between resets the count
    (["a", "b", "c", "b", "c"], 3, "a", 0),      # a new candidate starts over
    (["a", "b"], 1, "b", 1),                     # need 1: at once
    (["a", "b", "a", "b", "a", "b"], 2, "a", 0),  # flapping never declares
])
def test_fact_hysteresis(values: list[str], need: int, declared: str, changes: int) -> None:
    fact: Tracked[str] = Tracked()
    seen = 0
    for v in values:
        fact, d = observe(fact, v, need)
        seen += d is not None and not d.baseline
    assert (fact.declared, seen) == (declared, changes)


def test_force_declares_at_once_and_repeats_nothing() -> None:
    fact, d = force(Tracked(), True)
    assert d is not None and d.baseline
    fact, d = force(fact, False)
    assert d is not None and (d.before, d.after) == (True, False)
    fact, d = force(fact, False)
    assert d is None


# --- public address --------------------------------------------------------------------------------------
def test_public_address_change_needs_three_probes_and_triggers_a_trusted_check() -> None:
    state = fresh()
    state, kinds, _ = run(state, probe(0, answer(S1, A)), probe(60, answer(S1, B)), probe(65, answer(S1, B)))
    assert kinds == [] and state.public[4].declared == A and state.probe_pending()
    assert schedule.probe_delay(state, P) == 5  # confirming: the next probe comes sooner
    st = detect.on_probe(state, probe(70, answer(S1, B)), P)
    [change] = st.changes
    assert (change.kind, change.what, change.before, change.after, change.family) == (
        "public-address-changed", "public_address", A, B, 4)
    assert st.state.check_requested and st.state.check_trusted
    assert st.state.last_change["public_address"] == WALL0 + 70
    assert schedule.probe_delay(st.state, P) == 60


def test_one_lost_answer_is_no_change_and_does_not_reset_a_candidate() -> None:
    state = fresh()
    state, kinds, errors = run(state, probe(0, answer(S1, A)), probe(60, answer(S1, None)),
                               probe(120, answer(S1, A)))
    assert kinds == [] and errors == ["server-unanswered"] and state.public[4].declared == A
    # unknown observations are skipped: B, (no answer), B, B still counts three Bs
    state, kinds, _ = run(state, probe(180, answer(S1, B)), probe(185, answer(S1, None)), probe(190, answer(S1, B)),
                          probe(195, answer(S1, B)))
    assert kinds == ["public-address-changed"]


def test_servers_disagreeing_majority_wins() -> None:
    obs = probe(0, answer(S1, A), answer(S2, B), answer("203.0.113.50:3478", B))
    assert detect.public_addresses(obs) == {4: B}
    assert detect.public_addresses(probe(0, answer(S1, A), answer(S2, B))) == {4: A}  # tie: the first server


def test_per_family() -> None:
    state = fresh()
    v6a, v6b = "2001:db8:1::10", "2001:db8:1::20"
    obs = [probe(0, answer(S1, A), answer(S1, v6a, 6))] + [probe(60 + i, answer(S1, A), answer(S1, v6b, 6))
                                                           for i in range(3)]
    state, _, _ = run(state, *obs[:1])
    changes = []
    for o in obs[1:]:
        st = detect.on_probe(state, o, P)
        state = st.state
        changes += st.changes
    assert [(c.family, c.before, c.after) for c in changes] == [(6, v6a, v6b)]
    assert state.public[4].declared == A


# --- servers ---------------------------------------------------------------------------------------------
def test_server_outage_one_event_each_way_backoff_and_counted_errors() -> None:
    state = fresh()
    state, kinds, errors = run(state, probe(0, answer(S1, A)))
    t = 0.0
    delays = []
    for _ in range(8):
        t = state.servers[S1].next_due - T0
        assert schedule.due_servers(state, T0 + t) == [S1]
        st = detect.on_probe(state, probe(t, answer(S1, None)), P)
        state = st.state
        kinds += [c.kind for c in st.changes]
        errors += list(st.errors)
        delays.append(state.servers[S1].next_due - (T0 + t))
    assert kinds == ["server-unanswered"]  # once, not once per failed probe
    assert errors == ["server-unanswered"] * 8  # every failure counted in the metric
    assert delays == [60, 60, 120, 240, 480, 900, 900, 900]
    assert state.public[4].declared == A  # no answer is no change
    assert not schedule.due_servers(state, state.servers[S1].next_due - 1)
    st = detect.on_probe(state, probe(t + 900, answer(S1, A)), P)
    assert [(c.kind, c.before, c.after, c.server) for c in st.changes] == [("server-answering", False, True, S1)]
    assert st.state.servers[S1].next_due == T0 + t + 900 + 60
    assert st.state.check_requested  # a server back: look again


def test_server_that_never_answered_is_reported_once() -> None:
    state = fresh()
    state, kinds, _ = run(state, *(probe(60 * i, answer(S1, None)) for i in range(5)))
    assert kinds == ["server-unanswered"]


def test_backoff_table() -> None:
    assert [P.server_delay(f) for f in range(1, 9)] == [60, 60, 120, 240, 480, 900, 900, 900]
    short = replace(P, interval=1.0, server_backoff_max=4.0)
    assert [short.server_delay(f) for f in range(1, 7)] == [1, 1, 2, 4, 4, 4]
    assert P.server_delay(10_000) == 900  # no overflow


def test_pending_change_asks_every_healthy_server_but_not_one_backing_off() -> None:
    state = fresh(servers=(S1, S2))
    state, _, _ = run(state, probe(0, answer(S1, A), answer(S2, A)))
    for i in range(3):
        state, _, _ = run(state, probe(60 + 60 * i, answer(S2, None)))
    state, _, _ = run(state, probe(200, answer(S1, B)))
    assert state.probe_pending()
    assert schedule.due_servers(state, T0 + 205) == [S1]  # S2 waits until 300


# --- listener and grace ----------------------------------------------------------------------------------
def test_listener_gone_in_grace_is_quiet_and_announced_when_grace_ends() -> None:
    state = fresh()
    state, kinds, _ = run(state, listening(0, True), listening(60, False), listening(65, False), listening(70, False))
    assert kinds == [] and state.listeners[(30303, "tcp")].declared is False  # exported, not announced
    assert state.check_requested  # the check still runs, so the metrics are true
    st = detect.on_tick(state, T0 + 301, WALL0 + 301, P)
    assert [(c.kind, c.before, c.after) for c in st.changes] == [("listener-gone", None, False)]
    state, kinds, _ = run(st.state, listening(360, True), listening(365, True), listening(370, True))
    assert kinds == ["listener-back"]
    state, kinds, _ = run(state, listening(430, False), listening(435, False), listening(440, False))
    assert kinds == ["listener-gone"]


def test_a_node_restart_within_the_hysteresis_is_no_event() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, _ = run(state, listening(0, True), listening(60, False), listening(65, False), listening(70, True))
    assert kinds == [] and state.listeners[(30303, "tcp")].declared is True and not state.probe_pending()


def test_unreadable_socket_table_is_an_error_not_a_change() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, errors = run(state, listening(0, True), probe(60, answer(S1, A), listening=None))
    assert kinds == [] and errors == ["listeners-unreadable"]


# --- full checks -----------------------------------------------------------------------------------------
def test_check_baseline_then_two_checks_to_declare() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, _ = run(state, check(0, "reachable"))
    assert kinds == [] and state.next_check == pytest.approx(T0 + 900)
    st = detect.on_check(state, check(900, "unreachable", reachable=False), P)
    assert st.changes == () and st.state.next_check == T0 + 930  # a confirming check 30 s later
    st = detect.on_check(st.state, check(930, "unreachable", reachable=False), P)
    assert [(c.kind, c.before, c.after) for c in st.changes] == [("reachability-changed", "reachable", "unreachable"),
                                                                ("port-unreachable", True, False)]
    port = st.changes[1]
    assert (port.port, port.protocol, port.family) == (30303, "tcp", 4)
    assert "filtered" in port.message


def test_check_after_a_declared_change_is_trusted() -> None:
    state = replace(fresh(), grace_over=True)
    state, _, _ = run(state, check(0, "reachable"), listening(10, True))
    state, kinds, _ = run(state, listening(60, False), listening(65, False), listening(70, False))
    assert kinds == ["listener-gone"] and schedule.check_due(state, T0 + 70, P)
    st = detect.on_check(state, check(72, "unreachable", reachable=False), P)
    assert [c.kind for c in st.changes] == ["reachability-changed", "port-unreachable"]
    assert "nothing-listening" in st.changes[1].message  # the watcher knows why: nothing holds the port
    assert not st.state.check_trusted


def test_min_gap_between_triggered_checks() -> None:
    state = replace(fresh(), grace_over=True, check_requested=True, last_check_end=T0, next_check=T0 + 900)
    assert not schedule.check_due(state, T0 + 10, P)
    assert schedule.check_wait(state, T0 + 10, P) == 20
    assert schedule.check_due(state, T0 + 30, P)


def test_check_jitter_bounds() -> None:
    assert P.check_spacing(0.0) == pytest.approx(810)
    assert P.check_spacing(0.5) == pytest.approx(900)
    assert P.check_spacing(0.999999) == pytest.approx(990, abs=0.01)


def test_check_that_could_not_tell_changes_nothing() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, errors = run(state, check(0, "reachable"), check(900, None), check(1800, None))
    assert kinds == [] and errors == ["check-failed", "check-failed"]
    assert state.verdict.declared == "reachable"


def test_partly_reachable_exports_zero_and_says_which_port() -> None:
    state = replace(fresh(ports=((30303, "tcp"), (30303, "udp"))), grace_over=True)
    obs = CheckObservation(T0, WALL0, "partly-reachable", (PortReach(PortKey(30303, "tcp"), True),
                                                           PortReach(PortKey(30303, "udp"), False, "filtered")), 1,
                           False)
    state, _, _ = run(state, obs)
    got = {(s.name, s.labels): s.value for s in samples(state, T0)}
    assert got[("nodereach_reachable", ())] == 0
    assert got[("nodereach_port_reachable", (("port", "30303"), ("protocol", "tcp"), ("family", "4")))] == 1
    assert got[("nodereach_port_reachable", (("port", "30303"), ("protocol", "udp"), ("family", "4")))] == 0


# --- a family the node does not listen on (issue 11's semantics) -----------------------------------------
def dual(t: float, v4: tuple[bool, str | None], v6: tuple[bool, str | None], verdict: str) -> CheckObservation:
    """A check with servers of both families: (reachable, reason) of 30303/tcp over IPv4 and over IPv6."""
    from nodereach.watch.fullcheck import FAMILY_UNUSED

    ports = tuple(PortReach(PortKey(30303, "tcp", fam), ok, why, family_unused=not ok and why in FAMILY_UNUSED)
                  for fam, (ok, why) in ((4, v4), (6, v6)))
    return CheckObservation(T0 + t, WALL0 + t, verdict, ports, 1, False)


def sockets(t: float, *families: int) -> ProbeObservation:
    """The listener probe: 30303/tcp held by sockets that take `families` (none: nothing listens)."""
    held = {(30303, "tcp"): frozenset(families)} if families else {}
    return ProbeObservation(T0 + t, WALL0 + t, (answer(S1, A),), frozenset(held), None, held)  # type: ignore[arg-type]


def port_series(state: detect.WatchState) -> dict[str, float]:
    return {dict(s.labels)["family"]: s.value for s in samples(state, T0) if s.name == "nodereach_port_reachable"}


OK, V4_ONLY, REFUSED, FILTERED = (True, "ok"), (False, "ipv4-only"), (False, "refused"), (False, "filtered")


@pytest.mark.parametrize(("held", "v6", "verdict", "kinds", "series", "reachable"), [
    # the check's own scan says the node listens on IPv4 only: the IPv6 entry is no port of the node
    ((4,), V4_ONLY, "reachable", [], {"4": 1}, 1),
    # the check could not tell (a bare `refused`), the watcher's probe sees IPv4 sockets only: the same,
    # and the check's `partly-reachable` (it counted IPv6) is the node's `reachable`
    ((4,), REFUSED, "partly-reachable", [], {"4": 1}, 1),
    # a dual-stack node whose IPv6 port the router's firewall drops: that is unreachable, and alerts
    ((4, 6), FILTERED, "partly-reachable", ["reachability-changed", "port-unreachable"], {"4": 1, "6": 0}, 0),
    # a dual-stack node that refuses over IPv6 (its [::] socket gone, 0.0.0.0 kept) is seen at the next probe
    ((4, 6), REFUSED, "partly-reachable", ["reachability-changed", "port-unreachable"], {"4": 1, "6": 0}, 0),
])
def test_family_the_node_does_not_listen_on(held: tuple[int, ...], v6: tuple[bool, str | None], verdict: str,
                                            kinds: list[str], series: dict[str, float], reachable: float) -> None:
    state = replace(fresh(), grace_over=True)
    state, got, _ = run(state, sockets(0, *held), dual(1, OK, v6, verdict), dual(31, OK, v6, verdict))
    assert got == kinds
    assert port_series(state) == series
    assert {s.value for s in samples(state, T0) if s.name == "nodereach_reachable"} == {reachable}


def test_node_drops_and_regains_ipv6() -> None:
    """A node upgrade binds IPv4 only: the IPv6 port leaves the picture quietly (the check's verdict stays
    `reachable`, its advice is `use-ipv6`); listening on IPv6 again, reachable: announced as good news."""
    state = replace(fresh(), grace_over=True)
    state, kinds, _ = run(state, sockets(0, 4, 6), dual(1, OK, OK, "reachable"))
    assert kinds == [] and port_series(state) == {"4": 1, "6": 1}
    state, kinds, _ = run(state, sockets(900, 4), dual(901, OK, V4_ONLY, "reachable"),
                          dual(931, OK, V4_ONLY, "reachable"))
    assert kinds == [] and port_series(state) == {"4": 1}
    first = detect.on_check(state, dual(1801, OK, OK, "reachable"), P)
    second = detect.on_check(first.state, dual(1831, OK, OK, "reachable"), P)  # two checks agree
    assert first.changes == ()
    assert [(c.kind, c.family, c.before, c.after) for c in second.changes] == [("port-reachable", 6, None, True)]
    assert "reachable from outside (ok)" in second.changes[0].message  # not "again": it was not the node's
    assert port_series(second.state) == {"4": 1, "6": 1}


def test_family_unused_is_not_announced_at_the_end_of_grace() -> None:
    state, kinds, _ = run(fresh(), sockets(0, 4), dual(1, OK, REFUSED, "partly-reachable"))
    assert kinds == []
    st = detect.on_tick(state, T0 + 300, WALL0 + 300, P)
    assert st.changes == ()
    assert port_series(st.state) == {"4": 1}


def test_unreachable_at_start_is_announced_after_grace_once() -> None:
    state = fresh()
    state, kinds, _ = run(state, check(0, "unreachable", reachable=False))
    assert kinds == []
    st = detect.on_tick(state, T0 + 300, WALL0 + 300, P)
    assert [c.kind for c in st.changes] == ["port-unreachable", "reachability-changed"]
    assert detect.on_tick(st.state, T0 + 400, WALL0 + 400, P).changes == ()


def test_nat_and_cgnat_changes() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, _ = run(state, check(0, "reachable", layers=1, cgnat=False),
                          check(900, "unreachable", reachable=False, layers=2, cgnat=True),
                          check(930, "unreachable", reachable=False, layers=2, cgnat=True))
    assert kinds == ["reachability-changed", "port-unreachable", "nat-layers-changed", "cgnat-changed"]
    assert state.nat_layers.declared == 2 and state.cgnat.declared is True


# --- mappings --------------------------------------------------------------------------------------------
def mapping(t: float, present: bool, external: str | None = f"{A}:30303", lifetime: int | None = 3600,
            error: str | None = None, family: Family = 4, method: str = "pcp") -> MappingObservation:
    return MappingObservation(T0 + t, WALL0 + t, 30303, "tcp", present, method, external if present else None,
                              lifetime if present else None, error, family)


def test_mapping_lost_and_restored_at_once_with_lease_metric() -> None:
    state = replace(fresh(), next_check=T0 + 900)
    state, kinds, _ = run(state, mapping(0, True))
    assert kinds == [] and state.check_requested  # the first mapping: a check now, not in 15 min
    lease = {s.labels: s.value for s in samples(state, T0 + 100) if s.name.startswith("nodereach_mapping")}
    assert lease == {(("port", "30303"), ("protocol", "tcp"), ("method", "pcp"), ("family", "4")): 3500.0}
    st = detect.on_mapping(state, mapping(200, False))
    assert [(c.kind, c.before, c.after, c.method) for c in st.changes] == [("mapping-lost", f"{A}:30303", None, "pcp")]
    assert st.state.check_requested
    assert [s.value for s in samples(st.state, T0 + 200) if s.name.startswith("nodereach_mapping")] == [0.0]
    st = detect.on_mapping(st.state, mapping(200.3, True))
    assert [(c.kind, c.before, c.after) for c in st.changes] == [("mapping-restored", None, f"{A}:30303")]
    assert st.state.last_change["mapping"] == WALL0 + 200.3


def test_ipv4_mapping_and_ipv6_pinhole_of_one_port_are_kept_apart() -> None:
    """Both families' keepers report the same port (both may use PCP): one series and one story each."""
    pinhole = "[2001:db8:1:1::10]:30303"
    state, kinds, _ = run(fresh(), mapping(0, True), mapping(0.1, True, pinhole, family=6))
    assert kinds == []
    leases = {dict(s.labels)["family"]: s.value for s in samples(state, T0 + 100)
              if s.name == "nodereach_mapping_lease_remaining_seconds"}
    assert leases == {"4": 3500.0, "6": 3500.1}
    st = detect.on_mapping(state, mapping(200, False, pinhole, family=6))
    assert [(c.kind, c.family, c.before, c.method) for c in st.changes] == [("mapping-lost", 6, pinhole, "pcp")]
    assert "IPv6 pinhole of 30303/tcp" in st.changes[0].message
    leases = {dict(s.labels)["family"]: s.value for s in samples(st.state, T0 + 200)
              if s.name == "nodereach_mapping_lease_remaining_seconds"}
    assert leases == {"4": 3400.0, "6": 0.0}  # the IPv4 mapping is untouched
    st = detect.on_mapping(st.state, mapping(200.4, True, pinhole, family=6))
    assert [(c.kind, c.family, c.after) for c in st.changes] == [("mapping-restored", 6, pinhole)]
    failed = detect.on_mapping(fresh(), mapping(0, False, error="the gateway offers no IPv6 pinholes", family=6))
    assert [(c.kind, c.family) for c in failed.changes] == [("mapping-failed", 6)]
    assert "could not open an IPv6 pinhole for 30303/tcp" in failed.changes[0].message


def test_mapping_renewal_is_quiet_and_moves_the_lease() -> None:
    state, kinds, _ = run(fresh(), mapping(0, True), mapping(1800, True))
    assert kinds == []
    [lease] = [s.value for s in samples(state, T0 + 1800) if s.name.startswith("nodereach_mapping")]
    assert lease == 3600.0


def test_mapping_failure_reported_once_then_restored() -> None:
    _state, kinds, errors = run(fresh(), mapping(0, False, error="no port-mapping protocol"),
                               mapping(60, False, error="no port-mapping protocol"), mapping(120, True))
    assert kinds == ["mapping-failed", "mapping-restored"]
    assert errors == ["mapping", "mapping"]


def test_mapping_port_change_and_permanent_lease() -> None:
    state, kinds, _ = run(fresh(), mapping(0, True), mapping(10, True, external=f"{A}:30304", lifetime=0))
    assert kinds == ["mapping-changed"]
    [lease] = [s.value for s in samples(state, T0 + 20) if s.name.startswith("nodereach_mapping")]
    assert lease == float("inf")


# --- the node --------------------------------------------------------------------------------------------
def node_probe(t: float, inbound: int, advertised: tuple[str, ...] = (A,)) -> ProbeObservation:
    return probe(t, answer(S1, A), node=NodeView("monerod", inbound, 8, advertised))


def test_inbound_zero_for_longer_than_the_threshold_after_grace() -> None:
    state = fresh()
    state, kinds, _ = run(state, *(node_probe(60 * i, 0) for i in range(35)))  # 34 min, grace 5 min
    assert kinds == []  # counted from the end of the grace period: 29 min so far
    state, kinds, _ = run(state, node_probe(60 * 35, 0))
    assert kinds == ["node-inbound-zero"]
    state, kinds, _ = run(state, node_probe(60 * 36, 0), node_probe(60 * 37, 3))
    assert kinds == ["node-inbound-back"]
    got = {s.labels: s.value for s in samples(state, T0) if s.name == "nodereach_node_peers"}
    assert got == {(("direction", "inbound"),): 3, (("direction", "outbound"),): 8}


def test_inbound_zero_clock_resets_when_a_peer_comes() -> None:
    state = replace(fresh(), grace_over=True, grace_until=T0)
    state, kinds, _ = run(state, node_probe(0, 0), node_probe(1700, 1), node_probe(1750, 0), node_probe(3500, 0))
    assert kinds == []
    assert detect.on_tick(state, T0 + 1750 + 1800, WALL0, P).changes[0].kind == "node-inbound-zero"


def test_unreadable_rpc_is_an_error_and_keeps_the_last_view() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, errors = run(state, node_probe(0, 4), probe(60, answer(S1, A), node=NodeView(error="timeout")))
    assert kinds == [] and errors == ["node-unreadable"] and state.node is not None and state.node.inbound == 4


def test_advertised_address_stale_after_the_public_address_changed() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, _ = run(state, node_probe(0, 2, (A,)))
    assert kinds == [] and state.advertised[4].declared is True
    steps = [node_probe(60, 2, (A,)), node_probe(65, 2, (A,)), node_probe(70, 2, (A,))]
    steps = [replace(s, answers=(answer(S1, B),)) for s in steps]
    state, kinds, _ = run(state, *steps)
    assert kinds == ["public-address-changed"]  # the node's view follows on the next probes
    state, kinds, _ = run(state, *(replace(node_probe(75 + 5 * i, 2, (A,)), answers=(answer(S1, B),))
                                   for i in range(3)))
    assert kinds == ["advertised-address-mismatch"]
    state, kinds, _ = run(state, *(replace(node_probe(100 + 5 * i, 2, (B,)), answers=(answer(S1, B),))
                                   for i in range(3)))
    assert kinds == ["advertised-address-matches"]


def test_node_advertising_nothing_of_a_family_is_not_a_mismatch() -> None:
    state = replace(fresh(), grace_over=True)
    state, kinds, _ = run(state, node_probe(0, 2, ("2001:db8::5", "not-an-address")))
    assert kinds == [] and 4 not in state.advertised


def ad_probe(t: float, advertised_port: int, *, listening: set[tuple[int, str]] | None = None,
             address: str = A) -> ProbeObservation:
    """monerod advertising address:advertised_port/tcp (its --p2p-external-port, as the check decodes it)."""
    ad = Advertised(address, advertised_port, "tcp", "bitcoin", "ip", 4)
    return probe(t, answer(S1, A), listening=listening if listening is not None else {(18080, "tcp")},
                 node=NodeView("monerod", 2, 8, (address,), (ad,)))


@pytest.mark.parametrize(("external", "listening", "mismatch"), [
    (f"{A}:18080", {(18080, "tcp")}, None),                   # the kept mapping keeps the port: fine
    (f"{A}:18081", {(18080, "tcp")}, "NAT maps that port to 198.51.100.2:18081"),  # the router gave another
    (None, {(18089, "tcp")}, "it listens on 18089/tcp"),      # the node moved its port, still advertises 18080
])
def test_advertised_port_mismatch(external: str | None, listening: set[tuple[int, str]],
                                  mismatch: str | None) -> None:
    ports = ((18080, "tcp"), (18089, "tcp"))
    state = replace(fresh(ports=ports), grace_over=True)
    if external is not None:
        state, _, _ = run(state, replace(mapping(0, True, external), port=18080))
    st = detect.on_probe(state, ad_probe(1, 18080, listening=listening), P)
    got = [c for c in st.changes if c.what == "advertised"]
    if mismatch is None:
        assert got == [] and st.state.advertised_ports[(4, "tcp")].declared is True
        return
    assert [(c.kind, c.port, c.protocol, c.family, c.before, c.after) for c in got] == [
        ("advertised-port-mismatch", 18080, "tcp", 4, None, False)]  # the baseline is a problem: said at once
    assert mismatch in got[0].message and "--p2p-external-port" in got[0].message  # the node's own setting


def test_advertised_port_follows_a_moved_mapping_with_hysteresis() -> None:
    """The router restarts and gives the kept mapping another external port: the node's advertised port is
    stale (one event after the hysteresis), and matches again when the node advertises the new one."""
    state = replace(fresh(ports=((18080, "tcp"),)), grace_over=True)
    state, kinds, _ = run(state, replace(mapping(0, True, f"{A}:18080"), port=18080), ad_probe(1, 18080))
    assert kinds == []
    state, kinds, _ = run(state, replace(mapping(100, True, f"{A}:18081"), port=18080))
    assert kinds == ["mapping-changed"]
    state, kinds, _ = run(state, ad_probe(101, 18080), ad_probe(106, 18080))
    assert kinds == []  # two of three: pending, and the probes come at the confirm interval
    assert schedule.probe_delay(state, P) == P.confirm_interval
    state, kinds, _ = run(state, ad_probe(111, 18080))
    assert kinds == ["advertised-port-mismatch"]
    state, kinds, _ = run(state, ad_probe(171, 18081), ad_probe(176, 18081), ad_probe(181, 18081))
    assert kinds == ["advertised-port-matches"]
    assert state.last_change["advertised"] == WALL0 + 181


def test_advertised_port_mismatch_at_start_is_announced_after_grace() -> None:
    state, kinds, _ = run(fresh(ports=((18080, "tcp"), (18089, "tcp"))),
                          ad_probe(0, 18080, listening={(18089, "tcp")}))
    assert kinds == []  # in the grace period: exported state, no event
    st = detect.on_tick(state, T0 + 300, WALL0 + 300, P)
    changes = [c for c in st.changes if c.kind == "advertised-port-mismatch"]
    assert len(changes) == 1 and "it listens on 18089/tcp" in changes[0].message
    assert "grace period over" in changes[0].message


# --- metrics ---------------------------------------------------------------------------------------------
def test_nothing_known_nothing_exported() -> None:
    assert samples(fresh(), T0) == []


def test_sample_names_are_the_documented_ones() -> None:
    state = replace(fresh(), grace_over=True)
    state, _, _ = run(state, node_probe(0, 1), check(1, "reachable"), mapping(2, True),
                      listening(60, False), listening(65, False), listening(70, False))
    names = {s.name for s in samples(state, T0 + 80)}
    assert names == set(GAUGES) - {"nodereach_last_change_timestamp_seconds"} | {
        "nodereach_last_change_timestamp_seconds"}
    info = [s for s in samples(state, T0) if s.name == "nodereach_public_address_info"]
    assert [(s.labels, s.value) for s in info] == [((("family", "4"), ("address", A)), 1.0)]
    assert {s.labels for s in samples(state, T0) if s.name == "nodereach_last_change_timestamp_seconds"} == {
        (("what", "listener"),)}
