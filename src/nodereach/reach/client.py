"""Dial-back client: ask a nodereach server to reach this host on a port, from outside.

If nothing listens on the port, the client listens there itself for the duration (a TCP listener or a UDP
socket that answers the server's token probe with an echo), so the answer proves the probe reached *this*
host. If the node's own listener holds the port, the server's TCP handshake still tells; UDP is reported as
unknown unless the server saw a rejection, because nodereach cannot observe datagrams the node receives.
Network failures never raise: they come back as `reachable=None` with a reason.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from nodereach import defaults
from nodereach.errors import UsageError
from nodereach.net import (
    ResolveError,
    Transport,
    family_of,
    is_ip,
    is_transport,
    resolve,
    wildcard,
)
from nodereach.p2p.exchange import TRANSPORT, ProofProtocol, ProtocolCheck
from nodereach.reach import http1
from nodereach.reach.http1 import HttpError, ResponseTimeout, host_port, request_json
from nodereach.reach.listener import EchoListener

Listener = Literal["nodereach", "node", "none"]


@dataclass(slots=True)
class DialBackResult:
    """What a dial-back server saw when it tried to reach one port of this host from outside."""

    port: int
    protocol: Transport
    reachable: bool | None
    reason: str
    """ok | refused | timeout | reset | unreachable | other-host | udp-unobservable | no-server |
    rate-limited | refused-port | server-busy | server-error | local-error"""
    rtt_ms: float | None = None
    observed_address: str | None = None
    listener: Listener | None = None
    received: bool | None = None
    """Our own listener saw the server's token (None when we did not listen)."""
    server: str | None = None
    detail: str | None = None
    protocol_check: ProtocolCheck | None = None
    """The node's own answer when a protocol proof was asked (`proof=`), else None."""
    source: str | None = None
    """The address the server's probe came from."""
    second_address: bool | None = None
    """True: the probe came from the server's second address of this family, so nothing the request opened
    let it in. False: from the address the request went to (the server has no second one of this family): an
    address-dependent filter would have let it in, so a `reachable` is weaker. None: the server did not say."""


TCP_PAD_TO = 300
"""Body bytes a TCP probe request is padded to: the server then affords all its fresh SYNs (six) and the
token exchange within the bytes the request cost."""
PROOF_PAD_TO = 900
"""Body bytes a proof request is padded to: the server sends at most what the request cost (IP and TCP
headers counted), and a proof's messages (a Bitcoin `version`, three discv4 PINGs) need about 600."""


@dataclass(frozen=True, slots=True)
class ProofRequest:
    """Ask the server to speak the node's own protocol to the port (docs/dialback-api.md, Protocol proofs)."""

    protocol: ProofProtocol
    network: str | None = None
    """Bitcoin network name: main, testnet3, testnet4, signet, regtest."""
    magic: bytes | None = None
    """Bitcoin message start bytes (a custom signet); overrides `network`."""
    infohash: bytes | None = None
    """BitTorrent: a torrent the node serves (an unknown one gets no answer)."""
    node_id: bytes | None = None
    """discv5 (needed) and discv4 (checked): the node's id, e.g. `Enr.node_id`."""
    enr: str | None = None
    """Instead of `node_id`: the node's ENR text; the server decodes it (this process need not import rlp)."""

    @property
    def transport(self) -> Transport:
        return TRANSPORT[self.protocol]

    def body(self) -> dict[str, str]:
        doc: dict[str, str] = {"protocol": self.protocol}
        for name, value in (("network", self.network), ("enr", self.enr)):
            if value is not None:
                doc[name] = value
        for name, raw in (("magic", self.magic), ("infohash", self.infohash), ("node_id", self.node_id)):
            if raw is not None:
                doc[name] = raw.hex()
        return doc


def parse_server(server: str) -> tuple[str, int]:
    """'HOST', 'HOST:PORT', '[v6]:PORT', bare IPv6, optionally with http:// -> (host, http port)."""
    s = server.strip()
    for scheme in ("http://", "https://"):
        if s.lower().startswith(scheme):
            s = s[len(scheme):]
    s = s.rstrip("/")
    if not s:
        raise UsageError("empty server address", "use --server HOST or HOST:PORT")
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise UsageError(f"bad server address {server!r}", "IPv6 with a port looks like [2001:db8::1]:3480")
        port_s = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise UsageError(f"bad server address {server!r}", "IPv6 with a port looks like [2001:db8::1]:3480")
    elif s.count(":") > 1:
        host, port_s = s, ""
    else:
        host, _, port_s = s.partition(":")
    if not host:
        raise UsageError(f"bad server address {server!r}", "use --server HOST or HOST:PORT")
    if not port_s:
        return host, defaults.HTTP_PORT
    try:
        port = int(port_s)
    except ValueError:
        raise UsageError(f"bad port in server address {server!r}", "use --server HOST:PORT") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"port out of range in {server!r}", "ports are 1..65535")
    return host, port


def base_url(server: str) -> str:
    host, port = parse_server(server)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _bind_host(server_host: str, local_address: str | None) -> str:
    if local_address:
        return local_address
    return wildcard(family_of(server_host)) if is_ip(server_host) else "0.0.0.0"


ServerWait = Callable[[float], float]
"""handshake seconds of the API request -> the probe deadline to ask the server for (seconds)."""


async def probe_port(server: str, port: int, protocol: str, *, timeout: float, listen: bool = True,  # noqa: ASYNC109
                     local_address: str | None = None, proof: ProofRequest | None = None) -> DialBackResult:
    """Ask `server` (HOST[:PORT], HTTP port default 3480) to reach this host's `port` over `protocol`."""
    transport = _check_args(port, protocol)
    host, http_port = parse_server(server)
    # Resolve once: the listener must use the family the server will probe over (the request's family).
    started = time.monotonic()
    try:
        address = (await resolve(host, http_port, transport="tcp", timeout=min(1.0, timeout / 3)))[0]
    except ResolveError as exc:
        return DialBackResult(port, transport, None, "no-server", server=server, detail=str(exc))
    timeout = max(0.2, timeout - (time.monotonic() - started))
    wait = max(0.2, min(timeout * 0.7, timeout - 0.3))
    return await dial_back(address, http_port, port, transport, server_wait=lambda _handshake: wait,
                           http_timeout=timeout, listen=listen, local_address=local_address, server=server,
                           proof=proof)


async def prove(server: str, port: int, proof: ProofRequest, *, timeout: float = 6.0,  # noqa: ASYNC109
                local_address: str | None = None) -> DialBackResult:
    """Ask `server` to speak `proof.protocol` to this host's `port`: `result.protocol_check.ok` says whether the
    node answered as that software does; for discv4/discv5 `result.reachable` is then the UDP answer too."""
    return await probe_port(server, port, proof.transport, timeout=timeout, local_address=local_address,
                            proof=proof)


async def dial_back(address: str, http_port: int, port: int, protocol: str, *, server_wait: ServerWait,
                    http_timeout: float, copies: int = 1, hedge_s: float | None = None, listen: bool = True,
                    local_address: str | None = None, server: str | None = None,
                    proof: ProofRequest | None = None, connect_wait: ServerWait | None = None) -> DialBackResult:
    """The probe itself, for callers that know the server's address and their RTT (nodereach check).

    `server_wait(handshake_s)` gives the server's probe deadline once the API request's TCP handshake time is
    known. `copies` > 1 asks up to that many independent probes of one listener (each is one series of tries
    from the server), so one lost packet does not turn "reachable" into "not reachable" without costing a
    longer deadline; the first answer that decides wins. With `hedge_s`, a further copy starts only when no
    earlier one's connection was up after `hedge_s` (a lost SYN: the kernel would resend it a second later),
    so a clean path costs the server one probe; without, all start at once.

    With `proof` the server speaks the node's protocol instead of nodereach's token (nothing listens here for
    it: the node must hold the port) and the result carries `protocol_check`. A proof waits for the node's
    answer after the handshake: give `server_wait` about two more round trips plus the node's own delay
    (measured in the lab: monerod 12 ms, js-libp2p 20 ms, transmission-daemon up to 240 ms on loaded cores),
    and `connect_wait` the path test's deadline for the TCP connection alone (`connect_timeout_ms`: the
    server then knows a closed port as early as the path test does)."""
    transport = _check_args(port, protocol)
    if proof is not None:
        if proof.transport != transport:
            raise UsageError(f"{proof.protocol} runs over {proof.transport}, not {transport}")
        listen = False
    asyncio.get_running_loop().call_soon(http1.warm_up)  # after the probes started next to this one
    label = server or host_port(address, http_port)
    listener: EchoListener | None = None
    kind: Listener = "none"
    if listen:
        listener = EchoListener(transport, _bind_host(address, local_address), port)
        try:
            kind = "nodereach" if await listener.open() else "node"
        except OSError as exc:
            return DialBackResult(port, transport, None, "local-error", server=label,
                                  detail=f"cannot listen on {transport} port {port}: {exc.strerror}")
        if kind == "node":
            listener = None
    token = listener.token.hex() if listener is not None else None
    connected = asyncio.Event()
    dropped: set[str] = set()
    """Fields this server does not know (an older one rejects them): left out of the next asks."""

    def body(handshake_s: float) -> dict[str, Any]:
        connected.set()
        doc: dict[str, Any] = {"port": port, "protocol": transport,
                               "timeout_ms": max(200, int(server_wait(handshake_s) * 1000))}
        if token:
            doc["token"] = token
        if proof is not None:
            if connect_wait is not None and transport == "tcp":
                doc["connect_timeout_ms"] = min(doc["timeout_ms"], max(200, int(connect_wait(handshake_s) * 1000)))
            doc["proof"] = proof.body()
            doc["pad"] = " " * max(0, PROOF_PAD_TO - len(json.dumps(doc)) - 10)
        elif transport == "tcp":
            # The server makes as many fresh SYNs as the request's bytes pay for (no amplification): enough
            # for all of them (reach.prober.SCHEDULE) and the token exchange.
            doc["pad"] = " " * max(0, TCP_PAD_TO - len(json.dumps(doc)) - 10)
        for name in dropped:
            doc.pop(name, None)
        return doc

    url = f"http://{host_port(address, http_port)}/v1/probe"

    async def ask() -> tuple[int | None, dict[str, Any]]:
        try:
            r = await request_json(address, http_port, "POST", "/v1/probe", body, timeout=http_timeout,
                                   local_address=local_address)
            # A server from before a field rejects it with 400 (its msgspec Struct forbids unknown fields):
            # ask again as it understands, once per optional field at most.
            while r.status == 400 and (name := unknown_field(r.doc)) is not None and name not in dropped:
                dropped.add(name)
                r = await request_json(address, http_port, "POST", "/v1/probe", body, timeout=http_timeout,
                                       local_address=local_address)
        except ResponseTimeout:
            return None, {"message": f"no answer from {url} within {http_timeout:.1f} s"}
        except OSError as exc:
            return None, {"message": f"{url}: {exc}"}
        except HttpError as exc:  # something answered, but not with a usable HTTP response
            return None, {"message": f"{url}: {exc}", "reason": "server-error"}
        return r.status, r.doc

    try:
        answers = await _first_decisive(ask, max(1, copies), hedge_s, connected)
    finally:
        if listener is not None:
            await listener.close()
    result = DialBackResult(port, transport, None, "server-error", listener=kind, server=label,
                            received=listener.received if listener is not None else None)
    status, doc = _best(answers)
    if status is None:
        result.reason = "server-error" if doc.get("reason") == "server-error" else "no-server"
        result.detail = str(doc.get("message"))
        return result
    if status != 200:
        code = str(doc.get("error", ""))
        result.detail = str(doc.get("message", f"HTTP {status}"))[:300]
        if status == 429:
            result.reason = "rate-limited"
        elif status == 403 and code == "refused-port":
            result.reason = "refused-port"
        elif status == 503:
            result.reason = "server-busy"
        elif status == 404:
            result.reason = "no-server"  # an HTTP server, but no dial-back API there
        return result
    if "reachable" not in doc or not isinstance(doc.get("reason"), str):
        result.detail = "the server's answer is not a nodereach dial-back answer"
        return result
    if proof is not None:
        result.protocol_check = _protocol_check(doc.get("protocol_check"), proof)
    return _combine(result, doc, listener)


OPTIONAL_FIELDS = frozenset({"pad", "proof", "connect_timeout_ms"})
"""Request fields added after the first servers (which answer 400 to a field they do not know): a client
drops them for such a server. `pad` only buys more SYNs; without `proof` the server tests the path alone."""
_UNKNOWN_FIELD = re.compile(r"unknown field `([a-z_]{1,40})`")


def unknown_field(doc: dict[str, Any]) -> str | None:
    """The optional field a 400 answer says the server does not know (msgspec's message), else None."""
    match = _UNKNOWN_FIELD.search(str(doc.get("message", ""))[:300])
    return match.group(1) if match and match.group(1) in OPTIONAL_FIELDS else None


def _protocol_check(raw: object, proof: ProofRequest) -> ProtocolCheck:
    if not isinstance(raw, dict) or not isinstance(raw.get("ok"), bool):
        return ProtocolCheck(proof.protocol, False, "the server did not speak the protocol (an older server?)")
    rtt = raw.get("rtt_ms")
    return ProtocolCheck(proof.protocol, raw["ok"], str(raw.get("detail", ""))[:300],
                         float(rtt) if isinstance(rtt, int | float) else None)


def _check_args(port: int, protocol: str) -> Transport:
    protocol = protocol.lower()
    if not is_transport(protocol):
        raise UsageError(f"unknown protocol {protocol!r}", "use tcp or udp")
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} out of range", "ports are 1..65535")
    return protocol


Answer = tuple[int | None, dict[str, Any]]
"""(HTTP status or None when no server answered, the JSON object)."""


def _decides(answer: Answer) -> bool:
    """A 200 with a yes or a no: the server's probe made all its tries."""
    return answer[0] == 200 and isinstance(answer[1].get("reachable"), bool)


async def _first_decisive(ask: Callable[[], Coroutine[Any, Any, Answer]], copies: int, hedge_s: float | None,
                          connected: asyncio.Event) -> list[Answer]:
    """Up to `copies` of one request: all at once, or (`hedge_s`) a further one only while none has connected
    `hedge_s` after the last one started. The answers as they come, up to the first that decides; then the
    others are dropped. Why: a copy whose request lost a SYN would hold the answer for the kernel's
    retransmission a second later, while another copy already knows."""
    tasks: list[asyncio.Task[Answer]] = []
    answers: list[Answer] = []
    next_copy = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            hedging = len(tasks) < copies and not connected.is_set()
            if hedging and now >= next_copy:
                tasks.append(asyncio.ensure_future(ask()))
                next_copy = now + (hedge_s if hedge_s is not None else 0.0)
                continue
            pending = [t for t in tasks if not t.done()]
            if not pending:
                if hedging:  # every copy so far failed before connecting: the next one now
                    next_copy = now
                    continue
                break
            done, _ = await asyncio.wait(pending, timeout=next_copy - now if hedging else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            answers += [task.result() for task in done]
            if any(_decides(a) for a in answers):
                break
    finally:
        for task in tasks:
            task.cancel()
    return answers


def _best(answers: list[Answer]) -> Answer:
    """Of several answers to the same question: a verified one, else a positive one, else any 200, else the
    first that came from a server at all."""
    ok = [a for a in answers if a[0] == 200]
    if ok:
        return max(ok, key=lambda a: 2 if a[1].get("verified") is True else 1 if a[1].get("reachable") is True else 0)
    return next((a for a in answers if a[0] is not None), answers[0])


def _combine(result: DialBackResult, doc: dict[str, Any], listener: EchoListener | None) -> DialBackResult:
    """Merge the server's view with what our own listener saw."""
    result.observed_address = doc.get("address") if isinstance(doc.get("address"), str) else None
    result.source = str(doc["source"])[:64] if isinstance(doc.get("source"), str) else None
    second = doc.get("second_address")
    result.second_address = second if isinstance(second, bool) else None
    rtt = doc.get("rtt_ms")
    result.rtt_ms = float(rtt) if isinstance(rtt, int | float) else None
    server_reachable = doc.get("reachable")
    reason = str(doc.get("reason", "server-error"))[:40]
    verified = doc.get("verified") is True
    if listener is not None:
        if verified or listener.received:
            result.reachable, result.reason = True, "ok"
        elif server_reachable is True and listener.connections:
            result.reachable, result.reason = True, "ok"  # our listener accepted it; only the token got lost
        elif server_reachable is True:
            # Something accepted the connection on our public address, but not our listener.
            result.reachable, result.reason = False, "other-host"
            result.detail = "a different host or device answered on this port (router service or other forward)"
        else:
            result.reachable = False
            result.reason = reason if reason not in ("no-echo", "unverified") else "timeout"
        return result
    if result.protocol == "tcp":
        result.reachable = server_reachable if isinstance(server_reachable, bool) else None
        result.reason = "ok" if server_reachable is True else reason
        return result
    if server_reachable is False:
        result.reachable, result.reason = False, reason
    elif server_reachable is True and result.protocol_check is not None:
        result.reachable, result.reason = True, "ok"  # the node answered in its own protocol over UDP
    else:
        result.reachable, result.reason = None, "udp-unobservable"
        result.detail = "the node holds this UDP port; nodereach cannot see whether the probe arrived"
    return result


async def server_info(server: str, *, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
    """GET /v1/info: what the server runs (STUN ports and RFC 5780 mode, dial-back). None if unreachable."""
    host, port = parse_server(server)
    try:
        r = await request_json(host, port, "GET", "/v1/info", timeout=timeout)
    except (OSError, HttpError):
        return None
    return r.doc if r.status == 200 and r.doc else None


__all__ = ["PROOF_PAD_TO", "DialBackResult", "ProofRequest", "ProtocolCheck", "base_url", "dial_back", "parse_server",
           "probe_port", "prove", "server_info"]
