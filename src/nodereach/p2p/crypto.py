"""Keccak-256, secp256k1 and AES-128 from maintained libraries, imported on first use.

keccak-256 is the original Keccak submission Ethereum uses, not FIPS-202 SHA3-256 (`hashlib.sha3_256`
differs in padding and gives other digests). Signatures: Ethereum's 65-byte recoverable form is
r || s || recovery id (0/1), which is also coincurve's; ENR "v4" signatures are 64-byte r || s.
"""

from __future__ import annotations

import secrets

from nodereach.p2p.errors import P2PDecodeError


def keccak256(data: bytes) -> bytes:
    from Crypto.Hash import keccak

    return keccak.new(data=data, digest_bits=256).digest()


def new_private_key() -> bytes:
    """A random secp256k1 secret (an ephemeral identity: discv4 PING is signed with one per probe)."""
    from coincurve import PrivateKey

    return bytes(PrivateKey(secrets.token_bytes(32)).secret)


def public_key(secret: bytes, *, compressed: bool) -> bytes:
    from coincurve import PrivateKey

    return PrivateKey(secret).public_key.format(compressed=compressed)


def sign_recoverable(secret: bytes, digest: bytes) -> bytes:
    """65-byte r || s || v (v in 0..1) over a 32-byte digest (RFC 6979 nonce: deterministic)."""
    from coincurve import PrivateKey

    return PrivateKey(secret).sign_recoverable(digest, hasher=None)


def sign_compact(secret: bytes, digest: bytes) -> bytes:
    """64-byte r || s (low s) over a 32-byte digest: the ENR "v4" signature."""
    return sign_recoverable(secret, digest)[:64]


def recover(signature: bytes, digest: bytes) -> bytes:
    """The 64-byte uncompressed public key (x || y) that made a 65-byte recoverable signature."""
    from coincurve import PublicKey

    if len(signature) != 65 or signature[64] > 3:
        raise P2PDecodeError("a recoverable signature is 65 bytes ending in a recovery id 0..3")
    try:
        key = PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except (ValueError, TypeError) as exc:
        raise P2PDecodeError(f"signature does not recover a public key ({exc})") from None
    return key.format(compressed=False)[1:]


def verify_compact(pubkey: bytes, signature: bytes, digest: bytes) -> bool:
    """Is a 64-byte r || s signature over `digest` made by `pubkey` (33 or 65 bytes)? High-s signatures are
    rejected, as libsecp256k1 (and so geth) rejects them."""
    from coincurve import PublicKey
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    if len(signature) != 64:
        return False
    try:
        key = PublicKey(pubkey)
        der = cdata_to_der(deserialize_compact(signature))
        return bool(key.verify(der, digest, hasher=None))
    except (ValueError, TypeError):
        return False


def decompress(pubkey: bytes) -> bytes:
    """33-byte compressed (or 65-byte 0x04-prefixed) public key -> 64-byte x || y; P2PDecodeError if not on
    the curve."""
    from coincurve import PublicKey

    try:
        return PublicKey(pubkey).format(compressed=False)[1:]
    except (ValueError, TypeError) as exc:
        raise P2PDecodeError(f"not a secp256k1 public key ({exc})") from None


def compress(xy: bytes) -> bytes:
    """64-byte x || y -> 33-byte compressed key; P2PDecodeError if not on the curve."""
    if len(xy) != 64:
        raise P2PDecodeError("an uncompressed public key is 64 bytes (x || y)")
    from coincurve import PublicKey

    try:
        return PublicKey(b"\x04" + xy).format(compressed=True)
    except (ValueError, TypeError) as exc:
        raise P2PDecodeError(f"not a secp256k1 public key ({exc})") from None


def node_id(xy: bytes) -> bytes:
    """An Ethereum node id: keccak-256 of the 64-byte uncompressed public key (x || y)."""
    return keccak256(xy)


def aes128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128 in CTR mode with the whole 16-byte IV as the (big-endian, 128-bit) initial counter: the same
    call encrypts and decrypts."""
    from Crypto.Cipher import AES

    return AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(data)


def aes128_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """ciphertext || 16-byte tag (discv5 message encryption; used to build spec vectors in tests)."""
    from Crypto.Cipher import AES

    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(ad)
    ct, tag = cipher.encrypt_and_digest(plaintext)
    return ct + tag
