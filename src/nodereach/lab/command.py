"""`nodereach lab list|up|exec|down|status`: the CLI lab (one persistent lab at a time) and the registry."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from nodereach.errors import UsageError
from nodereach.lab import addresses as A
from nodereach.lab import netns, registry
from nodereach.lab.core import Lab, check_environment
from nodereach.lab.scenarios import SCENARIOS, Ipv6Truth, get_scenario

HOST_ROLES = {
    "inet": "internet core, provider filters",
    "server": "run `nodereach serve` here",
    "peer": "third party on the internet",
    "coturn": "coturn STUN server",
    "isp": "provider NAT",
    "router": "home router",
    "client": "the node",
}


def _console() -> Console:
    return Console(soft_wrap=False)


_LOCK_HELD = False


@contextlib.contextmanager
def _cli_lock(blocking: bool = True) -> Iterator[bool]:
    """Serialise `lab up` / `lab down`: "one CLI lab at a time" holds even when two shells race.
    Yields False when `blocking` is off and another process holds the lock; re-entrant in this process."""
    global _LOCK_HELD
    if _LOCK_HELD:
        yield True
        return
    registry.REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    with (registry.REGISTRY_DIR / "cli.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        _LOCK_HELD = True
        try:
            yield True
        finally:
            _LOCK_HELD = False
            fcntl.flock(fh, fcntl.LOCK_UN)


def cli_lab() -> registry.LabRecord | None:
    """The running CLI lab (a persistent record whose namespaces still exist, or that is being built)."""
    for record in registry.load_all():
        if record.persistent:
            if record.namespaces and not any(netns.exists(n) for n in record.namespaces) \
                    and _forget_vanished(record.id):
                continue
            return record
    return None


def _forget_vanished(lab_id: str) -> bool:
    """Forget a CLI lab whose namespaces were all deleted behind our back, but only under the CLI lock:
    `lab up` builds under it, so a lab being built (record first, namespaces next) never looks vanished."""
    with _cli_lock(blocking=False) as locked:
        if not locked:
            return False
        record = registry.load(lab_id)
        if record is not None:
            if any(netns.exists(n) for n in record.namespaces):
                return False
            registry.remove(record)
        return True


def run_list(json_out: bool) -> None:
    if json_out:
        doc = {"scenarios": [{"name": s.name, "summary": s.summary, "hosts": list(s.hosts),
                              "families": list(s.truth().families),
                              "home_router_variant": s.has_router and not s.udp_blocked and not s.nptv6,
                              "truth": s.truth().as_dict()}
                             for s in SCENARIOS.values()],
               "addresses": {k: v for k, v in vars(A).items() if k.isupper()}}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    table = Table(title="nodereach lab scenarios (ground truth proven by tests/test_lab_*.py)")
    table.add_column("scenario", no_wrap=True)
    for col in ("NATs", "mapping", "filtering", "CGNAT", "public IP"):
        table.add_column(col, no_wrap=True)
    table.add_column("policy", overflow="fold")
    table.add_column("IPv6", overflow="fold")
    for s in SCENARIOS.values():
        t = s.truth()
        policy = "UDP blocked" if t.udp_blocked else (
            f"ports {','.join(map(str, t.filtered_ports))} dropped" if t.filtered_ports else
            ("host firewall" if s.client_firewall else "-"))
        table.add_row(s.name, str(t.layers), _short(t.mapping), _short(t.filtering), "yes" if t.cgnat else "no",
                      t.client_public_ip, policy, _ipv6_cell(t.ipv6))
    _console().print(table)
    print("EI = endpoint-independent, AD = address-dependent, APD = address-and-port-dependent (RFC 4787).")
    print("IPv6: none = the client has no IPv6; otherwise translation, filtering, and the address peers dial.")
    print("NAT scenarios also run with --home-router (miniupnpd: UPnP IGD, NAT-PMP, PCP on `router`; IPv6 "
          "pinholes in the IPv6 scenarios).")


def _ipv6_cell(v6: Ipv6Truth | None) -> str:
    if v6 is None:
        return "none"
    translation = {"none": "no translation", "nptv6": "NPTv6", "nat66": "NAT66"}[v6.translation]
    wall = "firewall" if v6.firewall else "no filter"
    return f"{translation}, {wall} ({_short(v6.filtering)}), {v6.public_address}"


def _short(behaviour: str) -> str:
    return {"endpoint-independent": "EI", "address-dependent": "AD", "address-and-port-dependent": "APD"}.get(
        behaviour, behaviour)


def run_up(scenario: str, home_router: bool, delay_ms: float, loss: float) -> None:
    get_scenario(scenario)  # unknown scenario: a UsageError before anything else
    check_environment()
    lab = Lab(scenario, home_router=home_router, delay_ms=delay_ms, loss=loss, persistent=True)
    with _cli_lock():
        registry.remove_stale()
        existing = cli_lab()
        if existing is not None:
            raise UsageError(f"a CLI lab is already running ({existing.scenario}, id {existing.id})",
                             "remove it with `nodereach lab down` first")
        lab.build()
    print(f"lab {lab.id} up: {scenario}{' + home router (miniupnpd)' if home_router else ''}"
          f"{f', {delay_ms:g} ms one-way delay' if delay_ms else ''}{f', {loss:g}% loss' if loss else ''}")
    _print_hosts(lab.id, list(lab.hosts), scenario)
    t = lab.truth
    print(f"ground truth: {t.description} layers={t.layers} mapping={t.mapping} filtering={t.filtering} "
          f"cgnat={'yes' if t.cgnat else 'no'} public={t.client_public_ip}")
    print(f"IPv6 truth: {_ipv6_cell(t.ipv6)}" + (f" (client's own address {t.ipv6.client_address})"
                                                  if t.ipv6 is not None and t.ipv6.translation != "none" else ""))
    print(f"try: nodereach lab exec server -- nodereach serve --address {A.SERVER_IP} --alt-address "
          f"{A.SERVER_ALT_IP} --address {A.SERVER_IP6} --alt-address {A.SERVER_ALT_IP6} &")
    print(f"     nodereach lab exec client -- nodereach check --server {A.SERVER_IP}")
    print("     nodereach lab down")


def _print_hosts(lab_id: str, hosts: list[str], scenario: str | None = None) -> None:
    table = Table(show_header=True)
    table.add_column("host")
    table.add_column("namespace")
    table.add_column("addresses")
    table.add_column("role")
    lab = Lab(scenario) if scenario in SCENARIOS else None  # not built: only its address plan is read
    for host in hosts:
        addrs = ", ".join((*lab.addresses(host, 4), *lab.addresses(host, 6))) if lab is not None else ""
        table.add_row(host, f"nrl-{lab_id}-{host}", addrs, HOST_ROLES.get(host, ""))
    _console().print(table)


def _record_hosts(record: registry.LabRecord) -> list[str]:
    prefix = f"nrl-{record.id}-"
    return [n[len(prefix):] for n in record.namespaces if n.startswith(prefix)]


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def run_exec(host: str, argv: list[str], lab_id: str | None = None) -> int:
    check_environment()
    if lab_id is not None:
        record = registry.load(lab_id) if re.fullmatch(r"[0-9a-f]{6}", lab_id) else None
        if record is None:
            raise UsageError(f"no lab with id {lab_id!r}", "see `nodereach lab status` for running labs")
    else:
        record = cli_lab()
    if record is None:
        raise UsageError("no CLI lab is running", "start one with `nodereach lab up port-restricted`")
    hosts = _record_hosts(record)
    if host not in hosts:
        raise UsageError(f"no host {host!r} in the running lab ({record.scenario})", f"hosts: {', '.join(hosts)}")
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("no command given", f"e.g. nodereach lab exec {host} -- ip addr")
    # The lab's commands find this installation's `nodereach` first, even from an unactivated venv.
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        return subprocess.call(["ip", "netns", "exec", f"nrl-{record.id}-{host}", *argv], env=env)
    except KeyboardInterrupt:
        return 130


def run_down(all_labs: bool) -> None:
    check_environment()
    removed = []
    with _cli_lock():
        record = cli_lab()
        if record is not None:
            registry.remove(record)
            removed.append(f"{record.id} ({record.scenario})")
    if all_labs:
        for stale in registry.stale_labs():
            registry.remove(stale)
            removed.append(f"{stale.id} (stale {stale.scenario})")
    print(f"removed lab {', '.join(removed)}" if removed else "no lab to remove")
    if all_labs:
        live = [r for r in registry.load_all() if not r.persistent and r.owner_alive()]
        for r in live:
            print(f"left alone: lab {r.id} ({r.scenario}) owned by running process {r.owner_pid}")


def run_status() -> None:
    check_environment()
    records = registry.load_all()
    record = cli_lab()
    if record is None:
        print("no CLI lab is running (start one with `nodereach lab up SCENARIO`)")
    else:
        opts = ", ".join(f"{k}={v}" for k, v in record.options.items() if v)
        print(f"CLI lab {record.id}: {record.scenario}{f' ({opts})' if opts else ''}")
        _print_hosts(record.id, _record_hosts(record), record.scenario)
        for pid in record.pids:
            if netns.pid_alive(pid) and netns.pid_start_time(pid) == record.pid_starts.get(str(pid)):
                argv = _cmdline(pid)
                print(f"  process {pid}: {' '.join(argv[:3])}{' ...' if len(argv) > 3 else ''}")
    others = [r for r in records if not r.persistent]
    stale_ids = {r.id for r in registry.stale_labs()}
    if others or stale_ids:
        table = Table(title="other nodereach labs on this machine")
        for col in ("id", "scenario", "owner pid", "state"):
            table.add_column(col)
        for r in others:
            table.add_row(r.id, r.scenario, str(r.owner_pid), "stale" if r.id in stale_ids else "running")
        for lab_id in sorted(stale_ids - {r.id for r in others}):
            table.add_row(lab_id, "?", "-", "stale (namespaces without a record)")
        _console().print(table)
        if stale_ids:
            print("remove stale labs with `nodereach lab down --all`")
