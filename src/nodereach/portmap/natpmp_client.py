"""NAT-PMP driver (RFC 6886) over asyncio UDP: external address, map, renew, delete."""

from __future__ import annotations

from collections.abc import Callable

from nodereach.portmap import natpmp
from nodereach.portmap.announce import listen_for
from nodereach.portmap.base import Grant, Listener, Method, Poll, Slot
from nodereach.portmap.clock import REAL_CLOCK, Clock
from nodereach.portmap.epoch import EpochTracker
from nodereach.portmap.udp import exchange


class NatPmpClient:
    method: Method = "natpmp"

    def __init__(self, gateway: str, *, timeout: float, port: int = natpmp.PORT,
                 clock: Clock = REAL_CLOCK) -> None:
        self.gateway = gateway
        self.port = port
        self.timeout = timeout
        self.clock = clock
        """Epoch checks compare the gateway's clock with this one."""
        self.epochs = EpochTracker("natpmp")
        self.restarted = False

    def _observe(self, resp: natpmp.Response) -> None:
        if resp.version == natpmp.VERSION and not self.epochs.observe(resp.epoch, self.clock.time()):
            self.restarted = True

    async def external_address(self) -> str | None:
        def parse(data: bytes) -> natpmp.Response | None:
            resp = natpmp.decode_response(data)
            return resp if resp.opcode == natpmp.OP_EXTERNAL or resp.version != natpmp.VERSION else None

        resp = await exchange(self.gateway, self.port, lambda _local: natpmp.encode_external_address(), parse,
                              wait=self.timeout, what="NAT-PMP external address")
        natpmp.raise_for_result(resp)
        self._observe(resp)
        return resp.external_address

    async def _map(self, slot: Slot, external_port: int, lifetime: int, what: str) -> natpmp.Response:
        request = natpmp.encode_map(slot.protocol, slot.internal_port, external_port, lifetime)

        def parse(data: bytes) -> natpmp.Response | None:
            resp = natpmp.decode_response(data)
            return resp if natpmp.matches_map(slot.protocol, slot.internal_port, resp) else None

        resp = await exchange(self.gateway, self.port, lambda _local: request, parse, wait=self.timeout, what=what)
        self._observe(resp)
        natpmp.raise_for_result(resp)
        return resp

    async def map(self, slot: Slot, external_port: int, lifetime: int) -> Grant:
        resp = await self._map(slot, external_port, lifetime, f"NAT-PMP map {slot.internal_port}/{slot.protocol}")
        assert resp.external_port is not None and resp.lifetime is not None
        address = await self.external_address()  # map replies carry no address (§3.3)
        return Grant(slot.protocol, slot.internal_port, resp.external_port, address, resp.lifetime)

    async def unmap(self, slot: Slot) -> None:
        await self._map(slot, 0, 0, f"NAT-PMP delete {slot.internal_port}/{slot.protocol}")

    async def poll(self, slots: list[Slot]) -> Poll:
        address = await self.external_address()
        restarted, self.restarted = self.restarted, False
        return Poll(restarted=restarted, external_address=address)

    async def watch(self, nudge: Callable[[], None]) -> Listener | None:
        """PCP ANNOUNCE and NAT-PMP address notices go to 224.0.0.1:5350 (miniupnpd sends one PCP ANNOUNCE
        as it starts, measured in the lab)."""
        return await listen_for(self.gateway, self.port, nudge)

    async def close(self) -> None:
        return None
