"""STUN (RFC 8489, RFC 5780): sans-IO wire format, asyncio client and server.

- `nodereach.stun.message` / `attributes` / `framing`: parse and build messages (no I/O).
- `nodereach.stun.client`: StunClient, many concurrent transactions on one UDP socket (or TCP).
- `nodereach.stun.server`: StunServer, basic or full RFC 5780 mode, rate limited; `python -m nodereach.stun`
  runs it as a process (`nodereach.stun.script`). `nodereach.stun.fastpath`: its sans-IO fast path for the
  common requests with attributes, tested byte for byte against the server's full path.
"""

from nodereach.stun.errors import StunError, StunErrorResponse, StunParseError, StunTimeout
from nodereach.stun.message import StunMessage, binding_request, encode_message, parse_message

__all__ = ["StunError", "StunErrorResponse", "StunMessage", "StunParseError", "StunTimeout", "binding_request",
           "encode_message", "parse_message"]
