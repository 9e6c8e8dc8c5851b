"""Well-known ports and limits shared by the servers and the clients, so `check --server A` finds it all."""

STUN_PORT = 3478
"""Primary STUN port (UDP and TCP), RFC 8489."""
STUN_ALT_PORT = 3479
"""Second STUN port used by full RFC 5780 mode."""
HTTP_PORT = 3480
"""Dial-back HTTP API (/v1/...), web page, /metrics and /healthz on `nodereach serve`."""
