"""Events as JSON lines (schema `nodereach.watch/1`): one per declared change, plus `started` / `stopped`.

    {"schema":"nodereach.watch/1","id":"5f0c...","time":1718000000.123,"kind":"public-address-changed",
     "what":"public_address","family":4,"before":"198.51.100.2","after":"198.51.100.4",
     "message":"the public IPv4 address changed 198.51.100.2 -> 198.51.100.4"}

`before` / `after` are the old and new value (an address, an `ip:port`, true/false, a count, a verdict), null
where there was none. Subject fields (port, protocol, family, method, server) appear when they apply. `id` is
unique per event, so a webhook receiver can drop a retried delivery it already has.
"""

from __future__ import annotations

import os
import sys
from typing import IO

import msgspec

from nodereach.watch.model import Change

SCHEMA = "nodereach.watch/1"


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    schema: str = SCHEMA
    id: str
    time: float
    kind: str
    what: str | None = None
    port: int | None = None
    protocol: str | None = None
    family: int | None = None
    method: str | None = None
    server: str | None = None
    before: str | int | bool | None = msgspec.field(default=None)
    after: str | int | bool | None = msgspec.field(default=None)
    message: str


_ENCODER = msgspec.json.Encoder()


def to_event(change: Change, event_id: str | None = None) -> Event:
    return Event(id=event_id or os.urandom(8).hex(), time=round(change.wall, 3), kind=change.kind,
                 what=change.what, port=change.port, protocol=change.protocol, family=change.family,
                 method=change.method, server=change.server, before=change.before, after=change.after,
                 message=change.message)


def encode(event: Event) -> bytes:
    """One JSON document; `before` and `after` are always present (null included), the rest when set."""
    doc = msgspec.to_builtins(event)
    doc.setdefault("schema", SCHEMA)
    doc.setdefault("before", None)
    doc.setdefault("after", None)
    order = ("schema", "id", "time", "kind", "what", "port", "protocol", "family", "method", "server", "before",
             "after", "message")
    return _ENCODER.encode({k: doc[k] for k in order if k in doc})


def decode(line: bytes | str) -> Event:
    return msgspec.json.decode(line, type=Event)


class EventWriter:
    """Writes each event as one line and flushes at once (journald and pipes see it immediately)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer

    def write(self, event: Event) -> bytes:
        line = encode(event)
        try:
            self.stream.write(line + b"\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # nobody reads stdout any more; the metrics and hooks still carry the change
        return line
