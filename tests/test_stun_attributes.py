"""The attribute table: every row's bounds are enforced, every format round-trips, every decoder only ever
raises StunParseError, and the sets the rest of the stack reads are derived from the rows."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach.stun import attributes as A
from nodereach.stun.errors import StunParseError
from nodereach.stun.message import BINDING, SUCCESS, StunMessage, encode_message, parse_message

KEY = A.MAGIC_COOKIE_BYTES + bytes(range(12))
ROWS = sorted(A.SPECS.values(), key=lambda s: s.code)

ipv4 = st.binary(min_size=4, max_size=4).map(lambda b: str(ipaddress.IPv4Address(b)))
ipv6 = st.binary(min_size=16, max_size=16).map(lambda b: ipaddress.IPv6Address(b).compressed)
address = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))
TYPED = {
    "address": address,
    "xor-address": address,
    "error-code": st.tuples(st.integers(300, 699), st.text(max_size=40)).map(
        lambda e: (e[0], e[1].encode().decode())),
    "attribute-list": st.lists(st.integers(0, 0xFFFF), max_size=8).map(tuple),
    "change-flags": st.tuples(st.booleans(), st.booleans()),
    "port": st.integers(0, 65535),
    "text": st.text(max_size=100),
    "opaque": st.binary(max_size=64),
}


def test_derived_sets_name_the_rfc_attributes() -> None:
    derived = {"address": A.ADDRESS_ATTRIBUTES, "xor": A.XOR_ADDRESS_ATTRIBUTES, "computed": A.COMPUTED}
    assert derived == {
        "address": {A.MAPPED_ADDRESS, A.RESPONSE_ADDRESS, A.SOURCE_ADDRESS, A.CHANGED_ADDRESS, A.REFLECTED_FROM,
                    A.ALTERNATE_SERVER, A.RESPONSE_ORIGIN, A.OTHER_ADDRESS},
        "xor": {A.XOR_MAPPED_ADDRESS, A.XOR_MAPPED_ADDRESS_OLD},
        "computed": {A.MESSAGE_INTEGRITY, A.MESSAGE_INTEGRITY_SHA256, A.FINGERPRINT}}
    assert A.LINEAGE[A.XOR_MAPPED_ADDRESS] == (A.XOR_MAPPED_ADDRESS, A.XOR_MAPPED_ADDRESS_OLD, A.MAPPED_ADDRESS)
    assert A.LINEAGE[A.OTHER_ADDRESS] == (A.OTHER_ADDRESS, A.CHANGED_ADDRESS)
    assert A.LINEAGE[A.RESPONSE_ORIGIN] == (A.RESPONSE_ORIGIN, A.SOURCE_ADDRESS)
    assert A.NAMES[A.XOR_MAPPED_ADDRESS] == "XOR-MAPPED-ADDRESS" and len(A.NAMES) == len(ROWS) == 31
    assert A.name(0x7F01) == "0x7F01" and A.name(A.SOFTWARE) == "SOFTWARE"
    assert [s.comprehension_required for s in (A.SPECS[A.PRIORITY], A.SPECS[A.SOFTWARE])] == [True, False]


@pytest.mark.parametrize("spec", ROWS, ids=lambda s: s.name)
def test_row_bounds_are_enforced(spec: A.AttributeSpec) -> None:
    """Every length outside a row's bounds is rejected, by the row's check and by the parser."""
    for n in {0, 1, 2, 3, 4, 7, 8, 12, 16, 19, 20, 21, 24, 32, 33, 40, spec.min_len - 1, spec.max_len + 1}:
        if n < 0 or n > 1000:
            continue
        value = bytes([0, 1]) + bytes(max(0, n - 2)) if n >= 2 else bytes(n)
        value = value[:n]
        if spec.min_len <= n <= spec.max_len and n % spec.multiple_of == 0:
            continue
        with pytest.raises(StunParseError):
            spec.check(value, KEY)
        msg = StunMessage(BINDING, SUCCESS, KEY[4:], [(spec.code, value)])
        with pytest.raises(StunParseError):
            parse_message(encode_message(msg) if not spec.computed else _raw_with(spec.code, value))


def _raw_with(code: int, value: bytes) -> bytes:
    """A message carrying `value` under `code` as is (the encoder recomputes integrity/fingerprint)."""
    body = code.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value + bytes(-len(value) % 4)
    return b"\x01\x01" + len(body).to_bytes(2, "big") + KEY + body


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_typed_values_round_trip(data: st.DataObject) -> None:
    """encode then decode gives the value back, through the row and through a parsed message's view."""
    spec = data.draw(st.sampled_from([s for s in ROWS if not s.computed]))
    typed = data.draw(TYPED[spec.format.name])
    raw = spec.encode(typed, KEY)
    if not spec.min_len <= len(raw) <= spec.max_len or len(raw) % spec.multiple_of:
        with pytest.raises(StunParseError):
            spec.check(raw, KEY)
        return
    assert spec.decode(raw, KEY) == typed
    msg = parse_message(encode_message(StunMessage(BINDING, SUCCESS, KEY[4:], [(spec.code, raw)])))
    assert msg.value(spec.code) == typed


@settings(max_examples=500, deadline=None)
@given(spec=st.sampled_from(ROWS), value=st.binary(max_size=80))
def test_decoders_only_raise_the_typed_error(spec: A.AttributeSpec, value: bytes) -> None:
    try:
        spec.decode(value, KEY)
    except StunParseError:
        assert not (spec.min_len <= len(value) <= spec.max_len) or spec.format.structured or \
            len(value) % spec.multiple_of


def test_views_read_the_older_attribute_and_skip_xor_in_legacy_messages() -> None:
    legacy_id = bytes(range(100, 116))  # 16 bytes, no magic cookie: RFC 3489
    old = StunMessage(BINDING, SUCCESS, legacy_id)
    old.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address(("198.51.100.1", 1), legacy_id))
    old.add(A.MAPPED_ADDRESS, A.encode_address(("198.51.100.2", 2)))
    old.add(A.CHANGED_ADDRESS, A.encode_address(("203.0.113.2", 3479)))
    parsed = parse_message(encode_message(old))
    assert parsed.legacy and parsed.mapped_address == ("198.51.100.2", 2) and parsed.xor_mapped_address is None
    assert parsed.other_address == ("203.0.113.2", 3479)
    draft = StunMessage(BINDING, SUCCESS, KEY[4:])
    draft.add(A.XOR_MAPPED_ADDRESS_OLD, A.encode_xor_address(("198.51.100.3", 3), KEY))
    parsed = parse_message(encode_message(draft))
    assert parsed.mapped_address == parsed.xor_mapped_address == ("198.51.100.3", 3)
    assert parsed.value(0xC0DE) is None and parsed.other_address is None
