"""The errors the p2p decoders raise: one base, one subclass per format, never any other exception on input."""

from __future__ import annotations


class P2PDecodeError(ValueError):
    """Bytes or text that are not a valid instance of the format (the message says what is wrong)."""


class RlpError(P2PDecodeError):
    pass


class EnrError(P2PDecodeError):
    pass


class EnodeError(P2PDecodeError):
    pass


class MultiaddrError(P2PDecodeError):
    pass


class AddressError(P2PDecodeError):
    """An advertised host:port (lnd uri, Bitcoin local address) that cannot be read."""


class ProtocolError(P2PDecodeError):
    """A peer's answer in a node protocol (Bitcoin, Levin, multistream, BitTorrent, discv4/5) is malformed."""
