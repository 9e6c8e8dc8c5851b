"""Small advertised-address forms: lnd `uris` and Bitcoin Core `localaddresses` entries.

- lnd `GET /v1/getinfo` `uris`: `<66 hex: compressed node key>@<host>:<port>`, host an IP (IPv6 bracketed),
  a DNS name or an onion address (https://lightning.engineering/api-docs/api/lnd/lightning/get-info/).
- Bitcoin Core `getnetworkinfo` `localaddresses[]`: `{address, port, score}` where `address` is IPv4, IPv6,
  an onion (v3), an I2P (`.b32.i2p`) or a CJDNS (fc00::/8) address
  (https://developer.bitcoin.org/reference/rpc/getnetworkinfo.html).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from nodereach.net import Family
from nodereach.p2p.advertised import Advertised, host_kind
from nodereach.p2p.errors import AddressError, P2PDecodeError

MAX_TEXT = 300
_HEX66 = re.compile(r"0[23][0-9a-fA-F]{64}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}")


@dataclass(frozen=True, slots=True)
class LndUri:
    pubkey: bytes
    """33-byte compressed node key."""
    host: str
    port: int

    def endpoint(self) -> Advertised:
        kind = host_kind(self.host)
        return Advertised(self.host, self.port, "tcp", "lnd", kind, _family(self.host), False,
                          f"{self.pubkey.hex()}@{_join(self.host, self.port)}")


def parse_lnd_uri(text: str) -> LndUri:
    s = text.strip()
    if len(s) > MAX_TEXT:
        raise AddressError("lnd uri too long")
    key, at, hostport = s.partition("@")
    if not at or not _HEX66.fullmatch(key):
        raise AddressError("an lnd uri is <66 hex digits of the node key>@host:port")
    host, port = split_host_port(hostport)
    return LndUri(bytes.fromhex(key), host, port)


def bitcoin_local_address(address: str, port: int) -> Advertised:
    """One `localaddresses` entry (the score says how many peers reported it; it does not matter here)."""
    if len(address) > MAX_TEXT:
        raise AddressError("address too long")
    if not 0 <= port <= 65535:
        raise AddressError(f"port {port} out of range")
    host = _canonical(address.strip())
    return Advertised(host, port, "tcp", "bitcoin", host_kind(host), _family(host), False, "localaddresses")


def split_host_port(text: str, error: type[P2PDecodeError] = AddressError) -> tuple[str, int]:
    """`1.2.3.4:9735`, `[2001:db8::1]:9735`, `name.onion:9735` -> (canonical host, port), or `error`. An IPv6
    address only in brackets (RFC 3986 §3.2.2: bare, `2001:db8::1:8545` could end in a port or not), its zone
    dropped; lnd uris and enode URLs (enode.py) are read by this one function."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise error("an IPv6 host with a port looks like [2001:db8::1]:9735")
        try:
            host = str(ipaddress.IPv6Address(host.split("%", 1)[0]))
        except ValueError:
            raise error(f"bad IPv6 address {host[:64]!r}") from None
        return host, parse_port(rest[1:], error)
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or ":" in host:
        raise error(f"not host:port: {text[:80]!r}")
    return _canonical(host, error), parse_port(port_s, error)


def parse_port(text: str, error: type[P2PDecodeError] = AddressError, what: str = "port") -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) > 65535:  # "²".isdigit() is true: a regex, not int()
        raise error(f"bad {what} {text[:16]!r} (0..65535)")
    return int(text)


def _canonical(host: str, error: type[P2PDecodeError] = AddressError) -> str:
    """Canonical IP text, or a name (DNS, onion, I2P) in lower case."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST.fullmatch(host):
        raise error(f"bad host {host[:80]!r}")
    return host.lower()


def _family(host: str) -> Family | None:
    try:
        return 4 if ipaddress.ip_address(host).version == 4 else 6
    except ValueError:
        return None


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["LndUri", "bitcoin_local_address", "parse_lnd_uri", "parse_port", "split_host_port"]
