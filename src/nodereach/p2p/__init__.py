"""What P2P networks speak: decoders of what nodes advertise and the first exchange of each node protocol.

Sans-IO and pure: every function here takes bytes or text and returns typed values or raises one of the
errors in `nodereach.p2p.errors`; the asyncio drivers that send and receive live in `nodereach.reach.proofs`.

- advertised addresses: `enr` (EIP-778 records), `enode` (enode:// URLs), `multiaddr` (libp2p), `addrs`
  (lnd `uris`, Bitcoin Core `localaddresses`), all turned into `advertised.Advertised` values;
- first exchanges: `bitcoin` (version), `levin` (Monero ping, with `portable_storage`), `multistream`
  (libp2p), `bittorrent` (BEP 3 handshake), `discv4` (PING -> PONG), `discv5` (packet -> WHOAREYOU).

Cryptography comes from maintained libraries (coincurve for secp256k1, pycryptodome for keccak-256 and AES),
RLP from `rlp`; all are imported on first use (`crypto`, `rlpcodec`), because `rlp` pulls in pydantic
through eth-utils and `check` must not pay that unless it decodes a record.
"""
