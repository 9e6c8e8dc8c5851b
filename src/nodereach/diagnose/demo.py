"""The diagnosis' columns for `nodereach demo`: run the real `check --json` in each scenario's client.

`check_probe(lab)` starts `nodereach serve --address 203.0.113.10 --alt-address 203.0.113.11` on the lab's
server, runs `nodereach check --json --server 203.0.113.10 --port 30303/udp --port 30303/tcp` in the client
(a subprocess, exactly as an operator would) and returns the columns the demo table shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nodereach.lab import addresses as A
from nodereach.lab.core import Lab

SHORT = {"endpoint-independent": "EI", "address-dependent": "AD", "address-and-port-dependent": "APD",
         "no-nat": "no-nat", "unknown": "?"}


def _bin() -> str:
    return str(Path(sys.executable).parent / "nodereach")


def found_text(doc: dict[str, Any]) -> str:
    """What check found, in the same words as the demo's ground-truth column."""
    nat = doc["nat"]
    if nat["present"] is False:
        text = "no NAT" + (", host firewall" if "firewall" in doc["causes"] else "")
    elif nat["present"] is None:
        text = "NAT unknown"
    else:
        layers = nat["layers"]
        text = f"{layers if layers is not None else '?'} NAT layer{'s' if (layers or 0) > 1 else ''}"
        text += " (CGNAT)" if nat["cgnat"] else ""
        text += f", {SHORT.get(nat['mapping'], nat['mapping'])} mapping, " \
                f"{SHORT.get(nat['filtering'], nat['filtering'])} filtering"
    if doc["udp"]["outbound"] is False:
        text += ", UDP blocked"
    blocked = sorted({*doc["udp"]["blocked_ports"], *doc["tcp"]["blocked_ports"]})
    if blocked:
        text += f", ports {','.join(map(str, blocked))} filtered"
    return text


def _serve(lab: Lab) -> subprocess.Popen[Any]:
    proc = lab.spawn("server", [_bin(), "serve", "--address", A.SERVER_IP, "--alt-address", A.SERVER_ALT_IP],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        r = lab.exec("server", ["bash", "-c", f"exec 3<>/dev/tcp/{A.SERVER_IP}/3480"], check=False, timeout=5)
        if r.returncode == 0:
            break
        time.sleep(0.05)
    return proc


def check_probe(lab: Lab) -> dict[str, str]:
    """Columns "what nodereach found", "reachable", "first advice" (and the check's own time)."""
    proc = _serve(lab)
    try:
        r = lab.exec("client", [_bin(), "check", "--json", "--server", A.SERVER_IP, "--port", "30303/udp",
                                "--port", "30303/tcp"], check=False, timeout=60)
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            return {"what nodereach found": f"[red]check failed: {r.stderr.strip()[-200:]}[/red]"}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    ports = ", ".join(f"{p['protocol']} {'yes' if p['reachable'] else 'no' if p['reachable'] is False else '?'}"
                      for p in doc["ports"])
    first = doc["advice"][0]["title"] if doc["advice"] else "-"
    return {"what nodereach found": found_text(doc),
            "reachable": f"{doc['verdict']} ({ports})" if ports else doc["verdict"],
            "first advice": first,
            "check s": f"{doc['duration_s']:.2f}"}
