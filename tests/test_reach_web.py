"""The "Is my node reachable?" page in a real headless browser (Debian's chromium driven by playwright)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from nodereach.reach.limits import LimitsConfig
from nodereach.reach.service import DialbackConfig, DialbackService

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]



def _require_browser() -> None:
    """Skip without chromium/playwright locally; in CI (everything installed) that is a failure."""
    import conftest

    missing = None if os.path.exists(CHROMIUM) else f"{CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing = "the playwright python package"
    if missing:
        if conftest.IN_CI:
            pytest.fail(f"CI must run the browser test, but it needs {missing}")
        pytest.skip(f"needs {missing}")


@pytest.fixture
async def site() -> AsyncIterator[str]:
    limits = LimitsConfig(address_burst=100, network_burst=100)
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",), limits=limits, probe_timeout=1.0))
    bound = await svc.start(["127.0.0.1"], 0)
    try:
        yield f"http://127.0.0.1:{bound[0][1]}"
    finally:
        await svc.close()


@pytest.fixture
async def page() -> AsyncIterator[object]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = await browser.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pg.errors = errors  # type: ignore[attr-defined]
            yield pg
        finally:
            await browser.close()


async def check(page: object, port: int, protocol: str) -> tuple[str, str, list[str]]:
    pg = page  # playwright Page
    await pg.fill("#port", str(port))  # type: ignore[attr-defined]
    await pg.check(f"input[name=protocol][value={protocol}]")  # type: ignore[attr-defined]
    await pg.click("#check")  # type: ignore[attr-defined]
    await pg.wait_for_selector("#result:not([hidden])", timeout=5000)  # type: ignore[attr-defined]
    await pg.wait_for_selector("#check:not([disabled])", timeout=5000)  # type: ignore[attr-defined]
    verdict = await pg.inner_text("#verdict")  # type: ignore[attr-defined]
    cls = await pg.get_attribute("#result", "class")  # type: ignore[attr-defined]
    advice = await pg.locator("#advice li").all_inner_texts()  # type: ignore[attr-defined]
    return cls or "", verdict, advice


async def test_page_reports_open_closed_and_udp(site: str, page: object) -> None:
    pg = page
    await pg.goto(site + "/")  # type: ignore[attr-defined]
    assert await pg.title() == "Is my node reachable? · nodereach"  # type: ignore[attr-defined]
    await pg.wait_for_selector("#my-address:text-is('127.0.0.1')", timeout=5000)  # type: ignore[attr-defined]

    with socket.socket() as node:  # the visitor's node, listening
        node.bind(("127.0.0.1", 0))
        node.listen(8)
        cls, verdict, advice = await check(pg, node.getsockname()[1], "tcp")
    assert cls == "reachable" and verdict.startswith("Yes")
    assert any("Advertise this address" in a for a in advice)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cls, verdict, advice = await check(pg, closed, "tcp")
    assert cls == "unreachable" and verdict.startswith("No")
    assert "connection refused" in await pg.inner_text("#facts")  # type: ignore[attr-defined]
    assert any("Start the node" in a for a in advice) and any("port forward" in a for a in advice)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as node:  # a UDP node that never answers probes
        node.bind(("127.0.0.1", 0))
        port = node.getsockname()[1]
        cls, verdict, advice = await check(pg, port, "udp")
    assert cls == "unknown" and verdict.startswith("Unknown")
    assert any("cannot be confirmed from a browser" in a for a in advice)
    assert any(f"nodereach check --server 127.0.0.1 --port {port}/udp" in a for a in advice)
    assert await pg.inner_text("#cli-hint") == f"nodereach check --server 127.0.0.1 --port {port}/udp"  # type: ignore[attr-defined]

    cls, verdict, _ = await check(pg, 25, "tcp")  # refused port: the server says why
    assert cls == "error" and "refused list" in await pg.inner_text("#summary")  # type: ignore[attr-defined]
    # No JS errors or CSP violations; the one expected console line is the browser noting the 403 itself.
    assert [e for e in pg.errors if "status of 403" not in e] == []  # type: ignore[attr-defined]


async def test_page_served_with_security_headers(site: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(site + "/") as r:
        assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "Is my node reachable?" in await r.text()
    await asyncio.sleep(0)


async def test_page_over_ipv6(page: object) -> None:
    """The page reached at [::1]: the visitor's IPv6 address is tested over IPv6; the server has no second
    IPv6 address, so a Yes says it is weaker; advice speaks of the router's IPv6 firewall, not port forwards."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this host")
    limits = LimitsConfig(address_burst=100, network_burst=100)
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",), limits=limits, probe_timeout=1.0))
    port = (await svc.start(["127.0.0.1", "::1"], 0))[0][1]
    pg = page
    try:
        await pg.goto(f"http://[::1]:{port}/")  # type: ignore[attr-defined]
        await pg.wait_for_selector("#my-address:text-is('::1')", timeout=5000)  # type: ignore[attr-defined]
        with socket.socket(socket.AF_INET6) as node:
            node.bind(("::1", 0))
            node.listen(8)
            node_port = node.getsockname()[1]
            cls, verdict, advice = await check(pg, node_port, "tcp")
            facts = await pg.inner_text("#facts")  # type: ignore[attr-defined]
        assert cls == "reachable" and verdict.startswith("Yes")
        assert "::1" in facts and "no second IPv6 address" in facts and "weaker" in facts
        hint = await pg.inner_text("#cli-hint")  # type: ignore[attr-defined]
        assert hint == f"nodereach check --server ::1 --port {node_port}/tcp"  # no brackets for a shell to glob

        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            closed = s.getsockname()[1]
        cls, verdict, advice = await check(pg, closed, "tcp")
        assert cls == "unreachable" and "connection refused" in await pg.inner_text("#facts")  # type: ignore[attr-defined]
        assert any("IPv6 firewall" in a for a in advice) and not any("port forward" in a for a in advice)
        assert any(":: (all IPv6 interfaces)" in a for a in advice)
        assert pg.errors == []  # type: ignore[attr-defined]
    finally:
        await svc.close()
