"""Typed port-mapping errors: every failure a user can see says what happened and what to do next."""

from __future__ import annotations

from nodereach.errors import NodereachError


class PortmapError(NodereachError):
    """Base for port-mapping failures (exit code 2 from the CLI, one line, never a traceback)."""


class MalformedMessage(PortmapError):
    """A PCP/NAT-PMP/SSDP/SOAP message that does not parse; the only error a codec raises on hostile bytes."""

    def __init__(self, message: str) -> None:
        super().__init__(f"malformed reply from the gateway: {message}")


class GatewayTimeout(PortmapError):
    """The gateway did not answer before the deadline."""


class UnsupportedVersion(PortmapError):
    """The gateway speaks the other protocol of the PCP/NAT-PMP pair (RFC 6887 §9)."""

    def __init__(self, message: str, server_version: int) -> None:
        super().__init__(message)
        self.server_version = server_version


class ResultCodeError(PortmapError):
    """The gateway refused a request with a protocol result code."""

    def __init__(self, method: str, code: int, name: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{method}: {name} ({code}): {message}", hint)
        self.method = method
        self.code = code
        self.name = name


class GatewayRestarted(PortmapError):
    """The gateway lost its state (epoch rule or a missing UPnP entry): mappings must be re-created."""


class NotAvailable(PortmapError):
    """No port-mapping protocol answered (or the forced one did not)."""


class NotOffered(NotAvailable):
    """The gateway answers but does not offer what is needed (no IPv6 firewall control, pinholes refused)."""


def reason_code(exc: BaseException) -> str:
    """The short reason a probe reports for a failure (`timeout`, `port-unreachable`, `refused:NAME`, ...)."""
    if isinstance(exc, GatewayTimeout):
        return "timeout"
    if isinstance(exc, NotOffered):
        return "not-offered"
    if isinstance(exc, NotAvailable):
        return "port-unreachable"
    if isinstance(exc, UnsupportedVersion):
        return "unsupported-version"
    if isinstance(exc, ResultCodeError):
        return f"refused:{exc.name}"
    if isinstance(exc, MalformedMessage):
        return "malformed"
    return "error"
