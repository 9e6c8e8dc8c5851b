"""A small record of the mappings nodereach made, so `nodereach mappings` can list and delete them later.

PCP needs the mapping's nonce to delete it (another nonce is refused), and PCP/NAT-PMP cannot list
mappings, so `open --once` leaves this record behind. Expired entries are dropped on every write.
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


def state_path() -> Path:
    if os.environ.get("NODEREACH_STATE_DIR"):
        return Path(os.environ["NODEREACH_STATE_DIR"]) / "portmap.json"
    xdg = os.environ.get("XDG_STATE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return root / "nodereach" / "portmap.json"


def load() -> list[Record]:
    path = state_path()
    try:
        raw = json.loads(path.read_text()[:1_000_000])
        records = [Record(**r) for r in raw if isinstance(r, dict)]
    except (OSError, ValueError, TypeError):
        return []
    now = time.time()
    return [r for r in records if r.expires == 0 or r.expires > now]


def save(records: list[Record]) -> None:
    path = state_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
        tmp.replace(path)


def upsert(new: list[Record]) -> None:
    keys = {(r.method, r.gateway, r.protocol, r.internal_port) for r in new}
    save([r for r in load() if (r.method, r.gateway, r.protocol, r.internal_port) not in keys] + new)


def remove(method: str, gateway: str, protocol: str, internal_port: int) -> None:
    save([r for r in load() if (r.method, r.gateway, r.protocol, r.internal_port) != (method, gateway, protocol,
                                                                                        internal_port)])
