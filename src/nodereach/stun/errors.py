"""Typed STUN errors: bad bytes, no answer, a failed TCP connection, an error response."""

from __future__ import annotations

from nodereach.errors import NodereachError


class StunError(NodereachError):
    """Base of every error the STUN stack raises."""


class StunParseError(StunError):
    """Bytes that are not a well-formed STUN message. The only exception the parsers raise."""


class StunTimeout(StunError):
    """No acceptable reply before the deadline (after all retransmissions)."""


class StunConnectionError(StunError):
    """A TCP connection to a STUN server failed: refused, reset, unreachable, closed without a reply."""

    def __init__(self, message: str, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.reason = reason
        """Short, for a report: "refused", the OS error text, "connection closed without a STUN reply"."""


class StunErrorResponse(StunError):
    """The server answered with an error response (ERROR-CODE). The STUN client raises its subclass
    nodereach.stun.transaction.BindingErrorResponse, which also carries the answer as a value (`reply`)."""

    def __init__(self, code: int, reason: str, unknown: tuple[int, ...] = (),
                 alternate: tuple[str, int] | None = None) -> None:
        super().__init__(f"STUN error {code} {reason}".strip())
        self.code = code
        self.reason = reason
        self.unknown = unknown
        """UNKNOWN-ATTRIBUTES of a 420."""
        self.alternate = alternate
        """ALTERNATE-SERVER of a 300 (Try Alternate)."""
