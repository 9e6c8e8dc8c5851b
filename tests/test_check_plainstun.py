"""Only plain STUN servers (no RFC 5780, no dial-back), one of them coturn: mapping comes from comparing the
servers, filtering and inbound reachability are `unknown`/untested with a reason, and the advice says how to
test them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from test_check_lab import BIN, run_check

pytestmark = pytest.mark.lab


def _basic_stun(net: Lab) -> None:
    net.start_coturn(rfc5780=False)
    net.spawn("server", [BIN, "serve", "--address", A.SERVER_IP, "--no-dialback"], stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:  # wait until nodereach's basic STUN answers (a TCP connect to 3478 is enough)
        r = net.exec("server", ["bash", "-c", f"exec 3<>/dev/tcp/{A.SERVER_IP}/3478"], check=False)
        if r.returncode == 0:
            return
        assert time.monotonic() < deadline, "basic STUN server did not start"
        time.sleep(0.05)


@pytest.mark.parametrize(("scenario", "mapping"), [("port-restricted", "endpoint-independent"),
                                                   ("symmetric", "address-and-port-dependent")])
def test_mapping_from_plain_servers(private_lab, tmp_path: Path, scenario: str, mapping: str) -> None:  # type: ignore[no-untyped-def]
    net: Lab = private_lab(scenario)
    _basic_stun(net)
    cfg = tmp_path / "check.toml"
    cfg.write_text(f'stun_servers = ["{A.COTURN_IP}", "{A.SERVER_IP}"]\nports = ["30303/udp"]\n')
    net.exec("client", ["mkdir", "-p", str(tmp_path)])
    code, doc, _err, _took = run_check(net, "--config", str(cfg))
    nat = doc["nat"]
    assert nat["mapping"] == mapping
    assert nat["present"] is True and nat["layers"] == 1 and nat["cgnat"] is False
    assert nat["filtering"] == "unknown" and nat["unknown_reasons"]["filtering"]
    assert [s["kind"] for s in doc["servers"]] == ["stun", "stun"] and all(s["answered"] for s in doc["servers"])
    # check/2: nothing listens on 30303/udp (not reachable); no dial-back server, so the path is untested
    assert doc["ports"][0]["reachable"] is False and doc["ports"][0]["reason"] == "nothing-listening"
    assert doc["ports"][0]["path_open"] is None
    assert "untested" in doc["causes"] and doc["advice"][-1]["code"] == "get-nodereach-server"
    assert any("dial-back" in u for u in doc["untested"])
    assert code == 1
