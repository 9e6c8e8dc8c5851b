"""Which labs exist on this machine, who owns them, and which are stale (owner dead).

Each lab writes /run/nodereach-lab/<id>.json BEFORE it creates a namespace and removes it AFTER its last
namespace is gone, so a `nrl-*` namespace without a record is always left over from a crash. A record is
stale when its owner process is dead (pid + start time, so a reused pid does not count as alive);
CLI labs (`nodereach lab up`) are `persistent` and stay until `nodereach lab down`.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nodereach.lab import netns

REGISTRY_DIR = Path("/run/nodereach-lab")
_NS_RE = re.compile(r"^nrl-([0-9a-f]{6})-[a-z-]+$")


@dataclass
class LabRecord:
    id: str
    scenario: str
    owner_pid: int
    owner_start: int | None
    persistent: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    """Processes the lab spawned (the impairment forwarder runs outside the lab's namespaces)."""
    pid_starts: dict[str, int] = field(default_factory=dict)
    """Start time of each pid: a pid reused by an unrelated process since a crash is never killed."""
    created: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return REGISTRY_DIR / f"{self.id}.json"

    def save(self) -> None:
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(self.path)

    def owner_alive(self) -> bool:
        if not netns.pid_alive(self.owner_pid):
            return False
        return self.owner_start is None or netns.pid_start_time(self.owner_pid) == self.owner_start

    def stale(self) -> bool:
        return not self.persistent and not self.owner_alive()


def new_id() -> str:
    """A 6-hex-digit lab id not used by any record or namespace on this machine."""
    taken = {r.id for r in load_all()} | {m.group(1) for n in netns.list_namespaces() if (m := _NS_RE.match(n))}
    while True:
        lab_id = secrets.token_hex(3)
        if lab_id not in taken:
            return lab_id


def claim(record: LabRecord) -> LabRecord:
    """Give `record` a fresh id and create its file exclusively (two processes never get the same id)."""
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    while True:
        record.id = new_id()
        try:
            with (REGISTRY_DIR / f"{record.id}.json").open("x") as fh:
                fh.write(json.dumps(asdict(record), indent=1))
            return record
        except FileExistsError:
            continue


def load(lab_id: str) -> LabRecord | None:
    try:
        doc = json.loads((REGISTRY_DIR / f"{lab_id}.json").read_text())
        return LabRecord(**doc)
    except (OSError, ValueError, TypeError):
        return None


def load_all() -> list[LabRecord]:
    if not REGISTRY_DIR.is_dir():
        return []
    records = []
    for path in sorted(REGISTRY_DIR.glob("*.json")):
        record = load(path.stem)
        if record is not None:
            records.append(record)
    return records


def remove(record: LabRecord) -> None:
    """Kill the lab's processes, delete its namespaces (all `nrl-<id>-*`), then its record and files."""
    netns.kill_pids([p for p in record.pids if _same_process(p, record.pid_starts.get(str(p)))], grace=1.0)
    names = set(record.namespaces) | {n for n in netns.list_namespaces(f"nrl-{record.id}-")}
    for name in sorted(names):
        netns.delete_namespace(name)
    for path in REGISTRY_DIR.glob(f"{record.id}[.-]*"):
        with contextlib.suppress(OSError):
            path.unlink()
    with contextlib.suppress(OSError):
        record.path.unlink()


def _same_process(pid: int, start: int | None) -> bool:
    return start is not None and start != 0 and netns.pid_start_time(pid) == start


def stale_labs() -> list[LabRecord]:
    """Records whose owner is dead, plus synthetic records for `nrl-*` namespaces that have no record."""
    namespaces = netns.list_namespaces()  # list first: a record is written before its namespaces
    records = load_all()
    known = {r.id for r in records}
    stale = [r for r in records if r.stale()]
    orphans: dict[str, list[str]] = {}
    for name in namespaces:
        m = _NS_RE.match(name)
        if m and m.group(1) not in known:
            orphans.setdefault(m.group(1), []).append(name)
    for lab_id, names in orphans.items():
        if load(lab_id) is None:  # re-check: it may have been written since we listed
            stale.append(LabRecord(id=lab_id, scenario="?", owner_pid=0, owner_start=None, namespaces=names))
    return stale


def remove_stale() -> list[str]:
    """Remove every stale lab; return their ids."""
    removed = []
    for record in stale_labs():
        remove(record)
        removed.append(record.id)
    return removed
