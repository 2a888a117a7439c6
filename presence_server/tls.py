"""Serving https and wss directly: the certificate and key of ``[server]``,
checked at start with errors that name the key, and reloaded on SIGHUP.

Many deployments terminate TLS at a load balancer and need none of this;
some run the server on the internet by itself, and those need TLS here.

The checks run with ``cryptography`` before the ``ssl`` module sees the files,
because OpenSSL's own errors (``[SSL: KEY_VALUES_MISMATCH]``, ``PEM lib``) do
not say which file is wrong or what to do about it.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from .config import ServerConfig

# Start warns (a log line) when the certificate expires sooner than this:
# enough time to notice a renewal job that stopped working.
EXPIRY_WARNING = timedelta(days=14)

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class CertificateInfo:
    """What the logs say about the certificate being served (no secrets)."""

    subject: str
    not_after: datetime
    sha256: str  # fingerprint of the leaf, as `openssl x509 -fingerprint -sha256` prints it
    chain_length: int


@dataclass(frozen=True)
class TlsProblem:
    key: str  # the [server] key at fault: tls_cert, tls_key or tls_key_password
    message: str

    def __str__(self) -> str:
        return f"server.{self.key}: {self.message}"


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise _Fail(key, f"{path}: no such file") from None
    except IsADirectoryError:
        raise _Fail(key, f"{path}: is a directory, not a PEM file") from None
    except PermissionError:
        raise _Fail(key, f"{path}: cannot read it (permission denied for this process)") from None
    except OSError as exc:
        raise _Fail(key, f"{path}: cannot read it ({exc.strerror or exc})") from None


class _Fail(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.problem = TlsProblem(key, message)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class TlsConfigError(ValueError):
    def __init__(self, problem: TlsProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def inspect_pair(cert_path: str, key_path: str, password: str | None, now: datetime) -> CertificateInfo:
    """Check the pair as ``ssl`` will use it; raise :class:`TlsConfigError`
    whose ``problem`` names the key and what is wrong."""
    try:
        return _inspect(cert_path, key_path, password, now)
    except _Fail as fail:
        raise TlsConfigError(fail.problem) from None


def _inspect(cert_path: str, key_path: str, password: str | None, now: datetime) -> CertificateInfo:
    cert_pem = _read(cert_path, "tls_cert")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        hint = " (it holds a private key: is it tls_key's file?)" if b"PRIVATE KEY-----" in cert_pem else ""
        raise _Fail("tls_cert", f"{cert_path}: no PEM certificate in it{hint}") from None
    leaf = chain[0]  # the server's own certificate comes first, its issuers after it
    key_pem = _read(key_path, "tls_key")
    try:
        key = serialization.load_pem_private_key(key_pem, password.encode() if password is not None else None)
    except TypeError as exc:
        if password is None:
            raise _Fail("tls_key", f"{key_path}: the key is encrypted; set server.tls_key_password") from None
        if "not encrypted" in str(exc):
            raise _Fail("tls_key_password", f"is set, but {key_path} is not encrypted; remove it") from None
        raise _Fail("tls_key", f"{key_path}: {exc}") from None
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in key_pem:
            raise _Fail("tls_key_password", f"does not decrypt {key_path}") from None
        hint = " (it holds a certificate: is it tls_cert's file?)" if b"CERTIFICATE-----" in key_pem else ""
        raise _Fail("tls_key", f"{key_path}: not a PEM private key{hint}") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and the like
        raise _Fail("tls_key", f"{key_path}: cannot load the key ({type(exc).__name__})") from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*der) != leaf.public_key().public_bytes(*der):
        raise _Fail("tls_key", f"{key_path}: this key does not match the certificate (the first one in {cert_path})")
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now >= not_after:
        raise _Fail("tls_cert", f"{cert_path}: the certificate expired on {_when(not_after)}; clients refuse it")
    if now < not_before:
        raise _Fail("tls_cert", f"{cert_path}: the certificate is not valid before {_when(not_before)} (check this machine's clock)")
    fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        not_after=not_after,
        sha256=":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2)),
        chain_length=len(chain),
    )


def check(server: ServerConfig, now: datetime | None = None) -> list[TlsProblem]:
    """The problems of ``[server]``'s TLS files (none when TLS is off)."""
    if not server.tls_cert or not server.tls_key:
        return []
    try:
        inspect_pair(server.tls_cert, server.tls_key, server.tls_key_password, now or datetime.now(timezone.utc))
    except TlsConfigError as exc:
        return [exc.problem]
    return []


def server_context(server: ServerConfig, now: datetime | None = None) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A server-side context with the configured pair loaded."""
    assert server.tls_cert and server.tls_key  # callers check that TLS is on
    info = inspect_pair(server.tls_cert, server.tls_key, server.tls_key_password, now or datetime.now(timezone.utc))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[server.tls_min_version]
    # aiohttp speaks HTTP/1.1 only (WebSockets upgrade from it); saying so lets
    # a client that offers h2 fall back at once.
    context.set_alpn_protocols(["http/1.1"])
    # Renegotiation is a denial-of-service lever and nothing here needs it.
    context.options |= ssl.OP_NO_RENEGOTIATION
    load_pair(context, server)
    return context, info


def load_pair(context: ssl.SSLContext, server: ServerConfig) -> None:
    assert server.tls_cert and server.tls_key
    password = server.tls_key_password
    context.load_cert_chain(server.tls_cert, server.tls_key, password=(lambda: password) if password is not None else None)


def reload(context: ssl.SSLContext, server: ServerConfig, now: datetime | None = None) -> CertificateInfo:
    """Load a renewed pair into the live context: handshakes from now on get
    it, connections already open keep theirs (nothing is dropped). The pair
    is checked, and loaded into a scratch context, first: a bad pair raises
    and leaves the live context serving the old one."""
    _, info = server_context(server, now)  # raises TlsConfigError or ssl.SSLError; the live context is untouched
    context.minimum_version = MIN_VERSIONS[server.tls_min_version]
    load_pair(context, server)
    return info
