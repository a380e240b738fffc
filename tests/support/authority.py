"""A test certificate authority (trustme) and a server certificate it issued, as PEM files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Authority:
    """A CA, its PEM file, and a server certificate it issued for 127.0.0.1 and localhost."""

    ca: trustme.CA
    ca_file: Path
    server: trustme.LeafCert
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting this CA only."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def make_authority(directory: Path, *names: str) -> Authority:
    """A new CA and a certificate for ``names`` (127.0.0.1, localhost), written in ``directory``."""
    directory.mkdir()
    ca = trustme.CA()
    server = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
    authority = Authority(
        ca, directory / "ca.pem", server, directory / "cert.pem", directory / "key.pem"
    )
    ca.cert_pem.write_to_path(str(authority.ca_file))
    server.cert_chain_pems[0].write_to_path(str(authority.cert_file))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(authority.cert_file), append=True)
    server.private_key_pem.write_to_path(str(authority.key_file))
    return authority
