"""The adapters' only I/O: HTTP/1.1 (h11) over TCP or TLS, and JSON-RPC over a Unix socket (geth's IPC).

Everything is bounded: one deadline for the whole read of a node, answers cut at `MAX_BODY` bytes, one
`NodeError` with an operator's reason for whatever goes wrong (refused, hangs, TLS, credentials, huge or
malformed answers). Adapters talk to `Conn`, so the transport can be swapped (a test server, the project's
shared HTTP client once there is one) without touching their parsing.

Credentials (Basic auth from a URL or a cookie file, macaroons, API keys) are only ever sent to the endpoint
the operator named or the node's default local one, and never appear in a message: `Target.label` strips
them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import h11
import msgspec

from nodereach import __version__
from nodereach.node.adapters.base import NodeError

MAX_BODY = 4 << 20
"""Largest answer read from a node (getpeerinfo of a node with 125 peers is ~250 KB)."""
USER_AGENT = f"nodereach/{__version__}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a node's RPC is: `http(s)://host:port/base` or a Unix socket path (`ipc`)."""

    scheme: str
    host: str = ""
    port: int = 0
    base: str = ""
    ipc_path: str = ""
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The endpoint as shown to the operator: never with credentials."""
        if self.scheme == "ipc":
            return self.ipc_path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base}"

    @classmethod
    def parse(cls, text: str, default_port: int = 80) -> Target:
        """`http://[user:pass@]host:port/base`, `https://...`, or a path to a Unix socket (`/x/geth.ipc`)."""
        text = text.strip()
        if text.startswith("/") or text.endswith(".ipc"):
            return cls("ipc", ipc_path=text)
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL or a socket path: {cls._safe(text)}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else default_port)
        except ValueError:
            raise ValueError(f"bad port in {cls._safe(text)}") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"),
                   username=unquote(parts.username) if parts.username is not None else None,
                   password=unquote(parts.password) if parts.password is not None else None)

    @staticmethod
    def _safe(text: str) -> str:
        scheme, sep, rest = text.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else text.rpartition("@")[2]

    def with_auth(self, username: str, password: str) -> Target:
        return Target(self.scheme, self.host, self.port, self.base, self.ipc_path, username, password)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def http_request(target: Target, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                       body: bytes = b"", timeout: float,  # noqa: ASYNC109 (the reason names the budget)
                       ssl_context: ssl.SSLContext | None = None,
                       max_body: int = MAX_BODY) -> HttpResponse:
    """One HTTP/1.1 request on its own connection; NodeError with the reason on any failure."""
    try:
        async with asyncio.timeout(timeout):
            return await _http(target, method, path, headers or {}, body, ssl_context, max_body)
    except TimeoutError:
        raise NodeError(f"{target.label} did not answer within {timeout:.1f} s") from None
    except ConnectionRefusedError:
        raise NodeError(f"nothing answers on {target.label} (is the node running with its RPC enabled?)") from None
    except ssl.SSLError as exc:
        raise NodeError(f"TLS with {target.label} failed ({exc.reason or exc})") from None
    except h11.RemoteProtocolError:
        raise NodeError(f"{target.label} answered something that is not HTTP") from None
    except OSError as exc:
        raise NodeError(f"cannot reach {target.label} ({exc.strerror or exc})") from None


async def _http(target: Target, method: str, path: str, headers: Mapping[str, str], body: bytes,
                ssl_context: ssl.SSLContext | None, max_body: int) -> HttpResponse:
    if target.scheme == "ipc":
        raise NodeError(f"{target.label} is a socket path; this node's RPC is HTTP")
    ctx = ssl_context if target.scheme == "https" else None
    if target.scheme == "https" and ctx is None:
        ctx = ssl.create_default_context()
    reader, writer = await asyncio.open_connection(target.host, target.port, ssl=ctx,
                                                   server_hostname=target.host if ctx else None)
    try:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        host = f"[{target.host}]" if ":" in target.host else target.host
        hdrs = [("Host", f"{host}:{target.port}"), ("User-Agent", USER_AGENT), ("Connection", "close"),
                ("Content-Length", str(len(body))), *headers.items()]
        writer.write(conn.send(h11.Request(method=method, target=(target.base + path) or "/", headers=hdrs)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        status = 0
        got: dict[str, str] = {}
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_body:
                    raise NodeError(f"{target.label} sent an answer larger than {max_body // 1024} KiB; not read")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                if not status:
                    raise NodeError(f"{target.label} closed the connection without an answer")
                return HttpResponse(status, got, b"".join(chunks))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def ipc_request(path: str, payload: bytes, *, timeout: float,  # noqa: ASYNC109 (the reason names the budget)
                      max_body: int = MAX_BODY) -> bytes:
    """One JSON-RPC request over a Unix socket (geth's `geth.ipc`): the first complete JSON value back."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(payload)
                await writer.drain()
                buf = b""
                while True:
                    data = await reader.read(65536)
                    if not data:
                        raise NodeError(f"{path} closed the connection without a complete answer")
                    buf += data
                    if len(buf) > max_body:
                        raise NodeError(f"{path} sent an answer larger than {max_body // 1024} KiB; not read")
                    if buf.rstrip().endswith((b"}", b"]")):
                        with contextlib.suppress(msgspec.DecodeError):
                            msgspec.json.decode(buf)  # complete?
                            return buf
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        raise NodeError(f"{path} did not answer within {timeout:.1f} s") from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise NodeError(f"no node listens on the socket {path} (is the node running? is this its IPC path?)") from None
    except PermissionError:
        raise NodeError(f"no permission to open {path} (run as the node's user or a member of its group)") from None
    except OSError as exc:
        raise NodeError(f"cannot open {path} ({exc.strerror or exc})") from None


class _Envelope(msgspec.Struct):
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: Any = None


class Conn:
    """A node's RPC endpoint with the reading's deadline: what the adapters' `read()` talk to."""

    def __init__(self, target: Target, *, deadline: float, ssl_context: ssl.SSLContext | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.target = target
        self.deadline = deadline
        self.ssl_context = ssl_context
        self.headers: dict[str, str] = dict(headers or {})
        if target.username is not None:
            self.headers.setdefault("Authorization", basic_auth(target.username, target.password or ""))
        self._id = 0

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise NodeError(f"{self.target.label}: out of time")
        return left

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Mapping[str, str] | None = None) -> HttpResponse:
        return await http_request(self.target, method, path, headers={**self.headers, **(headers or {})},
                                  body=body, timeout=self.left(), ssl_context=self.ssl_context)

    async def get_json(self, path: str, headers: Mapping[str, str] | None = None) -> bytes:
        """The body of a 200 answer to GET `path`; NodeError for any other status."""
        resp = await self.request("GET", path, headers=headers)
        check_status(resp, self.target, path)
        return resp.body

    async def jsonrpc(self, method: str, params: Any = None, *, path: str = "", version: str = "2.0") -> bytes:
        """The raw `result` of one JSON-RPC call (over HTTP, or the IPC socket); NodeError with the node's own
        error message when it answered one."""
        self._id += 1
        call: dict[str, Any] = {"jsonrpc": version, "id": self._id, "method": method}
        if params is not None:
            call["params"] = params
        payload = msgspec.json.encode(call)
        if self.target.scheme == "ipc":
            data = await ipc_request(self.target.ipc_path, payload, timeout=self.left())
        else:
            resp = await self.request("POST", path, payload, {"Content-Type": "application/json"})
            if resp.status not in (200, 500):  # Bitcoin Core answers RPC errors with HTTP 500 and a JSON body
                check_status(resp, self.target, method)
            data = resp.body
        try:
            env = msgspec.json.decode(data, type=_Envelope)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise NodeError(f"{method}: the answer is not JSON-RPC") from None
        if env.error is not None:
            message = env.error.get("message") if isinstance(env.error, dict) else env.error
            raise NodeError(f"{method}: the node answered an error: {str(message)[:200]}")
        return bytes(env.result)


def check_status(resp: HttpResponse, target: Target, what: str) -> None:
    if resp.status == 200:
        return
    if resp.status in (401, 403):
        raise NodeError(f"{target.label} refused {what}: it needs credentials (HTTP {resp.status}); "
                        "see `nodereach check --help` for where nodereach reads them")
    if resp.status == 404:
        raise NodeError(f"{target.label} does not serve {what} (HTTP 404): another program, or an older version")
    raise NodeError(f"{target.label} answered HTTP {resp.status} to {what}")
