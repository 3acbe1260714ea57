"""TLS contexts: the listener senders connect to, and the connections to carriers.

Both sides require TLS 1.2 or later and use the ssl module's default cipher
selection. The listener presents ``[server] tls_cert`` / ``tls_key``; with
``tls_client_ca`` set it also requires every sender to present a certificate issued
by that CA (anyone without one fails the handshake and never reaches a bind).
Towards a carrier, the certificate is verified against ``tls_ca`` (or the system's
CAs) and the carrier's host name, unless ``tls_verify = false``.
"""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Carrier, ServerConfig

__all__ = [
    "MINIMUM_VERSION",
    "ca_file_problem",
    "carrier_context",
    "cert_chain_problem",
    "describe_peer",
    "listener_context",
]

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class EncryptedKey(ssl.SSLError):
    """The private key is encrypted: there is nobody to ask for its passphrase."""


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal, and `run` would hang.
    raise EncryptedKey(
        "the private key is encrypted with a passphrase, which cannot be given: "
        "store it unencrypted, readable by the proxy's user only"
    )


def _reason(exc: OSError) -> str:
    """An ssl or file error as a short reason (no OpenSSL source positions)."""
    if isinstance(exc, EncryptedKey):
        return str(exc.args[0])
    if not isinstance(exc, ssl.SSLError):
        return f"cannot be read: {exc.strerror or exc}"
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))


def ca_file_problem(path: str) -> str | None:
    """Why the PEM file at `path` cannot serve as CA certificates (None: it can)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            return "no PEM certificate in the file"
        return f"not a valid PEM certificate file ({_reason(exc)})"
    except OSError as exc:
        return _reason(exc)
    return None


def cert_chain_problem(cert: str, key: str = "") -> tuple[str, str] | None:
    """Why a certificate chain and its key (``tls_cert``, ``tls_key``; no key: in the
    certificate's file) cannot be loaded, as (the key to blame, the reason); None
    when they can."""
    problem = ca_file_problem(cert)  # the certificates parse
    if problem is not None:
        return "tls_cert", problem
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    where = "tls_key" if key else "tls_cert"
    try:
        ctx.load_cert_chain(cert, key or None, password=_no_passphrase)
    except ssl.SSLError as exc:
        if isinstance(exc, EncryptedKey):
            return where, _reason(exc)
        if exc.reason == "KEY_VALUES_MISMATCH":
            return where, "the private key does not match the certificate in tls_cert"
        if key:
            return where, f"no usable PEM private key in the file ({_reason(exc)})"
        return where, "no PEM private key after the certificate (or set tls_key)"
    except OSError as exc:
        return where, _reason(exc)
    return None


def listener_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The server-side context of the TLS listener; None when ``tls_cert`` is not set.

    Raises OSError / ssl.SSLError when the certificate, key or CA file cannot be read.
    """
    if not server.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.load_cert_chain(server.tls_cert, server.tls_key or None, password=_no_passphrase)
    if server.tls_client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=server.tls_client_ca)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def carrier_context(carrier: Carrier) -> ssl.SSLContext | None:
    """The client-side context for a carrier; None when the carrier is not TLS."""
    if not carrier.tls:
        return None
    ctx = ssl.create_default_context(cafile=carrier.tls_ca or None)
    ctx.minimum_version = MINIMUM_VERSION
    if not carrier.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe_peer(ssl_object: Any) -> str:
    """A short description of a TLS peer for logs: protocol and certificate subject."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return "plain"
    version = ssl_object.version() or "TLS"
    cert = ssl_object.getpeercert()
    if not cert:
        return version
    subject: Any = cert.get("subject", ())
    names = [str(pair[1]) for rdn in subject for pair in rdn if pair[0] == "commonName"]
    return f"{version}, CN={names[0]}" if names else version
