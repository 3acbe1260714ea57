"""The admin API over real HTTP (aiohttp's client) against a running gateway with real
SMPP peers: auth and scopes, the error and page shapes, the OpenAPI document, held
messages retried and cancelled, the suppression list changed without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import bounceback
import jsonschema
import pytest
from bounceback.admin.api import ENDPOINTS
from bounceback.config.settings import ConfigError, load_config
from bounceback.core.model import State
from bounceback.gateway.shell import Gateway
from bounceback.store.sqlite import Change
from harness import (
    HELD_RETRY,
    ProxyProcess,
    admin_toml,
    bind_sender,
    free_port,
    self_signed,
    simulator,
    wait_until,
    write_config,
)
from smppcodecs.constants import CommandStatus as S
from smpplib_peer import SmpplibSender, receipt_fields

READ = "read-token-0123456789"
ADMIN = "admin-token-0123456789"
ADMIN_ENV = "BB_TEST_ADMIN_TOKEN"


@contextlib.asynccontextmanager
async def running(
    tmp: Path, scenario: dict[str, Any] | None = None, *, open_health: bool = True
) -> AsyncIterator[tuple[Gateway, str, Any]]:
    """A gateway with the admin API, its base URL, and the carrier simulator."""
    async with simulator(scenario or {"receipt_delay": 0.02}) as sim:
        extra = admin_toml(READ, admin_token_env=ADMIN_ENV, open_health=open_health)
        path = write_config(tmp, sim.port or 0, retry=HELD_RETRY, extra=extra)
        cfg = load_config(path, environ={ADMIN_ENV: ADMIN})
        gw = Gateway(cfg)
        await gw.start()
        try:
            await wait_until(lambda: all(link.bound for link in gw.links.values()))
            assert gw.admin_port
            yield gw, f"http://127.0.0.1:{gw.admin_port}", sim
        finally:
            await gw.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def submit(s: SmpplibSender, number: str) -> tuple[int, str]:
    seq = await asyncio.to_thread(s.submit, number)
    return await asyncio.to_thread(s.wait_resp, seq)


async def test_tokens_and_scopes(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, url, _sim), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/held") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            body = await r.json()
            assert body["error"]["code"] == "unauthorized"
            assert body["error"]["status"] == 401
        async with http.get(f"{url}/v1/held", headers=auth(READ + "x")) as r:
            assert r.status == 401
        async with http.get(f"{url}/v1/held", headers={"Authorization": READ}) as r:
            assert r.status == 401  # not a bearer header
        async with http.get(f"{url}/v1/held", headers=auth(READ)) as r:
            assert r.status == 200
            assert await r.json() == {"items": [], "next": None}
        async with http.post(
            f"{url}/v1/suppression", json={"number": "447700900123"}, headers=auth(READ)
        ) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "forbidden"
        async with http.post(
            f"{url}/v1/suppression", json={"number": "447700900123"}, headers=auth(ADMIN)
        ) as r:
            assert r.status == 201
        # Health and metrics stay open (open_health = true); the document is always open.
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            async with http.get(url + path) as r:
                assert r.status == 200, path
        async with http.get(f"{url}/v1/nothing", headers=auth(READ)) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with http.put(f"{url}/v1/held", headers=auth(ADMIN)) as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"


async def test_closed_health_needs_a_token(tmp_path: Path) -> None:
    async with (
        running(tmp_path, open_health=False) as (_, url, _sim),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{url}/metrics") as r:
            assert r.status == 401
        async with http.get(f"{url}/metrics", headers=auth(READ)) as r:
            assert r.status == 200
            assert "bounceback_" in await r.text()
        async with http.get(f"{url}/readyz", headers=auth(READ)) as r:
            assert r.status == 200
            assert (await r.text()).strip() == "ready"


async def test_the_openapi_document_lists_what_is_served(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, url, _sim), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/openapi.json") as r:
            doc = await r.json()
        assert doc["openapi"].startswith("3.")
        served = {(e.method.lower(), e.path) for e in ENDPOINTS}
        documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
        assert documented == served
        ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
        assert len(ids) == len(set(ids))
        for p, ops in doc["paths"].items():
            for op in ops.values():
                if p.startswith("/v1/"):
                    assert op["security"] == [{"bearer": []}]
                    assert "401" in op["responses"] and "403" in op["responses"]
        # Every path is really there: a read token never gets 404/405 from the router.
        for method, path in served:
            if method != "get" or "{" in path:
                continue
            async with http.get(url + path, headers=auth(READ)) as r:
                assert r.status in (200, 503), (path, r.status)


async def test_a_block_refuses_the_next_submit_and_unblock_lets_it_through(
    tmp_path: Path,
) -> None:
    number = "447700900555"
    async with running(tmp_path) as (gw, url, sim), aiohttp.ClientSession() as http:
        s = await bind_sender(gw.port, SmpplibSender)
        try:
            status, _ = await submit(s, number)
            assert status == 0
            async with http.post(
                f"{url}/v1/suppression",
                json={"number": number, "reason": "complaint", "expires_in": 600},
                headers=auth(ADMIN),
            ) as r:
                assert r.status == 201
                entry = await r.json()
            assert entry["number"] == number and entry["reason"] == "complaint"
            status, _ = await submit(s, number)
            assert status == S.ESME_RINVDSTADR  # the very next submit, no restart
            async with http.get(
                f"{url}/v1/suppression", params={"prefix": "4477009005"}, headers=auth(READ)
            ) as r:
                assert [e["number"] for e in (await r.json())["items"]] == [number]
            async with http.delete(f"{url}/v1/suppression/{number}", headers=auth(ADMIN)) as r:
                assert r.status == 204
            async with http.delete(f"{url}/v1/suppression/{number}", headers=auth(ADMIN)) as r:
                assert r.status == 404
            status, _ = await submit(s, number)
            assert status == 0
        finally:
            await asyncio.to_thread(s.close)
        assert [r.destination for r in sim.submissions].count(number) == 2


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"number": "not a number"},
        {"number": "447700900555", "expires_in": -1},
        {"number": "447700900555", "colour": "red"},
    ],
)
async def test_a_bad_block_request_is_refused_with_its_reason(
    tmp_path: Path, body: dict[str, Any]
) -> None:
    async with running(tmp_path) as (_, url, _sim), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/suppression", json=body, headers=auth(ADMIN)) as r:
            assert r.status == 400
            err = (await r.json())["error"]
            assert err["code"] == "bad_body" and err["message"]
        async with http.post(f"{url}/v1/suppression", data=b"{not json", headers=auth(ADMIN)) as r:
            assert r.status == 400


async def test_held_messages_are_listed_retried_and_cancelled(tmp_path: Path) -> None:
    numbers = [f"4477009007{i:02d}" for i in range(5)]
    scenario = {"receipt_delay": 0.02, "default": ["absent", "deliver"]}
    async with running(tmp_path, scenario) as (gw, url, sim), aiohttp.ClientSession() as http:
        s = await bind_sender(gw.port, SmpplibSender)
        try:
            ids = []
            for n in numbers:
                status, mid = await submit(s, n)
                assert status == 0
                ids.append(mid)

            async def held() -> list[dict[str, Any]]:
                items: list[dict[str, Any]] = []
                cursor = ""
                while True:  # two per page: the cursor walks the whole list
                    params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
                    async with http.get(f"{url}/v1/held", params=params, headers=auth(READ)) as r:
                        page = await r.json()
                    assert len(page["items"]) <= 2
                    items += page["items"]
                    if page["next"] is None:
                        return items
                    cursor = page["next"]

            end = time.monotonic() + 20
            while len(await held()) < len(ids):
                assert time.monotonic() < end, "not every message was held"
                await asyncio.sleep(0.1)
            listed = await held()
            assert [m["id"] for m in listed] == sorted(ids)
            assert all(m["verdict"]["reason"] == "absent_subscriber" for m in listed)
            assert all(
                m["destination"].endswith(n[-4:]) for m, n in zip(listed, numbers, strict=True)
            )

            # Retry now: the second attempt reaches the carrier and is delivered.
            async with http.post(f"{url}/v1/held/{ids[0]}/retry", headers=auth(ADMIN)) as r:
                assert r.status == 200
                assert (await r.json())["state"] in ("submitting", "submitted", "delivered")
            await wait_until(
                lambda: [x.destination for x in sim.submissions].count(numbers[0]) == 2
            )

            async def state(mid: str) -> str:
                async with http.get(f"{url}/v1/messages/{mid}", headers=auth(READ)) as r:
                    return str((await r.json())["state"])

            end = time.monotonic() + 10
            while await state(ids[0]) != State.DELIVERED.value:
                assert time.monotonic() < end
                await asyncio.sleep(0.05)
            async with http.get(f"{url}/v1/messages/{ids[0]}", headers=auth(READ)) as r:
                timeline = (await r.json())["timeline"]
            events = [step["event"] for step in timeline]
            assert events == ["accepted", "submitted", "soft_bounce", "resubmitted", "delivered"]
            soft = timeline[events.index("soft_bounce")]
            assert soft["reason"] == "absent_subscriber" and soft["attempt"] == 1
            assert timeline[-1]["attempt"] == 2
            async with http.post(f"{url}/v1/held/{ids[0]}/retry", headers=auth(ADMIN)) as r:
                assert r.status == 409  # not held any more

            # Cancel: the message ends, the sender gets its DELETED receipt.
            async with http.post(f"{url}/v1/messages/{ids[1]}/cancel", headers=auth(ADMIN)) as r:
                assert r.status == 200
                assert (await r.json())["state"] == "cancelled"

            def receipts() -> dict[str, str]:
                return {receipt_fields(x)["id"]: receipt_fields(x)["stat"] for x in s.delivered}

            await wait_until(lambda: ids[1] in receipts())
            assert receipts()[ids[1]] == "DELETED"
            async with http.post(f"{url}/v1/messages/{ids[1]}/cancel", headers=auth(ADMIN)) as r:
                assert r.status == 409

            # Search by state and by the carrier's id.
            async with http.get(
                f"{url}/v1/messages", params={"state": "held"}, headers=auth(READ)
            ) as r:
                assert [m["id"] for m in (await r.json())["items"]] == sorted(ids)[2:]
            first = next(x for x in sim.submissions if x.destination == numbers[2])
            async with http.get(
                f"{url}/v1/messages",
                params={"carrier": "sim", "carrier_id": str(first.message_id)},
                headers=auth(READ),
            ) as r:
                assert [m["id"] for m in (await r.json())["items"]] == [ids[2]]
            async with http.get(
                f"{url}/v1/messages", params={"state": "lost"}, headers=auth(READ)
            ) as r:
                assert r.status == 400
            async with http.get(f"{url}/v1/messages/0000", headers=auth(READ)) as r:
                assert r.status == 404
        finally:
            await asyncio.to_thread(s.close)


async def test_carriers_and_accounts(tmp_path: Path) -> None:
    async with running(tmp_path) as (gw, url, _sim), aiohttp.ClientSession() as http:
        s = await bind_sender(gw.port, SmpplibSender)
        try:
            status, _ = await submit(s, "447700900901")
            assert status == 0
            await wait_until(lambda: gw.counters.get("receipts_matched", 0) == 1)
            async with http.get(f"{url}/v1/carriers", headers=auth(READ)) as r:
                (sim,) = (await r.json())["items"]
            assert sim["name"] == "sim" and sim["bound"] is True and sim["paused"] is False
            assert sim["recent"]["messages"] == 1
            assert sim["submits"]["count"] == 1 and sim["submits"]["p50"] > 0
            assert sim["recent"]["states"] == {"delivered": 1}
            async with http.get(f"{url}/v1/carriers?minutes=0", headers=auth(READ)) as r:
                assert r.status == 400
            async with http.get(f"{url}/v1/accounts", headers=auth(READ)) as r:
                (acme,) = (await r.json())["items"]
            assert acme["system_id"] == "acme"
            assert [b["type"] for b in acme["binds"]] == ["transceiver"]
            assert acme["receipts_waiting"] == 0
            assert acme["submits"]["count"] == 1
        finally:
            await asyncio.to_thread(s.close)


async def test_stats_are_what_bounceback_stats_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_ENV, ADMIN)  # `bounceback stats` loads the file
    scenario = {
        "receipt_delay": 0.02,
        "rules": [{"number": "447700900402", "outcomes": ["unknown"]}],
    }
    async with running(tmp_path, scenario) as (gw, url, _sim), aiohttp.ClientSession() as http:
        s = await bind_sender(gw.port, SmpplibSender)
        try:
            for number in ("447700900401", "447700900402"):
                assert (await submit(s, number))[0] == 0
            await wait_until(lambda: gw.counters.get("receipts_matched", 0) == 2)
        finally:
            await asyncio.to_thread(s.close)
        async with http.get(f"{url}/v1/stats", headers=auth(READ)) as r:
            doc = await r.json()
        assert doc["schema"] == "bounceback.report/1"
        totals = doc["totals"]
        assert (totals["sent"], totals["delivered"], totals["hard"]) == (2, 1, 1)
        assert [n["number"] for n in doc["numbers_to_remove"]] == ["447700900402"]
        # The same document as the command line's JSON, from the same store.
        cli_doc = await asyncio.to_thread(
            cli, "stats", "--format", "json", "--config", str(tmp_path / "proxy.toml")
        )
        assert cli_doc.returncode == 0, cli_doc.stderr
        assert json.loads(cli_doc.stdout)["totals"] == totals
        async with http.get(f"{url}/v1/stats", params={"top": "0"}, headers=auth(READ)) as r:
            assert r.status == 400
        since = "2020-01-01T00:00:00+00:00"
        async with http.get(
            f"{url}/v1/stats", params={"since": since, "until": since}, headers=auth(READ)
        ) as r:
            assert (await r.json())["totals"]["sent"] == 0  # an empty range: nothing in it


async def test_flagged_numbers_are_listed_and_cleared(tmp_path: Path) -> None:
    async with running(tmp_path) as (gw, url, _sim), aiohttp.ClientSession() as http:
        now = time.time()
        # Five soft bounces flag a number ([retry] flag_threshold); two do not.
        await gw.store.commit(
            Change(
                soft_bounce=[("447700900301", now - i, "absent_subscriber") for i in range(5)]
                + [("447700900302", now - i, "absent_subscriber") for i in range(2)]
            )
        )
        async with http.get(f"{url}/v1/flagged", headers=auth(READ)) as r:
            items = (await r.json())["items"]
        assert [(f["number"], f["soft_bounces"]) for f in items] == [("447700900301", 5)]
        async with http.delete(f"{url}/v1/flagged/447700900301", headers=auth(READ)) as r:
            assert r.status == 403
        async with http.delete(f"{url}/v1/flagged/447700900301", headers=auth(ADMIN)) as r:
            assert r.status == 204
        async with http.delete(f"{url}/v1/flagged/447700900301", headers=auth(ADMIN)) as r:
            assert r.status == 404
        async with http.get(f"{url}/v1/flagged", headers=auth(READ)) as r:
            assert (await r.json())["items"] == []
        assert await gw.store.soft_bounce_count("447700900302", now - 60) == 2


async def test_every_change_is_put_on_the_feed(tmp_path: Path) -> None:
    """With a [feed] (its broker away here: the documents wait in the outbox), each
    action through the API becomes a bounceback.admin/1 document naming the token."""
    closed = free_port()
    extra = admin_toml(READ, admin_token_env=ADMIN_ENV, open_health=True) + (
        f'[feed]\nhost = "127.0.0.1"\nport = {closed}\nprefix = "bb"\npublisher = "inline"\n'
    )
    async with simulator() as sim:
        path = write_config(tmp_path, sim.port or 0, extra=extra)
        gw = Gateway(load_config(path, environ={ADMIN_ENV: ADMIN}))
        await gw.start()
        try:
            url = f"http://127.0.0.1:{gw.admin_port}"
            async with aiohttp.ClientSession() as http:
                body = {"number": "447700900777", "reason": "complaint"}
                async with http.post(f"{url}/v1/suppression", json=body, headers=auth(ADMIN)):
                    pass
                async with http.post(f"{url}/v1/carriers/sim/pause", headers=auth(ADMIN)):
                    pass
                async with http.post(f"{url}/v1/carriers/sim/resume", headers=auth(ADMIN)):
                    pass
            rows = await gw.store.query("SELECT topic, payload FROM outbox ORDER BY seq", ())
        finally:
            await gw.stop()
    docs = [(str(topic), json.loads(payload)) for topic, payload in rows]
    admin = [(topic, d) for topic, d in docs if d.get("schema") == "bounceback.admin/1"]
    validator = jsonschema.Draft202012Validator(
        json.loads((Path(bounceback.__file__).parent / "schema" / "admin.schema.json").read_text())
    )
    for _, d in admin:
        validator.validate(d)
    assert [(topic, d["action"], d["by"], d["target"]) for topic, d in admin] == [
        ("bb/admin/block", "block", "oncall", "********0777"),  # masked as [feed] says
        ("bb/admin/pause", "pause", "oncall", "sim"),
        ("bb/admin/resume", "resume", "oncall", "sim"),
    ]
    assert admin[0][1]["details"]["reason"] == "complaint"


async def test_a_paused_carrier_gets_nothing_new_until_resumed(tmp_path: Path) -> None:
    async with running(tmp_path) as (gw, url, sim), aiohttp.ClientSession() as http:
        s = await bind_sender(gw.port, SmpplibSender)
        try:
            async with http.post(f"{url}/v1/carriers/sim/pause", headers=auth(ADMIN)) as r:
                assert r.status == 200
                assert (await r.json())["paused"] is True
            async with http.post(f"{url}/v1/carriers/nope/pause", headers=auth(ADMIN)) as r:
                assert r.status == 404
            status, mid = await submit(s, "447700900811")
            assert status == 0  # taken and kept: it waits for a carrier
            await asyncio.sleep(0.3)
            assert sim.count_for("447700900811") == 0
            async with http.get(f"{url}/v1/messages/{mid}", headers=auth(READ)) as r:
                held = await r.json()
            assert held["state"] == "held" and held["verdict"]["reason"] == "not_bound"
            async with http.post(f"{url}/v1/carriers/sim/resume", headers=auth(ADMIN)) as r:
                assert (await r.json())["paused"] is False
            await wait_until(lambda: sim.count_for("447700900811") == 1, timeout=10)
        finally:
            await asyncio.to_thread(s.close)


async def test_the_listener_speaks_https_with_a_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "admin")
    extra = (
        f'[metrics]\nport = 0\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'[admin]\n[[admin.tokens]]\nname = "oncall"\nscope = "admin"\ntoken = "{ADMIN}"\n'
    )
    async with simulator() as sim:
        gw = Gateway(load_config(write_config(tmp_path, sim.port or 0, extra=extra)))
        await gw.start()
        try:
            base = f"127.0.0.1:{gw.admin_port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"https://{base}/v1/held", headers=auth(ADMIN), ssl=False) as r:
                    assert r.status == 200
                with pytest.raises(aiohttp.ClientError):  # no plain HTTP beside it
                    async with http.get(f"http://{base}/healthz") as r:
                        await r.read()
                with pytest.raises(aiohttp.ClientConnectorCertificateError):  # self-signed
                    async with http.get(f"https://{base}/healthz") as r:
                        await r.read()
        finally:
            await gw.stop()


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        (
            '[admin]\n[[admin.tokens]]\nname = "a"\ntoken = "short"\n',
            "admin.tokens[0].token",
            "too short",
        ),
        ("[admin]\n", "admin", "[metrics]"),
        (
            '[metrics]\nport = 0\n[admin]\n[[admin.tokens]]\nname = "a"\ntoken_env = "NOPE"\n',
            "admin.tokens[0].token_env",
            "not set",
        ),
        (
            '[metrics]\nport = 0\n[admin]\n[[admin.tokens]]\nname = "a"\n'
            'token = "0123456789abcdef"\nscope = "root"\n',
            "admin.tokens[0].scope",
            "expected",
        ),
    ],
)
def test_a_bad_admin_table_names_the_key(tmp_path: Path, toml: str, key: str, message: str) -> None:
    path = write_config(tmp_path, 2775, extra=toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    found = [(p.key, p.message) for p in info.value.problems]
    assert any(k == key and message in m for k, m in found), found


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bounceback", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


async def test_the_cli_changes_a_running_proxy_through_its_api(tmp_path: Path) -> None:
    """`bounceback run` as a process; `suppression add/remove` and `held cancel` from the
    command line apply at once (the next submit is refused, then let through), with no
    restart; the proxy's log names the token that asked."""
    number, held = "447700900888", "447700900999"
    scenario = {"receipt_delay": 0.02, "rules": [{"number": held, "outcomes": ["absent"]}]}
    async with simulator(scenario) as sim:
        port, http_port = free_port(), free_port()
        extra = f"""
[metrics]
port = {http_port}

[admin]
[[admin.tokens]]
name = "cli-oncall"
scope = "admin"
token = "{ADMIN}"
"""
        config = write_config(tmp_path, sim.port or 0, port=port, retry=HELD_RETRY, extra=extra)
        proxy = ProxyProcess(config)
        await asyncio.to_thread(proxy.start)
        try:
            s = await bind_sender(port, SmpplibSender)
            try:
                c = str(config)
                added = await asyncio.to_thread(
                    cli, "suppression", "add", number, "--reason", "complaint", "--config", c
                )
                assert added.returncode == 0, added.stderr
                assert "applied at once by the running proxy (as cli-oncall)" in added.stdout
                assert (await submit(s, number))[0] == S.ESME_RINVDSTADR
                removed = await asyncio.to_thread(
                    cli, "suppression", "remove", number, "--config", c
                )
                assert removed.returncode == 0, removed.stderr
                assert (await submit(s, number))[0] == 0
                again = await asyncio.to_thread(cli, "suppression", "remove", number, "--config", c)
                assert again.returncode == 1
                assert "not on the suppression list" in again.stderr

                status, mid = await submit(s, held)
                assert status == 0
                async with aiohttp.ClientSession() as http:
                    end = time.monotonic() + 20
                    while True:
                        async with http.get(
                            f"http://127.0.0.1:{http_port}/v1/messages/{mid}",
                            headers=auth(ADMIN),
                        ) as r:
                            if (await r.json())["state"] == "held":
                                break
                        assert time.monotonic() < end, "the message was not held"
                        await asyncio.sleep(0.1)
                cancelled = await asyncio.to_thread(cli, "held", "cancel", mid, "--config", c)
                assert cancelled.returncode == 0, cancelled.stderr
                assert "by the running proxy, as cli-oncall" in cancelled.stdout
                await wait_until(lambda: mid in {receipt_fields(x)["id"] for x in s.delivered})
                twice = await asyncio.to_thread(cli, "held", "cancel", mid, "--config", c)
                assert twice.returncode == 1 and "not held" in twice.stderr
            finally:
                await asyncio.to_thread(s.close)
        finally:
            assert proxy.terminate() == 0
        log = proxy.output()
        assert "admin: cli-oncall blocked" in log and "admin: cli-oncall unblocked" in log
        assert f"admin: cli-oncall cancelled {mid}" in log


def test_the_live_server_keeps_to_its_openapi_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schemathesis generates requests from /openapi.json for every operation (a bounded
    number of examples each) and checks each answer against the document: no server
    error, a documented status, content type and body shape."""
    monkeypatch.setenv(ADMIN_ENV, ADMIN)  # POST /v1/reload reads the file
    import hypothesis
    import schemathesis
    from schemathesis.core.result import Ok

    ready: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with running(tmp_path) as (_, url, _sim):
            ready.put(url)
            await asyncio.to_thread(stop.wait)

    server = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=30)
        with urllib.request.urlopen(f"{url}/openapi.json", timeout=10) as r:
            schema = schemathesis.openapi.from_dict(json.load(r))
        checked = 0
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # every operation of the document loads
            operation = result.ok()

            @hypothesis.settings(
                max_examples=12,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy())
            def conforms(case: Any) -> None:
                case.call_and_validate(base_url=url, headers=auth(ADMIN))

            conforms()
            checked += 1
        assert checked == len(ENDPOINTS)
    finally:
        stop.set()
        server.join(30)


async def test_the_overview_says_what_the_gateway_does_now(tmp_path: Path) -> None:
    """GET /v1/overview: throughput from the metrics counters, outcome shares and held
    messages by reason from the store, the carrier's state, store and feed health, and
    who asked."""
    scenario = {
        "receipt_delay": 0.02,
        "rules": [
            {"number": "447700900502", "outcomes": ["unknown"]},
            {"number": "447700900503", "outcomes": ["absent", "deliver"]},
        ],
    }
    async with running(tmp_path, scenario) as (gw, url, _sim), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/overview", headers=auth(READ)) as r:
            assert r.status == 200
            first = await r.json()
        assert first["token"] == {"name": "viewer", "scope": "read"}
        assert first["throughput"]["totals"]["submits"] == 0
        assert first["outcomes"]["accepted"] == 0 and first["held"]["total"] == 0
        s = await bind_sender(gw.port, SmpplibSender)
        try:
            for number in ("447700900501", "447700900502", "447700900503"):
                assert (await submit(s, number))[0] == 0
            await wait_until(lambda: gw.counters.get("receipts_matched", 0) == 3)
        finally:
            await asyncio.to_thread(s.close)
        async with http.post(f"{url}/v1/carriers/sim/pause", headers=auth(ADMIN)) as r:
            assert r.status == 200
        async with http.get(f"{url}/v1/overview", headers=auth(ADMIN)) as r:
            doc = await r.json()
        assert doc["token"] == {"name": "oncall", "scope": "admin"}
        t = doc["throughput"]
        assert t["totals"]["submits"] == 3 and t["totals"]["carrier_submits"] == 3
        assert t["totals"]["receipts"] == 3
        assert t["submits_per_second"] is not None and t["submits_per_second"] > 0
        o = doc["outcomes"]
        assert (o["accepted"], o["delivered"], o["hard"], o["pending"]) == (3, 1, 1, 1)
        assert o["rates"]["delivered"] == 0.5 and o["rates"]["hard"] == 0.5
        assert doc["held"] == {"total": 1, "by_reason": {"absent_subscriber": 1}}
        (sim,) = doc["carriers"]
        assert sim["name"] == "sim" and sim["state"] == "paused" and sim["bound"] is True
        assert sim["totals"]["submits"] == 3
        assert sim["totals"]["soft_bounces"] == 1 and sim["totals"]["hard_bounces"] == 1
        assert sim["bounce_rate"] is not None and sim["bounce_rate"] > 0
        assert doc["store"]["writable"] is True and doc["store"]["ready"] is True
        assert doc["feed"] == {"configured": False}
        async with http.get(f"{url}/v1/overview", params={"minutes": "0"}, headers=auth(READ)) as r:
            assert r.status == 400
        async with http.get(f"{url}/v1/overview") as r:
            assert r.status == 401
