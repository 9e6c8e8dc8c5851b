"""Base58 (the Bitcoin alphabet), as libp2p peer ids are written; bounded input, typed errors."""

from __future__ import annotations

from nodereach.p2p.errors import P2PDecodeError

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
MAX_TEXT = 256


def encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(out))


def decode(text: str) -> bytes:
    if len(text) > MAX_TEXT:
        raise P2PDecodeError(f"base58 text of {len(text)} characters is longer than {MAX_TEXT}")
    n = 0
    for c in text:
        digit = _INDEX.get(c)
        if digit is None:
            raise P2PDecodeError(f"{c!r} is not a base58 character")
        n = n * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * zeros + body
