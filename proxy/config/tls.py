"""TLS contexts: the listener senders connect to, and the connections to carriers.

Both sides require TLS 1.2 or later and use the ssl module's default cipher
selection. The listener presents ``[server] tls_cert`` / ``tls_key``; with
``tls_client_ca`` set it also requires every sender to present a certificate issued
by that CA (anyone without one fails the handshake and never reaches a bind).
Towards a carrier, the certificate is verified against ``tls_ca`` (or the system's
CAs) and the carrier's host name, unless ``tls_verify = false``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from bounceback.config.certs import no_passphrase

if TYPE_CHECKING:
    from bounceback.config.settings import Carrier, MetricsConfig, ServerConfig

__all__ = [
    "MINIMUM_VERSION",
    "carrier_context",
    "describe_peer",
    "http_context",
    "listener_context",
]

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def listener_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The server-side context of the TLS listener; None when ``tls_cert`` is not set.

    Raises OSError / ssl.SSLError when the certificate, key or CA file cannot be read.
    """
    if not server.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.load_cert_chain(server.tls_cert, server.tls_key or None, password=no_passphrase)
    if server.tls_client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=server.tls_client_ca)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_context(metrics: MetricsConfig) -> ssl.SSLContext | None:
    """The server-side context of the HTTP listener; None when it speaks plain HTTP."""
    if not metrics.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.load_cert_chain(metrics.tls_cert, metrics.tls_key or None, password=no_passphrase)
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
