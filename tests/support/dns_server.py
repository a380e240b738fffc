"""A small programmable authoritative DNS server for tests, built on dnspython.

``DnsServer`` answers on 127.0.0.1 over UDP and TCP (one ephemeral port for
both) from records a test sets and changes while it runs: A/AAAA, SRV (the
targets' addresses in the additional section, or not), NXDOMAIN, an error
rcode, or silence. It is authoritative for every name (AA set): a name it
was not told about is NXDOMAIN; a known name asked for a type it lacks gets
NOERROR with an empty answer. An answer too big for the client's UDP size
goes out truncated (TC), so the client asks again over TCP.

It runs in daemon threads of the test process; ``stop()`` closes its sockets
(the server is down: queries go unanswered) and ``start()`` binds the same
port again. ``queries(name)`` counts the questions about a name.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

# How long start() retries binding the old port after stop(): an outgoing socket elsewhere on
# the machine may hold it for a moment as its ephemeral source port.
REBIND_SECONDS = 5.0
# How often the serving threads look at the stop flag.
POLL_SECONDS = 0.05
# What a client without EDNS may receive over UDP (RFC 1035).
CLASSIC_UDP_SIZE = 512

SrvTuple = tuple[int, int, int, str]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class _Entry:
    """What the server knows about one name."""

    ips: tuple[str, ...] = ()
    srv: tuple[SrvTuple, ...] = ()
    ttl: int = 60
    additional: bool = True
    nxdomain: bool = False
    rcode: dns.rcode.Rcode | None = None
    silent: bool = False


@dataclass
class _Zone:
    entries: dict[str, _Entry] = field(default_factory=dict)
    asked: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LoopbackDnsPeer:
    """A DNS server the tests run on 127.0.0.1 (this one, or dnsmasq): how to name it."""

    port: int

    @property
    def address(self) -> tuple[str, int]:
        """``("127.0.0.1", port)``: what ``Resolver(server=...)`` takes."""
        return "127.0.0.1", self.port

    @property
    def resolver_setting(self) -> str:
        """The server as ``dns_resolver`` names it: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"


class DnsServer(LoopbackDnsPeer):
    """A DNS server on 127.0.0.1 whose records the test sets; see the module docstring."""

    def __init__(self) -> None:
        self._zone = _Zone()
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        # One per run: connection threads of a stopped run must not see the next start().
        self._stopping = threading.Event()

    # --- records ---------------------------------------------------------------------------

    def set_a(self, name: str, ips: Sequence[str], ttl: int = 60) -> None:
        """``name`` has these A and AAAA records (IPv4 and IPv6 literals mixed as given)."""
        self._set(name, _Entry(ips=tuple(ips), ttl=ttl))

    def set_srv(
        self, name: str, records: Sequence[SrvTuple], ttl: int = 60, *, additional: bool = True
    ) -> None:
        """``name`` has these SRV records: (priority, weight, port, target) each.

        With ``additional``, answers carry the targets' A/AAAA records the
        server knows in their additional section; without, the client asks.
        """
        self._set(name, _Entry(srv=tuple(records), ttl=ttl, additional=additional))

    def set_nxdomain(self, name: str) -> None:
        """``name`` does not exist (also what a name never set gets)."""
        self._set(name, _Entry(nxdomain=True))

    def fail(self, name: str, rcode: str) -> None:
        """Questions about ``name`` get this error rcode: ``SERVFAIL`` or ``REFUSED``."""
        self._set(name, _Entry(rcode=dns.rcode.from_text(rcode)))

    def drop(self, name: str) -> None:
        """Questions about ``name`` go unanswered (the server is up but silent for it)."""
        self._set(name, _Entry(silent=True))

    def remove(self, name: str) -> None:
        """Forget ``name``: it is NXDOMAIN from now on."""
        with self._zone.lock:
            self._zone.entries.pop(_key(name), None)

    def queries(self, name: str, rdtype: str | None = None) -> int:
        """How many questions about ``name`` (of ``rdtype``, or of any type) have arrived."""
        with self._zone.lock:
            return sum(
                count
                for (asked, kind), count in self._zone.asked.items()
                if asked == _key(name) and rdtype in (None, kind)
            )

    def _set(self, name: str, entry: _Entry) -> None:
        with self._zone.lock:
            self._zone.entries[_key(name)] = entry

    # --- serving ---------------------------------------------------------------------------

    def start(self) -> DnsServer:
        """Listen (on the port it had before, after ``stop()``) and answer in daemon threads."""
        assert not self._sockets, "already started"
        udp, tcp = self._bind()
        self.port = udp.getsockname()[1]
        self._sockets = [udp, tcp]
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, args=(udp, self._stopping), daemon=True),
            threading.Thread(target=self._serve_tcp, args=(tcp, self._stopping), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the sockets: the server is down until ``start()``."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        self._threads = []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on one port: the old one, or a free ephemeral one."""
        deadline = time.monotonic() + REBIND_SECONDS
        while True:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                udp.bind(("127.0.0.1", self.port))
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
                tcp.listen(16)
            except OSError:
                udp.close()
                tcp.close()
                if self.port and time.monotonic() > deadline:
                    raise
                time.sleep(POLL_SECONDS)
                continue
            udp.settimeout(POLL_SECONDS)
            tcp.settimeout(POLL_SECONDS)
            return udp, tcp

    def _serve_udp(self, sock: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            reply = self._reply(wire, udp=True)
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, peer)

    def _serve_tcp(self, sock: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            threading.Thread(
                target=self._serve_connection, args=(conn, stopping), daemon=True
            ).start()

    def _serve_connection(self, conn: socket.socket, stopping: threading.Event) -> None:
        conn.settimeout(POLL_SECONDS)
        with conn:
            while not stopping.is_set():
                try:
                    head = _read_exactly(conn, 2, stopping)
                    wire = _read_exactly(conn, struct.unpack("!H", head)[0], stopping)
                except (EOFError, OSError):
                    return
                reply = self._reply(wire, udp=False)
                if reply is None:
                    continue
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

    # --- answering -------------------------------------------------------------------------

    def _reply(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The answer to one query in wire form, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.RdataType(question.rdtype)
        with self._zone.lock:
            self._zone.asked[name, rdtype.name] += 1
            entry = self._zone.entries.get(name)
            if entry is not None and entry.silent:
                return None
            self._answer(response, name, rdtype, entry)
        limit = max(query.payload, CLASSIC_UDP_SIZE) if udp else 65535
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    def _answer(
        self,
        response: dns.message.Message,
        name: str,
        rdtype: dns.rdatatype.RdataType,
        entry: _Entry | None,
    ) -> None:
        if entry is None or entry.nxdomain:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif entry.rcode is not None:
            response.set_rcode(entry.rcode)
        elif rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            rrset = _addresses(name, rdtype, entry)
            if rrset is not None:
                response.answer.append(rrset)
        elif rdtype == dns.rdatatype.SRV and entry.srv:
            records = [f"{p} {w} {port} {_absolute(target)}" for p, w, port, target in entry.srv]
            response.answer.append(
                dns.rrset.from_text_list(name + ".", entry.ttl, "IN", "SRV", records)
            )
            if entry.additional:
                self._add_targets(response, entry)

    def _add_targets(self, response: dns.message.Message, entry: _Entry) -> None:
        for target in dict.fromkeys(_key(target) for _, _, _, target in entry.srv):
            known = self._zone.entries.get(target)
            if known is None or not known.ips:
                continue
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                rrset = _addresses(target, rdtype, known)
                if rrset is not None:
                    response.additional.append(rrset)


def _addresses(name: str, rdtype: dns.rdatatype.RdataType, entry: _Entry) -> dns.rrset.RRset | None:
    wanted = [ip for ip in entry.ips if (":" in ip) == (rdtype == dns.rdatatype.AAAA)]
    if not wanted:
        return None
    return dns.rrset.from_text_list(name + ".", entry.ttl, "IN", rdtype.name, wanted)


def _absolute(target: str) -> str:
    return target if target.endswith(".") else target + "."


def _read_exactly(conn: socket.socket, size: int, stopping: threading.Event) -> bytes:
    data = b""
    while len(data) < size:
        if stopping.is_set():
            raise EOFError
        try:
            chunk = conn.recv(size - len(data))
        except TimeoutError:
            continue
        if not chunk:
            raise EOFError
        data += chunk
    return data


@contextlib.contextmanager
def dns_server() -> Iterator[DnsServer]:
    """A started ``DnsServer``, stopped however the block ends."""
    server = DnsServer().start()
    try:
        yield server
    finally:
        server.stop()
