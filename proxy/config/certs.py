"""Can these PEM files serve as what the configuration says they are?

The checks `settings` runs on ``tls_cert`` / ``tls_key`` / ``tls_ca`` /
``tls_client_ca`` when a configuration is loaded, so a bad file is named with its key
at start-up (not at the first TLS handshake), and the passphrase guard the TLS
contexts in `tls` share.
"""

from __future__ import annotations

import re
import ssl

__all__ = ["EncryptedKey", "ca_file_problem", "cert_chain_problem", "no_passphrase"]


class EncryptedKey(ssl.SSLError):
    """The private key is encrypted: there is nobody to ask for its passphrase."""


def no_passphrase() -> str:
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
        ctx.load_cert_chain(cert, key or None, password=no_passphrase)
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
