"""Port mapping against a real gateway: miniupnpd (UPnP IGD, NAT-PMP, PCP) on the lab's home router.

Every claim is proven with traffic: a packet from `peer` on the simulated internet must reach the client
through the mapping (TCP and UDP), and must stop reaching it after the delete (conntrack flushed first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodereach import defaults
from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.portmap import pcp
from nodereach.portmap.base import Driver, Slot
from nodereach.portmap.errors import NotAvailable, PortmapError, ResultCodeError
from nodereach.portmap.gateway import find_gateway_async
from nodereach.portmap.keeper import Event, PortMapper, open_port
from nodereach.portmap.probe import probe_all, probe_gateway
from portmap_helpers import EPOCH_VISIBLE_S, WAN, inbound, restart_miniupnpd_losing_state, wait_inbound

pytestmark = pytest.mark.lab
METHODS = ["pcp", "natpmp", "upnp"]


async def _driver(method: str) -> Driver:
    gw = await find_gateway_async()
    _probes, drivers = await probe_all(gw, 2.0, (method,))  # type: ignore[arg-type]
    assert method in drivers, _probes
    return drivers[method]


async def test_probe_gateway_sees_all_three(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    start = time.monotonic()
    result = await net.run_async("client", lambda: probe_gateway(timeout=1.0))
    elapsed = time.monotonic() - start
    assert {k: v.available for k, v in result.items()} == {"pcp": True, "natpmp": True, "upnp": True}
    assert result["natpmp"].external_address == WAN
    assert result["upnp"].external_address == WAN
    assert elapsed < 2.0, elapsed  # parallel, early-stopping SSDP


async def test_check_igd_probe_reads_miniupnpd(lab: Callable[..., Lab]) -> None:
    """The check's lean probe against real miniupnpd: its answer to the search, its description's control URL,
    GetExternalIPAddress; in one SSDP window plus LAN round trips."""
    from nodereach.portmap import igd_probe

    net = lab("port-restricted", home_router=True)

    async def body() -> tuple[str | None, igd_probe.Control, float]:
        start = time.monotonic()
        address, control = await igd_probe.probe(await find_gateway_async(), wait=0.25, http_s=0.5)
        return address, control, time.monotonic() - start

    address, control, took = await net.run_async("client", body)
    assert address == WAN
    assert control == igd_probe.Control("urn:schemas-upnp-org:service:WANIPConnection:2",
                                        f"http://{A.HOME_LAN_GW}:5000/ctl/IPConn")
    assert took < 0.25  # miniupnpd answers a search after its fixed 50 ms: the probe does not wait the window


@pytest.mark.parametrize("method", METHODS)
async def test_map_inbound_renew_delete(lab: Callable[..., Lab], method: str) -> None:
    net = lab("port-restricted", home_router=True)
    port = {"pcp": 31001, "natpmp": 31002, "upnp": 31003}[method]
    driver = await net.run_async("client", _driver, method)
    slots = [Slot("tcp", port, pcp.new_nonce()), Slot("udp", port, pcp.new_nonce())]

    async def create() -> None:
        for s in slots:
            s.grant = await driver.map(s, port, 120)

    await net.run_async("client", create)
    for s in slots:
        assert s.grant is not None
        assert (s.grant.external_address, s.grant.external_port) == (WAN, port)
        assert 0 < s.grant.lifetime <= 120
        assert await asyncio.to_thread(inbound, net, s.protocol, (WAN, port), port), s

    async def renew() -> list[Any]:
        return [await driver.map(s, s.grant.external_port, 120) for s in slots if s.grant]

    renewed = await net.run_async("client", renew)
    assert [g.external_port for g in renewed] == [port, port]
    assert all(g.lifetime > 0 for g in renewed)

    if method == "pcp":  # a delete with another nonce is refused and the mapping stays
        wrong = Slot("udp", port, pcp.new_nonce(), slots[1].grant)
        with pytest.raises(ResultCodeError, match="NOT_AUTHORIZED"):
            await net.run_async("client", driver.unmap, wrong)
        net.flush_conntrack()
        assert await asyncio.to_thread(inbound, net, "udp", (WAN, port), port)

    async def delete() -> None:
        for s in slots:
            await driver.unmap(s)

    await net.run_async("client", delete)
    net.flush_conntrack()
    for s in slots:
        assert not await asyncio.to_thread(inbound, net, s.protocol, (WAN, port), port, 1.0), s


def _await_chain(coro: Any) -> list[str]:
    """Where a suspended coroutine waits: every frame down its await chain (Task.get_stack shows one)."""
    lines = []
    for _ in range(50):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        if coro is None:
            break
    if coro is not None:
        lines.append(f"  awaiting {coro!r}\n")
    return lines


class _Keeper:
    """open_port() running in the client namespace on its own loop; events cross threads via a queue."""

    def __init__(self, net: Lab, port: int, protocol: str, method: str | None, poll: float | None = 0.5,
                 lease: int = 120) -> None:
        self.net = net
        self.events: queue.Queue[Event | tuple[str, Any]] = queue.Queue()
        self.stamped: list[tuple[float, Event]] = []
        """Every event with its time.monotonic() in the keeper's thread (the clock is system-wide)."""
        self.stop = threading.Event()
        self.args = (port, protocol, method, poll, lease)
        self.task: asyncio.Future[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None

    async def _body(self) -> None:
        port, protocol, method, poll, lease = self.args
        self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        async with open_port(port, protocol, method=method, lease=lease, poll_interval=poll) as m:
            m.on_change(lambda ev: self.stamped.append((time.monotonic(), ev)))
            m.on_change(self.events.put)
            self.events.put(("ready", m.endpoint))
            await asyncio.to_thread(self.stop.wait)

    async def __aenter__(self) -> Any:
        self.task = asyncio.ensure_future(self.net.run_async("client", self._body))
        item = await self.next(lambda e: isinstance(e, tuple), 15)
        assert isinstance(item, tuple)
        return item[1]

    async def next(self, pred: Callable[[Any], bool], within: float) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.task is not None and self.task.done():
                self.task.result()  # raise what the keeper raised
                raise AssertionError("keeper ended")
            try:
                item = await asyncio.to_thread(self.events.get, True, 0.2)
            except queue.Empty:
                continue
            if pred(item):
                return item
        raise AssertionError("expected event did not come")

    def where(self) -> str:
        """The keeper thread's stack and its loop's tasks: what a stop that never ends is waiting for."""
        lines: list[str] = []
        frame = sys._current_frames().get(self.thread_id or -1)
        if frame is not None:
            lines += ["keeper thread:", *traceback.format_stack(frame)]
        if self.loop is not None:
            for _ in range(3):  # read from another thread: the set may change under us
                with contextlib.suppress(RuntimeError):
                    for task in list(asyncio.all_tasks(self.loop)):
                        lines.append(f"{task!r}:\n")
                        lines += _await_chain(task.get_coro())
                    break
        return "".join(lines)

    def first_after(self, since: float, kind: str) -> float | None:
        """time.monotonic() of the first `kind` event at or after `since`."""
        return next((t for t, ev in list(self.stamped) if t >= since and ev.kind == kind), None)

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self.task is not None:
            done, _ = await asyncio.wait([self.task], timeout=15)
            assert done, "the keeper did not finish within 15 s after stop:\n" + self.where()
            self.task.result()


@pytest.mark.parametrize("method", METHODS)
async def test_gateway_restart_mapping_back(lab: Callable[..., Lab], method: str) -> None:
    """miniupnpd restarts and forgets its mappings. With `open`'s defaults (lease 3600 s, a check every
    30 s) every method has the mapping back within 5 s of the router answering again (issue 12): PCP and
    NAT-PMP from its ANNOUNCE, UPnP from its SSDP NOTIFYs (new BOOTID after a byebye)."""
    net = lab("port-restricted", home_router=True)
    port = {"pcp": 31011, "natpmp": 31012, "upnp": 31013}[method]
    keeper = _Keeper(net, port, "udp", method, poll=None, lease=3600)
    async with keeper as ep:
        assert (ep.external_address, ep.external_port, ep.method) == (WAN, port, method)
        assert await asyncio.to_thread(inbound, net, "udp", (WAN, port), port)
        await asyncio.sleep(EPOCH_VISIBLE_S)  # until the epoch rules can see a restart
        stopped = time.monotonic()
        await asyncio.to_thread(restart_miniupnpd_losing_state, net)
        answering = time.monotonic()  # the lab's readiness check (every 50 ms) just got its answers
        await keeper.next(lambda e: isinstance(e, Event) and e.kind == "mapped", 8)
        recreated = keeper.first_after(stopped, "mapped")
        assert recreated is not None and recreated - answering < 5.0, recreated - answering
        back = await asyncio.to_thread(wait_inbound, net, "udp", (WAN, port), port, 5.0)
        assert back is not None, "inbound traffic did not come back after the restart"
        assert keeper.first_after(stopped, "restarted") is not None
    # On exit the mapping is deleted.
    net.flush_conntrack()
    assert not await asyncio.to_thread(inbound, net, "udp", (WAN, port), port, 1.0)


@pytest.mark.parametrize("method", METHODS)
async def test_wan_address_change_reported(private_lab: Callable[..., Lab], method: str) -> None:
    net = private_lab("port-restricted", home_router=True)
    port = 31021
    new = "198.51.100.4"
    keeper = _Keeper(net, port, "tcp", method)
    async with keeper as ep:
        assert ep.external_address == WAN
        net.set_router_wan_address(new)
        net.restart_miniupnpd()  # a router re-reads its WAN address on a change; miniupnpd by restart/STUN
        ev = await keeper.next(lambda e: isinstance(e, Event) and e.kind == "address-changed", 10)
        assert new in ev.message and WAN in ev.message
        back = await asyncio.to_thread(wait_inbound, net, "tcp", (new, port), port, 5.0)
        assert back is not None


async def test_only_upnp_falls_back_to_upnp(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    net.start_miniupnpd(upnp=True, natpmp=False)

    async def body() -> tuple[str, dict[str, Any]]:
        m = PortMapper([(31031, "udp")], timeout=1.0)
        try:
            eps = await m.start()
            return eps[0].method, {k: v.reason for k, v in m.probes.items()}
        finally:
            await m.close()

    method, reasons = await net.run_async("client", body)
    assert method == "upnp"
    assert reasons["pcp"] in ("port-unreachable", "timeout") and reasons["natpmp"] in ("port-unreachable", "timeout")

    async def forced() -> None:
        m = PortMapper([(31031, "udp")], method="pcp", timeout=1.0)
        await m.start()

    with pytest.raises(NotAvailable, match=r"offers no port mapping.*pcp"):
        await net.run_async("client", forced)


async def test_only_natpmp_pcp_prefers_pcp(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    net.start_miniupnpd(upnp=False, natpmp=True)

    async def body(method: str | None) -> tuple[str, str | None]:
        m = PortMapper([(31032, "tcp")], method=method, timeout=1.0)  # type: ignore[arg-type]
        try:
            eps = await m.start()
            return eps[0].method, m.probes["upnp"].reason
        finally:
            await m.close()

    method, upnp_reason = await net.run_async("client", body, None)
    assert method == "pcp" and upnp_reason == "timeout"
    method, _ = await net.run_async("client", body, "natpmp")
    assert method == "natpmp"


async def test_no_portmap_clear_message(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    net.stop_miniupnpd()

    async def body() -> None:
        await PortMapper([(31033, "tcp")], timeout=1.0).start()

    start = time.monotonic()
    with pytest.raises(NotAvailable) as exc:
        await net.run_async("client", body)
    assert time.monotonic() - start < 5.0
    assert "offers no port mapping" in exc.value.message
    assert exc.value.hint and "forward the port by hand" in exc.value.hint
    for argv in (["open", "31033/tcp", "--once", "--timeout", "1"], ["mappings", "--timeout", "1"]):
        r = net.exec("client", [NODEREACH, *argv], timeout=20, check=False)
        assert r.returncode == 2 and "offers no port mapping" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("scenario", ["cgnat", "double-nat"])
async def test_nat_in_front_reported(lab: Callable[..., Lab], scenario: str) -> None:
    net = lab(scenario, home_router=True)

    async def body() -> PortMapper:
        m = PortMapper([(31041, "udp")], timeout=1.0)
        try:
            await m.start()
        finally:
            await m.close()
        return m

    # miniupnpd learns by STUN that it sits behind a filtering NAT and refuses to forward; nodereach must
    # say why, not "out of resources".
    with pytest.raises(PortmapError, match="behind another NAT") as exc:
        await net.run_async("client", body)
    assert exc.value.hint and "nodereach check" in exc.value.hint


# --- the command line ---------------------------------------------------------------------------------------
NODEREACH = str(Path(sys.executable).parent / "nodereach")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "NODEREACH_STATE_DIR": str(tmp_path)}


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_cli_open_once_then_list_and_delete(lab: Callable[..., Lab], tmp_path: Path) -> None:
    net = lab("port-restricted", home_router=True)
    port = 31051
    r = net.exec("client", [NODEREACH, "open", f"{port}/udp", "--once", "--json", "--lease", "120"],
                 env=_env(tmp_path), timeout=20, check=False)
    assert r.returncode == 0, r.stderr
    events = _lines(r.stdout)
    mapped = [e for e in events if e["event"] == "mapped"]
    assert mapped and mapped[0]["external_address"] == WAN and mapped[0]["method"] == "pcp"
    assert all(e["schema"] == "nodereach.open/1" for e in events)
    assert await asyncio.to_thread(inbound, net, "udp", (WAN, port), port)

    r = net.exec("client", [NODEREACH, "mappings", "--json"], env=_env(tmp_path), timeout=20, check=False)
    doc = json.loads(r.stdout)
    assert any(m["external_port"] == port and m["method"] == "pcp" for m in doc["mappings"]), doc

    r = net.exec("client", [NODEREACH, "mappings", "--delete", f"{port}/udp"], env=_env(tmp_path), timeout=20,
                 check=False)
    assert r.returncode == 0 and "deleted" in r.stdout, (r.stdout, r.stderr)
    net.flush_conntrack()
    assert not await asyncio.to_thread(inbound, net, "udp", (WAN, port), port, 1.0)


async def test_cli_foreground_sigterm_deletes_mappings(lab: Callable[..., Lab], tmp_path: Path) -> None:
    net = lab("port-restricted", home_router=True)
    port = 31052
    proc = net.spawn("client", [NODEREACH, "open", f"{port}/tcp", "--json", "--method", "upnp", "--lease", "60"],
                     env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = await asyncio.to_thread(select.select, [proc.stdout], [], [], 15)
        assert ready, "no output from nodereach open"
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "mapped" and first["method"] == "upnp" and first["external_port"] == port
        assert await asyncio.to_thread(inbound, net, "tcp", (WAN, port), port)
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 10)
        rest = _lines(proc.stdout.read())
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0
    assert any(e["event"] == "deleted" and e["external_port"] == port for e in rest), rest
    net.flush_conntrack()
    assert not await asyncio.to_thread(inbound, net, "tcp", (WAN, port), port, 1.0)


async def test_cli_behind_cgnat_says_why(lab: Callable[..., Lab], tmp_path: Path) -> None:
    net = lab("cgnat", home_router=True)
    r = net.exec("client", [NODEREACH, "open", "31053/udp", "--once"], env=_env(tmp_path), timeout=30, check=False)
    assert r.returncode == 2
    assert "behind another NAT" in r.stderr and "nodereach check" in r.stderr
    assert "Traceback" not in r.stderr


def _drop_rule_by_port(net: Lab, port: int) -> None:
    """Remove only the rule this test inserted (the shared lab's other rules stay)."""
    listing = net.exec("router", ["nft", "-a", "list", "chain", "ip", "nrl", "forward"], check=False).stdout
    for line in listing.splitlines():
        if f"dport {port} drop" in line and "# handle" in line:
            handle = line.rsplit("# handle", 1)[1].strip()
            net.exec("router", ["nft", "delete", "rule", "ip", "nrl", "forward", "handle", handle], check=False)


def _start_dialback(net: Lab) -> subprocess.Popen[Any]:
    proc = net.spawn("server", [NODEREACH, "serve", "--address", A.SERVER_IP, "--no-stun"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.closing(net.socket("peer", socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.settimeout(0.3)
            if s.connect_ex((A.SERVER_IP, defaults.HTTP_PORT)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("nodereach serve did not come up")


async def test_cli_verifies_from_outside(lab: Callable[..., Lab], tmp_path: Path) -> None:
    net = lab("port-restricted", home_router=True)
    server = await asyncio.to_thread(_start_dialback, net)
    try:
        r = net.exec("client", [NODEREACH, "open", "31054/tcp", "--once", "--json", "--server", A.SERVER_IP],
                     env=_env(tmp_path), timeout=30, check=False)
        events = _lines(r.stdout)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert any(e["event"] == "verified" and e["verified"] is True for e in events), events

        # A mapping the router accepts but that carries nothing is a failure, said so.
        net.exec("router", ["nft", "insert", "rule", "ip", "nrl", "forward", "tcp", "dport", "31055", "drop"])
        r = net.exec("client", [NODEREACH, "open", "31055/tcp", "--once", "--json", "--server", A.SERVER_IP],
                     env=_env(tmp_path), timeout=30, check=False)
        events = _lines(r.stdout)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert any(e["event"] == "not-reachable" and e["verified"] is False for e in events), events
    finally:
        server.terminate()
        server.wait(5)
        _drop_rule_by_port(net, 31055)


@pytest.mark.parametrize("method", ["pcp", "natpmp"])
async def test_gateway_announcement_triggers_recheck(lab: Callable[..., Lab], method: str) -> None:
    """With a 60 s poll, only miniupnpd's multicast announcement after its restart can bring it back fast."""
    net = lab("port-restricted", home_router=True)
    port = {"pcp": 31061, "natpmp": 31062}[method]
    keeper = _Keeper(net, port, "udp", method, poll=60.0)
    async with keeper:
        await asyncio.sleep(EPOCH_VISIBLE_S)  # until the epoch rules can see a restart
        await asyncio.to_thread(restart_miniupnpd_losing_state, net)
        await keeper.next(lambda e: isinstance(e, Event) and e.kind == "restarted", 8)
        back = await asyncio.to_thread(wait_inbound, net, "udp", (WAN, port), port, 5.0)
        assert back is not None


class _FakeSsdpRouter:
    """An SSDP responder on the router that answers M-SEARCH only to the multicast group, or from another
    port (real routers do both). Sockets live in the router namespace; the loop runs in a thread here."""

    def __init__(self, net: Lab, mode: str, address: str = A.HOME_LAN_GW) -> None:
        self.mode = mode
        self.address = address
        self.rx = net.socket("router", socket.AF_INET, socket.SOCK_DGRAM)
        self.tx = net.socket("router", socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.rx.bind(("0.0.0.0", 1900))
        mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton(address))
        self.rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.rx.settimeout(0.2)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
        self.tx.bind((address, 1900 if mode == "multicast" else 0))
        self.stop = threading.Event()
        self.replies = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.rx.recvfrom(2048)
            except TimeoutError:
                continue
            if not data.startswith(b"M-SEARCH"):
                continue
            st = next((line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
                       if line.lower().startswith(b"st:")), b"")
            reply = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: " + st + b"\r\nUSN: uuid:fake::" + st
                     + b"\r\nEXT:\r\nLOCATION: http://" + self.address.encode() + b":5999/rootDesc.xml\r\n\r\n")
            dest = ("239.255.255.250", 1900) if self.mode == "multicast" else addr
            self.tx.sendto(reply, dest)
            self.replies += 1

    def __enter__(self) -> _FakeSsdpRouter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)
        self.rx.close()
        self.tx.close()


@pytest.mark.parametrize("mode", ["multicast", "other-port"])
async def test_ssdp_quirky_routers_are_found(lab: Callable[..., Lab], mode: str) -> None:
    """The one search of the keeper and the check (ssdp.search_igd) with routers answering oddly."""
    from nodereach.portmap.ssdp import search_igd

    net = lab("port-restricted", home_router=True)
    net.stop_miniupnpd()

    async def search() -> Any:
        gw = await find_gateway_async()
        t = time.monotonic()
        found = await search_igd(gw, wait=2.0)
        return found, time.monotonic() - t

    with _FakeSsdpRouter(net, mode):
        found, elapsed = await net.run_async("client", search)
    assert found.host == A.HOME_LAN_GW and found.location == "http://192.168.1.1:5999/rootDesc.xml"
    assert elapsed < 1.0


@pytest.mark.parametrize("method", ["natpmp", "upnp"])
async def test_gateway_gone_then_back(lab: Callable[..., Lab], method: str) -> None:
    """miniupnpd down for a while: errors are reported (no crash, no hang), then the mapping comes back."""
    net = lab("port-restricted", home_router=True)
    port = {"natpmp": 31071, "upnp": 31072}[method]
    keeper = _Keeper(net, port, "udp", method, poll=0.5)
    async with keeper:
        await asyncio.to_thread(net.stop_miniupnpd)
        err = await keeper.next(lambda e: isinstance(e, Event) and e.kind == "error", 10)
        assert "failed" in err.message
        await asyncio.to_thread(restart_miniupnpd_losing_state, net)
        back = await asyncio.to_thread(wait_inbound, net, "udp", (WAN, port), port, 10.0)
        assert back is not None


async def test_ssdp_prefers_the_gateway_over_a_faster_lan_device(lab: Callable[..., Lab]) -> None:
    """A hostile LAN device answering SSDP first (with a description on itself) does not win."""
    from nodereach.portmap.ssdp import search_igd

    net = lab("port-restricted", home_router=True)
    evil = "192.168.1.66"
    net.exec("router", ["ip", "addr", "add", f"{evil}/24", "dev", "lan"])
    try:
        async def search() -> Any:
            return await search_igd(await find_gateway_async(), wait=2.0)

        with _FakeSsdpRouter(net, "other-port", address=evil) as fake:
            found = await net.run_async("client", search)
        assert fake.replies > 0
        assert found.host == A.HOME_LAN_GW and found.location.startswith("http://192.168.1.1:")
    finally:
        net.exec("router", ["ip", "addr", "del", f"{evil}/24", "dev", "lan"], check=False)


async def test_upnp_long_lease_is_not_truncated(lab: Callable[..., Lab]) -> None:
    """async-upnp-client's IgdDevice sent timedelta.seconds (1 day + 30 s -> 30 s); our typed action sends the
    integer."""
    net = lab("port-restricted", home_router=True)
    driver = await net.run_async("client", _driver, "upnp")
    slot = Slot("udp", 31081, b"")

    async def body() -> Any:
        slot.grant = await driver.map(slot, 31081, 86400 + 30)
        try:
            return await driver.entry("udp", 31081)  # type: ignore[attr-defined]
        finally:
            await driver.unmap(slot)

    entry = await net.run_async("client", body)
    assert int(entry["NewLeaseDuration"]) > 86000  # miniupnpd caps at its max_lifetime (86400 in the lab)
