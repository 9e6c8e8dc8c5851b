"""A small record of the mappings nodereach made, so `nodereach mappings` can list and delete them later.

PCP needs the mapping's nonce to delete it (another nonce is refused), PCP/NAT-PMP cannot list mappings and
UPnP cannot list IPv6 pinholes, so `open` keeps this record (and `open --once` leaves it behind). Expired
entries are dropped on every write; a file written by an older nodereach reads as IPv4 records.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(slots=True)
class Record:
    method: str
    gateway: str
    protocol: str
    internal_port: int
    external_port: int
    external_address: str | None
    nonce: str
    expires: float
    """Unix time; 0 for permanent (UPnP routers that refuse leases)."""
    family: int = 4
    """6: an IPv6 pinhole in the router's firewall (external address = this host's own)."""
    pinhole_id: int | None = None
    """UPnP IPv6 pinholes: the UniqueID to delete it by. UPnP cannot list pinholes, so this record is the only
    place `nodereach mappings` learns about them."""


def state_path() -> Path:
    if os.environ.get("NODEREACH_STATE_DIR"):
        return Path(os.environ["NODEREACH_STATE_DIR"]) / "portmap.json"
    xdg = os.environ.get("XDG_STATE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return root / "nodereach" / "portmap.json"


def load_all() -> list[Record]:
    """Every record, expired ones included (their external ports are still the best first guess)."""
    try:
        raw = json.loads(state_path().read_text()[:1_000_000])
        fields = set(Record.__dataclass_fields__)
        return [Record(**{k: v for k, v in r.items() if k in fields}) for r in raw if isinstance(r, dict)]
    except (OSError, ValueError, TypeError):
        return []


def load() -> list[Record]:
    """Records whose lease has not run out."""
    now = time.time()
    return [r for r in load_all() if r.expires == 0 or r.expires > now]


def save(records: list[Record]) -> None:
    path = state_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
        tmp.replace(path)


KEEP_EXPIRED_S = 30 * 86400
"""Expired records are kept this long: they remember which external port to ask for next time."""


def _pruned(records: list[Record]) -> list[Record]:
    cutoff = time.time() - KEEP_EXPIRED_S
    return [r for r in records if r.expires == 0 or r.expires > cutoff][-256:]


def upsert(new: list[Record]) -> None:
    keys = {(r.gateway, r.protocol, r.internal_port) for r in new}
    save(_pruned([r for r in load_all() if (r.gateway, r.protocol, r.internal_port) not in keys] + new))


def remove(method: str, gateway: str, protocol: str, internal_port: int) -> None:
    """The mapping is gone: mark the record expired (kept for the external-port memory)."""
    now = time.time()
    out = []
    for r in load_all():
        if (r.method, r.gateway, r.protocol, r.internal_port) == (method, gateway, protocol, internal_port):
            r.expires = now - 1
        out.append(r)
    save(_pruned(out))
