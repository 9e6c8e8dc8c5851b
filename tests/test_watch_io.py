"""The watcher's edges, for real where it is cheap: the kernel's socket tables, a real HTTP exporter and
webhook receiver on loopback, real hook commands; the config file and the event lines byte for byte."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from nodereach.errors import UsageError
from nodereach.net import Family
from nodereach.portmap.keeper import Event, LiveMapping
from nodereach.watch import events as ev
from nodereach.watch.config import Settings, build, parse_metrics, parse_webhook
from nodereach.watch.exporter import WatchMetrics
from nodereach.watch.hooks import HookSink, command_deliver, webhook_deliver
from nodereach.watch.listeners import HostListeners
from nodereach.watch.mapping import ABSENT_RECHECK_S, KeptFamilies, KeptMappings
from nodereach.watch.model import Change, MappingObservation
from nodereach.watch.samples import Sample


# --- listeners -------------------------------------------------------------------------------------------
def test_real_socket_table_follows_a_listener() -> None:
    probe = HostListeners()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    wanted = [(port, "tcp"), (port, "udp")]
    assert probe.listening(wanted) == {}  # bound, not listening
    tcp.listen()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::1", port))
    try:  # loopback sockets: listening, but they take no family's traffic from outside
        assert probe.listening(wanted) == {(port, "tcp"): frozenset(), (port, "udp"): frozenset()}
    finally:
        tcp.close()
        udp.close()
    assert probe.listening(wanted) == {}


@pytest.mark.parametrize(("binds", "families"), [
    ([(socket.AF_INET, "0.0.0.0", None)], {4}),                       # an IPv4-only node
    ([(socket.AF_INET6, "::", False)], {4, 6}),                      # [::] taking IPv4 too
    # [::] with IPV6_V6ONLY: /proc does not show the option, and asking the kernel means binding the node's
    # port: counted for IPv4 too (the check's own scan tells `ipv6-only`, and the watcher follows it)
    ([(socket.AF_INET6, "::", True)], {4, 6}),
    ([(socket.AF_INET, "0.0.0.0", None), (socket.AF_INET6, "::", True)], {4, 6}),
    ([(socket.AF_INET, "0.0.0.0", None), (socket.AF_INET6, "::1", None)], {4}),  # IPv6 on loopback only
])
def test_families_the_sockets_take(binds: list[tuple[int, str, bool | None]], families: set[int]) -> None:
    """Which families' traffic reaches the node's sockets, from the real socket table."""
    sockets = []
    port = 0
    try:
        for fam, address, v6only in binds:
            s = socket.socket(fam, socket.SOCK_STREAM)
            if v6only is not None:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
            s.bind((address, port))
            port = s.getsockname()[1]
            s.listen()
            sockets.append(s)
        assert HostListeners().listening([(port, "tcp")]) == {(port, "tcp"): frozenset(families)}
    finally:
        for s in sockets:
            s.close()


def test_unreadable_tables_say_so(tmp_path: Path) -> None:
    assert HostListeners(tmp_path).listening([(30303, "tcp")]) is None  # not "nothing listens"
    (tmp_path / "tcp").write_text("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
                                  "timeout inode\n   0: 00000000:765F 00000000:0000 0A 00000000:00000000 00:00000000 "
                                  "00000000     0        0 1 1 0 100 0 0 10 0\n")
    assert HostListeners(tmp_path).listening([(30303, "tcp"), (30303, "udp")]) == {(30303, "tcp"): frozenset({4})}


# --- events ----------------------------------------------------------------------------------------------
def test_event_line_shape() -> None:
    change = Change("port-unreachable", "port", True, False, "30303/tcp is not reachable from outside (filtered)",
                    1_700_000_000.1234, port=30303, protocol="tcp", family=4)
    line = ev.encode(ev.to_event(change, "00ff"))
    assert line == (b'{"schema":"nodereach.watch/1","id":"00ff","time":1700000000.123,"kind":"port-unreachable",'
                    b'"what":"port","port":30303,"protocol":"tcp","family":4,"before":true,"after":false,'
                    b'"message":"30303/tcp is not reachable from outside (filtered)"}')
    back = ev.decode(line)
    assert (back.kind, back.before, back.after, back.port) == ("port-unreachable", True, False, 30303)


def test_started_event_keeps_null_before_after() -> None:
    doc = json.loads(ev.encode(ev.to_event(Change("started", None, None, None, "watching", 1.0))))
    assert doc["before"] is None and doc["after"] is None and "what" not in doc and doc["schema"] == ev.SCHEMA


def test_event_ids_are_unique() -> None:
    c = Change("started", None, None, None, "x", 1.0)
    assert len({ev.to_event(c).id for _ in range(200)}) == 200


# --- config ----------------------------------------------------------------------------------------------
def test_config_file_same_keys_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "watch.toml"
    cfg.write_text('[watch]\nserver = ["203.0.113.10"]\nport = ["30303"]\nkeep-mapped = true\ninterval = 30\n'
                   'metrics = "[::1]:9999"\non-change = "logger -t nodereach"\nwebhook = "https://h.example/x"\n'
                   'hysteresis = 4\ncheck-interval = 600\ngrace = 0\n')
    opts = build(Settings(), cfg)
    assert [str(p) for p in opts.ports] == ["30303/tcp", "30303/udp"]
    assert opts.keep_mapped and opts.metrics == ("::1", 9999) and opts.on_change == "logger -t nodereach"
    assert (opts.policy.interval, opts.policy.hysteresis, opts.policy.check_period, opts.policy.grace) == (
        30, 4, 600, 0)
    assert [s.label for s in opts.stun_servers] == ["203.0.113.10:3478"]
    flags = build(Settings(server=["203.0.113.20:3479"], interval=90, metrics="off"), cfg)
    assert [s.label for s in flags.stun_servers] == ["203.0.113.20:3479"] and flags.servers == ("203.0.113.20:3479",)
    assert flags.policy.interval == 90 and flags.metrics is None and flags.keep_mapped


@pytest.mark.parametrize(("value", "families"), [
    (None, None), ('"both"', (4, 6)), ("6", (6,)), ('"IPv4"', (4,)), ('"4"', (4,))])
def test_keep_mapped_family(tmp_path: Path, value: str | None, families: tuple[int, ...] | None) -> None:
    cfg = tmp_path / "watch.toml"
    cfg.write_text('port = ["30303"]\nkeep-mapped = true\n' + (f"keep-mapped-family = {value}\n" if value else ""))
    assert build(Settings(), cfg).keep_mapped_families == families
    assert build(Settings(keep_mapped_family="6"), cfg).keep_mapped_families == (6,)  # the flag wins


def test_config_accepts_checks_spelling_at_top_level_beside_a_check_table(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('servers = ["203.0.113.10"]\nports = ["30303/tcp"]\n[check]\ntimeout = 4\n')
    opts = build(Settings(), cfg)
    assert opts.servers == ("203.0.113.10",) and [str(p) for p in opts.ports] == ["30303/tcp"]


@pytest.mark.parametrize(("text", "message"), [
    ("interval = 0.1", "interval 0.1 is out of range"),
    ("intervall = 60", "unknown key intervall .*known keys.*interval"),
    ("keep-mapped = 1", "key keep-mapped: expected bool, got int"),
    ("[watch]\ninterval = \"60\"", r"\[watch\]: key interval: expected float, got str"),
    ('port = ["30303/sctp"]', "bad protocol"),
    ("keep-mapped = true", "--keep-mapped needs the node's ports"),
    ('webhook = "ftp://x"', "bad --webhook"),
    ('metrics = "nonsense"', "bad --metrics"),
    ("interval = [", "not valid TOML"),
    ('port = ["1"]\nkeep-mapped-family = "5"', "bad keep-mapped-family '5'.*4, 6 or both"),
    ('port = ["1"]\nkeep-mapped-family = true', r"key keep-mapped-family: expected int \| str, got bool"),
])
def test_config_errors_say_what(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "watch.toml"
    cfg.write_text(text + "\n")
    with pytest.raises(UsageError, match=message):
        build(Settings(), cfg)


def test_defaults() -> None:
    opts = build(Settings(port=["30303/tcp"]))
    assert opts.metrics == ("127.0.0.1", 3481)
    assert (opts.policy.interval, opts.policy.hysteresis, opts.policy.check_period) == (60, 3, 900)
    assert opts.builtin_servers and len(opts.stun_servers) == 2


@pytest.mark.parametrize(("text", "want"), [
    (None, ("127.0.0.1", 3481)), ("off", None), ("3482", ("127.0.0.1", 3482)), ("0.0.0.0:3481", ("0.0.0.0", 3481)),
    ("[::]:3481", ("::", 3481)), ("localhost:9", ("localhost", 9)),
])
def test_parse_metrics(text: str | None, want: tuple[str, int] | None) -> None:
    assert parse_metrics(text) == want


@given(st.text(max_size=40))
def test_parse_metrics_only_usage_errors(text: str) -> None:
    try:
        _host, port = parse_metrics(text) or ("", 1)
    except UsageError:
        return
    assert 1 <= port <= 65535


def test_parse_webhook() -> None:
    assert parse_webhook("https://hooks.example.net/x?a=1") == "https://hooks.example.net/x?a=1"
    for bad in ("hooks.example.net", "https://", "file:///etc/passwd"):
        with pytest.raises(UsageError):
            parse_webhook(bad)


# --- exporter --------------------------------------------------------------------------------------------
def test_exporter_serves_state_errors_histogram_and_process() -> None:
    current = [Sample("nodereach_reachable", (), 1.0),
               Sample("nodereach_public_address_info", (("family", "4"), ("address", "198.51.100.2")), 1.0)]
    m = WatchMetrics(lambda: current)
    host, port = m.serve("127.0.0.1", 0)
    try:
        m.error("server-unanswered")
        m.check_duration.observe(0.8)
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        current = [Sample("nodereach_public_address_info", (("family", "4"), ("address", "198.51.100.4")), 1.0)]
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            later = r.read().decode()
    finally:
        m.close()
    assert "nodereach_reachable 1.0" in text
    assert 'nodereach_public_address_info{address="198.51.100.2",family="4"} 1.0' in text
    assert 'nodereach_watch_errors_total{kind="server-unanswered"} 1.0' in text
    assert 'nodereach_watch_errors_total{kind="hook-failed"} 0.0' in text
    assert "nodereach_check_duration_seconds_count 1.0" in text
    assert "process_resident_memory_bytes" in text
    assert "198.51.100.2" not in later and "198.51.100.4" in later  # an old address does not linger


def test_exporter_port_taken_is_a_usage_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UsageError, match="cannot serve metrics"):
            WatchMetrics(list).serve("127.0.0.1", s.getsockname()[1])


# --- hooks -----------------------------------------------------------------------------------------------
async def _no_sleep(_s: float) -> None:
    await asyncio.sleep(0)


async def test_command_hook_gets_the_event_on_stdin_and_env(tmp_path: Path) -> None:
    out = tmp_path / "got"
    errors: list[str] = []
    sink = HookSink("cmd", command_deliver(f'cat > {out}; printf %s "$NODEREACH_EVENT_KIND" >> {out}'),
                    errors.append, timeout=5)
    sink.start()
    sink.put("mapping-lost", b'{"kind":"mapping-lost"}')
    await sink.drain(10)
    await sink.close()
    assert out.read_text() == '{"kind":"mapping-lost"}\nmapping-lost'
    assert errors == [] and sink.delivered == 1


async def test_failing_command_is_retried_with_backoff_then_counted(tmp_path: Path) -> None:
    tries = tmp_path / "tries"
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    errors: list[str] = []
    sink = HookSink("cmd", command_deliver(f"echo x >> {tries}; exit 3"), errors.append, timeout=5, attempts=4,
                    sleep=sleep)
    sink.start()
    sink.put("started", b"{}")
    await sink.drain(20)
    await sink.close()
    assert tries.read_text().count("x") == 4 and waits == [1, 2, 4]
    assert errors == ["hook-failed"] and "exited with 3" in (sink.last_error or "")


async def test_hanging_command_is_killed_in_time_and_never_blocks_the_caller(tmp_path: Path) -> None:
    errors: list[str] = []
    sink = HookSink("cmd", command_deliver("sleep 30"), errors.append, timeout=0.3, attempts=2, sleep=_no_sleep,
                    queue_size=2)
    sink.start()
    t0 = time.monotonic()
    for i in range(5):
        sink.put("x", str(i).encode())  # the queue holds 2: the oldest are dropped, nothing waits
    assert time.monotonic() - t0 < 0.05
    await sink.drain(10)
    elapsed = time.monotonic() - t0
    await sink.close()
    assert errors.count("hook-dropped") >= 2 and errors.count("hook-failed") >= 2
    assert elapsed < 4.0, elapsed  # every attempt ended at its 0.3 s bound


async def test_webhook_retries_5xx_not_4xx() -> None:
    got: list[dict[str, Any]] = []
    statuses = [503, 500, 200, 404]

    async def handler(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=statuses.pop(0))

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    errors: list[str] = []
    deliver, close = webhook_deliver(f"http://127.0.0.1:{port}/hook")
    sink = HookSink("webhook", deliver, errors.append, timeout=5, sleep=_no_sleep)
    sink.start()
    try:
        sink.put("a", b'{"n":1}')
        sink.put("b", b'{"n":2}')
        await sink.drain(10)
    finally:
        await sink.close()
        await close()
        await runner.cleanup()
    assert [g["n"] for g in got] == [1, 1, 1, 2]  # two retries for 5xx; a 404 is not retried
    assert sink.delivered == 1 and errors == ["hook-failed"]


async def test_webhook_unreachable_counts_and_goes_on() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    errors: list[str] = []
    deliver, close = webhook_deliver(f"http://127.0.0.1:{port}/")
    sink = HookSink("webhook", deliver, errors.append, timeout=2, attempts=2, sleep=_no_sleep)
    sink.start()
    sink.put("a", b"{}")
    await sink.drain(10)
    await sink.close()
    await close()
    assert errors == ["hook-failed"] and "ClientConnectorError" in (sink.last_error or "")


# --- the keeper adapter ----------------------------------------------------------------------------------
class FakeMapper:
    """What KeptMappings needs of PortMapper; scripted."""

    fail_starts = 0
    tried: ClassVar[list[str | None]] = []

    def __init__(self, ports: list[tuple[int, str]], **kw: Any) -> None:
        self.method = kw.get("method")
        FakeMapper.tried.append(self.method)
        self.listeners: list[Any] = []
        self.live = [LiveMapping("tcp", 30303, "198.51.100.2", 30303, "pcp", 120)]
        self.closed = False

    @property
    def endpoints(self) -> list[LiveMapping]:
        return self.live

    async def start(self) -> list[LiveMapping]:
        if self.method is not None:  # a router with UPnP only: PCP and NAT-PMP are tried first and refused
            from nodereach.portmap.errors import NotAvailable

            raise NotAvailable(f"the gateway offers no {self.method}")
        if FakeMapper.fail_starts:
            FakeMapper.fail_starts -= 1
            from nodereach.portmap.errors import NotAvailable

            raise NotAvailable("the gateway 192.168.1.1 offers no port mapping")
        return self.live

    def on_event(self, cb: Any) -> None:
        self.listeners.append(cb)

    async def run(self) -> None:
        for cb in self.listeners:
            cb(Event("restarted", "gateway restarted", lost=tuple(self.live)))
            cb(Event("mapped", "re-created", self.live[0]))
            cb(Event("error", "renewing failed"))
            self.live = [LiveMapping("tcp", 30303, "198.51.100.4", 30303, "pcp", 120)]
            cb(Event("address-changed", "external address changed"))
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


async def test_kept_mappings_translates_the_keepers_reports() -> None:
    FakeMapper.fail_starts = 2
    FakeMapper.tried = []
    seen: list[MappingObservation] = []
    errors: list[str] = []
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    kept = KeptMappings([(30303, "tcp")], seen.append, errors.append, sleep=sleep, make_mapper=FakeMapper)  # type: ignore[arg-type]
    task = asyncio.create_task(kept.run())
    for _ in range(50):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert waits == [30, 60]
    assert FakeMapper.tried == ["pcp", "natpmp", None] * 3  # UPnP's heavy stack only after PCP and NAT-PMP
    assert [(o.present, o.external, o.lifetime_s, o.error is not None) for o in seen] == [
        (False, None, None, True), (False, None, None, True),          # two failed starts
        (True, "198.51.100.2:30303", 120, False),                      # mapped
        (False, None, None, False),                                    # the gateway lost it
        (True, "198.51.100.2:30303", 120, False),                      # re-created
        (True, "198.51.100.4:30303", None, False),                     # the gateway's address changed
    ]
    assert errors == ["mapping"]


class FamilyMapper:
    """A keeper that maps at once and records the family and methods it was asked for."""

    made: ClassVar[list[tuple[Family, str | None]]] = []

    def __init__(self, ports: list[tuple[int, str]], **kw: Any) -> None:
        self.family: Family = kw["family"]
        self.method = kw.get("method")
        FamilyMapper.made.append((self.family, self.method))
        address = "198.51.100.2" if self.family == 4 else "2001:db8:1:1::10"
        self.endpoints = [LiveMapping("tcp", 30303, address, 30303, "pcp", 120, self.family)]

    async def start(self) -> list[LiveMapping]:
        return self.endpoints

    def on_event(self, cb: Any) -> None:
        pass

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(("has", "given", "mapped", "waits"), [
    ({4, 6}, None, [4, 6], []),              # dual-stack host: IPv4 mappings and IPv6 pinholes
    ({4}, None, [4], [ABSENT_RECHECK_S]),     # IPv4 only: the IPv6 keeper looks for a global address now and then
    ({6}, None, [6], [ABSENT_RECHECK_S]),     # IPv6 only: no IPv4 failure to report
    (set(), None, [], [ABSENT_RECHECK_S]),    # neither: IPv4's keeper says why (below), IPv6's waits
    ({4, 6}, (4,), [4], []),                 # keep-mapped-family = 4
    (set(), (6,), [], []),                   # keep-mapped-family = 6 on a host without IPv6: say so
])
async def test_a_keeper_per_family(has: set[int], given: tuple[Family, ...] | None, mapped: list[int],
                                   waits: list[float]) -> None:
    FamilyMapper.made = []
    seen: list[MappingObservation] = []
    slept: list[float] = []
    asked: list[int] = []

    async def present(family: Family) -> bool:
        asked.append(family)
        return family in has

    async def sleep(s: float) -> None:  # a keeper that waits stays waiting for the rest of the test
        slept.append(s)
        await asyncio.Event().wait()

    class Refusing(FamilyMapper):
        async def start(self) -> list[LiveMapping]:
            if self.family not in has:
                from nodereach.portmap.errors import PortmapError

                raise PortmapError(f"no IPv{self.family} default gateway in the routing table")
            return self.endpoints

    def one(family: Family, waiting: bool) -> KeptMappings:
        return KeptMappings([(30303, "tcp")], seen.append, lambda _k: None, sleep=sleep,
                            make_mapper=Refusing, family=family, wait_for_family=waiting,  # type: ignore[arg-type]
                            family_present=present)

    kept = KeptFamilies(given, one, present)
    task = asyncio.create_task(kept.run())
    for _ in range(50):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sorted(o.family for o in seen if o.present) == mapped
    assert all(o.external and o.external.startswith("[") == (o.family == 6) for o in seen if o.present)
    failed = sorted({o.family for o in seen if not o.present})
    assert failed == sorted(set(given or ((4,) if not has else ())) - has)
    assert [s for s in slept if s == ABSENT_RECHECK_S] == waits
    assert all(m is None or m == "pcp" for f, m in FamilyMapper.made if f == 6)  # NAT-PMP has no IPv6
    assert [m for f, m in FamilyMapper.made if f == 6][:1] in ([], ["pcp"])


def test_server_backoff_cap_follows_the_interval() -> None:
    caps = {i: build(Settings(interval=i)).policy.server_backoff_max for i in (1, 10, 60, 600, 3600)}
    assert caps == {1: 15, 10: 150, 60: 900, 600: 900, 3600: 3600}


# --- the check's report, as the watcher reads it ----------------------------------------------------------
def test_report_where_nodereach_listened_is_not_reachable() -> None:
    from nodereach.diagnose.model import PortResult, Report, ServerUsed
    from nodereach.watch.fullcheck import observe_report

    def report(*ports: PortResult) -> Report:
        return Report(verdict="reachable", ports=list(ports),
                      servers=[ServerUsed(address="203.0.113.10:3478", kind="nodereach", answered=True)])

    empty = PortResult(port=30303, protocol="tcp", reachable=True, reason="ok", listener="nodereach")
    node = PortResult(port=30303, protocol="udp", reachable=True, reason="ok", listener="node")
    obs = observe_report(report(empty), mono=1.0, wall=2.0)
    assert obs.verdict == "unreachable"
    assert [(p.key.port, p.reachable, p.reason) for p in obs.ports] == [(30303, False, "nothing-listening")]
    obs = observe_report(report(empty, node), mono=1.0, wall=2.0)
    assert obs.verdict == "reachable" and [p.reachable for p in obs.ports] == [False, True]  # issue 10's rule
    silent = Report(verdict="no-connectivity", servers=[
        ServerUsed(address="203.0.113.10:3478", kind="stun", answered=False, reason="timeout")])
    obs = observe_report(silent, mono=1.0, wall=2.0)
    assert obs.verdict is None and "timeout" in (obs.error or "")  # could not tell: changes nothing


async def test_a_keeper_that_fails_is_reported_and_started_again() -> None:
    class Crashing(FakeMapper):
        runs = 0

        async def run(self) -> None:
            Crashing.runs += 1
            if Crashing.runs == 1:
                raise RuntimeError("driver bug")
            await asyncio.Event().wait()

    FakeMapper.fail_starts = 0
    seen: list[MappingObservation] = []
    errors: list[str] = []
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    kept = KeptMappings([(30303, "tcp")], seen.append, errors.append, sleep=sleep, make_mapper=Crashing)  # type: ignore[arg-type]
    task = asyncio.create_task(kept.run())
    for _ in range(50):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert Crashing.runs == 2 and waits == [30] and errors == ["mapping"]
    assert [(o.present, o.error is not None) for o in seen] == [(True, False), (False, True), (True, False)]
    assert "driver bug" in (seen[1].error or "")
