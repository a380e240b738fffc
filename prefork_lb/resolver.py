"""Backends found through DNS, the shell: ask a DNS server with dnspython.

``Resolver.resolve`` returns a ``dns.Resolution`` or raises ``dns.DnsFailure``;
no dnspython exception leaves this module. One deadline (``timeout``) bounds
the whole resolve, however many queries it takes (A and AAAA; SRV and then
the targets the answer's additional section did not cover).

It runs in gevent workers and once in the gunicorn master, so it imports
neither gevent nor urllib3. Under gevent it does not block the hub:
dnspython looks ``socket.socket``, ``selectors.DefaultSelector`` and
``time.sleep`` up when it queries, which ``monkey.patch_all`` replaces, and
it starts no thread (its only lock guards the answer cache, not used here:
the caller re-resolves on the records' TTL). Reading /etc/resolv.conf, once
in the constructor, is a plain file read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from prefork_lb.dns import (
    Address,
    DnsFailure,
    DnsSource,
    Reason,
    Resolution,
    SrvRecord,
    is_ip,
    make_resolution,
    srv_addresses,
)

__all__ = ["Resolver"]

_T = TypeVar("_T")
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


def _rcode_failure(errors: Iterable[tuple[object, ...]]) -> Reason:
    """What NoNameservers' errors say: dnspython puts an unwanted rcode's text in them."""
    said = {str(error[3]) for error in errors if len(error) > 3}
    if "REFUSED" in said:
        return "refused"
    if "SERVFAIL" in said:
        return "servfail"
    if any(isinstance(error[3], dns.exception.Timeout) for error in errors if len(error) > 3):
        return "timeout"
    return "error"


def _failure(err: dns.exception.DNSException) -> DnsFailure:
    """A dnspython exception as a ``DnsFailure``: most specific first (STYLE.md rule 5)."""
    if isinstance(err, dns.resolver.NXDOMAIN):
        return DnsFailure("nxdomain", "the name does not exist")
    if isinstance(err, dns.resolver.NoAnswer):
        return DnsFailure("empty", "no records of that type")
    if isinstance(err, dns.exception.Timeout):  # LifetimeTimeout is one
        return DnsFailure("timeout", "no answer in time")
    if isinstance(err, dns.resolver.NoNameservers):
        errors = err.kwargs.get("errors") or []
        return DnsFailure(_rcode_failure(errors), _errors_text(errors))
    return DnsFailure("error", str(err) or type(err).__name__)


def _errors_text(errors: Iterable[tuple[object, ...]]) -> str:
    """``server@port: what it said`` for each attempt NoNameservers lists, each once."""
    said = dict.fromkeys(
        f"{str(error[0]).removeprefix('Do53:')}: {error[3]}" for error in errors if len(error) > 3
    )
    return "; ".join(said) or "no server answered"


class Resolver:
    """Resolves a ``DnsSource``: with the system's configuration, or with one server."""

    def __init__(self, server: tuple[str, int] | None, timeout: float) -> None:
        self.timeout = timeout
        try:
            self._resolver = dns.resolver.Resolver(configure=server is None)
        except dns.exception.DNSException as err:  # no usable /etc/resolv.conf
            raise DnsFailure("error", f"cannot read the system's resolver settings: {err}") from err
        if server is not None:
            ip, port = server
            self._resolver.nameservers = [ip]
            self._resolver.port = port
        # The system's search list applies as it does for getaddrinfo; a named server sees
        # names as written (made absolute).
        self._search = server is None
        self._resolver.cache = None
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout

    def resolve(self, source: DnsSource) -> Resolution:
        """The addresses ``source`` names now, or ``DnsFailure`` saying why there are none."""
        deadline = time.monotonic() + self.timeout
        if source.kind == "a":
            resolution = self._resolve_a(source, deadline)
        else:
            resolution = self._resolve_srv(source, deadline)
        if not resolution.addresses:
            raise DnsFailure("empty", f"no addresses for {source.name}")
        return resolution

    def _resolve_a(self, source: DnsSource, deadline: float) -> Resolution:
        if is_ip(source.name):  # nothing to ask: the address itself, which never expires
            return make_resolution([Address(source.name, source.port)], math.inf)
        rrsets = list(self._address_rrsets(source.name, deadline))
        return make_resolution(
            (Address(rdata.address, source.port) for rrset in rrsets for rdata in rrset),
            _smallest_ttl(rrsets),
        )

    def _resolve_srv(self, source: DnsSource, deadline: float) -> Resolution:
        answer = self._ask(source.name, dns.rdatatype.SRV, deadline)
        records = [
            SrvRecord(rdata.priority, rdata.weight, rdata.port, _text(rdata.target))
            for rdata in answer.rrset or ()
        ]
        found = _additional_addresses(answer.response)
        used = [answer.rrset] if answer.rrset is not None else []
        targets: dict[str, list[str]] = {}
        for target in dict.fromkeys(record.target for record in records if record.target):
            rrsets = found.get(target) or list(self._target_rrsets(target, deadline))
            used += rrsets
            targets[target] = [rdata.address for rrset in rrsets for rdata in rrset]
        return make_resolution(srv_addresses(records, targets), _smallest_ttl(used))

    def _address_rrsets(self, name: str, deadline: float) -> Iterator[dns.rrset.RRset]:
        """A and AAAA records of ``name``: NXDOMAIN or none only when both say so."""
        outcomes = [self._attempt(name, rdtype, deadline) for rdtype in _ADDRESS_TYPES]
        answers = [outcome for outcome in outcomes if not isinstance(outcome, DnsFailure)]
        if not answers:
            reasons = {failure.reason for failure in outcomes if isinstance(failure, DnsFailure)}
            raise DnsFailure(
                "nxdomain" if reasons == {"nxdomain"} else "empty", f"no A or AAAA for {name}"
            )
        yield from (answer.rrset for answer in answers if answer.rrset is not None)

    def _target_rrsets(self, target: str, deadline: float) -> Iterator[dns.rrset.RRset]:
        """A and AAAA of an SRV target the additional section left out; none if it has none."""
        try:
            yield from self._address_rrsets(target, deadline)
        except DnsFailure as failure:
            if failure.reason not in ("nxdomain", "empty"):
                raise

    def _attempt(
        self, name: str, rdtype: dns.rdatatype.RdataType, deadline: float
    ) -> dns.resolver.Answer | DnsFailure:
        """One query: its answer, or the NXDOMAIN/empty failure; any other failure raises."""
        try:
            return self._ask(name, rdtype, deadline)
        except DnsFailure as failure:
            if failure.reason in ("nxdomain", "empty"):
                return failure
            raise

    def _ask(
        self, name: str, rdtype: dns.rdatatype.RdataType, deadline: float
    ) -> dns.resolver.Answer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DnsFailure("timeout", f"no answer in {self.timeout:g} s")
        return _mapped(
            lambda: self._resolver.resolve(name, rdtype, search=self._search, lifetime=remaining)
        )


def _mapped(call: Callable[[], _T]) -> _T:
    try:
        return call()
    except dns.exception.DNSException as err:
        raise _failure(err) from err


def _additional_addresses(response: dns.message.Message) -> dict[str, list[dns.rrset.RRset]]:
    """A/AAAA record sets of the additional section, by owner name (lower case, no dot)."""
    found: dict[str, list[dns.rrset.RRset]] = {}
    for rrset in response.additional:
        if rrset.rdtype in _ADDRESS_TYPES and rrset.rdclass == dns.rdataclass.IN:
            found.setdefault(_text(rrset.name), []).append(rrset)
    return found


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _smallest_ttl(rrsets: Iterable[dns.rrset.RRset]) -> float:
    return float(min((rrset.ttl for rrset in rrsets), default=0))
