"""Decoders of what nodes advertise: ENR (EIP-778 vector), enode URLs, multiaddrs (text + binary vectors
from the multiaddr implementations), lnd uris, Bitcoin local addresses; hostile input via hypothesis."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodereach.p2p import crypto, rlpcodec
from nodereach.p2p.addrs import bitcoin_local_address, parse_lnd_uri
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.enode import parse_enode
from nodereach.p2p.enr import Enr, decode_enr, decode_enr_bytes, encode_enr
from nodereach.p2p.errors import AddressError, EnodeError, EnrError, MultiaddrError, P2PDecodeError
from nodereach.p2p.multiaddr import decode_multiaddr, encode_multiaddr, parse_multiaddr

# EIP-778 "Test Vectors" (https://eips.ethereum.org/EIPS/eip-778, devp2p enr.md): record, key, node id.
EIP778_TEXT = ("enr:-IS4QHCYrYZbAKWCBRlAy5zzaDZXJBGkcnh4MHcBFZntXNFrdvJjX04jRzjzCBOonrkTfj499SZuOh8R33Ls8RRcy5wBgmlk"
               "gnY0gmlwhH8AAAGJc2VjcDI1NmsxoQPKY0yuDUmstAHYpMa2_oxVtw0RW_QAdpzBQA8yWM0xOIN1ZHCCdl8")
EIP778_KEY = bytes.fromhex("b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291")
EIP778_NODE_ID = "a448f24c6d18e575453db13171562b71999873db5b286df957af199ec94617f7"
EIP778_SIG = ("7098ad865b00a582051940cb9cf36836572411a47278783077011599ed5cd16b76f2635f4e234738f30813a89eb9137e3e3df"
              "5266e3a1f11df72ecf1145ccb9c")
EIP778_PUB = "03ca634cae0d49acb401d8a4c6b6fe8c55b70d115bf400769cc1400f3258cd3138"


# --- ENR -------------------------------------------------------------------------------------------------
def test_enr_eip778_vector() -> None:
    enr = decode_enr(EIP778_TEXT)
    assert enr.seq == 1
    assert enr.identity == "v4"
    assert enr.signature.hex() == EIP778_SIG
    assert enr.public_key is not None and enr.public_key.hex() == EIP778_PUB
    assert enr.node_id is not None and enr.node_id.hex() == EIP778_NODE_ID
    assert enr.signature_valid is True
    assert (enr.ip, enr.udp, enr.tcp, enr.ip6) == ("127.0.0.1", 30303, None, None)
    assert [k for k, _ in enr.pairs] == ["id", "ip", "secp256k1", "udp"]
    assert enr.text == EIP778_TEXT
    assert enr.endpoints() == [Advertised("127.0.0.1", 30303, "udp", "enr", "ip", 4, False, "udp")]


def test_enr_encode_reproduces_the_eip_vector_byte_for_byte() -> None:
    # RFC 6979 signatures are deterministic: the same key, seq and pairs give the EIP's exact record.
    enr = encode_enr(EIP778_KEY, 1, {"ip": bytes([127, 0, 0, 1]), "udp": 30303})
    assert enr.text == EIP778_TEXT


def test_keccak_is_not_sha3() -> None:
    import hashlib

    assert crypto.keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert hashlib.sha3_256(b"").hexdigest() != crypto.keccak256(b"").hex()


def test_enr_ipv6_ports_fall_back_to_the_plain_keys() -> None:
    enr = encode_enr(EIP778_KEY, 7, {"ip": bytes([203, 0, 113, 5]), "ip6": bytes.fromhex("20010db8" + "00" * 11 + "01"),
                                     "tcp": 30303, "udp": 30301, "udp6": 30309, "quic": 9001})
    eps = {(e.field, e.address, e.port, e.protocol, e.quic) for e in enr.endpoints()}
    assert eps == {
        ("tcp", "203.0.113.5", 30303, "tcp", False), ("tcp", "2001:db8::1", 30303, "tcp", False),
        ("udp", "203.0.113.5", 30301, "udp", False), ("udp6", "2001:db8::1", 30309, "udp", False),
        ("quic", "203.0.113.5", 9001, "udp", True), ("quic", "2001:db8::1", 9001, "udp", True),
    }


def test_enr_port_without_address() -> None:
    enr = encode_enr(EIP778_KEY, 2, {"tcp": 30303})
    assert enr.endpoints() == [Advertised(None, 30303, "tcp", "enr", "none", None, False, "tcp")]


def _resigned(items: list[object]) -> str:
    """Re-sign a hand-built content list with the EIP key (to test rules other than the signature)."""
    sig = crypto.sign_compact(EIP778_KEY, crypto.keccak256(rlpcodec.encode(items)))
    return "enr:" + base64.urlsafe_b64encode(rlpcodec.encode([sig, *items])).decode().rstrip("=")


PUB = bytes.fromhex(EIP778_PUB)


@pytest.mark.parametrize("text, why", [
    ("", "starts with"),
    ("enr:", "not RLP"),
    ("enr:***", "base64"),
    ("enr:" + "A" * 500, "at most"),
    (EIP778_TEXT[:-4], "not RLP"),
    (EIP778_TEXT[:20] + ("B" if EIP778_TEXT[20] != "B" else "C") + EIP778_TEXT[21:], "signature"),
    (_resigned([1, b"secp256k1", PUB, b"id", b"v4"]), "sorted"),
    (_resigned([1, b"id", b"v4", b"id", b"v4", b"secp256k1", PUB]), "duplicate"),
    (_resigned([1, b"ip", b"\x01\x02\x03\x04"]), "identity"),
    (_resigned([1, b"id", b"v4"]), "33-byte"),
    (_resigned([1, b"id", b"v4", b"ip", b"\x01\x02\x03", b"secp256k1", PUB]), "'ip' must be 4 bytes"),
    (_resigned([1, b"id", b"v4", b"secp256k1", PUB, b"udp", b"\x01\x00\x00"]), "port"),
    (_resigned([1, b"id", b"v4", b"secp256k1", b"\x02" + b"\xff" * 32]), "curve"),
    (_resigned([1, b"id", b"v4", b"secp256k1", PUB, b"udp"]), "without a value"),
])
def test_enr_rejects(text: str, why: str) -> None:
    with pytest.raises(EnrError, match=why):
        decode_enr(text)


def test_enr_forged_signature() -> None:
    other = bytes.fromhex("66fb62bfbd66b9177a138c1e5cddbe4f7c30c343e94e68df8769459cb1cde628")
    items: list[object] = [1, b"id", b"v4", b"ip", bytes([1, 2, 3, 4]), b"secp256k1", PUB]
    sig = crypto.sign_compact(other, crypto.keccak256(rlpcodec.encode(items)))
    text = "enr:" + base64.urlsafe_b64encode(rlpcodec.encode([sig, *items])).decode().rstrip("=")
    with pytest.raises(EnrError, match="signature"):
        decode_enr(text)
    assert decode_enr(text, verify=False).signature_valid is False


def test_enr_other_identity_scheme_is_read_but_not_verified() -> None:
    raw = rlpcodec.encode([b"\x00" * 64, 3, b"id", b"v5", b"ip", bytes([198, 51, 100, 7]), b"tcp", 9000])
    enr = decode_enr_bytes(raw)
    assert (enr.identity, enr.signature_valid, enr.node_id, enr.ip, enr.tcp) == ("v5", None, None, "198.51.100.7", 9000)


def test_importing_enr_does_not_import_pydantic() -> None:
    # The check's path too: the dial-back client (with ProofRequest) and every protocol codec module.
    code = ("import sys, nodereach.p2p.enr, nodereach.p2p.enode, nodereach.p2p.multiaddr, nodereach.p2p.addrs,"
            "nodereach.reach.client, nodereach.p2p.discv4, nodereach.p2p.discv5, nodereach.p2p.bitcoin;"
            "heavy = [m for m in ('pydantic', 'rlp', 'eth_utils', 'coincurve', 'Crypto') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=600))
def test_enr_hostile_text(text: str) -> None:
    with contextlib.suppress(EnrError):
        decode_enr(text)
    with contextlib.suppress(EnrError):
        decode_enr("enr:" + text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_enr_hostile_bytes(raw: bytes) -> None:
    with contextlib.suppress(EnrError):
        decode_enr_bytes(raw)


def test_enr_deeply_nested_rlp() -> None:
    with pytest.raises(EnrError):
        decode_enr_bytes(b"\xc1" * 299 + b"\x80")


@settings(max_examples=40, deadline=None)
@given(seq=st.integers(0, 2**64 - 1), ip=st.binary(min_size=4, max_size=4), tcp=st.integers(0, 65535),
       udp=st.integers(0, 65535), extra=st.dictionaries(st.sampled_from(["eth2", "attnets", "syncnets", "zz"]),
                                                        st.binary(max_size=40), max_size=3))
def test_enr_round_trip(seq: int, ip: bytes, tcp: int, udp: int, extra: dict[str, bytes]) -> None:
    enr = encode_enr(EIP778_KEY, seq, {"ip": ip, "tcp": tcp, "udp": udp, **extra})
    back = decode_enr(enr.text)
    assert isinstance(back, Enr)
    assert (back.seq, back.tcp, back.udp, back.node_id) == (seq, tcp, udp, bytes.fromhex(EIP778_NODE_ID))
    assert back.raw == enr.raw


# --- enode ---------------------------------------------------------------------------------------------
EIP778_XY = crypto.decompress(bytes.fromhex(EIP778_PUB))


def test_enode_url() -> None:
    e = parse_enode(f"enode://{EIP778_XY.hex()}@10.3.58.6:30303?discport=30301")
    assert e.node_id.hex() == EIP778_NODE_ID
    assert (e.host, e.tcp, e.udp, e.family) == ("10.3.58.6", 30303, 30301, 4)
    assert [(a.protocol, a.port, a.field) for a in e.endpoints()] == [("tcp", 30303, "tcp"), ("udp", 30301, "discport")]
    assert e.text == f"enode://{EIP778_XY.hex()}@10.3.58.6:30303?discport=30301"
    v6 = parse_enode(f"enode://{EIP778_XY.hex()}@[2001:DB8::1]:30303")
    assert (v6.host, v6.tcp, v6.udp, v6.family) == ("2001:db8::1", 30303, 30303, 6)
    bare = parse_enode(f"enode://{EIP778_XY.hex()}")
    assert (bare.host, bare.endpoints()) == (None, [])
    dns = parse_enode(f"enode://{EIP778_XY.hex()}@Node.Example.org:30303")
    assert (dns.host, dns.family, dns.endpoints()[0].host_kind) == ("node.example.org", None, "dns")


@pytest.mark.parametrize("text", [
    "enode://abcd@1.2.3.4:30303",
    f"enode://{'00' * 64}@1.2.3.4:30303",
    f"enode://{EIP778_XY.hex()}@1.2.3.4",
    f"enode://{EIP778_XY.hex()}@1.2.3.4:70000",
    f"enode://{EIP778_XY.hex()}@[::1:30303",
    f"enode://{EIP778_XY.hex()}@2001:db8::1:30303",  # bare IPv6: the port cannot be told from the address
    f"enode://{EIP778_XY.hex()}@[node.example.org]:30303",  # brackets hold an IPv6 address only
    f"enode://{EIP778_XY.hex()}@1.2.3.4:30303?discport=x",
    f"enode://{EIP778_XY.hex()}@bad_host!:30303",
    f"enode://{EIP778_XY.hex()}@1.2.3.4:3²",
    "http://x",
])
def test_enode_rejects(text: str) -> None:
    with pytest.raises(EnodeError):
        parse_enode(text)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_enode_hostile(text: str) -> None:
    for t in (text, f"enode://{EIP778_XY.hex()}@{text}"):
        with contextlib.suppress(EnodeError):
            parse_enode(t)


# --- multiaddr -----------------------------------------------------------------------------------------
# Binary vectors as published by the multiaddr implementations (rust-multiaddr, go-multiaddr, cpp-libp2p).
PEER = "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
VECTORS = [
    ("/ip4/127.0.0.1/udp/1234", "047f000001910204d2"),
    ("/ip4/127.0.0.1/tcp/4321", "047f0000010610e1"),
    ("/ip4/127.0.0.1/udp/1234/ip4/127.0.0.1/tcp/4321", "047f000001910204d2047f0000010610e1"),
    ("/ip6/2001:8a0:7ac5:4201:3ac9:86ff:fe31:7095", "29200108a07ac542013ac986fffe317095"),
    ("/ip6/2001:db8::ff00:42:8329", "2920010db8000000000000ff0000428329"),
    (f"/p2p/{PEER}", "a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b"),
    (f"/ip4/127.0.0.1/p2p/{PEER}/tcp/1234",
     "047f000001a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b0604d2"),
    ("/tcp/1234/tls/http", "0604d2c003e003"),
    ("/tcp/1234/https", "0604d2bb03"),
    ("/ip4/127.0.0.1/udp/0", "047f00000191020000"),
]


@pytest.mark.parametrize("text, hexed", VECTORS)
def test_multiaddr_vectors(text: str, hexed: str) -> None:
    ma = parse_multiaddr(text)
    assert encode_multiaddr(ma).hex() == hexed
    assert decode_multiaddr(bytes.fromhex(hexed)) == ma
    assert ma.text == text


def test_multiaddr_endpoints() -> None:
    quic = parse_multiaddr(f"/ip4/203.0.113.5/udp/9000/quic-v1/p2p/{PEER}")
    assert quic.endpoint() == Advertised("203.0.113.5", 9000, "udp", "multiaddr", "ip", 4, True, quic.text)
    assert quic.peer_id == PEER
    assert parse_multiaddr("/ipfs/" + PEER).text == "/p2p/" + PEER
    tcp6 = parse_multiaddr("/ip6/2001:DB8:0:0::1/tcp/4001/").endpoint()
    assert tcp6 is not None and (tcp6.address, tcp6.port, tcp6.family, tcp6.quic) == ("2001:db8::1", 4001, 6, False)
    dns = parse_multiaddr("/dns/node.example.org/tcp/443/wss").endpoint()
    assert dns is not None and (dns.host_kind, dns.family) == ("dns", None)
    relayed = parse_multiaddr(f"/ip4/198.51.100.1/tcp/4001/p2p/{PEER}/p2p-circuit/p2p/{PEER}")
    assert relayed.relayed and relayed.endpoint() is None
    assert parse_multiaddr("/p2p-circuit").endpoint() is None


def test_multiaddr_cid_peer_id() -> None:
    # A peer id written as CIDv1 (libp2p-key, base32) is the same multihash as its base58 form.
    mh = bytes.fromhex("0024080112205ea0ba2d1f6d2c0f9a0f1ba9c8bc8c2a7d5e1d33d6b1c0a8e54fd2a4ae2a7e0f")
    from nodereach.p2p import base58, varint

    cid = base64.b32encode(varint.encode(1) + varint.encode(0x72) + mh).decode().lower().rstrip("=")
    assert parse_multiaddr(f"/p2p/b{cid}").peer_id == base58.encode(mh)


@pytest.mark.parametrize("text", [
    "ip4/1.2.3.4", "/ip4/1.2.3.4/tcp", "/ip4/256.1.1.1", "/ip4/1.2.3.4/tcp/65536", "/ip4/1.2.3.4/tcp/x",
    "/foo/1", "/p2p/Qm000", "/p2p/" + "1" * 300, "/dns/bad host", "/", "/ip6/1.2.3.4",
    "/p2p/bafzaaaaa", "/unix/tmp/sock",
])
def test_multiaddr_rejects(text: str) -> None:
    with pytest.raises(MultiaddrError):
        parse_multiaddr(text)


@pytest.mark.parametrize("hexed", ["", "7f", "04", "047f0000", "0604", "a50322", "a503ff01" + "00" * 10,
                                   "ffffffffffffffffffff01", "3580", "a503030012ff"])
def test_multiaddr_binary_rejects(hexed: str) -> None:
    with pytest.raises(MultiaddrError):
        decode_multiaddr(bytes.fromhex(hexed))


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_multiaddr_hostile_binary(raw: bytes) -> None:
    try:
        ma = decode_multiaddr(raw)
    except MultiaddrError:
        return
    assert decode_multiaddr(encode_multiaddr(ma)) == ma


@settings(max_examples=500)
@given(st.lists(st.sampled_from(["ip4", "ip6", "tcp", "udp", "quic-v1", "p2p", "dns4", "ws", "1.2.3.4", "::1",
                                 "80", PEER, "x", "", "p2p-circuit", "certhash", "uEiA"]), max_size=10))
def test_multiaddr_hostile_text(parts: list[str]) -> None:
    try:
        ma = parse_multiaddr("/" + "/".join(parts))
    except MultiaddrError:
        return
    assert parse_multiaddr(ma.text) == ma
    assert decode_multiaddr(encode_multiaddr(ma)) == ma


# --- lnd uris, Bitcoin local addresses ---------------------------------------------------------------------
def test_lnd_uri() -> None:
    u = parse_lnd_uri(f"{EIP778_PUB}@203.0.113.9:9735")
    assert (u.pubkey.hex(), u.host, u.port) == (EIP778_PUB, "203.0.113.9", 9735)
    assert u.endpoint().protocol == "tcp" and u.endpoint().source == "lnd"
    onion = parse_lnd_uri(f"{EIP778_PUB}@abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcd.onion:9735")
    assert onion.endpoint().host_kind == "onion"
    assert parse_lnd_uri(f"{EIP778_PUB}@[2001:db8::5]:9735").endpoint().family == 6
    for bad in ("x@1.2.3.4:9735", f"{EIP778_PUB}1.2.3.4:9735", f"{EIP778_PUB}@1.2.3.4", f"{EIP778_PUB}@::1:9735"):
        with pytest.raises(AddressError):
            parse_lnd_uri(bad)


def test_host_port_is_read_alike_in_lnd_uris_and_enode_urls() -> None:
    """One reader (addrs.split_host_port) for both: the same host, port and refusals, each format's error."""
    key = EIP778_XY.hex()
    for hostport, expected in (("[2001:DB8::5%eth0]:9735", ("2001:db8::5", 9735)),
                               ("Node.Example.org:9735", ("node.example.org", 9735)),
                               ("203.0.113.9:0", ("203.0.113.9", 0))):
        lnd = parse_lnd_uri(f"{EIP778_PUB}@{hostport}")
        enode = parse_enode(f"enode://{key}@{hostport}")
        assert (lnd.host, lnd.port) == (enode.host, enode.tcp) == expected
    for bad in ("[1.2.3.4]:9735", "2001:db8::5:9735", ":9735", "host:65536", "host:9²", "[::1]9735"):
        with pytest.raises(AddressError):
            parse_lnd_uri(f"{EIP778_PUB}@{bad}")
        with pytest.raises(EnodeError):
            parse_enode(f"enode://{key}@{bad}")


def test_bitcoin_local_addresses() -> None:
    a = bitcoin_local_address("203.0.113.4", 8333)
    assert (a.address, a.port, a.family, a.host_kind, a.source) == ("203.0.113.4", 8333, 4, "ip", "bitcoin")
    assert bitcoin_local_address("2001:DB8::7", 8333).address == "2001:db8::7"
    assert bitcoin_local_address("ukeu3k5oycgaauneqgtnvselmt4yemvoilkln7jpvamvfx7dnkdq.b32.i2p", 0).host_kind == "i2p"
    with pytest.raises(AddressError):
        bitcoin_local_address("not an address", 8333)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_address_forms_hostile(text: str) -> None:
    for fn in (parse_lnd_uri, lambda t: bitcoin_local_address(t, 1)):
        with contextlib.suppress(AddressError):
            fn(text)


def test_all_errors_are_decode_errors() -> None:
    assert all(issubclass(e, P2PDecodeError) for e in (EnrError, EnodeError, MultiaddrError, AddressError))
