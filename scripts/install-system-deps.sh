#!/usr/bin/env bash
# Installs the Debian packages the lab, the tests and the demo need, only those that are missing.
set -euo pipefail
# prometheus-blackbox-exporter: the peer tool of benchmarks/watch_cost.py.
PKGS=(nftables iptables conntrack iproute2 miniupnpd miniupnpc natpmpc coturn chromium python3-venv procps prometheus
      prometheus-blackbox-exporter monero transmission-daemon syncthing wireguard-go wireguard-tools nodejs)
# Units that Debian starts on install. Their daemons run only inside lab namespaces, started by the tests'
# fixtures (node software: tests/node_fixtures.py); on the host they are stopped and masked, so nothing
# listens on the host's own network. syncthing@.service is a template, started only when enabled for a user.
QUIET_UNITS=(prometheus.service prometheus-blackbox-exporter.service transmission-daemon.service
             syncthing@root.service)

quiet_units() {
  [ "$(id -u)" -eq 0 ] || return 0
  # Without systemd (containers) the package's SysV script is what would start it.
  if [ -x /etc/init.d/transmission-daemon ]; then
    /etc/init.d/transmission-daemon stop >/dev/null 2>&1 || true
    update-rc.d transmission-daemon disable >/dev/null 2>&1 || true
  fi
  command -v systemctl >/dev/null 2>&1 || return 0
  for unit in "${QUIET_UNITS[@]}"; do
    if [ "$(systemctl is-enabled "$unit" 2>/dev/null || true)" != "masked" ]; then
      systemctl mask "$unit" >/dev/null 2>&1 || true
    fi
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl stop "$unit" >/dev/null 2>&1 || true
    fi
  done
}

# Real P2P implementations for the protocol-proof tests (tests/js_fixtures.py: js-libp2p, ChainSafe discv5,
# EthereumJS devp2p), from the npm registry, pinned by tests/js_peers/package-lock.json; reinstalled only when
# the lock file changed.
js_deps() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/js_peers"
  command -v npm >/dev/null 2>&1 || { echo "nodereach: npm missing (nodejs); the js peer tests will fail" >&2; return 0; }
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "nodereach: installing the js peers (npm ci in tests/js_peers)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then quiet_units; js_deps; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "nodereach: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 2
fi
echo "nodereach: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
quiet_units  # masked before the install: the package's postinst then cannot start them
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
quiet_units
js_deps
