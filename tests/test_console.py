"""The web console in a real browser: Playwright driving the system's Chromium (by its
path; Playwright's own browser download is not used) against a real `bounceback run`
process in front of a real `bounceback simulate` process, with a real smpplib sender.

Each page is saved as a screenshot (laptop width, and the overview at phone width) to
$BOUNCEBACK_SCREENSHOTS, by default build/screenshots/ (not committed)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import HELD_RETRY, ProxyProcess, admin_toml, free_port, write_config
from smppcodecs.constants import CommandStatus as S
from smpplib_peer import SmpplibSender

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("BOUNCEBACK_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("BOUNCEBACK_SCREENSHOTS") or ROOT / "build" / "screenshots")
READ = "viewer-token-0123456789"
ADMIN = "oncall-token-0123456789"
HELD_NUMBER = "447700900601"  # soft-bounces once (absent), then delivers
NEVER_PREFIX = "44770090062"  # always absent: held until an operator acts
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 20_000  # the longest a page is waited for (not a performance threshold)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the simulator exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _get(url: str, token: str = "") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Stack:
    """`bounceback simulate` and `bounceback run` as processes, and how to reach them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        sim_port, self.smpp_port, http_port = free_port(), free_port(), free_port()
        scenario = folder / "scenario.toml"
        scenario.write_text(
            f'receipt_delay = 0.05\ndefault = ["deliver"]\n'
            f'[[rules]]\nnumber = "{HELD_NUMBER}"\noutcomes = ["absent", "deliver"]\n'
            f'[[rules]]\nprefix = "{NEVER_PREFIX}"\noutcomes = ["absent"]\n'
        )
        self.sim_log = (folder / "simulator.log").open("wb")
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "bounceback", "simulate", "--port", str(sim_port),
             "--scenario", str(scenario), "--log-level", "WARNING"],
            stdout=self.sim_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait_port(sim_port, self.sim)
        extra = admin_toml(READ, ADMIN, metrics_port=http_port)
        # A soft bounce is held for an hour: it waits for an operator's retry.
        config = write_config(folder, sim_port, port=self.smpp_port, retry=HELD_RETRY, extra=extra)
        self.proxy = ProxyProcess(config)
        self.proxy.start()
        self.url = f"http://127.0.0.1:{http_port}/"
        end = time.monotonic() + 20
        while _get(self.url + "readyz")[0] != 200:  # a carrier is bound
            assert time.monotonic() < end, self.proxy.output()
            time.sleep(0.1)

    def api(self, path: str, token: str = READ) -> Any:
        status, _, body = _get(self.url + path.lstrip("/"), token)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def sender(self) -> SmpplibSender:
        s = SmpplibSender("127.0.0.1", self.smpp_port)
        assert s.bind("transceiver", "acme", "acme-pw") == 0
        s.listen()
        return s

    def stop(self) -> None:
        code = self.proxy.terminate()
        self.sim.send_signal(signal.SIGTERM)
        try:
            self.sim.wait(10)
        except subprocess.TimeoutExpired:
            self.sim.kill()
            self.sim.wait(5)
        self.sim_log.close()
        assert code == 0, self.proxy.output()


def submit(s: SmpplibSender, number: str) -> tuple[int, str]:
    return s.wait_resp(s.submit(number))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = Stack(tmp_path_factory.mktemp("console"))
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (an empty sessionStorage) at laptop width; script errors
    on the page fail the test."""
    ctx = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield pg
    finally:
        ctx.close()
    # A 401/403 answer is logged by the browser as a failed resource: expected here.
    assert [e for e in errors if "status of 40" not in e] == []


def shot(pg: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def log_in(pg: Any, url: str, token: str) -> None:
    pg.goto(url)
    pg.get_by_label("Token").fill(token)
    pg.get_by_role("button", name="Log in").click()
    pg.wait_for_selector("#page-overview:not([hidden])")


def kpi(pg: Any, key: str, part: str = "value") -> str:
    return str(pg.inner_text(f'[data-kpi="{key}"] .kpi-{part}'))


def leading_int(text: str) -> int:
    found = re.match(r"[\d,]+", text.strip())
    assert found is not None, text
    return int(found.group(0).replace(",", ""))


def wait_for(pred: Any, what: str, timeout: float = WAIT_MS / 1000) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"not seen: {what}"
        time.sleep(0.1)


def confirm(pg: Any) -> str:
    """Confirm the open dialog; the dialog's question."""
    dialog = pg.locator("#confirm")
    dialog.wait_for(state="visible")
    question = str(dialog.locator("#confirm-title").inner_text())
    dialog.locator("#confirm-ok").click()
    dialog.wait_for(state="hidden")
    return question


def toast(pg: Any, contains: str) -> str:
    pg.wait_for_function(
        "t => document.querySelector('#toast').textContent.includes(t)", arg=contains
    )
    return str(pg.inner_text("#toast"))


# ---------------------------------------------------------------- the files


def test_the_console_is_served_with_a_content_security_policy(stack: Stack) -> None:
    status, headers, body = _get(stack.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    html = body.decode()
    # Every script is a file of this origin: no inline script, no other host.
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script src="/console/charts.js" defer>',
        '<script src="/console/app.js" defer>',
    ]
    assert "http://" not in html and "https://" not in html
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, _ = _get(stack.url + f"console/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert headers["Content-Security-Policy"] == csp
    assert _get(stack.url + "console/nothing.js")[0] == 404


# ---------------------------------------------------------------- login


def test_a_bad_token_is_refused(stack: Stack, page: Any) -> None:
    page.goto(stack.url)
    shot(page, "login")
    page.get_by_label("Token").fill("not-a-token-0123456789")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_function("() => document.querySelector('#login-error').textContent !== ''")
    assert "not valid" in page.inner_text("#login-error")
    assert page.is_hidden("#app")
    assert page.evaluate("() => sessionStorage.length") == 0


def test_log_in_keeps_the_token_in_the_session_and_log_out_forgets_it(
    stack: Stack, page: Any
) -> None:
    log_in(page, stack.url, READ)
    assert "viewer" in page.inner_text("#who") and "read scope" in page.inner_text("#who")
    page.reload()  # the same tab: still logged in
    page.wait_for_selector("#page-overview:not([hidden])")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_selector("#login:not([hidden])")
    assert page.evaluate("() => sessionStorage.length") == 0


# ---------------------------------------------------------------- overview


def test_the_overview_moves_while_a_load_runs(stack: Stack, page: Any, browser: Any) -> None:
    log_in(page, stack.url, ADMIN)
    page.wait_for_selector('[data-kpi="submits"]')
    before = leading_int(kpi(page, "submits", "sub"))  # "N since start"
    accepted_before = leading_int(kpi(page, "accepted"))
    n = 60
    seen_rate: list[float] = []
    s = stack.sender()
    try:

        def load() -> None:
            for i in range(n):
                assert submit(s, f"4477009002{i:02d}")[0] == 0
                time.sleep(0.05)

        t = threading.Thread(target=load)
        t.start()

        def moving() -> bool:
            text = kpi(page, "submits")
            if text not in ("—", "0.0"):
                seen_rate.append(float(text))
            return bool(seen_rate)

        wait_for(moving, "a submit rate above zero while the load runs")
        t.join(60)
    finally:
        s.close()
    wait_for(
        lambda: leading_int(kpi(page, "submits", "sub")) >= before + n,
        f"{n} more submits since start",
    )
    wait_for(lambda: leading_int(kpi(page, "accepted")) >= accepted_before + n, "accepted")
    assert seen_rate and max(seen_rate) > 0
    # The carrier is up, shown as a word and a symbol, not only a colour.
    row = page.locator("#carriers tbody tr", has_text="sim")
    assert "up" in row.inner_text()
    assert "ready" in page.inner_text('[data-health="store"]')
    assert "live: updated" in page.inner_text("#live")
    page.wait_for_timeout(2500)  # one more poll: the chart has several points
    shot(page, "overview")
    phone = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        pg = phone.new_page()
        log_in(pg, stack.url, READ)
        pg.wait_for_timeout(4500)
        shot(pg, "overview-phone")
        # Nothing is wider than the phone's screen (tables scroll in their own box).
        assert pg.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        phone.close()


# ---------------------------------------------------------------- messages


def test_find_a_message_by_id_see_its_timeline_and_retry_it(stack: Stack, page: Any) -> None:
    s = stack.sender()
    try:
        status, mid = submit(s, HELD_NUMBER)
        assert status == 0
        wait_for(lambda: stack.api(f"/v1/messages/{mid}")["state"] == "held", "held")
        log_in(page, stack.url, ADMIN)
        page.get_by_role("link", name="Messages").click()
        page.get_by_label("Our id, carrier id or number").fill(mid)
        page.get_by_role("button", name="Search").click()
        detail = page.locator("#message-detail")
        detail.wait_for(state="visible")
        assert mid in detail.locator("h2").inner_text()
        steps = page.locator("#message-timeline > li")
        badges = page.locator("#message-timeline > li .step-head .badge").all_inner_texts()
        # Each step is named in words after its symbol (not by colour alone).
        events = [b.split(" ", 1)[1].strip() for b in badges]
        assert events[:3] == ["accepted", "submitted", "soft bounce"]
        soft = steps.nth(2).inner_text()
        assert "absent_subscriber" in soft or "absent subscriber" in soft
        assert "next attempt" in soft
        summary = page.inner_text("#message-summary")
        assert "held" in summary
        shot(page, "message")

        # The same message by the carrier's id, and by its number.
        carrier_id = stack.api(f"/v1/messages/{mid}")["carrier_message_id"]
        page.get_by_label("Search by").select_option("carrier_id")
        page.get_by_label("Our id, carrier id or number").fill(carrier_id)
        page.get_by_role("button", name="Search").click()
        page.wait_for_function(
            "id => document.querySelector('#h-detail').textContent.includes(id)"
            " && !document.querySelector('#message-detail').hidden",
            arg=mid,
        )
        page.get_by_label("Search by").select_option("auto")
        page.get_by_label("Our id, carrier id or number").fill(HELD_NUMBER)
        page.get_by_role("button", name="Search").click()
        page.wait_for_function(
            "() => document.querySelector('#search-status').textContent.includes('destination')"
        )
        assert mid in page.inner_text("#search-results")

        # Retry now (admin): asked first, then the result; the timeline ends delivered.
        page.locator("#search-results").get_by_role("button", name=mid).click()
        page.get_by_role("button", name="Retry now").click()
        assert confirm(page) == f"Retry {mid} now?"
        assert f"message {mid} is" in toast(page, "Done")
        wait_for(lambda: stack.api(f"/v1/messages/{mid}")["state"] == "delivered", "delivered")
        page.get_by_label("Search by").select_option("id")
        page.get_by_label("Our id, carrier id or number").fill(mid)
        page.get_by_role("button", name="Search").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#message-timeline > li')]"
            ".some(li => li.textContent.includes('delivered'))"
        )
        texts = page.locator("#message-timeline > li").all_inner_texts()
        assert any("resubmitted" in t for t in texts)
    finally:
        s.close()


# ---------------------------------------------------------------- actions


def test_block_a_number_in_the_ui_then_unblock_it(stack: Stack, page: Any) -> None:
    number = "447700900777"
    s = stack.sender()
    try:
        assert submit(s, number)[0] == 0
        log_in(page, stack.url, ADMIN)
        page.get_by_role("link", name="Actions").click()
        page.get_by_label("Number", exact=True).fill(number)
        page.get_by_label("Reason (for a block)").fill("complaint")
        page.get_by_role("button", name="Block", exact=True).click()
        assert confirm(page) == f"Block {number}?"
        assert f"{number} is blocked until" in toast(page, "Done")
        assert submit(s, number)[0] == S.ESME_RINVDSTADR  # the very next submit
        row = page.locator("#suppression tbody tr", has_text=number)
        row.wait_for()
        assert "complaint" in row.inner_text()
        shot(page, "actions")

        page.get_by_role("button", name="Unblock", exact=True).click()
        assert confirm(page) == f"Unblock {number}?"
        assert f"{number} is unblocked" in toast(page, "Done")
        assert submit(s, number)[0] == 0

        # A dialog answered "Cancel" does nothing.
        page.get_by_role("button", name="Block", exact=True).click()
        page.locator("#confirm-cancel").click()
        assert submit(s, number)[0] == 0
    finally:
        s.close()


def test_a_read_token_cannot_act(stack: Stack, page: Any) -> None:
    number = "447700900778"
    log_in(page, stack.url, READ)
    page.get_by_role("link", name="Actions").click()
    page.wait_for_selector("#carrier-actions table")
    assert page.is_visible("#read-only-note")
    buttons = page.locator("button.admin-action")
    assert buttons.count() >= 5
    assert all(b.is_disabled() for b in buttons.all())
    shot(page, "actions-read-only")
    # Were the button enabled anyway, the API refuses, and the console says why.
    page.eval_on_selector("#block-button", "b => { b.disabled = false; }")
    page.get_by_label("Number", exact=True).fill(number)
    page.get_by_role("button", name="Block", exact=True).click()
    confirm(page)
    text = toast(page, "Refused")
    assert "HTTP 403" in text and "not admin" in text
    s = stack.sender()
    try:
        assert submit(s, number)[0] == 0  # not blocked
    finally:
        s.close()


def test_a_carrier_is_paused_and_resumed_from_the_overview(stack: Stack, page: Any) -> None:
    log_in(page, stack.url, ADMIN)
    row = page.locator("#carriers tbody tr", has_text="sim")
    row.get_by_role("button", name="Pause sim").click()
    assert confirm(page) == "Pause carrier sim?"
    assert "carrier sim is paused" in toast(page, "Done")
    page.wait_for_function(
        "() => document.querySelector('#carriers tbody tr').textContent.includes('paused')"
    )
    assert stack.api("/v1/carriers")["items"][0]["paused"] is True
    row.get_by_role("button", name="Resume sim").click()
    confirm(page)
    assert "carrier sim is resumed" in toast(page, "Done")
    assert stack.api("/v1/carriers")["items"][0]["paused"] is False


def test_cancel_every_held_message_matching_a_filter(stack: Stack, page: Any) -> None:
    s = stack.sender()
    try:
        ids = [submit(s, f"{NEVER_PREFIX}{i}")[1] for i in range(3)]
    finally:
        s.close()
    assert all(ids)

    def held() -> set[str]:
        items = stack.api("/v1/held?reason=absent_subscriber&limit=500")["items"]
        return {m["id"] for m in items}

    wait_for(lambda: set(ids) <= held(), "three held messages")
    log_in(page, stack.url, ADMIN)
    page.get_by_role("link", name="Actions").click()
    page.get_by_label("Reason", exact=True).fill("absent_subscriber")
    page.locator("#held-form").get_by_role("button", name="List").click()
    for mid in ids:
        page.locator("#held tbody tr", has_text=mid).wait_for()
    n = len(held())
    page.get_by_role("button", name="Cancel all matching").click()
    question = confirm(page)
    assert question == f"Cancel {n} held messages?"
    assert f"cancelled {n} of {n}" in toast(page, "Done")
    for mid in ids:
        assert stack.api(f"/v1/messages/{mid}")["state"] == "cancelled"
    page.wait_for_selector("#held p.empty-note")


# ---------------------------------------------------------------- bounce patterns


def test_the_bounce_patterns_page_and_its_csv(stack: Stack, page: Any) -> None:
    s = stack.sender()
    try:
        assert submit(s, "447700900901")[0] == 0
    finally:
        s.close()
    log_in(page, stack.url, READ)
    page.get_by_role("link", name="Bounce patterns").click()
    page.wait_for_selector('[data-section="by_country"] table')
    sent = leading_int(page.inner_text('#patterns-totals [data-kpi="sent"] .kpi-value'))
    assert sent == stack.api("/v1/stats")["totals"]["sent"] > 0
    country = page.locator('[data-section="by_country"] tbody tr').first.inner_text()
    assert country.startswith("GB")
    assert page.locator('[data-section="by_hour"] svg.chart').count() == 1
    page.get_by_label("Range", exact=True).select_option("3600")
    page.get_by_role("button", name="Show").click()
    page.wait_for_function(
        "() => document.querySelector('#patterns-status').textContent.includes('accepted from')"
    )
    shot(page, "patterns")
    with page.expect_download() as info:
        page.locator('[data-section="by_country"]').get_by_role(
            "button", name="Download CSV"
        ).click()
    text = Path(info.value.path()).read_text()
    header, first = text.splitlines()[:2]
    assert "sent" in header.split(",") and "delivered" in header.split(",")
    assert "GB" in first


# ---------------------------------------------------------------- the demo


def test_the_demo_tells_the_console_address_and_serves_it(page: Any, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bounceback", "demo", "--messages", "40", "--no-live", "--stay"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        found = None
        while found is None:
            line = proc.stdout.readline().decode()
            assert line, "".join(lines)
            lines.append(line)
            found = re.search(r"Web console: (http://\S+)\s+\(log in with the token (\S+?)\)", line)
        url, token = found.groups()
        log_in(page, url, token)
        # The demo's 40 messages show up on the overview as they are sent and end.
        wait_for(lambda: kpi(page, "accepted") == "40", "the demo's 40 messages")
        wait_for(lambda: "0 on their way" in kpi(page, "accepted", "sub"), "all ended", 90)
        assert leading_int(kpi(page, "recovered", "sub")) > 0
        while "stay up" not in lines[-1]:
            line = proc.stdout.readline().decode()
            assert line, "".join(lines)
            lines.append(line)
        assert _get(url)[0] == 200  # still served after the summary
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, "".join(lines)


@pytest.fixture(autouse=True, scope="module")
def _clean_shots() -> None:
    """Screenshots are for looking at; a run starts with none of an earlier run's."""
    if SHOTS.is_dir() and "BOUNCEBACK_SCREENSHOTS" not in os.environ:
        shutil.rmtree(SHOTS)
