"""What the operator said about the node: which kind to read (`--node`), and where its credentials are.

Parsed before any probe runs, so this module imports nothing of the node stack (catalog, listeners, reader,
adapters: ~25 ms of imports that the check does in its warm-up thread instead, diagnose.warm).
"""

from __future__ import annotations

from typing import Literal

import msgspec

AdapterKind = Literal["bitcoin", "ethereum", "beacon", "kubo", "monero", "lnd", "transmission", "syncthing"]
ADAPTER_KINDS: tuple[AdapterKind, ...] = ("bitcoin", "ethereum", "beacon", "kubo", "monero", "lnd", "transmission",
                                          "syncthing")
ALIASES: dict[str, AdapterKind] = {"bitcoind": "bitcoin", "geth": "ethereum", "eth": "ethereum",
                                   "execution": "ethereum", "consensus": "beacon", "ipfs": "kubo",
                                   "monerod": "monero", "transmission-daemon": "transmission"}


class NodeSpec(msgspec.Struct, frozen=True):
    """What `--node` said: a kind (None: detect), and where its RPC is (None: the kind's default)."""

    kind: AdapterKind | None
    where: str | None = None

    @classmethod
    def parse(cls, text: str) -> NodeSpec:
        """`KIND`, `KIND=URL`, `KIND=/path/to/geth.ipc`, or `auto`. ValueError names the kinds."""
        kind, sep, where = text.strip().partition("=")
        kind = kind.strip().lower()
        if kind == "auto" and not sep:
            return cls(None)
        kind = ALIASES.get(kind, kind)
        if kind not in ADAPTER_KINDS:
            raise ValueError(f"unknown node kind {kind!r}; use one of: {', '.join(ADAPTER_KINDS)}, or auto")
        if sep and not where.strip():
            raise ValueError(f"--node {kind}= needs a URL or a socket path after '='")
        return cls(kind, where.strip() or None)


class NodeChoice(msgspec.Struct, frozen=True):
    """What `--node` said: read this node, detect one (`auto`, the default), or none (`--node none`)."""

    spec: NodeSpec | None = None
    auto: bool = True

    @classmethod
    def parse(cls, text: str | None) -> NodeChoice:
        if text is None or text.strip().lower() == "auto":
            return cls(None, True)
        if text.strip().lower() == "none":
            return cls(None, False)
        return cls(NodeSpec.parse(text), False)


class Secrets(msgspec.Struct, frozen=True):
    """Where to find credentials beyond the defaults (from the config file or the API)."""

    cookie_file: str | None = None
    macaroon_file: str | None = None
    tls_cert_file: str | None = None
    api_key: str | None = None

    def __repr__(self) -> str:  # the key itself never lands in a log or a traceback
        return (f"Secrets(cookie_file={self.cookie_file!r}, macaroon_file={self.macaroon_file!r}, "
                f"tls_cert_file={self.tls_cert_file!r}, api_key={'...' if self.api_key else None})")


NO_SECRETS = Secrets()
