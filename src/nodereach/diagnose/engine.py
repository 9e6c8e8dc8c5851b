"""The check itself: every probe at once, every wait derived from the measured RTT, the total bounded.

Timeline (one RTT = r): t=0 netlink, UDP test I to every server from the mapping socket, the filtering
socket's plain + CHANGE-REQUEST tests, STUN over TCP, TTL-limited probes, outbound port-path probes, the
gateway's port-mapping probe. t=r: tests II/III from the mapping socket to the OTHER-ADDRESS, hairpin
request, dial-back requests (the server's probe deadline is a few r). Anything that never answers is given
up after a few RTOs; nothing outlives `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nodereach import defaults
from nodereach.diagnose import adapters, dialback, layers, lifetime, netinfo, portfilter, ttlprobe
from nodereach.diagnose.model import Local, Outbound, PortResult, Report, ServerUsed
from nodereach.diagnose.rules import PortSpec
from nodereach.diagnose.stunio import Addr, Reply, StunSocket, tcp_binding
from nodereach.stun.rtt import SharedRtt

Progress = Callable[[str, str, str], None]
"""progress(step, state, detail): state is running | done | failed | skipped."""


@dataclass
class ServerSpec:
    host: str
    stun_port: int = defaults.STUN_PORT
    http_port: int | None = defaults.HTTP_PORT
    """Dial-back port; None for a plain STUN server."""
    addresses: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.stun_port}"


@dataclass
class CheckOptions:
    servers: list[ServerSpec]
    ports: list[PortSpec]
    timeout: float = 5.0
    lifetime: bool = False
    lifetime_max: float = 120.0
    builtin_servers: bool = False


def _noop(step: str, state: str, detail: str) -> None:
    return None


def _debug_progress() -> Progress | None:
    """NODEREACH_DEBUG=1: step timings on stderr (for tuning deadlines)."""
    import os
    import sys

    if not os.environ.get("NODEREACH_DEBUG"):
        return None
    t0 = time.monotonic()

    def show(step: str, state: str, detail: str) -> None:
        print(f"[{time.monotonic() - t0:6.3f}] {step} {state} {detail}", file=sys.stderr)

    return show


class Budget:
    """Deadlines from the shared RTT estimate, never past the hard end of the run."""

    def __init__(self, start: float, timeout: float, rtt: SharedRtt) -> None:
        self.start = start
        self.end = start + max(0.3, timeout - 0.15)
        self.rtt = rtt
        self.blind = min(2.0, max(0.5, timeout * 0.4))
        """How long to wait for a first answer from anybody (no RTT known yet)."""

    def negative(self, sent_at: float, rtos: float | None = None) -> float:
        """Deadline for an answer to a request sent at `sent_at` that may never come: `rtos` RTOs, or by default
        enough tries that the loss measured so far leaves < 1e-4 chance of a wrong "no" (re-read as it changes)."""
        if self.rtt.srtt is None:
            return min(self.end, sent_at + self.blind)
        return min(self.end, sent_at + self.rtt.negative_wait(rtos))

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


async def _request(sock: StunSocket, dest: Addr, budget: Budget, **kw: bool | int | None) -> Reply | None:
    """A STUN transaction whose deadline follows the RTT estimate as it improves."""
    sent = time.monotonic()
    return await sock.request(dest, deadline=lambda: budget.negative(sent), **kw)  # type: ignore[arg-type]


async def _resolve(spec: ServerSpec, wait_s: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        spec.addresses = [str(ipaddress.ip_address(spec.host))]
        return
    except ValueError:
        pass
    try:
        async with asyncio.timeout(wait_s):
            infos = await loop.getaddrinfo(spec.host, spec.stun_port, type=socket.SOCK_DGRAM)
    except TimeoutError:
        spec.error = "name lookup timed out"
        return
    except OSError as exc:
        spec.error = f"name not resolved ({exc.strerror or exc})"
        return
    seen: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in seen:
            seen.append(str(sockaddr[0]))
    spec.addresses = seen


def _v4(spec: ServerSpec) -> str | None:
    return next((a for a in spec.addresses if ":" not in a), None)


def _v6(spec: ServerSpec) -> str | None:
    return next((a for a in spec.addresses if ":" in a), None)


class Check:
    def __init__(self, opts: CheckOptions, progress: Progress | None = None) -> None:
        self.opts = opts
        self.progress = progress or _debug_progress() or _noop
        self.rtt = SharedRtt()
        self.report = Report()
        self.sockets: list[StunSocket] = []
        self.concluded = False
        self.partial: tuple[ServerSpec, list[ServerSpec], dict[str, object], StunSocket] | None = None
        self.netinfo_task: asyncio.Future[netinfo.NetInfo]
        self.probe_child: adapters.ProbeChild | None = None

    async def run(self) -> Report:
        start = time.monotonic()
        budget = Budget(start, self.opts.timeout, self.rtt)
        try:
            extra = self.opts.lifetime_max + 2.0 if self.opts.lifetime else 0.0
            async with asyncio.timeout(max(0.2, budget.end - time.monotonic() + 0.1 + extra)):
                await self._run(budget)
        except TimeoutError:
            self.report.notes.append(f"the run hit its time limit ({self.opts.timeout:.1f} s); unfinished "
                                     "probes are reported unknown")
        finally:
            for s in self.sockets:
                s.close()
            if self.probe_child is not None:
                await self.probe_child.close()
        if not self.concluded and self.partial is not None:
            # Out of time: conclude from what came back; what did not is unknown with a reason.
            info = self.netinfo_task.result() if self.netinfo_task.done() and not self.netinfo_task.cancelled() \
                and self.netinfo_task.exception() is None else netinfo.NetInfo()
            self._conclude(*self.partial, info)
        if not self.concluded:
            if hasattr(self, "netinfo_task") and not self.netinfo_task.done():
                self.netinfo_task.cancel()
            from nodereach.diagnose.advice import decide

            d = decide(self.report, list(self.opts.ports), dialback=False)
            self.report.verdict, self.report.causes, self.report.advice = d.verdict, d.causes, d.advice
        if self.opts.builtin_servers:
            self.report.notes.append(
                "using the built-in public STUN servers: mapping and public address only. For inbound reachability "
                "and filtering, point check at a nodereach server (`--server HOST`), or run one with "
                "`nodereach serve --address A --alt-address B`.")
        self.report.duration_s = round(time.monotonic() - start, 3)
        return self.report

    async def _open(self, family: socket.AddressFamily = socket.AF_INET) -> StunSocket:
        s = await StunSocket(self.rtt, family).open()
        self.sockets.append(s)
        return s

    async def _run(self, budget: Budget) -> None:
        rep = self.report
        self.progress("servers", "running", "resolving")
        await asyncio.gather(*(_resolve(s, min(1.5, budget.left())) for s in self.opts.servers))
        usable = [s for s in self.opts.servers if s.addresses]
        for s in self.opts.servers:
            if s.error:
                rep.servers.append(ServerUsed(address=s.label, kind="stun", answered=False, reason=s.error))
        v4 = [s for s in usable if _v4(s)]
        dests = [_v4(s) or s.addresses[0] for s in usable]
        # Netlink (pyroute2) in a child process: its import and setup cost more than the first RTTs.
        self.netinfo_task = asyncio.ensure_future(netinfo.gather_async(dests, wait_s=max(0.5, budget.left())))
        adapters.warm_up()
        self.probe_child = adapters.ProbeChild()  # UPnP's slow imports start now, in another process
        self.progress("servers", "done", f"{len(usable)} of {len(self.opts.servers)} usable")
        primary = v4[0] if v4 else None
        src, err = netinfo.source_toward(_v4(primary)) if primary else (None, None)
        rep.local = Local(address=src)
        if src:
            rep.local.address_is_public = layers.is_public(src)
        if not v4:
            rep.udp = Outbound(outbound=None, reason="no usable IPv4 server")
            rep.tcp = Outbound(outbound=None, reason="no usable IPv4 server")
            await self._local_info(None)
            if usable:
                await self._ipv6(usable, budget)
                rep.udp.outbound, rep.tcp.outbound = rep.udp.ipv6, rep.tcp.ipv6
                rep.notes.append("IPv6 only: NAT behaviour, filters and inbound reachability are tested over IPv4")
            return
        if err is not None:
            rep.udp = Outbound(outbound=False, reason=f"no route to the servers ({err})")
            rep.tcp = Outbound(outbound=False, reason=f"no route to the servers ({err})")
            rep.notes.append(f"no route to {primary.host if primary else '?'}: {err}")
            await self._local_info(primary)
            return
        await self._probe_all(v4, usable, budget)

    async def _local_info(self, primary: ServerSpec | None) -> netinfo.NetInfo:
        """Interface, gateway and all local addresses from netlink (awaited where first needed)."""
        info: netinfo.NetInfo = await self.netinfo_task
        route = info.routes.get(_v4(primary) or "") if primary else None
        rep = self.report
        if route is not None:
            rep.local.gateway = route.gateway
            rep.local.interface = route.interface
            rep.local.address = rep.local.address or route.source
        elif primary is None:
            rep.local.gateway = info.default_gateway4
        if info.error:
            rep.notes.append(info.error)
        return info

    async def _probe_all(self, v4: list[ServerSpec], usable: list[ServerSpec], budget: Budget) -> None:
        rep = self.report
        primary = v4[0]
        p_addr: Addr = (_v4(primary) or "", primary.stun_port)
        m_sock = await self._open()
        f_sock = await self._open()
        nat_obs: dict[str, object] = {}
        self.partial = (primary, v4, nat_obs, m_sock)

        async def mapping() -> None:
            self.progress("mapping", "running", "RFC 5780 mapping tests")
            dests = [(_v4(s) or "", s.stun_port) for s in v4]
            pairs: list[list[object]] = [[s, None] for s in v4]  # filled as replies come (a timeout keeps them)
            nat_obs["server_replies"] = pairs

            async def test1(i: int) -> Reply | None:
                r = await _request(m_sock, dests[i], budget)
                if r is not None and r.source != dests[i]:  # spoofed, stray or misconfigured: never trusted
                    if i == 0:
                        nat_obs["t1_reason"] = f"reply came from {r.source[0]}:{r.source[1]}, not the server address"
                    r = None
                pairs[i][1] = r
                return r

            others = [asyncio.ensure_future(test1(i)) for i in range(1, len(dests))]
            t1 = await test1(0)
            nat_obs["t1"] = t1
            t1_ready.set()
            other = t1.other_address if t1 and t1.error is None else None
            t2 = t3 = None
            if other is not None and t1 is not None and nat_obs["t1"] is not None:
                nat_obs["other"] = other
                r2, r3 = await asyncio.gather(_request(m_sock, (other[0], p_addr[1]), budget),
                                              _request(m_sock, other, budget))
                t2 = r2.mapped if r2 and r2.error is None and r2.source == (other[0], p_addr[1]) else None
                t3 = r3.mapped if r3 and r3.error is None and r3.source == other else None
            nat_obs["t2"], nat_obs["t3"] = t2, t3
            await asyncio.gather(*others)
            self.progress("mapping", "done" if t1 else "failed", "")

        async def filtering() -> None:
            self.progress("filtering", "running", "CHANGE-REQUEST tests (own socket)")
            async def first() -> Reply | None:
                reply = await _request(f_sock, p_addr, budget)
                nat_obs["f1"] = reply
                f1_ready.set()
                return reply

            r1, rip, rport = await asyncio.gather(
                first(),
                _request(f_sock, p_addr, budget, change_ip=True, change_port=True),
                _request(f_sock, p_addr, budget, change_port=True))
            nat_obs["f"] = (r1, rip, rport)
            self.progress("filtering", "done" if r1 else "failed", "")

        async def tcp() -> None:
            self.progress("tcp", "running", "STUN over TCP")
            reply, reason = await tcp_binding(p_addr, deadline=budget.end - 0.05)
            nat_obs["tcp"] = (reply, reason)
            if reply is not None:
                self.rtt.add(reply.rtt, provisional=True)
            self.progress("tcp", "done" if reply or reason == "refused" else "failed", reason or "")

        async def trace() -> None:
            self.progress("path", "running", "TTL-limited probes")
            # Give the RTT estimate a moment: its RTO times the retransmission.
            sent = time.monotonic()
            hops = await ttlprobe.trace(p_addr, max_ttl=8, deadline=lambda: budget.negative(sent, 4),
                                        rto=lambda: self.rtt.rto)
            nat_obs["hops"] = hops
            self.progress("path", "done", f"{len([h for h in hops if h])} hops answered")

        async def port_paths() -> None:
            if primary.http_port is None:
                # Only a nodereach server is ours to knock on at other ports; a public STUN server is not.
                rep.untested.append("outbound port filters: needs a nodereach server (--server)")
                self.progress("filters", "skipped", "no nodereach server")
                return
            self.progress("filters", "running", "outbound port paths")
            tcp_ports = sorted({*portfilter.WELL_KNOWN_TCP, *(p.port for p in self.opts.ports if p.protocol == "tcp")})
            udp_ports = sorted({p.port for p in self.opts.ports if p.protocol == "udp"})
            await self._first_rtt(budget)
            sent = time.monotonic()

            def until() -> float:  # re-read: follows the loss estimate
                return max(sent + 0.1, min(budget.end - 0.05, sent + self.rtt.negative_wait()))

            # Answered TCP probes are loss evidence too (their SYNs cross the same path as the STUN tests).
            nat_obs["paths"] = await portfilter.probe_paths(p_addr[0], tcp_ports, udp_ports, wait_s=until,
                                                            rto=self.rtt.rto, tries=self.rtt.tries_for_negative(),
                                                            on_answer=self.rtt.record_answer)
            self.progress("filters", "done", "")

        async def pmap() -> None:
            self.progress("portmap", "running", "PCP / NAT-PMP / UPnP on the gateway")
            info = await self._local_info(primary)
            route = info.routes.get(p_addr[0])
            started = time.monotonic() - budget.start
            result, err = await adapters.portmap(
                rep.local.gateway, wait_s=0.25, bound_s=min(max(0.5, 0.9 - started), max(0.3, budget.left() - 0.1)),
                local_address=route.source if route else None, index=route.index if route else None,
                networks=route.networks if route else (), child=self.probe_child)
            rep.portmap.pcp, rep.portmap.natpmp, rep.portmap.upnp = result["pcp"], result["natpmp"], result["upnp"]
            self.progress("portmap", "done" if err is None else "skipped", err or "")

        async def ports() -> None:
            dial = [s for s in v4 if s.http_port is not None]
            if not self.opts.ports:
                return
            if not dial:
                rep.ports = [PortResult(port=p.port, protocol=p.protocol, reason="no-server")  # type: ignore[arg-type]
                             for p in self.opts.ports]
                return
            self.progress("ports", "running", ", ".join(str(p) for p in self.opts.ports))
            rep.ports = [PortResult(port=p.port, protocol=p.protocol, reason="timeout")  # type: ignore[arg-type]
                         for p in self.opts.ports]  # what stays if the run runs out of time
            server = dial[0]

            async def one(spec: PortSpec) -> PortResult:
                result = await self._dialback(server, spec, budget)
                if spec.protocol == "udp" and result.listener == "nodereach":
                    await self._node_port_mapping(result, p_addr, budget)
                return result

            rep.ports = list(await asyncio.gather(*(one(p) for p in self.opts.ports)))
            self.progress("ports", "done", "")

        async def ipv6() -> None:
            await self._ipv6(usable, budget)

        async def hairpin() -> None:
            await asyncio.gather(t1_ready.wait(), f1_ready.wait())
            self.progress("hairpin", "running", "")
            await self._hairpin(m_sock, f_sock, nat_obs, budget)
            self.progress("hairpin", "done", "")

        t1_ready, f1_ready = asyncio.Event(), asyncio.Event()
        async def binding_lifetime() -> None:
            self.progress("lifetime", "running", f"up to {self.opts.lifetime_max:g} s")
            await self._first_rtt(budget)
            value, why = await lifetime.measure(p_addr, self.opts.lifetime_max, self.rtt)
            rep.nat.binding_lifetime_s = value
            rep.notes.append(f"binding lifetime: {why}")
            if value is None:
                rep.nat.unknown_reasons["binding_lifetime_s"] = why
            self.progress("lifetime", "done", why)

        tasks = [mapping(), filtering(), tcp(), trace(), port_paths(), pmap(), ports(), ipv6(), hairpin()]
        if self.opts.lifetime:
            tasks.append(binding_lifetime())
        else:
            rep.nat.unknown_reasons["binding_lifetime_s"] = "not measured (use --lifetime)"
        await asyncio.gather(*tasks)
        info = await self._local_info(primary)
        self._conclude(primary, v4, nat_obs, m_sock, info)

    async def _first_rtt(self, budget: Budget) -> None:
        """Wait (bounded) until some reply gave an RTT, so later deadlines can derive from it."""
        if self.rtt.srtt is not None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(budget.blind, budget.left()))):
                await self.rtt.first_sample.wait()

    async def _dialback(self, server: ServerSpec, spec: PortSpec, budget: Budget) -> PortResult:
        """Dial-back of one port, started at once; the server's probe deadline comes from the RTT (STUN's, or
        the HTTP handshake's). Under observed loss a negative or failed answer is asked again while time
        allows, with room for the server's kernel to resend a lost SYN."""
        host = _v4(server) or server.host
        assert server.http_port is not None
        result = PortResult(port=spec.port, protocol=spec.protocol, reason="no-server")  # type: ignore[arg-type]
        for attempt in range(3):
            lossy = self.rtt.recovered > 0 or attempt > 0

            def server_wait(handshake_s: float, lossy: bool = lossy) -> float:
                rtt = self.rtt.srtt if self.rtt.srtt is not None and not self.rtt.provisional else \
                    (handshake_s if handshake_s < 0.9 else 0.5)
                wait = max(0.25, 6 * rtt + 0.1)
                if lossy and spec.protocol == "tcp":
                    wait = max(wait, 1.3)  # one SYN retransmission by the server's kernel (after 1 s)
                return min(wait, max(0.2, budget.left() - 2 * rtt - 0.05))

            left = budget.left()
            if left < 0.4:
                break
            http_timeout = left - 0.02
            # Two TCP probes at once where the service's in-flight cap (4 per address) leaves room.
            copies = 2 if spec.protocol == "tcp" and len(self.opts.ports) + 1 <= 4 - 1 else 1
            new = await dialback.probe(host, server.http_port, spec.port, spec.protocol,
                                       server_wait=server_wait, http_timeout=http_timeout, copies=copies)
            if result.reachable is None or new.reachable is not None:
                result = new
            if result.reason in ("rate-limited", "server-busy") and budget.left() > 1.6:
                await asyncio.sleep(1.0)  # the service asks to come back shortly (Retry-After: 1)
                continue
            if result.reachable is True or result.reason not in ("no-mapping-or-filtered", "no-server"):
                break
            if result.reachable is False and (self.rtt.recovered == 0 or attempt >= 1):
                break  # a negative answer is asked once more only when loss was seen
        return result

    async def _node_port_mapping(self, result: PortResult, server: Addr, budget: Budget) -> None:
        """After the dial-back (so it cannot open the hole it tests): which public endpoint does the NAT give
        the node's own UDP port? A node advertising its local port is unreachable if the NAT changes it."""
        if budget.left() < 0.1:
            return
        try:
            sock = await StunSocket(self.rtt, bind=("0.0.0.0", result.port)).open()
        except OSError:
            return
        self.sockets.append(sock)
        sent = time.monotonic()
        reply = await sock.request(server, deadline=lambda: budget.negative(sent))
        sock.close()
        if reply is not None and reply.source == server and reply.mapped is not None:
            result.public_endpoint = f"{reply.mapped[0]}:{reply.mapped[1]}"

    async def _ipv6(self, usable: list[ServerSpec], budget: Budget) -> None:
        v6 = [s for s in usable if _v6(s)]
        if not v6:
            self.report.untested.append("IPv6: no server with an IPv6 address")
            return
        try:
            sock = await self._open(socket.AF_INET6)
        except OSError as exc:
            self.report.udp.ipv6 = False
            self.report.untested.append(f"IPv6: {exc.strerror}")
            return
        first: Addr = (_v6(v6[0]) or "", v6[0].stun_port)
        udp_replies, (tcp_reply, tcp_reason) = await asyncio.gather(
            asyncio.gather(*(_request(sock, (_v6(s) or "", s.stun_port), budget) for s in v6)),
            tcp_binding(first, deadline=budget.end - 0.05))
        got = next((r for r in udp_replies if r is not None and r.mapped), None)
        self.report.udp.ipv6 = got is not None
        self.report.tcp.ipv6 = tcp_reply is not None or tcp_reason == "refused"
        if got is None and tcp_reply is None:
            self.report.udp.ipv6 = None  # neither STUN over UDP nor over TCP: not a STUN server, UDP not judged
        mapped = (got.mapped if got is not None else None) or (tcp_reply.mapped if tcp_reply is not None else None)
        if mapped is not None:
            self.report.public.ipv6 = mapped[0]

    async def _hairpin(self, m_sock: StunSocket, f_sock: StunSocket, obs: dict[str, object],
                       budget: Budget) -> None:
        t1 = obs.get("t1")
        fr1 = obs.get("f1")
        if not isinstance(t1, Reply) or not isinstance(fr1, Reply) or fr1.mapped is None:
            obs["hairpin"] = (False, False, "no public endpoint to aim at")
            return
        from nodereach.stun import message as M

        msg = M.binding_request()
        data = M.encode_message(msg)
        deadline = min(budget.end, time.monotonic() + max(0.1, self.rtt.rto * 2))
        while time.monotonic() < deadline and msg.transaction_id not in f_sock.requests_seen:
            m_sock.send_raw(data, fr1.mapped)
            f_sock.request_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(self.rtt.rto, deadline - time.monotonic()))):
                    await f_sock.request_event.wait()
        obs["hairpin"] = (True, msg.transaction_id in f_sock.requests_seen, None)

    def _conclude(self, primary: ServerSpec, v4: list[ServerSpec], obs: dict[str, object], m_sock: StunSocket,
                  info: netinfo.NetInfo) -> None:
        from nodereach.diagnose.conclude import conclude

        conclude(self.report, primary, v4, obs, info, m_sock, self.opts)
        self.concluded = True
        self.progress("verdict", "done", self.report.verdict)
