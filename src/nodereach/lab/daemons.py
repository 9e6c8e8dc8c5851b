"""Third-party daemons inside a lab: coturn (foreign STUN server) and miniupnpd (the home router's IGD).

Both are started as tracked processes and polled for readiness with a deadline (never a blind sleep):
coturn until it answers a Binding request, miniupnpd until NAT-PMP answers and/or its HTTP port accepts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from nodereach.defaults import STUN_ALT_PORT, STUN_PORT
from nodereach.errors import EnvironmentProblem, UsageError
from nodereach.lab import addresses as A
from nodereach.lab import netns, registry, rules
from nodereach.lab.netns import LabError
from nodereach.lab.scenarios import Scenario

MINIUPNPD_HTTP_PORT = 5000
NATPMP_PORT = 5351
MINIUPNPD_TABLE = "miniupnpd"
MINIUPNPD_READY_S = 20.0
COTURN_READY_S = 10.0


def _binding_request() -> bytes:
    """A bare STUN Binding request (RFC 8489 header only): enough to see that a server answers."""
    return b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)


def miniupnpd_nft(wan: str = "wan") -> str:
    """The table and chains miniupnpd (Debian 2.3.1, nftables build) expects; it does not create them."""
    t = MINIUPNPD_TABLE
    return f"""table inet {t} {{
  chain miniupnpd {{
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
  chain forward {{
    type filter hook forward priority filter - 1; policy accept;
    jump miniupnpd
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat - 1; policy accept;
    iifname "{wan}" jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat - 1; policy accept;
    jump postrouting_miniupnpd
  }}
}}
"""


class LabHandle(Protocol):
    """What the daemons need of a running lab (core.Lab provides it; daemons never import core: no cycle)."""

    id: str
    scenario: Scenario

    @property
    def hosts(self) -> tuple[str, ...]: ...

    def ns(self, host: str) -> str: ...

    def spawn(self, host: str, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]: ...

    def socket(self, host: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
               proto: int = 0) -> socket.socket: ...


class Daemons:
    """Owns one lab's coturn and miniupnpd processes."""

    def __init__(self, lab: LabHandle) -> None:
        self.lab = lab
        self.coturn: subprocess.Popen[Any] | None = None
        self.coturn_rfc5780 = False
        self.miniupnpd: subprocess.Popen[Any] | None = None
        self.miniupnpd_opts: dict[str, Any] = {"upnp": True, "natpmp": True}
        self.miniupnpd_uuid = str(uuid.uuid4())

    def _path(self, suffix: str) -> Path:
        registry.REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        return registry.REGISTRY_DIR / f"{self.lab.id}-{suffix}"

    # --- coturn -----------------------------------------------------------------------------------
    def start_coturn(self, rfc5780: bool = True) -> subprocess.Popen[Any]:
        if self.coturn is not None and self.coturn.poll() is None:
            if self.coturn_rfc5780 == rfc5780:
                return self.coturn
            self.stop_coturn()
        if shutil.which("turnserver") is None:
            raise EnvironmentProblem("`turnserver` (coturn) is not installed", "apt-get install coturn")
        listen = [A.COTURN_IP, A.COTURN_ALT_IP] if rfc5780 else [A.COTURN_IP]
        argv = ["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout",
                "--simple-log", "--listening-port", str(STUN_PORT), "--alt-listening-port", str(STUN_ALT_PORT),
                "--pidfile", str(self._path("turnserver.pid"))]
        for addr in listen:
            argv += ["-L", addr]
        log = self._path("coturn.log").open("w")
        proc = self.lab.spawn("coturn", argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
        log.close()
        self.coturn, self.coturn_rfc5780 = proc, rfc5780
        deadline = time.monotonic() + COTURN_READY_S
        for addr in listen:
            if not self._wait_stun(addr, STUN_PORT, deadline, proc):
                self.stop_coturn()
                raise LabError(f"coturn did not answer STUN on {addr}:{STUN_PORT} within {COTURN_READY_S:.0f} s",
                               f"see {self._path('coturn.log')}")
        return proc

    def _wait_stun(self, addr: str, port: int, deadline: float, proc: subprocess.Popen[Any]) -> bool:
        with self.lab.socket("peer") as sock:
            sock.settimeout(0.1)
            while time.monotonic() < deadline and proc.poll() is None:
                request = _binding_request()
                with contextlib.suppress(OSError):
                    sock.sendto(request, (addr, port))
                    data, _ = sock.recvfrom(2048)
                    if data[:2] == b"\x01\x01" and data[8:20] == request[8:20]:
                        return True
        return False

    def stop_coturn(self) -> None:
        if self.coturn is not None:
            _stop(self.coturn)
            self.coturn = None

    # --- miniupnpd --------------------------------------------------------------------------------
    def miniupnpd_conf(self, upnp: bool, natpmp: bool, extra: dict[str, str | int]) -> str:
        lines = {
            "ext_ifname": "wan",
            "listening_ip": "lan",
            "http_port": str(MINIUPNPD_HTTP_PORT),
            "enable_upnp": "yes" if upnp else "no",
            "enable_natpmp": "yes" if natpmp else "no",
            "ext_perform_stun": "yes",
            "ext_stun_host": A.COTURN_IP,
            "ext_stun_port": str(STUN_PORT),
            "upnp_table_name": MINIUPNPD_TABLE,
            "upnp_nat_table_name": MINIUPNPD_TABLE,
            "upnp_forward_chain": "miniupnpd",
            "upnp_nat_chain": "prerouting_miniupnpd",
            "upnp_nat_postrouting_chain": "postrouting_miniupnpd",
            "lease_file": str(self._path("miniupnpd.leases")),
            "uuid": self.miniupnpd_uuid,
            "system_uptime": "no",
            "secure_mode": "yes",
            "notify_interval": "60",
            "min_lifetime": "60",
            "max_lifetime": "86400",
            "friendly_name": "nodereach lab router",
            "ipv6_disable": "yes",
        }
        if self.lab.scenario.has_ipv6:
            # IPv6 pinholes (WANIPv6FirewallControl, PCP MAP for IPv6) need: IPv6 not disabled, the WAN
            # interface given by name (ext_ifname above), a global IPv6 address on the LAN interface, and
            # miniupnpd's filter chain inside the router's IPv6 firewall table, which jumps to it before its
            # drop (miniupnpd adds pinholes as NFPROTO_INET rules to `upnp_table_name`/`upnp_forward_chain`).
            del lines["ipv6_disable"]
            lines["upnp_table_name"] = rules.TABLE6
            lines["upnp_forward_chain"] = rules.MINIUPNPD_CHAIN6
        lines.update({k: str(v) for k, v in extra.items()})
        body = "".join(f"{k}={v}\n" for k, v in lines.items())
        return body + "allow 1024-65535 192.168.1.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"

    def start_miniupnpd(self, upnp: bool = True, natpmp: bool = True, **conf: str | int) -> subprocess.Popen[Any]:
        if "router" not in self.lab.hosts:
            raise UsageError(f"scenario {self.lab.scenario.name!r} has no home router for miniupnpd")
        if not (upnp or natpmp):
            raise UsageError("miniupnpd needs UPnP or NAT-PMP/PCP enabled")
        if shutil.which("miniupnpd") is None:
            raise EnvironmentProblem("`miniupnpd` is not installed", "apt-get install miniupnpd")
        self.stop_miniupnpd()
        self.start_coturn(rfc5780=self.coturn_rfc5780 if self.coturn is not None else True)
        router = self.lab.ns("router")
        netns.run(["ip", "netns", "exec", router, "nft", "delete", "table", "inet", MINIUPNPD_TABLE], check=False)
        netns.nft(router, miniupnpd_nft())
        conf_path = self._path("miniupnpd.conf")
        conf_path.write_text(self.miniupnpd_conf(upnp, natpmp, conf))
        log = self._path("miniupnpd.log").open("w")
        proc = self.lab.spawn("router", ["miniupnpd", "-d", "-f", str(conf_path), "-P",
                                         str(self._path("miniupnpd.pid"))],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.miniupnpd = proc
        self.miniupnpd_opts = {"upnp": upnp, "natpmp": natpmp, **conf}
        self._wait_miniupnpd(proc, upnp=upnp, natpmp=natpmp)
        return proc

    def _wait_miniupnpd(self, proc: subprocess.Popen[Any], *, upnp: bool, natpmp: bool) -> None:
        deadline = time.monotonic() + MINIUPNPD_READY_S
        ready_natpmp = not natpmp
        ready_upnp = not upnp
        with self.lab.socket("client") as sock:
            sock.settimeout(0.1)
            while time.monotonic() < deadline and proc.poll() is None:
                if not ready_natpmp:
                    with contextlib.suppress(OSError):
                        sock.sendto(b"\x00\x00", (A.HOME_LAN_GW, NATPMP_PORT))
                        data, _ = sock.recvfrom(64)
                        ready_natpmp = len(data) >= 12 and data[:2] == b"\x00\x80" and data[2:4] == b"\x00\x00"
                if not ready_upnp:
                    ready_upnp = self._http_ready()
                if ready_natpmp and ready_upnp:
                    return
                time.sleep(0.05)
        log = self._path("miniupnpd.log")
        tail = log.read_text()[-400:].strip().replace("\n", " | ") if log.exists() else ""
        self.stop_miniupnpd()
        raise LabError(f"miniupnpd did not become ready within {MINIUPNPD_READY_S:.0f} s: {tail}", f"see {log}")

    def _http_ready(self) -> bool:
        with self.lab.socket("client", socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.settimeout(0.3)
            try:
                tcp.connect((A.HOME_LAN_GW, MINIUPNPD_HTTP_PORT))
                tcp.sendall(b"GET /rootDesc.xml HTTP/1.0\r\nHost: 192.168.1.1\r\n\r\n")
                return tcp.recv(16).startswith(b"HTTP/1.")
            except OSError:
                return False

    def stop_miniupnpd(self) -> None:
        if self.miniupnpd is not None:
            _stop(self.miniupnpd)
            self.miniupnpd = None

    def restart_miniupnpd(self, upnp: bool | None = None, natpmp: bool | None = None) -> subprocess.Popen[Any]:
        opts = dict(self.miniupnpd_opts)
        if upnp is not None:
            opts["upnp"] = upnp
        if natpmp is not None:
            opts["natpmp"] = natpmp
        return self.start_miniupnpd(**opts)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
