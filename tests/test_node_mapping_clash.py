"""`open`'s question to the node before it maps: does the node map these ports itself, or can that not be told?"""

from __future__ import annotations

import asyncio
import time

from nodereach.net import PortSpec
from nodereach.node.choice import NodeChoice
from nodereach.node.mapping_clash import node_mapping_clash
from reach_helpers import tcp_server


async def _never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)  # the request, then silence (a node's RPC thread busy, as Transmission's can be)
    await asyncio.sleep(30)


async def test_a_node_that_does_not_answer_is_said_to_be_unread_not_taken_as_not_mapping() -> None:
    async with tcp_server(_never_answers) as port:
        choice = NodeChoice.parse(f"transmission=http://127.0.0.1:{port}/transmission/rpc")
        started = time.monotonic()
        got = await node_mapping_clash([PortSpec(51413, "tcp")], choice, budget_s=0.5)
        took = time.monotonic() - started
    assert got.refuse is None
    assert got.unread is not None and "51413/tcp" in got.unread and "not known" in got.unread
    assert f"127.0.0.1:{port}" in got.unread
    assert took < 3.0  # bounded by the budget (generous for a loaded host), not by the silent server


async def test_no_node_named_or_found_says_nothing() -> None:
    got = await node_mapping_clash([PortSpec(51413, "tcp")], NodeChoice.parse("none"), budget_s=0.5)
    assert got.refuse is None and got.unread is None
