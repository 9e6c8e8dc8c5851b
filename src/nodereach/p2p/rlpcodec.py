"""RLP through the `rlp` package, imported on first use (it pulls eth-utils and pydantic: ~0.6 s here).

Decoded values are `bytes` or lists of them (`RlpItem`); callers check the shape they expect with the helpers
below, which raise `RlpError` instead of letting an IndexError or TypeError through.
"""

from __future__ import annotations

from typing import Union

from nodereach.p2p.errors import RlpError

RlpItem = Union[bytes, list["RlpItem"]]  # noqa: UP007  (a recursive alias needs the string form)


def encode(item: object) -> bytes:
    """Encode bytes, non-negative ints (big-endian, no leading zeros) and lists of them."""
    import rlp

    try:
        return bytes(rlp.encode(item))
    except rlp.EncodingError as exc:
        raise RlpError(f"cannot RLP-encode: {exc}") from None


def decode(data: bytes, *, strict: bool = True) -> RlpItem:
    """One RLP item. `strict=False` ignores bytes after it (discv4: "ignore extra data after the list")."""
    import rlp

    try:
        return _check(rlp.decode(data, strict=strict))
    except rlp.DecodingError as exc:
        raise RlpError(f"not RLP: {exc}") from None
    except RecursionError:
        # pyrlp decodes nested lists recursively: 1280 bytes of 0xc1... would nest 1280 deep.
        raise RlpError("RLP lists nested too deeply") from None


def _check(item: object) -> RlpItem:
    if isinstance(item, bytes):
        return item
    if isinstance(item, list):
        return [_check(x) for x in item]
    raise RlpError(f"unexpected RLP value {type(item).__name__}")


def as_list(item: RlpItem, what: str, min_len: int = 0) -> list[RlpItem]:
    if not isinstance(item, list):
        raise RlpError(f"{what} must be an RLP list")
    if len(item) < min_len:
        raise RlpError(f"{what} has {len(item)} elements, at least {min_len} expected")
    return item


def as_bytes(item: RlpItem, what: str, max_len: int | None = None) -> bytes:
    if not isinstance(item, bytes):
        raise RlpError(f"{what} must be an RLP string")
    if max_len is not None and len(item) > max_len:
        raise RlpError(f"{what} is {len(item)} bytes, at most {max_len} allowed")
    return item


def as_uint(item: RlpItem, what: str, max_bytes: int = 8) -> int:
    """A big-endian unsigned integer of at most `max_bytes` (leading zero bytes are tolerated: geth's
    encoder never writes them, but they carry the same number)."""
    raw = as_bytes(item, what)
    if len(raw.lstrip(b"\x00")) > max_bytes:
        raise RlpError(f"{what} does not fit in {max_bytes} bytes")
    return int.from_bytes(raw, "big")
