"""Who is asking: bearer tokens and their scopes (pure; no I/O).

Every token of the configuration is compared with the presented one, each in constant
time (`hmac.compare_digest`) and without stopping at the first match, so the answer
time says nothing about how much of a secret was right or which token nearly matched.
A ``read`` token may look; an ``admin`` token may also act.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

from bounceback.config.settings import AdminToken

__all__ = ["SCOPE_RANK", "allows", "bearer", "identify"]

SCOPE_RANK: Final = {"read": 1, "admin": 2}


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (None: none presented)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def identify(presented: str | None, tokens: Sequence[AdminToken]) -> AdminToken | None:
    """The configured token equal to `presented` (None: no such token)."""
    if presented is None:
        return None
    given = presented.encode()
    found: AdminToken | None = None
    for token in tokens:
        if hmac.compare_digest(given, token.token.encode()) and found is None:
            found = token
    return found


def allows(token: AdminToken, scope: str) -> bool:
    """Whether `token` may do what needs `scope`."""
    return SCOPE_RANK.get(token.scope, 0) >= SCOPE_RANK[scope]
