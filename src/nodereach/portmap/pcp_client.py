"""PCP driver (RFC 6887) over asyncio UDP: MAP with a per-mapping nonce, renew, delete, ANNOUNCE, PEER."""

from __future__ import annotations

from collections.abc import Callable

from nodereach.net import Transport
from nodereach.portmap import pcp
from nodereach.portmap.announce import listen_for
from nodereach.portmap.base import Grant, Listener, Method, Poll, Slot
from nodereach.portmap.clock import REAL_CLOCK, Clock
from nodereach.portmap.epoch import EpochTracker
from nodereach.portmap.udp import exchange


class PcpClient:
    method: Method = "pcp"

    def __init__(self, gateway: str, *, timeout: float, port: int = pcp.PORT,
                 clock: Clock = REAL_CLOCK) -> None:
        self.gateway = gateway
        self.port = port
        self.timeout = timeout
        self.clock = clock
        """Epoch checks compare the gateway's clock with this one."""
        self.epochs = EpochTracker("pcp")
        self.restarted = False
        self.last_external: str | None = None

    def _observe(self, resp: pcp.Response) -> None:
        if resp.result_code != pcp.UNSUPP_VERSION and not self.epochs.observe(
                resp.epoch, self.clock.time()):
            self.restarted = True

    async def announce(self) -> int:
        """Probe: returns the server epoch (raises if no PCP server answers)."""

        def parse(data: bytes) -> pcp.Response | None:
            resp = pcp.decode_response(data)
            return resp if resp.opcode == pcp.OP_ANNOUNCE or resp.result_code == pcp.UNSUPP_VERSION else None

        resp = await exchange(self.gateway, self.port, pcp.encode_announce, parse, wait=self.timeout,
                              what="PCP ANNOUNCE")
        pcp.raise_for_result(resp)
        self._observe(resp)
        return resp.epoch

    async def _request(self, make: Callable[[str], pcp.MapRequest | pcp.PeerRequest], what: str) -> pcp.Response:
        holder: dict[str, pcp.MapRequest | pcp.PeerRequest] = {}

        def build(local: str) -> bytes:
            req = make(local)
            holder["req"] = req
            return pcp.encode_map(req) if isinstance(req, pcp.MapRequest) else pcp.encode_peer(req)

        def parse(data: bytes) -> pcp.Response | None:
            resp = pcp.decode_response(data)
            return resp if pcp.matches(holder["req"], resp) else None

        resp = await exchange(self.gateway, self.port, build, parse, wait=self.timeout, what=what)
        self._observe(resp)
        pcp.raise_for_result(resp)
        return resp

    async def map(self, slot: Slot, external_port: int, lifetime: int) -> Grant:
        """MAP (create or renew: same nonce, same internal port). The server may grant another port."""

        def make(local: str) -> pcp.MapRequest:
            return pcp.MapRequest(nonce=slot.nonce, protocol=slot.protocol, internal_port=slot.internal_port,
                                  lifetime=lifetime, client_address=local, suggested_external_port=external_port)

        resp = await self._request(make, f"PCP MAP {slot.internal_port}/{slot.protocol}")
        assert resp.external_port is not None
        self.last_external = resp.external_address
        return Grant(slot.protocol, slot.internal_port, resp.external_port, resp.external_address, resp.lifetime)

    async def unmap(self, slot: Slot) -> None:
        """Delete: MAP with lifetime 0 and the mapping's own nonce (another nonce is NOT_AUTHORIZED)."""

        def make(local: str) -> pcp.MapRequest:
            ext = slot.grant.external_port if slot.grant else 0
            return pcp.MapRequest(nonce=slot.nonce, protocol=slot.protocol, internal_port=slot.internal_port,
                                  lifetime=0, client_address=local, suggested_external_port=ext)

        await self._request(make, f"PCP delete {slot.internal_port}/{slot.protocol}")

    async def peer(self, nonce: bytes, protocol: Transport, internal_port: int, remote: tuple[str, int],
                   lifetime: int) -> Grant:
        """PEER (§12): learn or extend the mapping an outbound flow uses (not served by every gateway)."""

        def make(local: str) -> pcp.PeerRequest:
            return pcp.PeerRequest(nonce=nonce, protocol=protocol, internal_port=internal_port, lifetime=lifetime,
                                   client_address=local, remote_address=remote[0], remote_port=remote[1])

        resp = await self._request(make, f"PCP PEER {internal_port}/{protocol}")
        assert resp.external_port is not None
        return Grant(protocol, internal_port, resp.external_port, resp.external_address, resp.lifetime)

    async def poll(self, slots: list[Slot]) -> Poll:
        """Renew the first mapping (same nonce): it costs one packet and returns both epoch and address."""
        if slots and slots[0].grant is not None:
            slot = slots[0]
            assert slot.grant is not None
            grant = await self.map(slot, slot.grant.external_port, max(slot.grant.lifetime, 1))
            slot.grant = grant
        else:
            await self.announce()
        restarted, self.restarted = self.restarted, False
        return Poll(restarted=restarted, external_address=self.last_external)

    async def external_address(self) -> str | None:
        """PCP has no 'get address' request (RFC 6887 §11.6): the last MAP reply's address, if any."""
        return self.last_external

    async def watch(self, nudge: Callable[[], None]) -> Listener | None:
        """PCP ANNOUNCE and NAT-PMP address notices go to 224.0.0.1:5350 (miniupnpd sends one PCP ANNOUNCE
        as it starts, measured in the lab)."""
        return await listen_for(self.gateway, self.port, nudge)

    async def close(self) -> None:
        return None
