"""`nodereach tunnel-config`: write the WireGuard tunnel to a rented public host, both ends, filled in."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from rich.console import Console

from nodereach.errors import UsageError
from nodereach.net import PortSpec, family_of, is_ip
from nodereach.tunnel import keys
from nodereach.tunnel.wireguard import DEFAULT_LISTEN_PORT, DEFAULT_TUNNEL_NETWORK, TunnelConfigError, plan, render


def local_address_toward(host: str, port: int) -> str | None:
    """The source address the kernel would use toward `host` (a connected UDP socket sends nothing)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return str(s.getsockname()[0])
    return None


def run_tunnel_config(*, public_host: str, ports: list[str], node_address: str | None, listen_port: int,
                      tunnel_network: str, out: Path | None) -> int:
    specs: list[PortSpec] = []
    for text in ports:
        try:
            specs += PortSpec.parse_many(text)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if not is_ip(public_host) or family_of(public_host) != 4:
        raise UsageError(f"--public-host must be the rented host's public IPv4 address, not {public_host!r}",
                         "e.g. --public-host 203.0.113.20 (the address its provider gave it)")
    node = node_address or local_address_toward(public_host, listen_port)
    if node is None:
        raise UsageError("cannot tell this host's LAN address toward the public host",
                         "give it with --node-address, e.g. --node-address 192.168.1.10")
    try:
        p = plan(public_host, node, specs, keys.generate(), keys.generate(), listen_port=listen_port,
                 tunnel_network=tunnel_network)
    except TunnelConfigError as exc:
        raise UsageError(str(exc)) from None
    files = render(p)
    named = {f"node/{p.node_interface}.conf": files.node_conf, f"node/{p.node_interface}.nft": files.node_rules,
             f"public-host/{p.host_interface}.conf": files.host_conf,
             f"public-host/{p.host_interface}.nft": files.host_rules, "STEPS.txt": files.steps}
    console = Console()
    if out is None:
        for name, text in named.items():
            console.rule(name)
            console.print(text, markup=False, highlight=False, soft_wrap=True)
        return 0
    for name, text in named.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private keys inside
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    console.print(files.steps, markup=False, highlight=False, soft_wrap=True)
    console.print(f"Written to {out}/ (node/ and public-host/; the .conf files hold private keys: mode 600).",
                  markup=False, highlight=False)
    return 0


__all__ = ["DEFAULT_LISTEN_PORT", "DEFAULT_TUNNEL_NETWORK", "run_tunnel_config"]
