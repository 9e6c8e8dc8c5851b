"""Lab lifecycle: nothing left behind, two labs at once, stale labs found and removed, signals, isolation."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from nodereach.lab import Lab, netns, registry
from nodereach.lab import addresses as A
from nodereach.lab import probe as P

pytestmark = pytest.mark.lab

LAB_NETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "192.168.1.0/24",
                                               "10.0.0.0/24", "100.64.0.0/10", "127.0.0.0/8")]


def _lab_namespaces(lab_id: str) -> list[str]:
    return netns.list_namespaces(f"nrl-{lab_id}-")


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _works(net: Lab) -> bool:
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP) as server:
        return P.send_seen_as(client, server) is not None


def test_teardown_leaves_no_namespace_process_or_file() -> None:
    from conftest import require_lab

    require_lab()
    before = _root_links()
    net = Lab("port-restricted", home_router=True, delay_ms=5).build()
    lab_id = net.id
    assert len(_lab_namespaces(lab_id)) == len(net.hosts) == 6
    assert _root_links() == before  # nothing (veth, tap, bridge) in the root namespace
    pids = [p.pid for p in net._procs]
    assert len(pids) == 3  # forwarder, coturn, miniupnpd
    assert all(netns.pid_alive(p) for p in pids)
    net.teardown()
    assert _lab_namespaces(lab_id) == []
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped: the process is gone
        assert not netns.pid_alive(pid)
    assert list(registry.REGISTRY_DIR.glob(f"{lab_id}*")) == []
    net.teardown()  # idempotent


def test_exception_inside_with_tears_down() -> None:
    from conftest import require_lab

    require_lab()
    lab_id = ""
    with pytest.raises(RuntimeError), Lab("cgnat") as net:
        lab_id = net.id
        assert _lab_namespaces(lab_id)
        raise RuntimeError("boom")
    assert lab_id and _lab_namespaces(lab_id) == []


def test_two_labs_at_once(private_lab: Callable[..., Lab]) -> None:
    one = private_lab("port-restricted")
    two = private_lab("port-restricted")
    assert one.id != two.id
    assert set(map(one.ns, one.hosts)).isdisjoint(map(two.ns, two.hosts))
    assert _works(one) and _works(two)
    one.teardown()
    assert _works(two)


def test_namespaces_have_no_route_off_the_lab(lab: Callable[..., Lab]) -> None:
    for name in ("cgnat", "open"):
        net = lab(name)
        for host in net.hosts:
            routes = json.loads(net.exec(host, ["ip", "-j", "-4", "route", "show", "table", "all"]).stdout)
            for route in routes:
                dst = route["dst"]
                if dst == "default":
                    assert host != "inet", "the internet core must have no default route"
                    assert any(ipaddress.ip_address(route["gateway"]) in n for n in LAB_NETS)
                    continue
                net_ = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
                assert any(net_.subnet_of(n) for n in LAB_NETS), (host, route)
        unreachable = net.exec("inet", ["ip", "route", "get", "192.0.2.1"], check=False)
        assert unreachable.returncode != 0


STALE_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from nodereach.lab import Lab
    lab = Lab("port-restricted", delay_ms=1).build()
    print(lab.id, lab._procs[0].pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_stale_lab_is_detected_and_removed(lab: Callable[..., Lab]) -> None:
    mine = lab("open")
    out = subprocess.run([sys.executable, "-c", STALE_SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL
    lab_id, forwarder = out.stdout.split()
    assert _lab_namespaces(lab_id)
    stale = {r.id for r in registry.stale_labs()}
    assert lab_id in stale
    assert mine.id not in stale  # a lab whose owner is alive is never stale
    assert lab_id in registry.remove_stale()
    assert _lab_namespaces(lab_id) == []
    assert registry.load(lab_id) is None
    deadline = time.monotonic() + 3
    while netns.pid_alive(int(forwarder)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not netns.pid_alive(int(forwarder))
    assert _works(mine)


def test_orphan_namespace_without_record_is_stale() -> None:
    from conftest import require_lab

    require_lab()
    lab_id = registry.new_id()
    name = f"nrl-{lab_id}-client"
    netns.run(["ip", "netns", "add", name])
    try:
        # Younger than the grace period: left alone (it could be a lab whose writer broke the record-first rule).
        assert lab_id not in {r.id for r in registry.stale_labs()}
        orphan = {r.id: r for r in registry.stale_labs(orphan_grace_s=0)}.get(lab_id)
        assert orphan is not None and orphan.namespaces == [name]
        registry.remove(orphan)
        assert name not in netns.list_namespaces()
    finally:
        netns.run(["ip", "netns", "del", name], check=False)


SIGNAL_SCRIPT = textwrap.dedent("""
    import time
    from nodereach.lab import Lab
    with Lab("double-nat") as lab:
        print(lab.id, flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_tears_down(sig: int) -> None:
    from conftest import require_lab

    require_lab()
    # As a terminal starts it: a suite launched in the background (`cmd &`) ignores SIGINT, and a child
    # inherits that, so Python would never raise KeyboardInterrupt there.
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        lab_id = proc.stdout.readline().strip()
        assert len(lab_id) == 6 and _lab_namespaces(lab_id)
        proc.send_signal(sig)
        proc.wait(timeout=20)
        assert proc.returncode != 0
        assert _lab_namespaces(lab_id) == []
        assert registry.load(lab_id) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_rebuild_after_teardown_and_no_double_build() -> None:
    from conftest import require_lab
    from nodereach.lab import LabError

    require_lab()
    net = Lab("open")
    with net:
        first = net.id
        with pytest.raises(LabError, match="already built"):
            net.build()
    with net:
        assert net.id != first and _works(net)
    assert _lab_namespaces(first) == [] and _lab_namespaces(net.id) == []
