"""The PROXY protocol header (v1 text, v2 binary) read off the front of a stream: no I/O.

An L4 front (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB, IPVS)
writes one header before anything else on the connection, naming the
client it relays (HAProxy's doc/proxy-protocol.txt). Gunicorn parses it
from the first request's bytes, which is right for plain HTTP; with TLS on
the instance the header comes before the ClientHello, in clear, and the
shell (``worker.py``) has to read it off the socket itself before the
handshake. It must not read a byte past the header (what follows belongs to
TLS), so it peeks, asks ``parse_proxy_header`` how much of what it saw is
header, and takes exactly that much. The answer is one of:

* a ``ProxyHeader``: complete, ``length`` bytes long;
* an ``int``: the bytes seen are the beginning of a header; look at up to
  that many more (every byte seen so far belongs to the header);
* ``None``: the stream does not start with a PROXY header at all;
* ``ProxyHeaderError``: it starts as one but is not valid (the spec: drop
  the connection).

A header without a client (v2 ``LOCAL``, v1 ``UNKNOWN``, v2 ``UNSPEC`` and
the families and protocols the spec lets a receiver fall back on: UDP, Unix
sockets) means "use the real connection's endpoints": ``client`` is None.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

V1_SIGNATURE = b"PROXY"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# The spec's longest v1 line, CRLF included ("PROXY UNKNOWN" and two IPv6 addresses).
V1_MAX_LENGTH = 107
# The fixed part of a v2 header: signature, version and command, family, length.
V2_FIXED_LENGTH = 16

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_INET, _AF_INET6 = 0x1, 0x2
_LAST_FAMILY, _STREAM, _LAST_TRANSPORT = 0x3, 0x1, 0x2
# TCP over IPv4 and over IPv6: gunicorn's name, and the size of one address
# (the address block holds two, then two 2-byte ports).
_V2_TCP = {_AF_INET: ("TCP4", 4), _AF_INET6: ("TCP6", 16)}
_V2_VERSION = 2
_MAX_PORT = 65535


class ProxyHeaderError(ValueError):
    """The stream starts as a PROXY header that is not a valid one; the message says why."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete PROXY header: how many bytes it took, and the connection it describes."""

    length: int
    # Gunicorn's names: TCP4, TCP6, LOCAL (v2), UNSPEC (v2), UNKNOWN (v1).
    protocol: str
    client: tuple[str, int] | None = None
    proxy: tuple[str, int] | None = None

    def gunicorn_info(self) -> dict[str, Any]:
        """The header as gunicorn records it (``req.proxy_protocol_info``, read by its environ)."""
        client_addr, client_port = self.client or (None, None)
        proxy_addr, proxy_port = self.proxy or (None, None)
        return {
            "proxy_protocol": self.protocol,
            "client_addr": client_addr,
            "client_port": client_port,
            "proxy_addr": proxy_addr,
            "proxy_port": proxy_port,
        }


def parse_proxy_header(data: bytes, mode: str) -> ProxyHeader | int | None:
    """Read a PROXY header off the start of ``data``, accepted in ``mode`` (v1, v2 or auto).

    Returns the header, or how many more bytes to look at before deciding,
    or None if ``data`` does not start with a PROXY header; raises
    ``ProxyHeaderError`` for one that is not valid.
    """
    if data.startswith(V2_SIGNATURE):
        if mode == "v1":
            raise ProxyHeaderError("a PROXY v2 header, but proxy_protocol is v1")
        return _parse_v2(data)
    if data.startswith(V1_SIGNATURE):
        if mode == "v2":
            raise ProxyHeaderError("a PROXY v1 line, but proxy_protocol is v2")
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data) or V1_SIGNATURE.startswith(data):
        return V1_MAX_LENGTH - len(data)  # undecided yet: the longer of the two
    return None


def _parse_v1(data: bytes) -> ProxyHeader | int:
    if data[5:6] not in (b"", b" "):
        raise ProxyHeaderError(f"{data[:6]!r} is not the start of a PROXY line")
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if b"\n" in data[:V1_MAX_LENGTH]:
            raise ProxyHeaderError("a PROXY v1 line must end with CRLF, not a bare LF")
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(
                f"no CRLF within the first {V1_MAX_LENGTH} bytes of a PROXY line"
            )
        return V1_MAX_LENGTH - len(data)
    line, length = data[:end], end + 2
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        return ProxyHeader(length, "UNKNOWN")  # the rest of the line is to be ignored
    if not line.isascii() or not line.decode().isprintable():
        raise ProxyHeaderError(f"PROXY line {line!r} is not printable ASCII")
    fields = line.decode().split(" ")
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(
            f"PROXY line {line!r} is not 'PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT'"
        )
    protocol, source, destination, source_port, destination_port = fields[1:]
    return ProxyHeader(
        length,
        protocol,
        (_v1_address(source, protocol, line), _v1_port(source_port, line)),
        (_v1_address(destination, protocol, line), _v1_port(destination_port, line)),
    )


def _v1_address(text: str, protocol: str, line: bytes) -> str:
    kind = ipaddress.IPv4Address if protocol == "TCP4" else ipaddress.IPv6Address
    try:
        # An IPv6 scope ("%eth0") is no part of the spec's format; ipaddress takes one.
        if "%" not in text:
            return str(kind(text))
    except ValueError:
        pass
    raise ProxyHeaderError(f"PROXY line {line!r}: {text!r} is not a {protocol} address")


def _v1_port(text: str, line: bytes) -> int:
    # Decimal, no heading zero (the spec), no sign or spaces (which int() would take).
    if not (text.isdigit() and (text == "0" or text[0] != "0") and int(text) <= _MAX_PORT):
        raise ProxyHeaderError(f"PROXY line {line!r}: {text!r} is not a port")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | int:
    if len(data) < V2_FIXED_LENGTH:
        return V2_FIXED_LENGTH - len(data)
    version, command = data[12] >> 4, data[12] & 0xF
    if version != _V2_VERSION:
        raise ProxyHeaderError(f"PROXY v2 header with version {version}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2 header with command {command} (only LOCAL and PROXY)")
    length = V2_FIXED_LENGTH + int.from_bytes(data[14:16], "big")
    if len(data) < length:
        return length - len(data)
    if command == _V2_LOCAL:  # the proxy's own connection (a health check): family ignored
        return ProxyHeader(length, "LOCAL")
    family, transport = data[13] >> 4, data[13] & 0xF
    if family > _LAST_FAMILY or transport > _LAST_TRANSPORT:
        raise ProxyHeaderError(f"PROXY v2 header with family and protocol byte {data[13]:#04x}")
    tcp = _V2_TCP.get(family)
    if tcp is None or transport != _STREAM:
        # UNSPEC, UDP, Unix sockets: the spec lets a receiver use the real endpoints.
        return ProxyHeader(length, "UNSPEC")
    protocol, size = tcp
    block = data[V2_FIXED_LENGTH:length]  # addresses, then TLVs (skipped)
    if len(block) < 2 * size + 4:
        raise ProxyHeaderError(
            f"PROXY v2 {protocol} header with {len(block)} address bytes, not {2 * size + 4}"
        )
    source = ipaddress.ip_address(block[:size])
    destination = ipaddress.ip_address(block[size : 2 * size])
    ports = block[2 * size : 2 * size + 4]
    return ProxyHeader(
        length,
        protocol,
        (str(source), int.from_bytes(ports[:2], "big")),
        (str(destination), int.from_bytes(ports[2:], "big")),
    )
