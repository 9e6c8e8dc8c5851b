"""Ethereum Node Records (EIP-778): `enr:` + base64url (no padding) of RLP [signature, seq, k, v, ...].

https://eips.ethereum.org/EIPS/eip-778 and https://github.com/ethereum/devp2p/blob/master/enr.md. Keys with a
meaning here: `id` (identity scheme, "v4"), `secp256k1` (33-byte compressed key), `ip`/`ip6` (4/16 bytes),
`tcp`/`udp`/`tcp6`/`udp6` and the consensus layer's `quic`/`quic6` (big-endian ports). When a `6` port is
missing, the plain one applies to the IPv6 address too. The "v4" signature is a 64-byte secp256k1 r || s over
keccak-256 of RLP [seq, k, v, ...]; the node id is keccak-256 of the uncompressed key (x || y).

Decoding is strict where geth is (sorted unique keys, canonical RLP, 300-byte limit) and only ever raises
`EnrError`. RLP and crypto libraries are imported on first use (see `nodereach.p2p`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field, replace

from nodereach.net import Family, Transport
from nodereach.p2p import crypto, rlpcodec
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.errors import EnrError, P2PDecodeError, RlpError

PREFIX = "enr:"
MAX_RECORD = 300
"""Bytes of RLP a record may have (EIP-778: implementations should reject larger records)."""
MAX_TEXT = len(PREFIX) + (MAX_RECORD * 4 + 2) // 3
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Enr:
    seq: int
    identity: str
    """The `id` key ("v4"); other schemes decode but are not verified (`signature_valid` None)."""
    pairs: tuple[tuple[str, rlpcodec.RlpItem], ...]
    """Every key/value pair in record order (keys as latin-1 text: lossless for any byte)."""
    signature: bytes
    public_key: bytes | None = None
    """33-byte compressed secp256k1 key ("v4")."""
    node_id: bytes | None = None
    signature_valid: bool | None = None
    ip: str | None = None
    ip6: str | None = None
    tcp: int | None = None
    udp: int | None = None
    tcp6: int | None = None
    udp6: int | None = None
    quic: int | None = None
    quic6: int | None = None
    raw: bytes = field(default=b"", repr=False)

    @property
    def text(self) -> str:
        return PREFIX + base64.urlsafe_b64encode(self.raw).decode().rstrip("=")

    def get(self, key: str) -> rlpcodec.RlpItem | None:
        return next((v for k, v in self.pairs if k == key), None)

    def endpoints(self) -> list[Advertised]:
        """The advertised (address, port, transport) entries, IPv4 first; `tcp`/`udp`/`quic` stand for IPv6
        too when the `6` key is missing. A port without any address gives an entry with address None."""
        out: list[Advertised] = []
        ports: list[tuple[str, str, Transport, bool]] = [
            ("tcp", "tcp6", "tcp", False), ("udp", "udp6", "udp", False), ("quic", "quic6", "udp", True)]
        for key4, key6, proto, quic in ports:
            p4 = getattr(self, key4)
            p6 = getattr(self, key6)
            if self.ip is not None and p4 is not None:
                out.append(_adv(self.ip, p4, proto, 4, quic, key4))
            if self.ip6 is not None and (p6 if p6 is not None else p4) is not None:
                out.append(_adv(self.ip6, p6 if p6 is not None else p4, proto, 6, quic,
                                key6 if p6 is not None else key4))
            if self.ip is None and self.ip6 is None:
                for port, key in ((p4, key4), (p6, key6)):
                    if port is not None:
                        out.append(Advertised(None, port, proto, "enr", "none", None, quic, key))
        return out


def _adv(address: str, port: int, proto: Transport, family: Family, quic: bool, key: str) -> Advertised:
    return Advertised(address, port, proto, "enr", "ip", family, quic, key)


def decode_enr(text: str, *, verify: bool = True) -> Enr:
    """Decode `enr:...` text. With `verify` a "v4" record whose signature does not match raises EnrError;
    without it the result says `signature_valid`."""
    s = text.strip()
    if len(s) > MAX_TEXT:
        raise EnrError(f"record text is {len(s)} characters; an ENR is at most {MAX_RECORD} bytes")
    if not s.startswith(PREFIX):
        raise EnrError("an ENR starts with 'enr:'")
    body = s[len(PREFIX):].rstrip("=")
    if not _B64URL.fullmatch(body):
        raise EnrError("an ENR is URL-safe base64 after 'enr:'")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise EnrError("an ENR is URL-safe base64 after 'enr:'") from None
    return decode_enr_bytes(raw, verify=verify)


def decode_enr_bytes(raw: bytes, *, verify: bool = True) -> Enr:
    """Decode the RLP form (as carried in discv4 ENRResponse / discv5 NODES)."""
    if len(raw) > MAX_RECORD:
        raise EnrError(f"record is {len(raw)} bytes; at most {MAX_RECORD} allowed")
    try:
        items = rlpcodec.as_list(rlpcodec.decode(raw), "record", 2)
        return _decode_items(raw, items, verify)
    except RlpError as exc:
        raise EnrError(str(exc)) from None


def _decode_items(raw: bytes, items: list[rlpcodec.RlpItem], verify: bool) -> Enr:
    if len(items) % 2:
        raise EnrError("record has a key without a value")
    signature = rlpcodec.as_bytes(items[0], "signature", 128)
    seq = rlpcodec.as_uint(items[1], "seq", 8)
    pairs: list[tuple[str, rlpcodec.RlpItem]] = []
    prev: bytes | None = None
    for i in range(2, len(items), 2):
        key = rlpcodec.as_bytes(items[i], "key", 64)
        if prev is not None and key <= prev:
            raise EnrError(f"keys not sorted and unique at {key!r}" if key != prev else f"duplicate key {key!r}")
        prev = key
        pairs.append((key.decode("latin-1"), items[i + 1]))
    values = dict(pairs)
    ident = values.get("id")
    if not isinstance(ident, bytes):
        raise EnrError("record has no identity scheme ('id')")
    enr = Enr(seq=seq, identity=ident.decode("latin-1"), pairs=tuple(pairs), signature=signature,
              ip=_ip(values, "ip", 4), ip6=_ip(values, "ip6", 16), tcp=_port(values, "tcp"),
              udp=_port(values, "udp"), tcp6=_port(values, "tcp6"), udp6=_port(values, "udp6"),
              quic=_port(values, "quic"), quic6=_port(values, "quic6"), raw=raw)
    if enr.identity != "v4":
        return enr
    key_item = values.get("secp256k1")
    if not isinstance(key_item, bytes) or len(key_item) != 33:
        raise EnrError("a 'v4' record needs a 33-byte compressed 'secp256k1' key")
    key = key_item
    try:
        xy = crypto.decompress(key)
    except P2PDecodeError:
        raise EnrError("the 'secp256k1' key is not a point on the curve") from None
    content = rlpcodec.encode(items[1:])
    valid = crypto.verify_compact(key, signature, crypto.keccak256(content))
    if verify and not valid:
        raise EnrError("the record's signature does not match its 'secp256k1' key (forged or corrupted)")
    return replace(enr, public_key=key, node_id=crypto.node_id(xy), signature_valid=valid)


def _ip(values: dict[str, rlpcodec.RlpItem], key: str, size: int) -> str | None:
    raw = values.get(key)
    if raw is None:
        return None
    if not isinstance(raw, bytes) or len(raw) != size:
        raise EnrError(f"'{key}' must be {size} bytes")
    return str(ipaddress.ip_address(raw))


def _port(values: dict[str, rlpcodec.RlpItem], key: str) -> int | None:
    raw = values.get(key)
    if raw is None:
        return None
    try:
        return rlpcodec.as_uint(raw, f"'{key}'", 2)
    except RlpError:
        raise EnrError(f"'{key}' must be a port (a big-endian integer of at most 2 bytes)") from None


def encode_enr(secret: bytes, seq: int, values: dict[str, bytes | int]) -> Enr:
    """Sign a "v4" record with `secret` (the `id` and `secp256k1` keys are added). For tests and lab peers:
    nodereach itself never publishes records."""
    kv: dict[str, bytes | int] = {**values, "id": b"v4",
                                  "secp256k1": crypto.public_key(secret, compressed=True)}
    content: list[object] = [seq]
    for k in sorted(kv, key=lambda k: k.encode("latin-1")):
        content += [k.encode("latin-1"), kv[k]]
    signature = crypto.sign_compact(secret, crypto.keccak256(rlpcodec.encode(content)))
    raw = rlpcodec.encode([signature, *content])
    return decode_enr_bytes(raw)


__all__ = ["MAX_RECORD", "Enr", "EnrError", "decode_enr", "decode_enr_bytes", "encode_enr"]
