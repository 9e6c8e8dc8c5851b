"""enode URLs (devp2p): `enode://<128 hex: x || y of the secp256k1 key>@<host>:<tcp port>?discport=<udp port>`.

https://ethereum.org/en/developers/docs/networking-layer/network-addresses/#enode. The UDP (discovery) port
equals the TCP port unless `discport` says otherwise; IPv6 hosts are bracketed; geth also accepts a DNS name
and the address-less form `enode://<hex>`. Only `EnodeError` is raised on input.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from nodereach.net import Family
from nodereach.p2p import crypto
from nodereach.p2p.addrs import parse_port, split_host_port
from nodereach.p2p.advertised import Advertised, host_kind
from nodereach.p2p.errors import EnodeError

MAX_TEXT = 512
_HEX128 = re.compile(r"[0-9a-fA-F]{128}")


@dataclass(frozen=True, slots=True)
class Enode:
    public_key: bytes
    """64 bytes, x || y."""
    host: str | None
    """Canonical IP text or a DNS name; None for `enode://<hex>` without an address."""
    tcp: int | None
    udp: int | None

    @property
    def node_id(self) -> bytes:
        return crypto.node_id(self.public_key)

    @property
    def family(self) -> Family | None:
        if self.host is None or host_kind(self.host) != "ip":
            return None
        return 4 if ipaddress.ip_address(self.host).version == 4 else 6

    @property
    def text(self) -> str:
        base = f"enode://{self.public_key.hex()}"
        if self.host is None:
            return base
        host = f"[{self.host}]" if ":" in self.host else self.host
        extra = f"?discport={self.udp}" if self.udp is not None and self.udp != self.tcp else ""
        return f"{base}@{host}:{self.tcp}{extra}"

    def endpoints(self) -> list[Advertised]:
        if self.host is None:
            return []
        kind = host_kind(self.host)
        out: list[Advertised] = []
        if self.tcp is not None:
            out.append(Advertised(self.host, self.tcp, "tcp", "enode", kind, self.family, False, "tcp"))
        if self.udp is not None:
            out.append(Advertised(self.host, self.udp, "udp", "enode", kind, self.family, False,
                                  "discport" if self.udp != self.tcp else "tcp"))
        return out


def parse_enode(text: str) -> Enode:
    s = text.strip()
    if len(s) > MAX_TEXT:
        raise EnodeError(f"enode URL is {len(s)} characters long")
    if not s.lower().startswith("enode://"):
        raise EnodeError("an enode URL starts with 'enode://'")
    rest = s[len("enode://"):]
    key_hex, at, hostpart = rest.partition("@")
    if not _HEX128.fullmatch(key_hex):
        raise EnodeError("the node key in an enode URL is 128 hex digits")
    key = bytes.fromhex(key_hex)
    try:
        crypto.compress(key)
    except ValueError:
        raise EnodeError("the node key is not a secp256k1 public key") from None
    if not at:
        return Enode(key, None, None, None)
    hostport, _, query = hostpart.partition("?")
    host, port = split_host_port(hostport, EnodeError)
    udp = port
    if query:
        values = parse_qs(query, max_num_fields=8).get("discport")
        if values:
            udp = parse_port(values[0], EnodeError, "discport")
    return Enode(key, host, port, udp)


__all__ = ["Enode", "EnodeError", "parse_enode"]
