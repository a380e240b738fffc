"""The PROXY header parser: v1 and v2 from the spec's own byte layouts, and what it refuses."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.proxy_header import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)

# What follows a header on a TLS connection: the start of a ClientHello record.
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
IPV6_CLIENT, IPV6_PROXY = "2001:db8::1", "2001:db8::ffff:2"


def v2(command: int, family_protocol: int, block: bytes) -> bytes:
    """A v2 header: signature, version 2 and ``command``, the family byte, the block."""
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family_protocol])
        + struct.pack(">H", len(block))
        + block
    )


def tcp4_block(tlvs: bytes = b"") -> bytes:
    """The v2 address block of TCP over IPv4 from 10.1.2.3:40000 to 192.0.2.1:443."""
    addresses = ipaddress.ip_address("10.1.2.3").packed + ipaddress.ip_address("192.0.2.1").packed
    return addresses + struct.pack(">HH", 40000, 443) + tlvs


def tcp6_block() -> bytes:
    """The v2 address block of TCP over IPv6 from IPV6_CLIENT:40000 to IPV6_PROXY:443."""
    addresses = ipaddress.ip_address(IPV6_CLIENT).packed + ipaddress.ip_address(IPV6_PROXY).packed
    return addresses + struct.pack(">HH", 40000, 443)


def tlv(kind: int, value: bytes) -> bytes:
    """One v2 TLV: type, 2-byte length, value."""
    return bytes([kind]) + struct.pack(">H", len(value)) + value


TCP4 = ProxyHeader(0, "TCP4", ("10.1.2.3", 40000), ("192.0.2.1", 443))
TCP6 = ProxyHeader(0, "TCP6", (IPV6_CLIENT, 40000), (IPV6_PROXY, 443))
TLVS = tlv(0x02, b"example.com") + tlv(0x05, b"x" * 128) + tlv(0xEA, b"\x01vpce-0123456789abcdef0")

VALID = [
    pytest.param(b"PROXY TCP4 10.1.2.3 192.0.2.1 40000 443\r\n", TCP4, id="v1-tcp4"),
    pytest.param(
        f"PROXY TCP6 {IPV6_CLIENT} {IPV6_PROXY} 40000 443\r\n".encode(), TCP6, id="v1-tcp6"
    ),
    pytest.param(
        b"PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 2001:db8::ffff:2 40000 443\r\n",
        TCP6,
        id="v1-tcp6-long-form",
    ),
    pytest.param(b"PROXY UNKNOWN\r\n", ProxyHeader(0, "UNKNOWN"), id="v1-unknown-short"),
    pytest.param(
        f"PROXY UNKNOWN {IPV6_CLIENT} {IPV6_PROXY} 65535 65535\r\n".encode(),
        ProxyHeader(0, "UNKNOWN"),
        id="v1-unknown-long",
    ),
    pytest.param(v2(0x1, 0x11, tcp4_block()), TCP4, id="v2-tcp4"),
    pytest.param(v2(0x1, 0x21, tcp6_block()), TCP6, id="v2-tcp6"),
    pytest.param(v2(0x1, 0x11, tcp4_block(TLVS)), TCP4, id="v2-tcp4-tlvs-skipped"),
    pytest.param(v2(0x0, 0x00, b""), ProxyHeader(0, "LOCAL"), id="v2-local"),
    pytest.param(v2(0x0, 0x11, tcp4_block()), ProxyHeader(0, "LOCAL"), id="v2-local-addresses"),
    pytest.param(v2(0x0, 0xFF, b""), ProxyHeader(0, "LOCAL"), id="v2-local-family-ignored"),
    pytest.param(v2(0x1, 0x00, b""), ProxyHeader(0, "UNSPEC"), id="v2-unspec"),
    pytest.param(v2(0x1, 0x01, b""), ProxyHeader(0, "UNSPEC"), id="v2-unspec-stream"),
    pytest.param(
        v2(0x1, 0x31, b"/a".ljust(108, b"\0") * 2), ProxyHeader(0, "UNSPEC"), id="v2-unix"
    ),
    pytest.param(v2(0x1, 0x12, tcp4_block()), ProxyHeader(0, "UNSPEC"), id="v2-udp4"),
]


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_a_valid_header_is_read_to_its_last_byte(header: bytes, expected: ProxyHeader) -> None:
    """Each header form of the spec gives its addresses and its exact length, whatever follows."""
    parsed = parse_proxy_header(header + CLIENT_HELLO, "auto")
    assert parsed == ProxyHeader(len(header), expected.protocol, expected.client, expected.proxy)


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_every_proper_prefix_of_a_header_asks_for_more(
    header: bytes, expected: ProxyHeader
) -> None:
    """A header cut anywhere asks for more bytes, never more than the header still has to come."""
    del expected
    for end in range(len(header)):
        wanted = parse_proxy_header(header[:end], "auto")
        assert isinstance(wanted, int), (end, wanted)
        assert wanted >= 1


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(CLIENT_HELLO, id="tls-client-hello"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http-request"),
        pytest.param(b"\r\n\r\n\x01", id="almost-v2-signature"),
        pytest.param(b"PRO\x16", id="almost-v1-signature"),
    ],
)
def test_a_stream_without_a_header_is_said_to_have_none(stream: bytes) -> None:
    """Bytes that are not the start of a PROXY header: None, so nothing is consumed."""
    assert parse_proxy_header(stream, "auto") is None


def test_the_empty_stream_is_undecided() -> None:
    """Nothing seen yet: look at up to the longest v1 line."""
    assert parse_proxy_header(b"", "auto") == V1_MAX_LENGTH


INVALID = [
    pytest.param(b"PROXY TCP4 10.1.2.3 192.0.2.1 40000 443\n", "bare LF", id="v1-bare-lf"),
    pytest.param(b"PROXY TCP4 10.1.2.3 " + b"9" * 100, "no CRLF", id="v1-oversized"),
    pytest.param(b"PROXY TCP5 10.1.2.3 192.0.2.1 40000 443\r\n", "TCP4|TCP6", id="v1-bad-proto"),
    pytest.param(b"PROXY TCP4 10.1.2.3 192.0.2.1 40000\r\n", "TCP4|TCP6", id="v1-field-missing"),
    pytest.param(b"PROXY  TCP4 10.1.2.3 192.0.2.1 1 2\r\n", "TCP4|TCP6", id="v1-two-spaces"),
    pytest.param(b"PROXY TCP4 10.1.2.300 192.0.2.1 1 2\r\n", "'10.1.2.300'", id="v1-bad-ipv4"),
    pytest.param(b"PROXY TCP4 010.1.2.3 192.0.2.1 1 2\r\n", "'010.1.2.3'", id="v1-octal-ipv4"),
    pytest.param(b"PROXY TCP4 ::1 192.0.2.1 1 2\r\n", "'::1' is not a TCP4", id="v1-family-mix"),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "'fe80::1%eth0'", id="v1-ipv6-scope"),
    pytest.param(b"PROXY TCP4 10.1.2.3 192.0.2.1 65536 443\r\n", "'65536'", id="v1-port-range"),
    pytest.param(b"PROXY TCP4 10.1.2.3 192.0.2.1 0443 443\r\n", "'0443'", id="v1-port-zero"),
    pytest.param(b"PROXY TCP4 10.1.2.3 192.0.2.1 +443 443\r\n", "'+443'", id="v1-port-sign"),
    pytest.param(b"PROXY TCP4 10.1.2.3 192.0.2.1 \xd9\xa3 1\r\n", "printable", id="v1-not-ascii"),
    pytest.param(b"PROXYTCP4 10.1.2.3 192.0.2.1 1 2\r\n", "start of a PROXY", id="v1-no-space"),
    pytest.param(V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1", id="v2-version"),
    pytest.param(V2_SIGNATURE + b"\x22\x11\x00\x00", "command 2", id="v2-command"),
    pytest.param(v2(0x1, 0x41, b""), "byte 0x41", id="v2-family"),
    pytest.param(v2(0x1, 0x13, b""), "byte 0x13", id="v2-protocol"),
    pytest.param(v2(0x1, 0x11, tcp4_block()[:11]), "11 address bytes, not 12", id="v2-short-ipv4"),
    pytest.param(v2(0x1, 0x21, tcp4_block()), "12 address bytes, not 36", id="v2-short-ipv6"),
]


@pytest.mark.parametrize(("stream", "reason"), INVALID)
def test_an_invalid_header_is_refused_with_its_reason(stream: bytes, reason: str) -> None:
    """A stream that starts as a PROXY header but breaks the spec: an error that says where."""
    with pytest.raises(ProxyHeaderError, match=reason.replace("|", r"\|").replace("+", r"\+")):
        parse_proxy_header(stream + CLIENT_HELLO, "auto")


@pytest.mark.parametrize(
    ("stream", "mode", "reason"),
    [
        pytest.param(
            v2(0x0, 0x00, b""), "v1", "v2 header, but proxy_protocol is v1", id="v2-in-v1"
        ),
        pytest.param(
            b"PROXY UNKNOWN\r\n", "v2", "v1 line, but proxy_protocol is v2", id="v1-in-v2"
        ),
    ],
)
def test_a_header_of_the_version_not_configured_is_refused(
    stream: bytes, mode: str, reason: str
) -> None:
    """With proxy_protocol v1 (or v2) only, a header of the other version is an error."""
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(stream, mode)


@given(
    header=st.sampled_from([p.values[0] for p in VALID]),
    after=st.binary(max_size=40).map(lambda b: CLIENT_HELLO[:1] + b),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=8),
)
def test_however_a_header_arrives_no_byte_after_it_is_taken(
    header: bytes, after: bytes, cuts: list[int]
) -> None:
    """In whatever pieces header and TLS bytes arrive, the worker's loop takes the header only."""
    stream = header + after
    taken = 0  # the worker takes all it has seen while the parser wants more
    for end in sorted({min(cut, len(stream)) for cut in cuts} | {len(stream)}):
        result = parse_proxy_header(stream[:end], "auto")
        if not isinstance(result, int):
            break
        taken = end
        assert taken <= len(header)
    assert isinstance(result, ProxyHeader)
    assert result.length == len(header)
