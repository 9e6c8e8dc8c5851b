"""Which labs exist on this machine, who owns them, and which are stale (owner dead).

Safe by construction against concurrent builders, users and scanners (several test suites at once):
- a lab claims its id by creating /run/nodereach-lab/<id>.json (owner pid + start time, namespace names)
  atomically and exclusively (complete file linked into place) BEFORE it creates any namespace, and
  removes the record only AFTER its last namespace is gone;
- every rewrite is atomic (a temp file of its own per writer, renamed over the record), so a reader never
  sees a partial record, and records are read tolerantly (keys from a newer version are ignored);
- a lab is stale only when its record says its owner is provably dead (pid gone, or reused: start time
  differs). A `nrl-*` namespace whose id has no record file at all is a leftover only once it is older than
  ORPHAN_GRACE_S; an unreadable record file likewise. Labs of live owners are never touched.
CLI labs (`nodereach lab up`) are `persistent` and stay until `nodereach lab down`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nodereach.lab import netns

REGISTRY_DIR = Path("/run/nodereach-lab")
ORPHAN_GRACE_S = 60.0
"""A namespace without a record (or an unreadable record) younger than this is left alone: belt and braces
against any writer that breaks the record-first rule (e.g. an older nodereach still running)."""
_NS_RE = re.compile(r"^nrl-([0-9a-f]{6})-[a-z-]+$")
_ID_RE = re.compile(r"^[0-9a-f]{6}$")
_SAVE_LOCK = threading.Lock()


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
        """Atomically replace the record (threads of the owner may save at once: the last one wins whole)."""
        with _SAVE_LOCK:
            _write_atomic(self.path, _dump(self), exclusive=False)

    def owner_alive(self) -> bool:
        if not netns.pid_alive(self.owner_pid):
            return False
        return self.owner_start is None or netns.pid_start_time(self.owner_pid) == self.owner_start

    def stale(self) -> bool:
        return not self.persistent and not self.owner_alive()


def _dump(record: LabRecord) -> str:
    return json.dumps(asdict(record), indent=1)


def _write_atomic(path: Path, text: str, *, exclusive: bool) -> None:
    """Write `text` to a temp file of this writer, then rename it over `path` (or, `exclusive`, hard-link it
    into place: FileExistsError if `path` exists). Readers see the old or the new record, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # `<id>-<pid>-<thread>.tmp`: never matches *.json, and remove()'s `<id>-*` glob takes leftovers.
    tmp = path.with_name(f"{path.stem}-{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        if exclusive:
            os.link(tmp, path)
        else:
            tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def new_id() -> str:
    """A 6-hex-digit lab id not used by any record or namespace on this machine."""
    taken = set(_record_ids()) | {m.group(1) for n in netns.list_namespaces() if (m := _NS_RE.match(n))}
    while True:
        lab_id = secrets.token_hex(3)
        if lab_id not in taken:
            return lab_id


def claim(record: LabRecord, hosts: tuple[str, ...] | list[str] = ()) -> LabRecord:
    """Give `record` a fresh id (and the namespace names of `hosts`) and create its complete file exclusively:
    two processes never get the same id, and the record exists before any of its namespaces."""
    while True:
        record.id = new_id()
        record.namespaces = [f"nrl-{record.id}-{h}" for h in hosts] or record.namespaces
        try:
            _write_atomic(record.path, _dump(record), exclusive=True)
            return record
        except FileExistsError:
            continue


_FIELDS = {f.name for f in dataclasses.fields(LabRecord)}


def parse(text: str) -> LabRecord:
    """A record from its JSON (ValueError/TypeError when it is not one); unknown keys are ignored."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("a lab record is a JSON object")
    record = LabRecord(**{k: v for k, v in doc.items() if k in _FIELDS})
    if not isinstance(record.owner_pid, int) or not _ID_RE.match(str(record.id)):
        raise ValueError("bad lab record")
    return record


def load(lab_id: str) -> LabRecord | None:
    """The record of `lab_id`, or None when there is none (or it is unreadable)."""
    try:
        return parse((REGISTRY_DIR / f"{lab_id}.json").read_text())
    except (OSError, ValueError, TypeError):
        return None


def _record_ids() -> list[str]:
    """Ids of every record FILE, readable or not (an unreadable record still claims its id)."""
    try:
        return sorted(p.stem for p in REGISTRY_DIR.glob("*.json") if _ID_RE.match(p.stem))
    except OSError:
        return []


def load_all() -> list[LabRecord]:
    records = []
    for lab_id in _record_ids():
        record = load(lab_id)
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
        if path != record.path:
            with contextlib.suppress(OSError):
                path.unlink()
    with contextlib.suppress(OSError):
        record.path.unlink()  # last: until now the record protects the id


def _same_process(pid: int, start: int | None) -> bool:
    return start is not None and start != 0 and netns.pid_start_time(pid) == start


def _age(path: Path, now: float) -> float:
    """Seconds since `path` (a namespace's mount point, a record) was created; 0 if it is gone."""
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def stale_labs(orphan_grace_s: float = ORPHAN_GRACE_S) -> list[LabRecord]:
    """Records whose owner is provably dead, plus synthetic records for leftovers older than the grace:
    `nrl-*` namespaces whose id has no record file, and record files nobody can read."""
    namespaces = netns.list_namespaces()  # list first: a record is written before its namespaces
    ids = _record_ids()
    now = time.time()
    stale: list[LabRecord] = []
    for lab_id in ids:
        record = load(lab_id)
        if record is None:
            path = REGISTRY_DIR / f"{lab_id}.json"
            if path.exists() and _age(path, now) >= orphan_grace_s and load(lab_id) is None:
                stale.append(LabRecord(id=lab_id, scenario="?", owner_pid=0, owner_start=None))
        elif record.stale():
            stale.append(record)
    orphans: dict[str, list[str]] = {}
    for name in namespaces:
        m = _NS_RE.match(name)
        if m and m.group(1) not in ids and _age(netns.NETNS_DIR / name, now) >= orphan_grace_s:
            orphans.setdefault(m.group(1), []).append(name)
    for lab_id, names in orphans.items():
        if not (REGISTRY_DIR / f"{lab_id}.json").exists():  # re-check: it may have been written since we listed
            stale.append(LabRecord(id=lab_id, scenario="?", owner_pid=0, owner_start=None, namespaces=names))
    return stale


def remove_stale(orphan_grace_s: float = ORPHAN_GRACE_S) -> list[str]:
    """Remove every stale lab; return their ids."""
    removed = []
    for record in stale_labs(orphan_grace_s):
        remove(record)
        removed.append(record.id)
    return removed
