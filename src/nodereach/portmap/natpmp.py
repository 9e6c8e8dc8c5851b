"""NAT-PMP (RFC 6886) wire format, sans-IO. Parses raise MalformedMessage and nothing else on hostile bytes.

A PCP-only server answers a NAT-PMP request with a PCP reply (version 2, UNSUPP_VERSION; RFC 6887 §9):
that parses as a Response with `version=2` and raise_for_result says to use PCP.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from nodereach.net import Transport
from nodereach.portmap.errors import MalformedMessage, ResultCodeError, UnsupportedVersion

VERSION = 0
PORT = 5351
MAX_MESSAGE = 1100  # a reply longer than any PCP message is hostile

OP_EXTERNAL = 0
OP_MAP_UDP = 1
OP_MAP_TCP = 2

SUCCESS = 0
UNSUPP_VERSION = 1
NOT_AUTHORIZED = 2
NETWORK_FAILURE = 3
NO_RESOURCES = 4
UNSUPP_OPCODE = 5

RESULTS: dict[int, tuple[str, str, str | None]] = {
    UNSUPP_VERSION: ("UNSUPP_VERSION", "the gateway does not speak NAT-PMP version 0", "try --method pcp or upnp"),
    NOT_AUTHORIZED: ("NOT_AUTHORIZED", "the gateway refuses mappings (NAT-PMP disabled or not allowed for this "
                     "host)", "enable NAT-PMP on the router, or forward the port by hand"),
    NETWORK_FAILURE: ("NETWORK_FAILURE", "the gateway has no external address right now",
                      "check the router's internet connection and retry"),
    NO_RESOURCES: ("NO_RESOURCES", "the gateway is out of mappings", "remove unused mappings"),
    UNSUPP_OPCODE: ("UNSUPP_OPCODE", "the gateway does not support this operation", None),
}

OPCODES: dict[str, int] = {"udp": OP_MAP_UDP, "tcp": OP_MAP_TCP}


@dataclass(frozen=True, slots=True)
class Response:
    """One NAT-PMP reply. External-address replies set external_address; map replies set the ports."""

    opcode: int
    result_code: int
    epoch: int
    external_address: str | None = None
    internal_port: int | None = None
    external_port: int | None = None
    lifetime: int | None = None
    version: int = VERSION

    @property
    def ok(self) -> bool:
        return self.result_code == SUCCESS


def encode_external_address() -> bytes:
    """Request for the gateway's external IPv4 address (§3.2)."""
    return bytes((VERSION, OP_EXTERNAL))


def encode_map(protocol: Transport, internal_port: int, external_port: int, lifetime: int) -> bytes:
    """Map request (§3.3). lifetime=0 with external_port=0 deletes the mapping of internal_port (§3.4)."""
    if not 0 <= internal_port <= 0xFFFF or not 0 <= external_port <= 0xFFFF:
        raise ValueError("port out of range")
    if not 0 <= lifetime <= 0xFFFFFFFF:
        raise ValueError("lifetime out of range")
    return struct.pack("!BBHHHI", VERSION, OPCODES[protocol], 0, internal_port, external_port, lifetime)


def encode_delete(protocol: Transport, internal_port: int) -> bytes:
    return encode_map(protocol, internal_port, 0, 0)


def decode_response(data: bytes) -> Response:
    """Parse a NAT-PMP reply; MalformedMessage on anything else."""
    if len(data) < 4:
        raise MalformedMessage(f"NAT-PMP reply too short ({len(data)} bytes)")
    if len(data) > MAX_MESSAGE:
        raise MalformedMessage(f"NAT-PMP reply too long ({len(data)} bytes)")
    version, op = data[0], data[1]
    if version != VERSION:
        # A PCP server's answer: version, R|opcode, reserved, result (RFC 6887 §9).
        if op & 0x80 and data[3] == UNSUPP_VERSION:
            return Response(op & 0x7F, UNSUPP_VERSION, 0, version=version)
        raise MalformedMessage(f"NAT-PMP reply with version {version}")
    if not op & 0x80:
        raise MalformedMessage("NAT-PMP message is a request, not a reply")
    opcode = op & 0x7F
    if opcode not in (OP_EXTERNAL, OP_MAP_UDP, OP_MAP_TCP):
        raise MalformedMessage(f"NAT-PMP reply with unknown opcode {opcode}")
    result = struct.unpack_from("!H", data, 2)[0]
    if result != SUCCESS and len(data) < 8:
        return Response(opcode, result, 0)  # some servers send only the header on errors
    if len(data) < 8:
        raise MalformedMessage("NAT-PMP reply truncated")
    epoch = struct.unpack_from("!I", data, 4)[0]
    if opcode == OP_EXTERNAL:
        if len(data) < 12:
            if result != SUCCESS:
                return Response(opcode, result, epoch)
            raise MalformedMessage("NAT-PMP external-address reply truncated")
        address = str(ipaddress.IPv4Address(data[8:12]))
        return Response(opcode, result, epoch, external_address=address)
    if len(data) < 16:
        if result != SUCCESS:
            return Response(opcode, result, epoch)
        raise MalformedMessage("NAT-PMP map reply truncated")
    iport, eport, lifetime = struct.unpack_from("!HHI", data, 8)
    return Response(opcode, result, epoch, internal_port=iport, external_port=eport, lifetime=lifetime)


def matches_map(protocol: Transport, internal_port: int, resp: Response) -> bool:
    """Does a reply answer our map request (opcode and internal port)? Others are ignored."""
    if resp.result_code == UNSUPP_VERSION:
        return True
    if resp.opcode != OPCODES[protocol]:
        return False
    return resp.internal_port is None or resp.internal_port == internal_port


def raise_for_result(resp: Response) -> None:
    if resp.result_code == SUCCESS:
        return
    if resp.version != VERSION:
        raise UnsupportedVersion(f"the gateway speaks PCP version {resp.version}, not NAT-PMP", resp.version)
    name, message, hint = RESULTS.get(resp.result_code, (f"RESULT_{resp.result_code}", "unknown result code", None))
    if resp.result_code == UNSUPP_VERSION:
        raise UnsupportedVersion(f"NAT-PMP: {message}", resp.version)
    raise ResultCodeError("NAT-PMP", resp.result_code, name, message, hint)
