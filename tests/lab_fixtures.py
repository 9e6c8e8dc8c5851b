"""pytest fixtures for the lab (imported by tests/conftest.py).

    def test_something(lab):
        net = lab("cgnat")                      # a running lab, shared across the session, conntrack flushed
        net.exec("client", ["ip", "route"])

    def test_mutating(private_lab):
        net = private_lab("port-restricted")    # a lab of your own, torn down after the test

`lab(name, home_router=False, delay_ms=0.0, loss=0.0, filtered_ports=None, udp_timeout_s=None)` reuses one
running lab per (scenario, options) for the whole session: tests share scenarios instead of rebuilding them.
Before it is handed out, port forwards, NAT bindings (conntrack) and learned cone state are reset, and on a home-router
lab miniupnpd is (re)started if a previous test stopped it or changed its protocols. Labs are torn down at
session end (and on Ctrl-C / SIGTERM by nodereach.lab itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from nodereach.lab import Lab

__all__ = ["LabPool", "lab", "lab_pool", "private_lab"]


def _require_lab() -> None:
    """tests/conftest.py's require_lab (pytest imports it as `conftest` in the default import mode)."""
    try:
        from conftest import require_lab
    except ImportError:  # another import mode: the same rule, inline
        from nodereach.errors import NodereachError
        from nodereach.lab import check_environment

        try:
            check_environment()
        except NodereachError as exc:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI must run every lab test, but: {exc}")
            pytest.skip(str(exc))
        return
    require_lab()


class LabPool:
    """One running lab per (scenario, options); reset before each hand-out."""

    def __init__(self) -> None:
        self.labs: dict[tuple[Any, ...], Lab] = {}
        self.builds = 0

    @staticmethod
    def key(scenario: str, home_router: bool, delay_ms: float, loss: float,
            filtered_ports: Sequence[int] | None, udp_timeout_s: int | None) -> tuple[Any, ...]:
        ports = tuple(sorted(filtered_ports)) if filtered_ports is not None else None
        return (scenario, bool(home_router), float(delay_ms), float(loss), ports, udp_timeout_s)

    def get(self, scenario: str, home_router: bool = False, delay_ms: float = 0.0, loss: float = 0.0,
            filtered_ports: Sequence[int] | None = None, udp_timeout_s: int | None = None) -> Lab:
        key = self.key(scenario, home_router, delay_ms, loss, filtered_ports, udp_timeout_s)
        lab = self.labs.get(key)
        if lab is None or not lab.built:
            lab = Lab(scenario, home_router=home_router, delay_ms=delay_ms, loss=loss,
                      filtered_ports=filtered_ports, udp_timeout_s=udp_timeout_s).build()
            self.builds += 1
            self.labs[key] = lab
            return lab
        lab.reset()
        if home_router:
            daemons = lab.daemons
            default = {"upnp": True, "natpmp": True}
            if daemons.miniupnpd is None or daemons.miniupnpd.poll() is not None \
                    or daemons.miniupnpd_opts != default:
                lab.start_miniupnpd()
        return lab

    def close(self) -> None:
        labs, self.labs = list(self.labs.values()), {}
        for lab in labs:
            lab.teardown()


@pytest.fixture(scope="session")
def lab_pool() -> Iterator[LabPool]:
    pool = LabPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def lab(lab_pool: LabPool) -> Callable[..., Lab]:
    """Factory: lab(name, **opts) -> a shared running lab, reset for this test."""

    def get(name: str, **opts: Any) -> Lab:
        _require_lab()
        return lab_pool.get(name, **opts)

    return get


@pytest.fixture
def private_lab() -> Iterator[Callable[..., Lab]]:
    """Factory for labs owned by one test (for tests that renumber, impair or break things)."""
    mine: list[Lab] = []

    def build(name: str, **opts: Any) -> Lab:
        _require_lab()
        new = Lab(name, **opts).build()
        mine.append(new)
        return new

    try:
        yield build
    finally:
        for one in mine:
            one.teardown()
