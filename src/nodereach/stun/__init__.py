"""STUN (RFC 8489, RFC 5780): sans-IO wire format, asyncio client and server."""
