"""Monero's "portable storage" (epee) binary format, as Levin message bodies carry it: a bounded reader and a
small writer.

Layout (monero docs/PORTABLE_STORAGE.md, contrib/epee/include/storages/portable_storage_from_bin.h):
signature A 0x01011101 and B 0x01020101 (little-endian u32 each), format version 1, then the root section:
varint entry count, and per entry a name (1-byte length + bytes), a type byte, and the value. Varints keep
their width in the low 2 bits (1, 2, 4 or 8 bytes, little-endian, value >> 2). Types 1..13 are int64, int32,
int16, int8, uint64, uint32, uint16, uint8, double, string, bool, object, array; flag 0x80 makes an array
(a varint count, then that many values of the type).

Every limit is explicit (depth, entries, string and total sizes): hostile bytes give ProtocolError, never a
large allocation or a deep recursion.
"""

from __future__ import annotations

import struct
from typing import Union

from nodereach.p2p.errors import ProtocolError

SIGNATURE = struct.pack("<II", 0x01011101, 0x01020101) + b"\x01"
MAX_DEPTH = 8
MAX_ENTRIES = 512
"""Entries and array items in one body, all sections together."""
MAX_STRING = 64 * 1024

Value = Union[int, float, bool, bytes, "Section", list["Value"]]
Section = dict[str, Value]

INT64, INT32, INT16, INT8, UINT64, UINT32, UINT16, UINT8, DOUBLE, STRING, BOOL, OBJECT, ARRAY = range(1, 14)
FLAG_ARRAY = 0x80
_FIXED = {INT64: "<q", INT32: "<i", INT16: "<h", INT8: "<b", UINT64: "<Q", UINT32: "<I", UINT16: "<H",
          UINT8: "<B", DOUBLE: "<d"}


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative varint")
    for width, mark, fmt in ((1, 0, "<B"), (2, 1, "<H"), (4, 2, "<I"), (8, 3, "<Q")):
        if value < 1 << (8 * width - 2):
            return struct.pack(fmt, (value << 2) | mark)
    raise ValueError("varint too large")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.entries = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError("portable storage truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        if self.pos >= len(self.data):
            raise ProtocolError("portable storage truncated")
        width = 1 << (self.data[self.pos] & 3)
        raw = int.from_bytes(self.take(width), "little")
        return raw >> 2

    def count(self, what: str) -> int:
        n = self.varint()
        self.entries += n
        if self.entries > MAX_ENTRIES:
            raise ProtocolError(f"portable storage has more than {MAX_ENTRIES} {what}")
        return n

    def section(self, depth: int) -> Section:
        if depth > MAX_DEPTH:
            raise ProtocolError("portable storage nested too deeply")
        out: Section = {}
        for _ in range(self.count("entries")):
            name = self.take(self.take(1)[0]).decode("utf-8", "replace")
            kind = self.take(1)[0]
            if kind & FLAG_ARRAY:
                out[name] = [self.value(kind & ~FLAG_ARRAY, depth) for _ in range(self.count("array items"))]
            else:
                out[name] = self.value(kind, depth)
        return out

    def value(self, kind: int, depth: int) -> Value:
        if kind in _FIXED:
            fmt = _FIXED[kind]
            (v,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
            return float(v) if kind == DOUBLE else int(v)
        if kind == STRING:
            n = self.varint()
            if n > MAX_STRING:
                raise ProtocolError(f"portable storage string of {n} bytes")
            return self.take(n)
        if kind == BOOL:
            return self.take(1)[0] != 0
        if kind == OBJECT:
            return self.section(depth + 1)
        if kind == ARRAY:
            # An untyped array: a type byte (with the array flag) then the count and values.
            inner = self.take(1)[0]
            if not inner & FLAG_ARRAY:
                raise ProtocolError("portable storage untyped array without the array flag")
            return [self.value(inner & ~FLAG_ARRAY, depth + 1) for _ in range(self.count("array items"))]
        raise ProtocolError(f"portable storage type {kind} unknown")


def decode(data: bytes) -> Section:
    """The root section of a body. Trailing bytes are an error (epee rejects them too)."""
    if data[:len(SIGNATURE)] != SIGNATURE:
        raise ProtocolError("not portable storage (bad signature or version)")
    reader = _Reader(data)
    reader.pos = len(SIGNATURE)
    root = reader.section(0)
    if reader.pos != len(data):
        raise ProtocolError(f"{len(data) - reader.pos} bytes after the portable storage root")
    return root


def encode(section: dict[str, object]) -> bytes:
    """Write a section: int -> int64 unless given as (type, value), bytes/str -> string, bool, float -> double,
    dict -> object, list -> array of the first item's type."""
    return SIGNATURE + _section(section)


def _section(section: dict[str, object]) -> bytes:
    out = bytearray(encode_varint(len(section)))
    for name, value in section.items():
        raw = name.encode()
        out += bytes((len(raw),)) + raw
        kind, body = _typed(value)
        out += bytes((kind,)) + body
    return bytes(out)


def _typed(value: object) -> tuple[int, bytes]:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
        kind, v = value
        return kind, struct.pack(_FIXED[kind], v)
    if isinstance(value, bool):
        return BOOL, bytes((value,))
    if isinstance(value, int):
        return INT64, struct.pack("<q", value)
    if isinstance(value, float):
        return DOUBLE, struct.pack("<d", value)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return STRING, encode_varint(len(value)) + value
    if isinstance(value, dict):
        return OBJECT, _section(value)
    if isinstance(value, list):
        if not value:
            raise ValueError("cannot type an empty list")
        items = [_typed(v) for v in value]
        kind = items[0][0]
        return kind | FLAG_ARRAY, encode_varint(len(items)) + b"".join(b for _, b in items)
    raise ValueError(f"cannot encode {type(value).__name__}")
