"""Real node software inside lab namespaces: monerod, transmission-daemon, Syncthing (imported by conftest.py).

    def test_inbound(lab, node_daemons):
        net = lab("port-restricted")
        node = node_daemons.monerod(net, "client")             # regtest, RPC on the client's 127.0.0.1:18081
        net.forward(18080, "tcp")
        node_daemons.monerod(net, "peer", connect_to=f"{A.ROUTER_WAN_IP}:18080")
        info = node.wait_for(lambda i: i["incoming_connections_count"] >= 1, timeout=30)

Each daemon runs with its own port mapping off (monerod `--no-igd`, transmission `-M`, Syncthing
`natEnabled=false`), its data in a temporary directory, its RPC bound to the namespace's own loopback, and is
stopped (and its directory removed) at the end of the test that started it, even on failure. RPC helpers run
inside the daemon's namespace (`Lab.call_in`), so they reach the namespace's 127.0.0.1. Readiness is polled
with a deadline, never a blind sleep.

These are the fixtures both the node adapters' tests and the protocol proofs (Levin ping, BitTorrent
handshake) use; they talk to the daemons with the standard library only, so they do not depend on the code
under test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodereach.lab import Lab

__all__ = [
    "MONERO_P2P_PORT", "MONERO_RPC_PORT", "SYNCTHING_GUI_PORT", "SYNCTHING_PORT", "TRANSMISSION_PEER_PORT",
    "TRANSMISSION_RPC_PORT", "Monerod", "NodeDaemons", "Syncthing", "Transmission", "bencode", "node_daemons",
    "require_program",
]

MONERO_P2P_PORT = 18080
MONERO_RPC_PORT = 18081
TRANSMISSION_PEER_PORT = 51413
TRANSMISSION_RPC_PORT = 9091
SYNCTHING_PORT = 22000
SYNCTHING_GUI_PORT = 8384
READY_S = 30.0
"""Start-up bound. Measured here: monerod 2.0 s (genesis block; its RPC TLS key would add 5 s, so it is off),
transmission-daemon 0.1 s, Syncthing 1-2 s. Generous: the machine's 2 cores are shared."""

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_program(binary: str, package: str) -> None:
    """Skip when a node program is not installed; under CI (`make test` installs it) that is a failure."""
    if shutil.which(binary) is not None:
        return
    reason = f"`{binary}` is not installed (apt-get install {package}, or `make system-deps`)"
    if IN_CI:
        pytest.fail(f"CI must run every node-software test, but: {reason}")
    pytest.skip(reason)


def _http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 2.0, method: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request (status, headers, body); HTTP errors are answers too, not exceptions."""
    req = urllib.request.Request(url, data=body, headers=headers or {},
                                 method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read(1 << 22)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read(1 << 16)


@dataclass
class NodeProcess:
    """A daemon started in a lab namespace. `stop()` is idempotent and removes its working directory."""

    lab: Lab
    host: str
    proc: subprocess.Popen[Any]
    workdir: Path
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 800) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s (monerod takes ~10 s to close its database cleanly; the test's
        data is thrown away anyway)."""
        if self.proc.poll() is None:
            # `ip netns exec` execs the daemon: the pid is the daemon's own. Its session holds any children.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn inside the daemon's namespace (so 127.0.0.1 is the daemon's loopback)."""
        return self.lab.call_in(self.host, fn, *args, **kwargs)

    def _wait(self, what: str, probe: Callable[[], Any], timeout: float) -> Any:
        """Poll `probe` (inside the namespace) until it returns a truthy value; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{what}: the daemon exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                got = self.call(probe)
                if got:
                    return got
                last = got
            except (OSError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.1)  # polling a condition under a deadline
        raise AssertionError(f"{what} not within {timeout:.0f} s (last: {last!r}): {self.log_tail()}")


@dataclass
class Monerod(NodeProcess):
    """monerod on regtest (`fakechain`): P2P on `p2p_address:p2p_port`, JSON-RPC on the namespace's
    127.0.0.1:`rpc_port` (`restricted` as asked)."""

    p2p_address: str = "0.0.0.0"
    p2p_port: int = MONERO_P2P_PORT
    rpc_port: int = MONERO_RPC_PORT
    restricted: bool = False

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}/json_rpc"

    def rpc(self, method: str, params: dict[str, Any] | None = None, timeout: float = 2.0) -> dict[str, Any]:
        """The `result` of a JSON-RPC call (https://docs.getmonero.org/rpc-library/monerod-rpc/)."""
        body = json.dumps({"jsonrpc": "2.0", "id": "0", "method": method, "params": params or {}}).encode()

        def go() -> dict[str, Any]:
            status, _, data = _http(self.rpc_url, body, {"Content-Type": "application/json"}, timeout)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            doc = json.loads(data)
            if "result" not in doc:
                raise ValueError(f"no result: {doc.get('error')}")
            return dict(doc["result"])

        result: dict[str, Any] = self.call(go)
        return result

    def get_info(self) -> dict[str, Any]:
        return self.rpc("get_info")

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """get_info once `predicate(get_info)` holds (polled), else AssertionError with the last answer."""
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                info = self.get_info()
                if predicate(info):
                    return info
            time.sleep(0.2)
        counts = {k: info.get(k) for k in ("incoming_connections_count", "outgoing_connections_count")}
        raise AssertionError(f"monerod condition not met within {timeout:.0f} s; last get_info: {counts}")


@dataclass
class Transmission(NodeProcess):
    """transmission-daemon: peers on `peer_port`, RPC on the namespace's 127.0.0.1:`rpc_port` (no auth unless
    `username` is set), no DHT/LPD/uTP, port mapping off (`-M`)."""

    peer_port: int = TRANSMISSION_PEER_PORT
    rpc_port: int = TRANSMISSION_RPC_PORT
    username: str | None = None
    password: str | None = None
    session_id: str = ""

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}/transmission/rpc"

    def rpc(self, method: str, arguments: dict[str, Any] | None = None, timeout: float = 2.0) -> dict[str, Any]:
        """`arguments` of an RPC answer (https://github.com/transmission/transmission/blob/3.00/extras/rpc-spec.txt).
        The first request of a session gets 409 with the X-Transmission-Session-Id to send from then on."""
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()

        def go() -> dict[str, Any]:
            for _ in range(2):
                headers = {"X-Transmission-Session-Id": self.session_id, "Content-Type": "application/json"}
                if self.username is not None:
                    token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
                    headers["Authorization"] = f"Basic {token}"
                status, resp_headers, data = _http(self.rpc_url, body, headers, timeout)
                if status == 409:
                    self.session_id = {k.lower(): v for k, v in resp_headers.items()}["x-transmission-session-id"]
                    continue
                if status != 200:
                    raise ValueError(f"HTTP {status}")
                doc = json.loads(data)
                if doc.get("result") != "success":
                    raise ValueError(f"transmission: {doc.get('result')}")
                return dict(doc.get("arguments", {}))
            raise ValueError("session id dance did not settle")

        result: dict[str, Any] = self.call(go)
        return result

    def add_seed(self, name: str = "nodereach-test.bin", size: int = 64 * 1024) -> str:
        """Write a file of random bytes into the download dir and add a torrent of it that Transmission then
        seeds (it verifies the data it finds). Returns the infohash (40 hex digits): a BitTorrent handshake
        with it gets an answer; with any other infohash the daemon closes without one."""
        data = secrets.token_bytes(size)
        (self.workdir / "downloads" / name).write_bytes(data)
        piece = 16 * 1024
        pieces = b"".join(hashlib.sha1(data[i:i + piece]).digest() for i in range(0, len(data), piece))
        info = {b"length": size, b"name": name.encode(), b"piece length": piece, b"pieces": pieces}
        infohash = hashlib.sha1(bencode(info)).hexdigest()
        meta = base64.b64encode(bencode({b"info": info})).decode()
        self.rpc("torrent-add", {"metainfo": meta, "download-dir": str(self.workdir / "downloads")})

        def seeding() -> bool:
            got = self.rpc("torrent-get", {"fields": ["hashString", "percentDone", "status"], "ids": [infohash]})
            t = got.get("torrents", [])
            return bool(t) and t[0].get("percentDone") == 1 and t[0].get("status") == 6  # 6: seeding
        deadline = time.monotonic() + READY_S
        while not seeding():
            if time.monotonic() > deadline:
                raise AssertionError(f"transmission did not seed {name}: {self.log_tail()}")
            time.sleep(0.1)
        return infohash


@dataclass
class Syncthing(NodeProcess):
    """Syncthing: sync protocol on tcp+quic `listen_port`, REST on the namespace's 127.0.0.1:`gui_port` with
    `api_key`; global/local discovery, relays, NAT traversal and usage reporting off."""

    listen_port: int = SYNCTHING_PORT
    gui_port: int = SYNCTHING_GUI_PORT
    api_key: str = ""
    device_id: str = ""

    def rest(self, path: str, timeout: float = 2.0) -> Any:
        """GET a REST endpoint (https://docs.syncthing.net/dev/rest.html), JSON decoded."""
        def go() -> Any:
            status, _, data = _http(f"http://127.0.0.1:{self.gui_port}{path}", None, {"X-API-Key": self.api_key},
                                    timeout)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            return json.loads(data)
        return self.call(go)

    def add_device(self, device_id: str, address: str = "dynamic") -> None:
        """Make a device known (PUT /rest/config/devices/ID): Syncthing drops connections from unknown ones."""
        body = json.dumps({"deviceID": device_id, "addresses": [address]}).encode()

        def go() -> None:
            status, _, data = _http(f"http://127.0.0.1:{self.gui_port}/rest/config/devices/{device_id}", body,
                                    {"X-API-Key": self.api_key, "Content-Type": "application/json"}, 2.0, "PUT")
            if status != 200:
                raise ValueError(f"HTTP {status}: {data[:200]!r}")
        self.call(go)


def bencode(value: Any) -> bytes:
    """BitTorrent's bencoding (BEP 3) for the test torrent: ints, bytes/str, lists, dicts (keys sorted)."""
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


@dataclass
class NodeDaemons:
    """Factory handed to tests: starts daemons in lab namespaces; everything started is stopped at test end."""

    started: list[NodeProcess] = field(default_factory=list)

    def monerod(self, lab: Lab, host: str, *, p2p_address: str = "0.0.0.0", p2p_port: int = MONERO_P2P_PORT,
                rpc_port: int = MONERO_RPC_PORT, connect_to: str | None = None, restricted: bool = False,
                extra: tuple[str, ...] = ()) -> Monerod:
        """monerod on regtest in `host`. `connect_to` (`ip:port`): its only peer (`--add-exclusive-node`),
        dialled repeatedly until it answers. Waits until the RPC answers get_info."""
        require_program("monerod", "monero")
        argv = ["monerod", "--regtest", "--fixed-difficulty", "1", "--non-interactive", "--no-igd", "--no-zmq",
                "--rpc-ssl", "disabled", "--log-level", "0", "--p2p-bind-ip", p2p_address,
                "--p2p-bind-port", str(p2p_port), "--rpc-bind-ip", "127.0.0.1", "--rpc-bind-port", str(rpc_port),
                *(["--restricted-rpc"] if restricted else []),
                *(["--add-exclusive-node", connect_to] if connect_to else []), *extra]
        workdir = Path(tempfile.mkdtemp(prefix="nodereach-monerod-"))
        argv += ["--data-dir", str(workdir / "data"), "--log-file", str(workdir / "monerod-internal.log")]
        log = workdir / "monerod.log"
        with log.open("w") as out:
            proc = lab.spawn(host, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=workdir)
        node = Monerod(lab, host, proc, workdir, log, p2p_address=p2p_address, p2p_port=p2p_port,
                       rpc_port=rpc_port, restricted=restricted)
        self.started.append(node)

        def ready() -> bool:
            try:
                return node.get_info().get("status") == "OK"
            except (OSError, ValueError):
                return False
        node._wait("monerod RPC", ready, READY_S)
        return node

    def transmission(self, lab: Lab, host: str, *, peer_port: int = TRANSMISSION_PEER_PORT,
                     rpc_port: int = TRANSMISSION_RPC_PORT, bind_address: str = "0.0.0.0",
                     username: str | None = None, password: str | None = None,
                     port_forwarding: bool = False) -> Transmission:
        """transmission-daemon in `host` (foreground, its own config dir). `port_forwarding=True` only writes
        the setting (`port-forwarding-enabled`) for adapters to read; the lab's routers answer nothing it asks."""
        require_program("transmission-daemon", "transmission-daemon")
        workdir = Path(tempfile.mkdtemp(prefix="nodereach-transmission-"))
        (workdir / "downloads").mkdir()
        argv = ["transmission-daemon", "-f", "-g", str(workdir / "config"), "-p", str(rpc_port),
                "-P", str(peer_port), "-r", "127.0.0.1", "-i", bind_address, "-O", "-Y", "--no-utp",
                "-w", str(workdir / "downloads"), "-a", "127.0.0.1", "--log-info",
                "-m" if port_forwarding else "-M"]
        argv += ["-t", "-u", username, "-v", password or ""] if username is not None else ["-T"]
        log = workdir / "transmission.log"
        with log.open("w") as out:
            proc = lab.spawn(host, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=workdir)
        node = Transmission(lab, host, proc, workdir, log, peer_port=peer_port, rpc_port=rpc_port,
                            username=username, password=password)
        self.started.append(node)
        node._wait("transmission RPC", lambda: "peer-port" in node.rpc("session-get"), READY_S)
        return node

    def syncthing(self, lab: Lab, host: str, *, listen_port: int = SYNCTHING_PORT,
                  gui_port: int = SYNCTHING_GUI_PORT, peers: tuple[tuple[str, str], ...] = ()) -> Syncthing:
        """Syncthing in `host`. `peers`: (device id, `tcp://ip:port`) of devices it knows and dials."""
        require_program("syncthing", "syncthing")
        workdir = Path(tempfile.mkdtemp(prefix="nodereach-syncthing-"))
        home = workdir / "home"
        env = {"STNOUPGRADE": "1", "STNORESTART": "1", "STNODEFAULTFOLDER": "1", "HOME": str(workdir)}
        gen = subprocess.run(["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        if gen.returncode != 0:
            raise AssertionError(f"syncthing generate failed: {gen.stderr[-400:]}")
        api_key = secrets.token_hex(16)
        device_id = _configure_syncthing(home / "config.xml", listen_port, gui_port, api_key, peers)
        argv = ["syncthing", "serve", f"--home={home}", "--no-browser", "--no-restart", "--no-upgrade",
                "--no-default-folder", f"--gui-address=http://127.0.0.1:{gui_port}", f"--gui-apikey={api_key}"]
        log = workdir / "syncthing.log"
        with log.open("w") as out:
            proc = lab.spawn(host, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=workdir, env={**os.environ, **env})
        node = Syncthing(lab, host, proc, workdir, log, listen_port=listen_port, gui_port=gui_port,
                         api_key=api_key, device_id=device_id)
        self.started.append(node)
        node._wait("syncthing REST", lambda: node.rest("/rest/system/status").get("myID") == device_id, READY_S)
        return node

    def stop_all(self) -> None:
        for node in reversed(self.started):
            with contextlib.suppress(Exception):
                node.stop()
        self.started.clear()


def _configure_syncthing(config: Path, listen_port: int, gui_port: int, api_key: str,
                         peers: tuple[tuple[str, str], ...]) -> str:
    """Edit the generated config.xml: one TCP+QUIC listener, nothing that reaches for the internet or the
    router (discovery, relays, UPnP/NAT-PMP, usage reports, crash reports). Returns this device's id."""
    tree = ET.parse(config)
    root = tree.getroot()
    my_id = root.find("device")
    assert my_id is not None, "generated config has no device"
    device_id = my_id.get("id", "")
    opts = root.find("options")
    assert opts is not None
    for tag in ("listenAddress", "globalAnnounceServer"):
        for el in opts.findall(tag):
            opts.remove(el)
    for url in (f"tcp://0.0.0.0:{listen_port}", f"quic://0.0.0.0:{listen_port}"):
        ET.SubElement(opts, "listenAddress").text = url
    settings = {"globalAnnounceEnabled": "false", "localAnnounceEnabled": "false", "relaysEnabled": "false",
                "natEnabled": "false", "urAccepted": "-1", "crashReportingEnabled": "false",
                "startBrowser": "false", "autoUpgradeIntervalH": "0",
                "reconnectionIntervalS": "1"}  # dial known devices every second (default 60): tests wait less
    for tag, value in settings.items():
        el = opts.find(tag)
        if el is None:
            el = ET.SubElement(opts, tag)
        el.text = value
    gui = root.find("gui")
    assert gui is not None
    for tag, value in (("address", f"127.0.0.1:{gui_port}"), ("apikey", api_key)):
        el = gui.find(tag)
        if el is None:
            el = ET.SubElement(gui, tag)
        el.text = value
    for peer_id, address in peers:
        dev = ET.SubElement(root, "device", {"id": peer_id, "name": peer_id[:7], "compression": "metadata",
                                             "introducer": "false"})
        ET.SubElement(dev, "address").text = address
    tree.write(config)
    return device_id


@pytest.fixture
def node_daemons() -> Iterator[NodeDaemons]:
    """Start real node software in lab namespaces; all of it is stopped when the test ends."""
    daemons = NodeDaemons()
    try:
        yield daemons
    finally:
        daemons.stop_all()
