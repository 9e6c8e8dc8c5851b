"""tunnel-config: the WireGuard setup out of CGNAT, checked as text and by the real tools that read it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nodereach.net import PortSpec
from nodereach.tunnel import keys
from nodereach.tunnel.wireguard import TunnelConfigError, plan, render

PORTS = [PortSpec(18080, "tcp"), PortSpec(30303, "udp")]


def _plan(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"public_host": "203.0.113.20", "node_address": "192.168.1.10", "ports": PORTS,
                               "node_keys": keys.generate(), "host_keys": keys.generate()}
    args.update(kw)
    return plan(**args)  # type: ignore[arg-type]


def test_keys_are_wireguard_keys() -> None:
    pair = keys.generate()
    assert len(pair.private) == 44 and len(pair.public) == 44 and pair.private != pair.public
    assert keys.public_of(pair.private) == pair.public
    if shutil.which("wg"):
        out = subprocess.run(["wg", "pubkey"], input=pair.private + "\n", capture_output=True, text=True, check=True)
        assert out.stdout.strip() == pair.public
    for bad in ("", "abc", "A" * 44):
        with pytest.raises(ValueError):
            keys.public_of(bad)


def test_host_forwards_each_port_to_the_node_and_never_masquerades() -> None:
    files = render(_plan())
    rules = files.host_rules
    assert 'tcp dport 18080 dnat to 192.168.1.10' in rules and 'udp dport 30303 dnat to 192.168.1.10' in rules
    statements = "\n".join(line for line in rules.splitlines() if not line.lstrip().startswith("#"))
    assert "masquerade" not in statements and "snat" not in statements
    assert "ListenPort = 51820" in files.host_conf
    assert "AllowedIPs = 10.77.0.2/32, 192.168.1.10/32" in files.host_conf


def test_node_routes_only_tunnel_connections_back_and_keeps_the_cgnat_mapping_open() -> None:
    p = _plan()
    files = render(p)
    assert "Table = off" in files.node_conf
    assert "PersistentKeepalive = 25" in files.node_conf
    assert "Endpoint = 203.0.113.20:51820" in files.node_conf
    assert f"PublicKey = {p.host_keys.public}" in files.node_conf
    assert f"PublicKey = {p.node_keys.public}" in files.host_conf
    assert "ct mark set 0x4e52" in files.node_rules and "meta mark set 0x4e52" in files.node_rules
    assert "fwmark 0x4e52 lookup 51820" in files.node_conf
    assert p.node_keys.private in files.node_conf and p.node_keys.private not in files.host_conf


@pytest.mark.parametrize(("kw", "message"), [
    ({"public_host": "2001:db8::1"}, "public IPv4"),
    ({"public_host": "vps.example.org"}, "public IPv4"),
    ({"node_address": "fe80::1"}, "IPv4"),
    ({"ports": []}, "no ports"),
    ({"ports": [PortSpec(51820, "udp")]}, "tunnel's own port"),
    ({"tunnel_network": "10.77.0.0/31"}, "too small"),
    ({"tunnel_network": "192.168.1.8/29"}, "overlaps"),
    ({"tunnel_network": "nonsense"}, "bad tunnel network"),
    ({"node_interface": "a-much-too-long-name"}, "interface name"),
])
def test_plans_that_cannot_work_are_refused_with_the_reason(kw: dict[str, object], message: str) -> None:
    with pytest.raises(TunnelConfigError, match=message):
        _plan(**kw)


def test_ssh_forward_is_warned_about() -> None:
    p = _plan(ports=[PortSpec(22, "tcp")])
    assert any("SSH" in w for w in p.warnings) and "SSH" in render(p).steps


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None,
                    reason="nft --check needs root and nftables (a network namespace of its own)")
def test_generated_rules_parse_in_nftables(tmp_path: Path) -> None:
    files = render(_plan())
    for name, text in (("host.nft", files.host_rules), ("node.nft", files.node_rules)):
        path = tmp_path / name
        path.write_text(text.replace('"wg-nodereach"', '"lo"'))
        r = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)


@pytest.mark.skipif(shutil.which("wg-quick") is None, reason="wireguard-tools not installed")
def test_wg_quick_reads_both_configs(tmp_path: Path) -> None:
    """`wg-quick strip` parses the wg-quick format and keeps what `wg` reads: both files must survive it."""
    files = render(_plan())
    for name, text in (("nrn0.conf", files.node_conf), ("nrh0.conf", files.host_conf)):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        r = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "[Peer]" in r.stdout and "PrivateKey" in r.stdout and "PostUp" not in r.stdout
