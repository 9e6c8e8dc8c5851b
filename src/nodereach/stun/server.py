"""asyncio STUN server: basic mode on one address, full RFC 5780 mode on two IPs x two ports.

    config = StunServerConfig("203.0.113.10", alt_address="203.0.113.11")   # port 0 = pick free ports
    server = StunServer(config)
    await server.start()          # binds 1 or 4 UDP sockets + TCP on the primary address
    server.addresses              # {"primary": (ip, port), "alt_port": ..., "alt_ip": ..., "alt_both": ...}
    server.stats                  # StunServerStats: requests, replies, errors{code: n}, rate_limited, malformed
    await server.close()

Replies carry only what the client needs, never more bytes than necessary (reflection amplification);
sizes for IPv4 (IPv6 adds 12 bytes per address attribute), request -> reply:

| request                                     | basic mode        | RFC 5780 mode   |
|---------------------------------------------|-------------------|-----------------|
| plain Binding, 20 B                         | 32 B (1.6x)       | 56 B (2.8x)     |
| plain + FINGERPRINT, 28 B                   | 40 B (1.43x)      | 64 B (2.29x)    |
| CHANGE-REQUEST, 28 B                        | 420: 56 B (2.0x)  | 56 B (2.0x)     |
| RFC 3489 (no cookie), 20 B                  | 44 B (2.2x)       | 56 B (2.8x)     |
| with PADDING                                | padded up to the request's size, never beyond |
| RESPONSE-PORT + PADDING, >= 32 B            | 400: 40 B (<= 1.25x)                |
| unknown comprehension-required attribute    | 420: 56 B (<= 2.33x, smallest request 24 B) |
| garbage, truncated, non-Binding, responses  | no reply, counted                   |

The largest factor is 2.8x (a plain request in RFC 5780 mode; 4.6x on an IPv6 server, 92 B); error replies
stay below it, so their RFC reason phrases are kept.

RFC 5780 mode adds RESPONSE-ORIGIN and OTHER-ADDRESS (the client needs both to run the RFC 5780 tests);
coturn also adds MAPPED-ADDRESS (68 B, 3.4x) and pads PADDING requests to the MTU
(56x). Rate limiting (token bucket per source IP, bounded LRU) runs before any parsing. A plain 20-byte
Binding request takes a fast path without parsing or allocating a message object; the shapes real clients
send with attributes (FINGERPRINT, SOFTWARE, CHANGE-REQUEST, ...) a second one, stun/fastpath.py, which
checks them in one pass over the bytes and fills precomputed replies, with the same answers as the full path.

Listening on a wildcard address (`0.0.0.0`, `::`; basic mode only) the server reads each request's
destination address (IP_PKTINFO / IPV6_PKTINFO) and answers from it: the kernel would otherwise pick the
source by route, so a host with several addresses of a family (common with IPv6) would answer a request sent
to one of them from another, and a NAT or firewall on the client's side would drop that reply.

Scaling: `reuse_port=True` sets SO_REUSEPORT, so several processes (`python -m nodereach.stun`)
can share the ports and the kernel spreads clients over them; install the `fast` extra for uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from nodereach.defaults import STUN_ALT_PORT, STUN_PORT
from nodereach.stun import attributes as A
from nodereach.stun.errors import StunError, StunParseError
from nodereach.stun.fastpath import Answer, FastPath
from nodereach.stun.framing import StreamDecoder
from nodereach.stun.message import (
    BINDING,
    HEADER_SIZE,
    REQUEST,
    SUCCESS,
    StunMessage,
    encode_message,
    error_response,
    parse_message,
)
from nodereach.stun.ratelimit import SourceRateLimiter

_FAST_HEAD = b"\x00\x01\x00\x00" + A.MAGIC_COOKIE_BYTES
_XOR4 = struct.Struct("!HHHHI")
_COOKIE_PORT = A.MAGIC_COOKIE >> 16
UDP_RCVBUF = 1 << 20
_ROLES = {(0, 0): "primary", (0, 1): "alt_port", (1, 0): "alt_ip", (1, 1): "alt_both"}
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux <netinet/in.h>; Python does not export it
_IN_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # struct in6_pktinfo: addr, ifindex
_ANCBUF = socket.CMSG_SPACE(_IN6_PKTINFO.size)


@dataclass(frozen=True)
class StunServerConfig:
    """Where and how to serve. Port 0 picks free ports (tests); alt_address enables RFC 5780 mode."""

    address: str
    alt_address: str | None = None
    port: int = STUN_PORT
    alt_port: int = STUN_ALT_PORT
    tcp: bool = True
    rate_per_s: float = 50.0
    """Sustained requests per second per source IP (<= 0: unlimited)."""
    burst: float = 100.0
    max_tracked_sources: int = 100_000
    reuse_port: bool = False
    tcp_max_connections: int = 256
    tcp_idle_timeout: float = 10.0


@dataclass
class StunServerStats:
    """Counters since start (read by the serve command's /metrics)."""

    requests: int = 0
    replies: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    malformed: int = 0
    ignored: int = 0
    """Well-formed STUN that is not a Binding request (indications, responses, other methods)."""
    send_failed: int = 0
    tcp_connections: int = 0
    tcp_refused: int = 0

    def as_dict(self) -> dict[str, object]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


class _Udp:
    """One UDP socket of the server. A readiness callback drains up to BATCH datagrams per wakeup (one
    clock read per batch) and answers a plain Binding request without parsing, then the common shapes with
    attributes through FastPath: the event loop's per-packet machinery (transports, one datagram per loop
    iteration) is the dominant cost, so it is bypassed."""

    BATCH = 256
    MAX_DATAGRAM = 4096  # larger datagrams arrive truncated and are counted as malformed

    def __init__(self, server: StunServer, idx: tuple[int, int], sock: socket.socket) -> None:
        self.server = server
        self.idx = idx
        self.sock = sock
        name = sock.getsockname()
        self.local: A.Address = (str(name[0]), int(name[1]))
        self.tail = b""  # RESPONSE-ORIGIN + OTHER-ADDRESS, precomputed (RFC 5780 mode)
        self.fast_prefix = b""

    def sendto(self, data: bytes, dest: A.Address, local: str | None = None) -> bool:
        try:
            self.sock.sendto(data, dest)
            return True
        except OSError:  # includes a full send buffer: UDP, the client retransmits
            self.server.stats.send_failed += 1
            return False

    def readable(self) -> None:
        srv = self.server
        stats = srv.stats
        allow = srv.limiter.allow
        recv = self.sock.recvfrom
        send = self.sock.sendto
        prefix, tail = self.fast_prefix, self.tail
        inet_aton, pack, cookie = socket.inet_aton, _XOR4.pack, A.MAGIC_COOKIE
        fast, idx = srv.fast_path().answer, self.idx
        now = time.monotonic()
        for _ in range(self.BATCH):
            try:
                data, addr = recv(self.MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue
            host = addr[0]
            if not allow(host, now):
                stats.rate_limited += 1
                continue
            n = len(data)
            if n < HEADER_SIZE or data[0] & 0xC0 or ((data[2] << 8) | data[3]) + HEADER_SIZE != n:
                stats.malformed += 1  # not STUN: dropped without parsing (cheap under a garbage flood)
                continue
            if n == HEADER_SIZE and data[:8] == _FAST_HEAD and "." in host:
                stats.requests += 1
                try:
                    send(prefix + data[8:20] + pack(A.XOR_MAPPED_ADDRESS, 8, A.FAMILY_IPV4,
                                                    addr[1] ^ _COOKIE_PORT,
                                                    int.from_bytes(inet_aton(host), "big") ^ cookie) + tail, addr)
                    stats.replies += 1
                except OSError:
                    stats.send_failed += 1
                continue
            try:
                answer = fast(data, addr, idx)  # the common shapes with attributes (stun/fastpath.py)
            except Exception:  # never let one datagram take the server down
                answer = None
            if answer is None:
                srv.handle(self, data, addr)
                continue
            stats.requests += 1
            reply, out_idx, dest, code = answer
            if code:
                srv.count_error(code)
            if out_idx != idx:
                srv.send_from(out_idx, reply, dest)
                continue
            try:
                send(reply, dest)
                stats.replies += 1
            except OSError:
                stats.send_failed += 1


class _UdpAnyAddress(_Udp):
    """A UDP socket bound to 0.0.0.0 or :: (basic mode): every reply leaves from the address its request was
    sent to, read from the request's IP_PKTINFO / IPV6_PKTINFO and given back to sendmsg (module docstring)."""

    def __init__(self, server: StunServer, idx: tuple[int, int], sock: socket.socket) -> None:
        super().__init__(server, idx, sock)
        self.v6 = sock.family == socket.AF_INET6
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self._cmsg: dict[str, list[tuple[int, int, bytes]]] = {}

    def _source(self, local: str) -> list[tuple[int, int, bytes]]:
        cmsg = self._cmsg.get(local)
        if cmsg is None:
            if self.v6:
                cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                         _IN6_PKTINFO.pack(socket.inet_pton(socket.AF_INET6, local), 0))]
            else:
                cmsg = [(socket.IPPROTO_IP, IP_PKTINFO,
                         _IN_PKTINFO.pack(0, socket.inet_pton(socket.AF_INET, local), bytes(4)))]
            if len(self._cmsg) < 256:  # the host's own addresses: a handful
                self._cmsg[local] = cmsg
        return cmsg

    def sendto(self, data: bytes, dest: A.Address, local: str | None = None) -> bool:
        try:
            self.sock.sendmsg([data], self._source(local) if local else [], 0, dest)
            return True
        except OSError:
            self.server.stats.send_failed += 1
            return False

    def readable(self) -> None:
        srv = self.server
        stats = srv.stats
        allow = srv.limiter.allow
        recv = self.sock.recvmsg
        send = self.sock.sendmsg
        prefix = self.fast_prefix  # basic mode: no tail
        inet_aton, pack, cookie = socket.inet_aton, _XOR4.pack, A.MAGIC_COOKIE
        fast, idx = srv.fast_path().answer, self.idx
        now = time.monotonic()
        for _ in range(self.BATCH):
            try:
                data, anc, _flags, addr = recv(self.MAX_DATAGRAM, _ANCBUF)
            except BlockingIOError:
                return
            except OSError:
                continue
            host = addr[0]
            if not allow(host, now):
                stats.rate_limited += 1
                continue
            n = len(data)
            if n < HEADER_SIZE or data[0] & 0xC0 or ((data[2] << 8) | data[3]) + HEADER_SIZE != n:
                stats.malformed += 1
                continue
            if n == HEADER_SIZE and data[:8] == _FAST_HEAD and "." in host and anc and anc[0][1] == IP_PKTINFO:
                # The plain IPv4 request's fast path (see _Udp), answered through its own PKTINFO: the received
                # in_pktinfo's destination goes back as the source (spec_dst), its interface index zeroed.
                stats.requests += 1
                level, kind, info = anc[0]
                try:
                    send([prefix + data[8:20] + pack(A.XOR_MAPPED_ADDRESS, 8, A.FAMILY_IPV4,
                                                     addr[1] ^ _COOKIE_PORT,
                                                     int.from_bytes(inet_aton(host), "big") ^ cookie)],
                         [(level, kind, bytes(4) + info[8:12] + info[8:12])], 0, addr)
                    stats.replies += 1
                except OSError:
                    stats.send_failed += 1
                continue
            try:
                answer = fast(data, addr, idx)
            except Exception:
                answer = None
            if answer is None:
                srv.handle(self, data, addr, _destination(anc))
                continue
            stats.requests += 1
            reply, out_idx, dest, code = answer
            if code:
                srv.count_error(code)
            if out_idx != idx:  # not in basic mode, the only mode on a wildcard address
                srv.send_from(out_idx, reply, dest)
            elif self.sendto(reply, dest, _destination(anc)):
                stats.replies += 1


def _destination(anc: list[tuple[int, int, bytes]]) -> str | None:
    """The destination address of a received datagram, from its PKTINFO control message."""
    for level, kind, value in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
            return socket.inet_ntop(socket.AF_INET, _IN_PKTINFO.unpack_from(value)[2])
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
            return socket.inet_ntop(socket.AF_INET6, _IN6_PKTINFO.unpack_from(value)[0])
    return None


class StunServer:
    """Serve STUN Binding on UDP (1 or 4 sockets) and TCP. Never raises on input; see module docstring."""

    def __init__(self, config: StunServerConfig) -> None:
        if config.alt_address is not None:
            if (":" in config.alt_address) != (":" in config.address) or config.alt_address == config.address:
                raise StunError(f"RFC 5780 needs two different addresses of one family, got {config.address} "
                                f"and {config.alt_address}", "give --alt-address a second IP of the same family")
            if _unspecified(config.address) or _unspecified(config.alt_address):
                raise StunError("RFC 5780 needs the server's own addresses, not a wildcard "
                                f"({config.address}, {config.alt_address})", "give both addresses literally")
            if config.port and config.port == config.alt_port:
                raise StunError(f"RFC 5780 needs two different ports, got {config.port} twice",
                                "choose another alternate port")
        self.config = config
        self.stats = StunServerStats()
        self.limiter = SourceRateLimiter(config.rate_per_s, config.burst, config.max_tracked_sources)
        self.full = config.alt_address is not None
        self._udp: dict[tuple[int, int], _Udp] = {}
        self._fast: FastPath | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_tasks: set[asyncio.Task[None]] = set()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self.addresses: dict[str, A.Address] = {}

    # --- lifecycle ---
    async def start(self) -> None:
        """Bind every socket (retrying a few times when port 0 picks ports taken on the other IP)."""
        cfg = self.config
        socks: dict[tuple[int, int], socket.socket] = {}
        for attempt in range(20):
            try:
                socks = self._bind_all()
                break
            except OSError as exc:
                fixed = cfg.port and (not self.full or cfg.alt_port)
                if fixed or attempt == 19:
                    where = cfg.address + (f" + {cfg.alt_address}" if cfg.alt_address else "")
                    raise StunError(f"cannot bind STUN on {where} (ports {cfg.port}, {cfg.alt_port}): {exc}",
                                    "another STUN server running? pick other ports or check the addresses "
                                    "are configured on this host") from exc
        loop = asyncio.get_running_loop()
        any_address = _unspecified(cfg.address)
        for idx, sock in socks.items():
            proto = (_UdpAnyAddress if any_address else _Udp)(self, idx, sock)
            self._udp[idx] = proto
            self.addresses[_ROLES[idx]] = proto.local
        for idx, proto in self._udp.items():
            tail = b""
            if self.full:
                other = self._udp[(1 - idx[0], 1 - idx[1])].local
                tail = (self._attr(A.RESPONSE_ORIGIN, A.encode_address(proto.local))
                        + self._attr(A.OTHER_ADDRESS, A.encode_address(other)))
            proto.tail = tail
            proto.fast_prefix = struct.pack("!HH", 0x0101, 12 + len(tail)) + A.MAGIC_COOKIE_BYTES
        self._fast = FastPath(self.full, {idx: proto.local for idx, proto in self._udp.items()})
        for proto in self._udp.values():
            loop.add_reader(proto.sock.fileno(), proto.readable)
        if self.config.tcp:
            host, port = self.addresses["primary"]
            tsock = _make_socket(socket.SOCK_STREAM, host, port, self.config.reuse_port)
            tsock.listen(128)
            self._tcp_server = await asyncio.start_server(self._tcp_client, sock=tsock)

    def _bind_all(self) -> dict[tuple[int, int], socket.socket]:
        cfg = self.config
        socks: dict[tuple[int, int], socket.socket] = {}
        try:
            primary = _make_socket(socket.SOCK_DGRAM, cfg.address, cfg.port, cfg.reuse_port)
            socks[(0, 0)] = primary
            port = primary.getsockname()[1]
            if cfg.tcp:  # make sure TCP can have the same port before committing to it
                probe = _make_socket(socket.SOCK_STREAM, cfg.address, port, cfg.reuse_port)
                probe.close()
            if self.full:
                assert cfg.alt_address is not None
                socks[(0, 1)] = _make_socket(socket.SOCK_DGRAM, cfg.address, cfg.alt_port, cfg.reuse_port)
                alt_port = socks[(0, 1)].getsockname()[1]
                socks[(1, 0)] = _make_socket(socket.SOCK_DGRAM, cfg.alt_address, port, cfg.reuse_port)
                socks[(1, 1)] = _make_socket(socket.SOCK_DGRAM, cfg.alt_address, alt_port, cfg.reuse_port)
        except OSError:
            for s in socks.values():
                s.close()
            raise
        return socks

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for proto in self._udp.values():
            loop.remove_reader(proto.sock.fileno())
            proto.sock.close()
        self._udp.clear()
        if self._tcp_server is not None:
            self._tcp_server.close()
            for writer in list(self._tcp_writers):
                writer.transport.abort()  # the handler's read ends with an error and the task returns
            if self._tcp_tasks:
                _done, pending = await asyncio.wait(set(self._tcp_tasks), timeout=1.0)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._tcp_server.wait_closed()
            self._tcp_server = None

    async def __aenter__(self) -> StunServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- request handling (shared by UDP slow path and TCP) ---
    @staticmethod
    def _attr(attr_type: int, value: bytes) -> bytes:
        return struct.pack("!HH", attr_type, len(value)) + value

    def count_error(self, code: int) -> None:
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1

    def fast_path(self) -> FastPath:
        """The precomputed replies for this server's sockets (built at start, or from `addresses` as set)."""
        if self._fast is None:
            self._fast = FastPath(self.full, {idx: self.addresses[role] for idx, role in _ROLES.items()
                                              if role in self.addresses})
        return self._fast

    def send_from(self, idx: tuple[int, int], reply: bytes, dest: A.Address) -> None:
        """Send a reply from another of the server's UDP sockets (CHANGE-REQUEST)."""
        if self._udp[idx].sendto(reply, dest):
            self.stats.replies += 1

    def respond(self, data: bytes, source: A.Address, via: tuple[int, int], tcp: bool = False
                ) -> tuple[bytes, tuple[int, int], A.Address] | None:
        """Decide the reply to one datagram or TCP frame: (bytes, socket index to send from, destination) or
        None. The fast path answers the common shapes; everything else takes the full path."""
        answer: Answer | None = self.fast_path().answer(data, source, via, tcp)
        if answer is None:
            return self.respond_full(data, source, via, tcp)
        self.stats.requests += 1
        if answer[3]:
            self.count_error(answer[3])
        return answer[0], answer[1], answer[2]

    def respond_full(self, data: bytes, source: A.Address, via: tuple[int, int], tcp: bool = False
                     ) -> tuple[bytes, tuple[int, int], A.Address] | None:
        """The full path: parse, the attribute table's checks, the encoder. Any request, any bytes; the
        reference the fast path is tested against byte for byte (tests/test_stun_fastpath.py)."""
        try:
            req = parse_message(data)
        except StunParseError:
            self.stats.malformed += 1
            return None
        if req.check_fingerprint() is False:  # RFC 8489 7.3: not STUN (another protocol, or corrupted)
            self.stats.malformed += 1
            return None
        if req.cls != REQUEST or req.method != BINDING:
            self.stats.ignored += 1
            return None
        self.stats.requests += 1
        if req.unknown_required:
            return self._error(req, 420, "Unknown Attribute", req.unknown_required, via, source)
        change_ip, change_port = req.change_request
        changing = change_ip or change_port
        if changing and (not self.full or tcp):
            return self._error(req, 420, "Unknown Attribute", (A.CHANGE_REQUEST,), via, source)
        rport = req.response_port
        if rport is not None:
            if tcp:
                return self._error(req, 420, "Unknown Attribute", (A.RESPONSE_PORT,), via, source)
            if req.has(A.PADDING):
                return self._error(req, 400, "Bad Request", (), via, source)
            if rport == 0:
                return self._error(req, 400, "Bad Request", (), via, source)
        out_idx = (via[0] ^ change_ip, via[1] ^ change_port) if changing else via
        local = self.addresses[_ROLES[out_idx]]
        resp = StunMessage(BINDING, SUCCESS, req.transaction_id)
        if req.legacy:
            resp.add(A.MAPPED_ADDRESS, A.encode_address(source))
            resp.add(A.SOURCE_ADDRESS, A.encode_address(local))
            if self.full:
                resp.add(A.CHANGED_ADDRESS, A.encode_address(self.addresses[_ROLES[(1 - via[0], 1 - via[1])]]))
        else:
            resp.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address(source, resp.key))
            if self.full:
                resp.add(A.RESPONSE_ORIGIN, A.encode_address(local))
                resp.add(A.OTHER_ADDRESS, A.encode_address(self.addresses[_ROLES[(1 - via[0], 1 - via[1])]]))
        fingerprint = req.has(A.FINGERPRINT)
        if req.has(A.PADDING):  # pad up to the request's size, never beyond (RFC 5780 asks for the MTU)
            size = HEADER_SIZE + sum(4 + len(v) + (-len(v) % 4) for _, v in resp.attributes) + 8 * fingerprint
            room = len(data) - size - 4
            if room >= 0:
                resp.add(A.PADDING, bytes(room - room % 4))
        dest = (source[0], rport) if rport is not None else source
        return encode_message(resp, fingerprint=fingerprint), out_idx, dest

    def _error(self, req: StunMessage, code: int, reason: str, unknown: tuple[int, ...], via: tuple[int, int],
               source: A.Address) -> tuple[bytes, tuple[int, int], A.Address]:
        self.count_error(code)
        return encode_message(error_response(req, code, reason, unknown), fingerprint=req.has(A.FINGERPRINT)), \
            via, source

    def handle(self, proto: _Udp, data: bytes, addr: tuple[str | Any, int], local: str | None = None) -> None:
        """UDP slow path: what the fast paths declined (`local`: the address it was sent to, when the socket is
        bound to a wildcard)."""
        try:
            decision = self.respond_full(data, (addr[0], addr[1]), proto.idx)
        except Exception:  # never let one datagram take the server down; count it as malformed
            self.stats.malformed += 1
            return
        if decision is None:
            return
        reply, out_idx, dest = decision
        if self._udp[out_idx].sendto(reply, dest, local if out_idx == proto.idx else None):
            self.stats.replies += 1

    # --- TCP (RFC 8489 framing) on the primary address ---
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._tcp_tasks) >= self.config.tcp_max_connections or task is None:
            self.stats.tcp_refused += 1
            writer.close()
            return
        self._tcp_tasks.add(task)
        self._tcp_writers.add(writer)
        self.stats.tcp_connections += 1
        peer = writer.get_extra_info("peername")
        decoder = StreamDecoder()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that arrives in the step its inner
            # future completes (CPython gh-86296), and a stopping server would keep serving this connection.
            while True:
                async with asyncio.timeout(self.config.tcp_idle_timeout):
                    chunk = await reader.read(4096)
                if not chunk:
                    break
                for frame in decoder.feed(chunk):
                    if not self.limiter.allow(peer[0]):
                        self.stats.rate_limited += 1
                        continue
                    decision = self.respond(frame, (peer[0], peer[1]), (0, 0), tcp=True)
                    if decision is not None:
                        writer.write(decision[0])
                        self.stats.replies += 1
                async with asyncio.timeout(self.config.tcp_idle_timeout):
                    await writer.drain()
        except StunParseError:
            self.stats.malformed += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # close() cancels stragglers: end quietly (no noise from the stream)
            pass
        finally:
            self._tcp_tasks.discard(task)
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name: bound as given
        return False


def _make_socket(kind: int, host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_DGRAM:  # absorb bursts instead of dropping honest requests behind a flood
            try:
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), UDP_RCVBUF)
            except OSError:  # not root: capped by net.core.rmem_max
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
