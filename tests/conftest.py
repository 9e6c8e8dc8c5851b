"""Shared test setup. Lab fixtures live in tests/lab_fixtures.py (imported here)."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import settings

# Property tests judge correctness, not speed: hypothesis' per-example deadline (200 ms) fails them at random
# whenever other work shares the machine's cores. Speed lives in benchmarks/.
settings.register_profile("nodereach", deadline=None)
settings.load_profile("nodereach")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def lab_unavailable_reason() -> str | None:
    """Why lab tests cannot run here, or None. Needs root, `ip` and `nft`."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    for binary in ("ip", "nft"):
        if shutil.which(binary) is None:
            return f"lab tests need `{binary}` (apt-get install iproute2 nftables)"
    return None


def require_lab() -> None:
    """Skip where namespaces are missing; in CI (root, everything installed) a skip is a failure."""
    reason = lab_unavailable_reason()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI must run every lab test, but: {reason}")
    pytest.skip(reason)


from js_fixtures import js_peer  # noqa: E402, F401  (js-libp2p, discv5, discv4 from npm in lab namespaces)
from lab_fixtures import *  # noqa: E402, F403  (lab, private_lab, lab_pool, ipv6_home_router)
from node_fixtures import node_daemons  # noqa: E402, F401  (real node software in lab namespaces)
