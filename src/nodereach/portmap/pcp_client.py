"""PCP driver (RFC 6887) over asyncio UDP: MAP with a per-mapping nonce, renew, delete, ANNOUNCE, PEER."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nodereach.net import Transport
from nodereach.portmap import pcp
from nodereach.portmap.announce import listen, listen_for
from nodereach.portmap.base import Grant, Listener, Method, Poll, Slot
from nodereach.portmap.clock import REAL_CLOCK, Clock
from nodereach.portmap.epoch import EpochTracker
from nodereach.portmap.errors import PortmapError, ResultCodeError
from nodereach.portmap.multicast import Joined
from nodereach.portmap.udp import exchange


class PcpClient:
    method: Method = "pcp"

    def __init__(self, gateway: str, *, timeout: float, port: int = pcp.PORT,
                 clock: Clock = REAL_CLOCK, local_address: str | None = None) -> None:
        self.gateway = gateway
        self.local_address = local_address
        """Our end, when it must be one address (an IPv6 pinhole for the host's stable global address)."""
        self.pinhole_closer: Callable[[Transport, int], Awaitable[None]] | None = None
        """IPv6: another way to close a pinhole when the PCP delete is refused (UPnP, see unmap)."""
        self.ipv4_sibling: tuple[str, str] | None = None
        """IPv6 driver on a dual-stack LAN: (IPv4 gateway, our IPv4 address) of the same router, whose
        224.0.0.1 announcements count too: miniupnpd 2.3.1 sends its start-up ANNOUNCE there only (measured)."""
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
                              local=self.local_address, what="PCP ANNOUNCE")
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

        resp = await exchange(self.gateway, self.port, build, parse, wait=self.timeout, local=self.local_address,
                              what=what)
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

        try:
            await self._request(make, f"PCP delete {slot.internal_port}/{slot.protocol}")
        except ResultCodeError as exc:
            if exc.code != pcp.NOT_AUTHORIZED or ":" not in self.gateway:
                raise
            # miniupnpd 2.3.1 (nftables) refuses to delete an IPv6 pinhole it has renewed: its renewal re-adds
            # the rule with an empty description (netfilter_nft/nftpinhole.c, update_pinhole()), and the delete
            # compares that description with "PCP MAP <nonce>" (pcpserver.c, DeletePCPMap()). Measured in the
            # lab. The same router's UPnP IPv6 firewall control closes it by UniqueID instead.
            failed = PortmapError(f"{exc.message}: the router would not close the IPv6 pinhole it renewed (a "
                                  "known miniupnpd fault), and closing it through UPnP failed too",
                                  "it closes by itself when its lease ends")
            if self.pinhole_closer is None:
                raise failed from exc
            try:
                await self.pinhole_closer(slot.protocol, slot.internal_port)
            except PortmapError as other:
                raise failed from other

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
        """PCP ANNOUNCE goes to 224.0.0.1:5350 or ff02::1 port 5350 (RFC 6887 §14.1.3); miniupnpd sends one
        as it starts, to 224.0.0.1 only (measured in the lab), so an IPv6 driver listens there too."""
        joined = [t for t in [await listen_for(self.gateway, self.port, nudge)] if t is not None]
        if self.ipv4_sibling is not None:
            gateway4, local4 = self.ipv4_sibling
            extra = await listen(gateway4, local4, nudge)
            if extra is not None:
                joined.append(extra)
        return Joined(joined) if joined else None

    async def close(self) -> None:
        return None
