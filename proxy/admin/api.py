"""The admin API: ``/v1`` endpoints, their OpenAPI document, and what they ask of the gateway.

Every endpoint is declared once in `ENDPOINTS` (method, path, scope, parameters, what
it answers); the aiohttp routes and ``/openapi.json`` are both built from that list,
so the document cannot drift from what is served. Errors have one shape,
``{"error": {"status": 404, "code": "not_found", "message": "..."}}``, and lists one
shape, ``{"items": [...], "next": CURSOR | null}`` (pass ``cursor=CURSOR`` for the next
page, ``limit`` up to 500).

The handlers know the gateway only as `Control`, the few questions and actions the
API needs; the gateway implements it (``gateway/control.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import attrs
from aiohttp import web
from bounceback import __version__
from bounceback.admin.auth import allows, bearer, identify
from bounceback.admin.static import add_console
from bounceback.analysis.stats import BUCKETS, SECTIONS, csv_from_doc
from bounceback.config.settings import AdminConfig, AdminToken, ConfigError
from bounceback.core.model import Message, State
from bounceback.store.sqlite import Suppression

__all__ = [
    "ENDPOINTS",
    "Control",
    "Endpoint",
    "Health",
    "build_app",
    "message_json",
    "openapi_document",
]

log = logging.getLogger("bounceback.admin")

MAX_LIMIT: Final = 500
MAX_TTL: Final = 10 * 366 * 86400  # a suppression lasts at most ten years
NUMBER: Final = re.compile(r"^\+?[0-9]{3,21}$")
DEFAULT_LIMIT: Final = 100


class Control(Protocol):
    """What the API asks of the gateway."""

    def shown(self, number: str) -> str:
        """A destination as logs and the API show it (masked as configured)."""
        ...

    async def message(self, message_id: str) -> Message | None: ...

    async def message_by_carrier_id(self, carrier: str, carrier_id: str) -> Message | None:
        """The message `carrier` ("": any carrier) knows as `carrier_id`."""
        ...

    async def search(self, filters: Mapping[str, Any], after: str, limit: int) -> list[Message]:
        """Messages matching `filters` (``state``, ``account``, ``destination``,
        ``carrier``, ``reason``, ``since``, ``until``), ids above `after`, by id."""
        ...

    async def retry_now(self, message_id: str, by: str) -> Message | None:
        """Start the next attempt of a held message now (None: no such message)."""
        ...

    async def cancel(self, message_id: str, by: str) -> Message | None:
        """End a message as cancelled; the sender gets its final receipt."""
        ...

    async def suppression(self, prefix: str, after: str, limit: int) -> list[Suppression]: ...

    async def block(
        self, number: str, reason: str, ttl: float | None, account: str, by: str
    ) -> Suppression: ...

    async def unblock(self, number: str, by: str) -> bool: ...

    async def stats(
        self, since: float, until: float, *, top: int, local_hours: bool, bucket: str | None = None
    ) -> dict[str, object]:
        """What `bounceback stats` reports for the messages accepted in [since, until)
        (the ``bounceback.report/1`` document; `bucket`: the timeline's, None: by the
        range)."""
        ...

    async def flagged(self, after: str, limit: int) -> list[dict[str, Any]]:
        """Numbers with ``[retry] flag_threshold`` soft bounces or more within
        ``flag_window``, by number, above `after`."""
        ...

    async def unflag(self, number: str, by: str) -> int:
        """Forget a number's soft bounces (0: it had none)."""
        ...

    async def carriers(self, minutes: float = 15.0) -> list[dict[str, Any]]:
        """Each carrier link now, and the messages of the last `minutes` it took."""
        ...

    async def pause(self, carrier: str, by: str) -> bool:
        """Send nothing new to `carrier` (False: no such carrier)."""
        ...

    async def resume(self, carrier: str, by: str) -> bool: ...

    async def accounts(self) -> list[dict[str, Any]]:
        """Each account, its binds, and its receipts waiting for a receiver."""
        ...

    async def reload(self, by: str) -> tuple[list[str], list[str]]:
        """Read the configuration file again and apply what needs no restart: (the
        sections changed, those that wait for a restart). Raises ConfigError (with
        every problem) when the file does not validate; nothing is applied then."""
        ...

    # The console's overview.
    async def overview(self, minutes: float = 15.0) -> dict[str, Any]:
        """The gateway now: throughput, outcome shares of the last `minutes`, held
        messages by reason, carriers, store and feed health."""
        ...

    # ---- recovery-time estimates ([retry] mode = "learned")
    async def estimates(self) -> dict[str, Any]:
        """The recovery estimates (the ``bounceback.estimates/1`` document)."""
        ...

    async def reset_estimates(self, by: str) -> int:
        """Forget every recovery estimate (of every instance): how many keys there were."""
        ...


class Health(Protocol):
    """The metrics registry and the readiness check the gateway keeps."""

    def render(self) -> bytes: ...

    async def refresh(self, *, force: bool = False) -> None: ...

    async def readiness(self) -> tuple[bool, str]: ...


TOKEN: Final = web.RequestKey("token", AdminToken)


@attrs.define
class Settings:
    """The ``[admin]`` table the server answers with now (a reload replaces it)."""

    admin: AdminConfig | None


CONTROL: Final = web.AppKey("control", Control)
HEALTH: Final = web.AppKey("health", Health)
SETTINGS: Final = web.AppKey("settings", Settings)


# ---------------------------------------------------------------- errors and JSON


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"status": status, "code": code, "message": message}}
    return web.json_response(body, status=status)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def message_json(msg: Message, shown: Callable[[str], str]) -> dict[str, Any]:
    """One message as the API shows it (the destination masked as configured)."""
    v = msg.verdict
    return {
        "id": msg.id,
        "account": msg.account,
        "source": msg.source_addr,
        "destination": shown(msg.destination_addr),
        "state": msg.state.value,
        "final": msg.state.final,
        "attempts": msg.attempts,
        "carrier": msg.carrier or None,
        "carrier_message_id": msg.carrier_message_id or None,
        "created_at": _iso(msg.created_at),
        "updated_at": _iso(msg.updated_at),
        "deadline": _iso(msg.deadline),
        "next_attempt_at": _iso(msg.next_attempt_at),
        "done_at": _iso(msg.done_at),
        "final_stat": msg.final_stat or None,
        "final_err": msg.final_err or None,
        "verdict": None if v is None else attrs.asdict(v),
        "retries_by_reason": dict(msg.retries_by_reason),
        "version": msg.version,
        # Its life, oldest first: the feed's events (accepted, submitted, soft_bounce
        # with its reason, code and rule and the next attempt, resubmitted, ...).
        "timeline": [{"at": _iso(s.at), "event": s.event, **s.fields} for s in msg.history],
    }


def suppression_json(s: Suppression) -> dict[str, Any]:
    return {
        "number": s.number,
        "reason": s.reason,
        "created_at": _iso(s.created_at),
        "expires_at": _iso(s.expires_at),
        "account": s.account or None,
    }


# ---------------------------------------------------------------- declarations


@attrs.frozen
class Param:
    name: str
    where: str  # path | query
    description: str
    kind: str = "string"  # string | integer | number
    enum: tuple[str, ...] = ()
    extra: Mapping[str, Any] = attrs.field(factory=dict)  # more JSON Schema keywords


@attrs.frozen
class Endpoint:
    method: str
    path: str
    scope: str | None  # None: no token needed (or "read" when open_health is off)
    summary: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None  # JSON Schema of the request body
    answers: str = "object"  # object | list | text | report (JSON, or CSV with format=csv)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"limit: expected an integer, got {raw!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise ApiError(400, "bad_parameter", f"limit: expected 1 to {MAX_LIMIT}, got {n}")
    return n


def _time(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            400, "bad_parameter", f"{name}: expected an ISO 8601 time or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _page(items: list[Any], limit: int, key: Callable[[Any], str]) -> dict[str, Any]:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next": key(items[-1]) if more and items else None}


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_body", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", "the body must be a JSON object")
    return body


def _who(request: web.Request) -> str:
    token = request.get(TOKEN)
    return token.name if token is not None else "-"


# ---------------------------------------------------------------- handlers


async def get_message(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    msg = await ctl.message(request.match_info["id"])
    if msg is None:
        raise ApiError(404, "not_found", f"no message {request.match_info['id']}")
    return web.json_response(message_json(msg, ctl.shown))


async def list_messages(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    q = request.query
    limit = _limit(request)
    if "carrier_id" in q:
        msg = await ctl.message_by_carrier_id(q.get("carrier", ""), q["carrier_id"])
        items = [] if msg is None else [message_json(msg, ctl.shown)]
        return web.json_response({"items": items, "next": None})
    filters: dict[str, Any] = {
        k: q[k] for k in ("state", "account", "destination", "carrier", "reason") if k in q
    }
    if "state" in filters and filters["state"] not in {s.value for s in State}:
        raise ApiError(400, "bad_parameter", f"state: unknown state {filters['state']!r}")
    for name in ("since", "until"):
        t = _time(request, name)
        if t is not None:
            filters[name] = t
    found = await ctl.search(filters, q.get("cursor", ""), limit + 1)
    page = _page([message_json(m, ctl.shown) for m in found], limit, lambda m: str(m["id"]))
    return web.json_response(page)


async def list_held(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    q = request.query
    limit = _limit(request)
    filters: dict[str, Any] = {"state": State.HELD.value}
    filters.update({k: q[k] for k in ("account", "carrier", "reason") if k in q})
    found = await ctl.search(filters, q.get("cursor", ""), limit + 1)
    page = _page([message_json(m, ctl.shown) for m in found], limit, lambda m: str(m["id"]))
    return web.json_response(page)


async def retry_held(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    mid = request.match_info["id"]
    before = await ctl.message(mid)
    if before is None:
        raise ApiError(404, "not_found", f"no message {mid}")
    if before.state != State.HELD:
        raise ApiError(409, "not_held", f"message {mid} is {before.state.value}, not held")
    after = await ctl.retry_now(mid, _who(request))
    assert after is not None
    return web.json_response(message_json(after, ctl.shown))


async def cancel_held(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    mid = request.match_info["id"]
    before = await ctl.message(mid)
    if before is None:
        raise ApiError(404, "not_found", f"no message {mid}")
    if before.state.final:
        raise ApiError(409, "final", f"message {mid} has ended ({before.state.value})")
    after = await ctl.cancel(mid, _who(request))
    assert after is not None
    return web.json_response(message_json(after, ctl.shown))


async def list_suppression(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    limit = _limit(request)
    found = await ctl.suppression(
        request.query.get("prefix", ""), request.query.get("cursor", ""), limit + 1
    )
    page = _page([suppression_json(s) for s in found], limit, lambda s: str(s["number"]))
    return web.json_response(page)


BLOCK_BODY: Final[Mapping[str, Any]] = {
    "type": "object",
    "required": ["number"],
    "additionalProperties": False,
    "properties": {
        "number": {"type": "string", "pattern": NUMBER.pattern},
        "reason": {"type": "string", "maxLength": 200},
        "expires_in": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL},
        "account": {"type": "string", "maxLength": 15},
    },
}


async def block_number(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    body = await _json_body(request)
    unknown = sorted(set(body) - set(BLOCK_BODY["properties"]))
    if unknown:
        raise ApiError(400, "bad_body", f"unknown field {unknown[0]!r}")
    number = body.get("number")
    if not isinstance(number, str) or not NUMBER.fullmatch(number):
        raise ApiError(400, "bad_body", "number: expected 3 to 21 digits (and a leading +)")
    reason = body.get("reason", "blocked by an operator")
    account = body.get("account", "")
    ttl = body.get("expires_in")
    if not isinstance(reason, str) or not isinstance(account, str):
        raise ApiError(400, "bad_body", "reason and account must be strings")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL
    ):
        raise ApiError(
            400, "bad_body", f"expires_in: expected seconds, more than 0 and at most {MAX_TTL}"
        )
    s = await ctl.block(number, reason, None if ttl is None else float(ttl), account, _who(request))
    return web.json_response(suppression_json(s), status=201)


async def unblock_number(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    number = request.match_info["number"]
    if not await ctl.unblock(number, _who(request)):
        raise ApiError(404, "not_found", f"{number} is not on the suppression list")
    return web.Response(status=204)


async def get_stats(request: web.Request) -> web.StreamResponse:
    now = time.time()
    until = _time(request, "until")
    until = now if until is None else until
    since = _time(request, "since")
    if since is None:
        since = until - 86400.0
    since = min(since, until)  # [since, until) is empty then: a report of nothing
    raw = request.query.get("top", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ApiError(400, "bad_parameter", f"top: expected 1 to 1000, got {raw!r}")
    hours = request.query.get("hours", "utc")
    if hours not in ("utc", "local"):
        raise ApiError(400, "bad_parameter", f"hours: expected utc or local, got {hours!r}")
    bucket = request.query.get("bucket")
    if bucket is not None and bucket not in BUCKETS:
        raise ApiError(
            400, "bad_parameter", f"bucket: expected {' or '.join(BUCKETS)}, got {bucket!r}"
        )
    section = request.query.get("section")
    if section is not None and section not in SECTIONS:
        raise ApiError(400, "bad_parameter", f"section: expected one of {', '.join(SECTIONS)}")
    form = request.query.get("format", "json" if section is None else "csv")
    if form not in ("json", "csv"):
        raise ApiError(400, "bad_parameter", f"format: expected json or csv, got {form!r}")
    if not (math.isfinite(since) and math.isfinite(until)):
        raise ApiError(400, "bad_parameter", "since, until: expected a finite time")
    # Times outside the years 1 to 9999 hold no messages and cannot be shown.
    since = min(max(since, EPOCH_MIN), EPOCH_MAX)
    until = min(max(until, EPOCH_MIN), EPOCH_MAX)
    doc = await request.app[CONTROL].stats(
        since, until, top=int(raw), local_hours=hours == "local", bucket=bucket
    )
    if form == "json":
        return web.json_response(doc)  # the whole document (section: CSV only)
    name = "-".join(["bounceback", section or "report", _stamp(since), _stamp(until)])
    return web.Response(
        text=csv_from_doc(doc, section),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


EPOCH_MIN: Final = dt.datetime(1, 1, 2, tzinfo=dt.UTC).timestamp()
EPOCH_MAX: Final = dt.datetime(9999, 12, 30, tzinfo=dt.UTC).timestamp()


def _stamp(ts: float) -> str:
    """A time for a file name: 20240501T0000Z."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y%m%dT%H%MZ")


async def list_flagged(request: web.Request) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    limit = _limit(request)
    found = await ctl.flagged(request.query.get("cursor", ""), limit + 1)
    return web.json_response(_page(found, limit, lambda f: str(f["number"])))


async def clear_flagged(request: web.Request) -> web.StreamResponse:
    number = request.match_info["number"]
    if not await request.app[CONTROL].unflag(number, _who(request)):
        raise ApiError(404, "not_found", f"{number} has no soft bounces on record")
    return web.Response(status=204)


def _minutes(request: web.Request) -> float:
    """The ``minutes`` window of a query (default 15, up to a day)."""
    raw = request.query.get("minutes", "15")
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not 0 < minutes <= 1440:
        raise ApiError(400, "bad_parameter", f"minutes: expected 0 to 1440, got {raw!r}")
    return minutes


async def list_carriers(request: web.Request) -> web.StreamResponse:
    minutes = _minutes(request)
    items = await request.app[CONTROL].carriers(minutes)
    return web.json_response({"items": items, "next": None})


async def pause_carrier(request: web.Request) -> web.StreamResponse:
    return await _carrier_switch(request, pause=True)


async def resume_carrier(request: web.Request) -> web.StreamResponse:
    return await _carrier_switch(request, pause=False)


async def _carrier_switch(request: web.Request, *, pause: bool) -> web.StreamResponse:
    ctl = request.app[CONTROL]
    name = request.match_info["name"]
    if pause:
        done = await ctl.pause(name, _who(request))
    else:
        done = await ctl.resume(name, _who(request))
    if not done:
        raise ApiError(404, "not_found", f"no carrier {name!r}")
    state = next(c for c in await ctl.carriers() if c["name"] == name)
    return web.json_response(state)


async def list_accounts(request: web.Request) -> web.StreamResponse:
    return web.json_response({"items": await request.app[CONTROL].accounts(), "next": None})


async def reload_config(request: web.Request) -> web.StreamResponse:
    try:
        changed, waiting = await request.app[CONTROL].reload(_who(request))
    except ConfigError as exc:
        problems = [{"file": p.file, "key": p.key, "message": p.message} for p in exc.problems]
        body = {
            "error": {
                "status": 422,
                "code": "invalid_config",
                "message": "the file does not validate: nothing of it was applied",
                "problems": problems,
            }
        }
        return web.json_response(body, status=422)
    return web.json_response({"changed": changed, "restart_needed": waiting})


# ---------------------------------------------------------------- the console's overview


async def get_overview(request: web.Request) -> web.StreamResponse:
    minutes = _minutes(request)
    doc = await request.app[CONTROL].overview(minutes)
    token = request.get(TOKEN)
    # Who is asking: the console shows or hides the admin actions by the scope.
    doc["token"] = None if token is None else {"name": token.name, "scope": token.scope}
    return web.json_response(doc)


# ---------------------------------------------------------------- recovery estimates


async def get_estimates(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[CONTROL].estimates())


async def reset_estimates(request: web.Request) -> web.StreamResponse:
    n = await request.app[CONTROL].reset_estimates(_who(request))
    return web.json_response({"removed_keys": n})


# ---------------------------------------------------------------- health


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.StreamResponse:
    ready, reason = await request.app[HEALTH].readiness()
    return web.Response(text=reason + "\n", status=200 if ready else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    health = request.app[HEALTH]
    await health.refresh()
    return web.Response(
        body=health.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


_LIST = (
    Param(
        "limit",
        "query",
        f"items per page (1 to {MAX_LIMIT})",
        "integer",
        extra={"minimum": 1, "maximum": MAX_LIMIT},
    ),
    Param("cursor", "query", "the `next` of the previous page"),
)
_MID = Param("id", "path", "our message id (the one the sender got)")

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint("GET", "/healthz", None, "the process is alive", healthz, answers="text"),
    Endpoint(
        "GET", "/readyz", None, "the store answers and a carrier is bound", readyz, answers="text"
    ),
    Endpoint("GET", "/metrics", None, "Prometheus metrics", metrics, answers="text"),
    Endpoint("GET", "/openapi.json", None, "this document", openapi),
    Endpoint("GET", "/v1/messages/{id}", "read", "one message", get_message, (_MID,)),
    Endpoint(
        "GET",
        "/v1/messages",
        "read",
        "search messages (or find one by the carrier's id: carrier + carrier_id)",
        list_messages,
        (
            Param("state", "query", "state", enum=tuple(s.value for s in State)),
            Param("account", "query", "the sender's system_id"),
            Param("destination", "query", "the destination number"),
            Param("carrier", "query", "the carrier of the latest attempt"),
            Param("reason", "query", "the reason of the latest verdict"),
            Param(
                "since",
                "query",
                "accepted at or after (RFC 3339; epoch seconds also do)",
                extra={"format": "date-time"},
            ),
            Param(
                "until",
                "query",
                "accepted before (RFC 3339; epoch seconds also do)",
                extra={"format": "date-time"},
            ),
            Param(
                "carrier_id",
                "query",
                "the carrier's message id: the message it names (at `carrier`, or at any"
                " carrier when that is not given); the other filters do not apply",
            ),
            *_LIST,
        ),
        answers="list",
    ),
    Endpoint(
        "GET",
        "/v1/held",
        "read",
        "held messages, waiting for their next attempt",
        list_held,
        (
            Param("account", "query", "the sender's system_id"),
            Param("carrier", "query", "the carrier of the latest attempt"),
            Param("reason", "query", "why it is held (absent_subscriber, ...)"),
            *_LIST,
        ),
        answers="list",
    ),
    Endpoint(
        "POST", "/v1/held/{id}/retry", "admin", "start the next attempt now", retry_held, (_MID,)
    ),
    Endpoint(
        "POST",
        "/v1/messages/{id}/cancel",
        "admin",
        "end a message as cancelled (the sender gets the final receipt it asked for)",
        cancel_held,
        (_MID,),
    ),
    Endpoint(
        "GET",
        "/v1/suppression",
        "read",
        "the suppression list (numbers whose submits are refused)",
        list_suppression,
        (Param("prefix", "query", "numbers starting with"), *_LIST),
        answers="list",
    ),
    Endpoint(
        "POST",
        "/v1/suppression",
        "admin",
        "block a number (effective on the next submit_sm)",
        block_number,
        body=BLOCK_BODY,
    ),
    Endpoint(
        "DELETE",
        "/v1/suppression/{number}",
        "admin",
        "unblock a number (effective on the next submit_sm)",
        unblock_number,
        (Param("number", "path", "the number"),),
        answers="none",
    ),
    Endpoint(
        "GET",
        "/v1/stats",
        "read",
        "bounce patterns of the messages accepted in a time range (bounceback stats as JSON"
        " or CSV)",
        get_stats,
        (
            Param(
                "since",
                "query",
                "from (RFC 3339; epoch seconds also do); default: a day before until",
                extra={"format": "date-time"},
            ),
            Param(
                "until",
                "query",
                "to, not included (RFC 3339; epoch seconds also do); default: now",
                extra={"format": "date-time"},
            ),
            Param(
                "top",
                "query",
                "numbers listed as repeat soft-bouncers",
                "integer",
                extra={"minimum": 1, "maximum": 1000},
            ),
            Param(
                "hours",
                "query",
                "hours of day in UTC or the destination's local time",
                enum=("utc", "local"),
            ),
            Param(
                "bucket",
                "query",
                "the timeline's buckets; default by the range: up to 3 hours minute, up to"
                " 3 days hour, else day; coarsened past 2000 buckets (the answer's"
                " timeline.bucket says to what), and past 2000 days the timeline holds the"
                " latest 2000 (timeline.clipped)",
                enum=tuple(BUCKETS),
            ),
            Param(
                "format",
                "query",
                "json (default; csv with section) or csv (text/csv, an attachment: the"
                " whole report in one table, or one section)",
                enum=("json", "csv"),
            ),
            Param(
                "section",
                "query",
                "one part of the report as its own CSV table (its name in the JSON"
                " document); format=json ignores it",
                enum=tuple(SECTIONS),
            ),
        ),
        answers="report",
    ),
    Endpoint(
        "GET",
        "/v1/flagged",
        "read",
        "repeat soft-bouncers: numbers flagged by [retry] flag_threshold within flag_window",
        list_flagged,
        _LIST,
        answers="list",
    ),
    Endpoint(
        "DELETE",
        "/v1/flagged/{number}",
        "admin",
        "clear a number's flag (forget its soft bounces)",
        clear_flagged,
        (Param("number", "path", "the number"),),
        answers="none",
    ),
    Endpoint(
        "GET",
        "/v1/carriers",
        "read",
        "carrier links now, and the messages of the last minutes by state and reason",
        list_carriers,
        (
            Param(
                "minutes",
                "query",
                "the window of `recent` (default 15)",
                "number",
                extra={"exclusiveMinimum": 0, "maximum": 1440},
            ),
        ),
        answers="list",
    ),
    Endpoint(
        "POST",
        "/v1/carriers/{name}/pause",
        "admin",
        "send nothing new to a carrier (its route's other carriers take over, or messages wait)",
        pause_carrier,
        (Param("name", "path", "the carrier's name"),),
    ),
    Endpoint(
        "POST",
        "/v1/carriers/{name}/resume",
        "admin",
        "a paused carrier takes submissions again (what waited for it goes now)",
        resume_carrier,
        (Param("name", "path", "the carrier's name"),),
    ),
    Endpoint(
        "POST",
        "/v1/reload",
        "admin",
        "read the configuration file again and apply what needs no restart",
        reload_config,
    ),
    Endpoint(
        "GET", "/v1/accounts", "read", "accounts and their binds", list_accounts, answers="list"
    ),
    # The console's overview.
    Endpoint(
        "GET",
        "/v1/overview",
        "read",
        "the gateway now: throughput, outcome shares, held by reason, carriers, store and feed",
        get_overview,
        (
            Param(
                "minutes",
                "query",
                "the window of the outcome shares (default 15)",
                "number",
                extra={"exclusiveMinimum": 0, "maximum": 1440},
            ),
        ),
    ),
    # Recovery-time estimates: export (every key's counts and a summary), reset.
    Endpoint(
        "GET",
        "/v1/estimates",
        "read",
        "recovery-time estimates per (country, operator, reason): counts and quantiles",
        get_estimates,
    ),
    Endpoint(
        "DELETE",
        "/v1/estimates",
        "admin",
        "forget every recovery-time estimate (learned retries start again from the schedules)",
        reset_estimates,
    ),
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of `ENDPOINTS`."""
    error = {
        "description": "an error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.handler.__name__,
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.where == "path",
                    "description": p.description,
                    "schema": {
                        "type": p.kind,
                        **({"enum": list(p.enum)} if p.enum else {}),
                        **p.extra,
                    },
                }
                for p in e.params
            ],
            "responses": _responses(e),
        }
        if e.scope is not None:
            op["security"] = [{"bearer": []}]
            op["x-scope"] = e.scope
            op["responses"]["401"] = error
            op["responses"]["403"] = error
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": dict(e.body)}},
            }
            op["responses"]["400"] = error
        if any(p.where == "query" for p in e.params):
            op["responses"].setdefault("400", error)
        if any(p.where == "path" for p in e.params):
            op["responses"]["404"] = error
        if e.path.endswith(("/retry", "/cancel")):
            op["responses"]["409"] = error
        if e.path == "/v1/reload":
            op["responses"]["422"] = error
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bounceback admin API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "code", "message"],
                            "properties": {
                                "status": {"type": "integer"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Page": {
                    "type": "object",
                    "required": ["items", "next"],
                    "properties": {
                        "items": {"type": "array", "items": {"type": "object"}},
                        "next": {"type": ["string", "null"]},
                    },
                },
            },
        },
    }


def _responses(e: Endpoint) -> dict[str, Any]:
    if e.answers == "none":
        return {"204": {"description": "done"}}
    if e.answers == "text":
        ok: dict[str, Any] = {
            "description": "ok",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
        out = {"200": ok}
        if e.path == "/readyz":
            out["503"] = {"description": "not ready (the reason)", "content": ok["content"]}
        return out
    schema: dict[str, Any] = (
        {"$ref": "#/components/schemas/Page"} if e.answers == "list" else {"type": "object"}
    )
    code = "201" if e.method == "POST" and e.body is not None else "200"
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if e.answers == "report":
        content["text/csv"] = {"schema": {"type": "string"}}
    return {code: {"description": "ok", "content": content}}


# ---------------------------------------------------------------- the application


def _guard(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`endpoint`'s handler behind its token check, with errors in the API's shape."""

    async def handle(request: web.Request) -> web.StreamResponse:
        admin = request.app[SETTINGS].admin
        scope = endpoint.scope
        if admin is None:
            if scope is not None:  # no [admin] table: only health, metrics, the document
                return error_response(404, "not_found", "the admin API is off (no [admin])")
        elif scope is None and not admin.open_health and endpoint.path != "/openapi.json":
            scope = "read"
        if scope is not None and admin is not None:
            token = identify(bearer(request.headers.get("Authorization")), admin.tokens)
            if token is None:
                resp = error_response(401, "unauthorized", "a valid bearer token is needed")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="bounceback"'
                return resp
            if not allows(token, scope):
                return error_response(
                    403, "forbidden", f"token {token.name!r} has scope {token.scope}, not {scope}"
                )
            request[TOKEN] = token
        try:
            return await endpoint.handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)

    return handle


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors (no route, wrong method) and crashes in the API's shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error (logged)")


def build_app(control: Control, health: Health, admin: AdminConfig | None) -> web.Application:
    """The application: health and metrics always, the ``/v1`` API with `admin` set."""
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    app[CONTROL] = control
    app[HEALTH] = health
    app[SETTINGS] = Settings(admin)
    for e in ENDPOINTS:
        if e.method == "GET":
            app.router.add_get(e.path, _guard(e), allow_head=True)
        else:
            app.router.add_route(e.method, e.path, _guard(e))
    add_console(app)  # the web console: static files at / and /console/...
    return app
