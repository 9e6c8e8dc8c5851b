"""Stale-lab removal never touches a live lab, however many processes build, use and scan at once.

Reproduces "labs vanished mid-run" (several suites at once): two processes build labs and spawn processes
from several threads (each spawn rewrites the lab's record) while a third removes stale labs in a tight
loop. Before the fix the scanner could read a record mid-rewrite (one shared temp file), or a record
written by a newer version (unknown key), see none, and delete the live lab's namespaces as leftovers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nodereach.lab import Lab, netns, registry

pytestmark = pytest.mark.lab

BUILDER = textwrap.dedent("""
    import json, sys, threading, time
    from nodereach.lab import Lab, netns

    count, seconds = int(sys.argv[1]), float(sys.argv[2])
    deadline = time.monotonic() + seconds
    ids, problems = [], []
    while len(ids) < count and time.monotonic() < deadline:
        with Lab("open") as lab:
            ids.append(lab.id)
            errors = []

            def spawn():
                try:
                    lab.spawn("peer", ["sleep", "30"])
                except Exception as exc:
                    errors.append(f"spawn: {exc!r}")

            threads = [threading.Thread(target=spawn) for _ in range(6)]
            for t in threads:
                t.start()
            until = time.monotonic() + 0.4  # keep the lab up a moment, watching its namespaces
            while time.monotonic() < until:
                missing = [h for h in lab.hosts if not netns.exists(lab.ns(h))]
                if missing:
                    errors.append(f"lab {lab.id}: namespaces of {missing} vanished under their live owner")
                    break
                time.sleep(0.01)
            for t in threads:
                t.join()
            if lab.exec("client", ["true"], check=False).returncode != 0:
                errors.append(f"lab {lab.id}: client namespace unusable")
            problems += errors
    print(json.dumps({"ids": ids, "problems": problems}), flush=True)
""")

SCANNER = textwrap.dedent("""
    import json, sys, time
    from nodereach.lab import registry

    count, seconds = int(sys.argv[1]), float(sys.argv[2])
    deadline = time.monotonic() + seconds
    scans, removed = 0, []
    while scans < count and time.monotonic() < deadline:
        removed += registry.remove_stale()
        scans += 1
    print(json.dumps({"scans": scans, "removed": removed}), flush=True)
""")


def _python(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_concurrent_builds_survive_a_stale_cleanup_loop() -> None:
    from conftest import require_lab

    require_lab()
    seconds = 12.0
    builders = [_python(BUILDER, 8, seconds) for _ in range(2)]
    scanner = _python(SCANNER, 20_000, seconds + 3)
    try:
        outs = [p.communicate(timeout=seconds + 60) for p in (*builders, scanner)]
    finally:
        for p in (*builders, scanner):
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_out, err) in zip((*builders, scanner), outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    built = [json.loads(out) for out, _ in outs[:2]]
    scan = json.loads(outs[2][0])
    ids = [i for b in built for i in b["ids"]]
    assert len(ids) >= 6, built  # both builders got labs up while the scanner ran
    assert scan["scans"] >= 50, scan
    assert [p for b in built for p in b["problems"]] == []
    print(f"{len(ids)} labs built by 2 processes during {scan['scans']} stale scans")
    assert set(scan["removed"]).isdisjoint(ids)  # a live lab is never stale
    for lab_id in ids:
        assert netns.list_namespaces(f"nrl-{lab_id}-") == [] and registry.load(lab_id) is None  # owners cleaned up


def test_record_from_a_newer_version_is_not_an_orphan(private_lab: object) -> None:
    """A record with a key this version does not know (written by a newer nodereach) still protects its lab."""
    net: Lab = private_lab("open")  # type: ignore[operator]
    path = registry.REGISTRY_DIR / f"{net.id}.json"
    doc = json.loads(path.read_text())
    doc["field_from_the_future"] = {"x": 1}
    path.write_text(json.dumps(doc))
    record = registry.load(net.id)
    assert record is not None and record.owner_pid == os.getpid()
    assert net.id not in {r.id for r in registry.stale_labs()}
    registry.remove_stale()
    assert all(netns.exists(net.ns(h)) for h in net.hosts)


def test_concurrent_saves_never_expose_a_partial_record(private_lab: object) -> None:
    """Many threads of the owner rewriting its record: a reader always sees a complete record."""
    import threading

    net: Lab = private_lab("open")  # type: ignore[operator]
    assert net.record is not None
    record = net.record
    stop = time.monotonic() + 1.5
    errors: list[str] = []

    def writer() -> None:
        n = 0
        while time.monotonic() < stop and n < 2000:
            record.pids = list(range(n % 50))
            try:
                record.save()
            except OSError as exc:
                errors.append(repr(exc))
            n += 1

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    reads = misses = 0
    while time.monotonic() < stop and reads < 20_000:
        reads += 1
        if registry.load(net.id) is None:
            misses += 1
    for t in threads:
        t.join()
    assert errors == [] and misses == 0, (errors[:3], misses, reads)
    assert reads > 100
    assert list(Path(registry.REGISTRY_DIR).glob(f"{net.id}*.tmp*")) == []


def test_cli_lab_being_built_is_not_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lab status`/`lab exec` (no lock) during another shell's `lab up` (record written, namespaces not yet):
    the record is kept; once nobody holds the CLI lock, a CLI lab whose namespaces all vanished is forgotten."""
    import fcntl

    from nodereach.lab.command import cli_lab

    monkeypatch.setattr(registry, "REGISTRY_DIR", tmp_path)  # only cli_lab() runs here: no stale scan
    record = registry.claim(registry.LabRecord(id="", scenario="open", owner_pid=0, owner_start=None,
                                               persistent=True), hosts=("inet", "client"))
    assert not any(netns.exists(n) for n in record.namespaces)
    with (tmp_path / "cli.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another shell's `lab up`, mid-build
        found = cli_lab()
        assert found is not None and found.id == record.id
        assert registry.load(record.id) is not None
        fcntl.flock(held, fcntl.LOCK_UN)
    assert cli_lab() is None
    assert registry.load(record.id) is None


def test_unreadable_record_protects_its_id_until_the_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY_DIR", tmp_path)
    monkeypatch.setattr(netns, "list_namespaces", lambda prefix="nrl-": [])  # unit: records only
    (tmp_path / "abc123.json").write_text('{"id": "abc1')  # as a crashed pre-atomic writer left it
    assert registry.stale_labs() == []
    old = time.time() - registry.ORPHAN_GRACE_S - 1
    os.utime(tmp_path / "abc123.json", (old, old))
    assert [r.id for r in registry.stale_labs()] == ["abc123"]
