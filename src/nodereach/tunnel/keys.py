"""WireGuard keys (Curve25519), from the `cryptography` library: no hand-written crypto."""

from __future__ import annotations

import base64

from nodereach.tunnel.wireguard import KeyPair


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def generate() -> KeyPair:
    """A fresh key pair in WireGuard's text format (what `wg genkey | wg pubkey` prints)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(private=_b64(private), public=_b64(public))


def public_of(private_b64: str) -> str:
    """The public key of a WireGuard private key (`wg pubkey`); ValueError for anything else."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        raw = base64.b64decode(private_b64.strip(), validate=True)
    except ValueError:
        raise ValueError("a WireGuard key is 44 characters of base64") from None
    if len(raw) != 32:
        raise ValueError("a WireGuard key is 32 bytes (44 characters of base64)")
    return _b64(X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
