"""The web UI in a real browser (Playwright + Debian's Chromium) against a real fleet.

Scheduler, worker and API processes on the test's Redis; admin (API token),
alice (password, group ops) and bob (password). Each page is checked for
console errors, and axe-core for serious accessibility violations.
Set ``GRISTMILL_UI_SCREENSHOTS=<dir>`` to save a screenshot of each page there
(docs/ui/ holds the committed ones).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from auth.identity import IdentityStore
from common.keys import Keys
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis, free_port
from tests.e2e.browser import ARGS, ensure_chromium
from tests.e2e.conftest import (
    GROUP,
    Processes,
    clean_env,
    deadline,
    scheduler_registered,
    worker_id_of,
    xwait,
)
from vault.crypto import generate_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-1"}
ECHO = "def main(x: int = 1, name: str = 'Ada'):\n    print(f'x is {x}')\n    return {'x': x}\n"
FAIL = ("def helper():\n    raise ValueError('boom from the job')\n\n\n"
        "def main():\n    helper()\n")
WAIT = ("import time\n\n\ndef main():\n    print('waiting for cancel', flush=True)\n"
        "    while True:\n        time.sleep(0.05)\n")
WAIT_S = 30_000  # ms, Playwright's unit
# expect() has its own default of 5 s, too short on a loaded 2-core machine (a live log line
# travels job -> worker -> Redis -> API -> page); it still returns as soon as the check holds.
expect.set_options(timeout=WAIT_S)


@dataclass
class UiFleet:
    base: str
    admin_token: str
    gm: Gristmill
    tokens: dict[str, str]

    def post(self, route: str, who: str, body: Any) -> str:
        """POST JSON to the API as ``who``; the plain-text answer (a job id)."""
        request = urllib.request.Request(
            self.base + route, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.tokens[who]}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return str(answer.read().decode())

    def preview(self, code: str, who: str = "admin") -> str:
        return self.post("/api/jobs/run/preview", who, {"code": code, "language": "python3"})


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/api/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


# Module scope: Playwright's sync API keeps an asyncio loop running in the main thread while
# it is open, and mini-racer (the flows' expressions) refuses timeouts inside a running loop.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def fleet(procs: Processes, redis_client: redis.Redis, redis_server: EmbeddedRedis
          ) -> Iterator[UiFleet]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"GRISTMILL_SECRET_KEY": generate_key(), "GRISTMILL_BASE_URL": base}
    procs.scheduler(**env)
    worker = procs.worker("--concurrency", "2", **env)
    procs.start("api", "api", "--port", str(port), env=clean_env(procs.redis_url, **env))
    identity = IdentityStore(redis_client, Keys("gm"))
    admin = identity.ensure_admin()
    assert admin is not None
    tokens = {"admin": admin}
    for name, password in PASSWORDS.items():
        identity.create_user(name, password)
        tokens[name] = identity.create_token(name, label="ui test")[0]
    identity.create_group("ops")
    identity.add_member("ops", "alice")
    deadline(lambda: healthy(base), 30, "the API to answer /api/health")
    worker_id_of(redis_client, worker.pid)
    scheduler_registered(redis_client)
    gm = Gristmill(redis_server.url)
    gm.deploy_script("u/admin/echo", ECHO, "python3")
    yield UiFleet(base, admin, gm, tokens)
    gm.redis.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console and page errors of the test's page; a test removes the ones it expects."""
    return []


@pytest.fixture
def page(browser: Browser, console_errors: list[str]) -> Iterator[Page]:
    """A fresh browser context; the test fails on any console error or page error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors = console_errors

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} at {message.location}")

    opened.on("console", on_console)
    opened.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    opened.set_default_timeout(WAIT_S)
    yield opened
    context.close()
    assert errors == []


def sign_in(page: Page, fleet: UiFleet, who: str) -> None:
    page.goto(fleet.base + "/runs")
    expect(page).to_have_url(re.compile(re.escape("/signin")))
    if who == "admin":
        page.get_by_label("API token").fill(fleet.admin_token)
        page.get_by_role("button", name="Sign in with token").click()
    else:
        page.get_by_label("User name").fill(who)
        page.get_by_label("Password").fill(PASSWORDS[who])
        page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator(".who")).to_contain_text(f"u/{who}")


def screenshot(page: Page, name: str) -> None:
    target = os.environ.get("GRISTMILL_UI_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def serious_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: "
            f"{[n['target'] for n in v['nodes']][:3]})"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


# -- tests -----------------------------------------------------------------------------------


def test_sign_in_with_password_token_and_wrong_password(page: Page, fleet: UiFleet) -> None:
    """A password and an API token both sign in; a wrong password says so; sign-out works."""
    page.goto(fleet.base + "/runs")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("unknown user or wrong password")
    sign_in(page, fleet, "alice")
    expect(page).to_have_url(fleet.base + "/runs")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(re.escape("/signin")))
    page.goto(fleet.base + "/workers")
    expect(page).to_have_url(re.compile(re.escape("/signin")))
    sign_in(page, fleet, "admin")


def test_each_tab_shows_only_its_kind(page: Page, fleet: UiFleet) -> None:
    """The script tab lists the script job and no preview; the preview tab the reverse."""
    script_job = fleet.post("/api/jobs/run/p/u/admin/echo", "admin", {"x": 3})
    preview_job = fleet.preview("def main():\n    return 1\n")
    fleet.gm.wait(script_job, 30)
    fleet.gm.wait(preview_job, 30)
    sign_in(page, fleet, "admin")
    tabs = page.get_by_role("navigation", name="Job kinds")
    for kind, present, absent in (("script", script_job, preview_job),
                                  ("preview", preview_job, script_job)):
        tabs.get_by_role("link", name=kind, exact=True).click()
        expect(page).to_have_url(re.compile(f"kind={kind}"))
        rows = page.locator("table.jobs tbody tr")
        expect(page.locator(f'a[href="/jobs/{present}"]')).to_be_visible()
        expect(page.locator(f'a[href="/jobs/{absent}"]')).to_have_count(0)
        kinds = {row.get_attribute("data-kind") for row in rows.all()}
        assert kinds == {kind}
    tabs.get_by_role("link", name="flow", exact=True).click()
    expect(page.locator("td.empty")).to_contain_text("No jobs here")
    tabs.get_by_role("link", name="All").click()
    expect(page.locator(f'a[href="/jobs/{script_job}"]')).to_be_visible()
    expect(page.locator(f'a[href="/jobs/{preview_job}"]')).to_be_visible()


def test_live_logs_then_cancel_from_the_page(page: Page, fleet: UiFleet) -> None:
    """A running job's log line appears without a reload; Cancel stops it and shows canceled."""
    sign_in(page, fleet, "admin")
    job_id = fleet.preview(WAIT)
    xwait(fleet.gm.redis, f"{GROUP}:events",
          lambda e: e.get("event") == "started" and e.get("id") == job_id, 30)
    page.goto(f"{fleet.base}/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("running")
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#logs")).to_contain_text("waiting for cancel")
    assert page.evaluate("window.notReloaded === true")
    page.get_by_role("button", name="Cancel").click()
    # The worker stops the job; the page's log stream ends and the page reloads itself to
    # show the outcome (a goto of ours here would race that reload).
    assert fleet.gm.wait(job_id, 30).status.value == "canceled"
    expect(page.locator("#job-status")).to_have_text("canceled", timeout=30_000)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)


def test_failed_job_shows_its_traceback(page: Page, fleet: UiFleet) -> None:
    """The error name, message and the traceback with the failing function are on the page."""
    job_id = fleet.preview(FAIL)
    assert fleet.gm.wait(job_id, 30).status.value == "failure"
    sign_in(page, fleet, "admin")
    page.goto(f"{fleet.base}/runs?status=failure")
    page.locator(f'a[href="/jobs/{job_id}"]').click()
    expect(page.locator("#job-status")).to_have_text("failure")
    expect(page.locator(".error")).to_contain_text("ValueError")
    expect(page.locator("#traceback")).to_contain_text("boom from the job")
    expect(page.locator("#traceback")).to_contain_text("helper")


def test_a_user_sees_no_job_he_may_not_see(page: Page, fleet: UiFleet,
                                           console_errors: list[str]) -> None:
    """Bob's job is in no list of alice's, and its URL answers 404 to her; her own job shows."""
    bobs = fleet.preview("def main():\n    return 'bob'\n", who="bob")
    alices = fleet.preview("def main():\n    return 'alice'\n", who="alice")
    fleet.gm.wait(bobs, 30)
    fleet.gm.wait(alices, 30)
    sign_in(page, fleet, "alice")
    expect(page.locator(f'a[href="/jobs/{alices}"]')).to_be_visible()
    expect(page.locator(f'a[href="/jobs/{bobs}"]')).to_have_count(0)
    page.goto(f"{fleet.base}/runs?created_by=u/bob")
    expect(page.locator(f'a[href="/jobs/{bobs}"]')).to_have_count(0)
    answer = page.goto(f"{fleet.base}/jobs/{bobs}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    stream = page.request.get(f"{fleet.base}/jobs/{bobs}/logs/stream")
    assert stream.status == 404
    # The browser reports the refused page load; that one error is the point of the test.
    assert len(console_errors) == 1 and "404" in console_errors[0], console_errors
    console_errors.clear()


def test_run_a_script_from_its_form(page: Page, fleet: UiFleet) -> None:
    """The form built from main's signature runs the script with typed args."""
    sign_in(page, fleet, "admin")
    page.goto(fleet.base + "/scripts")
    page.get_by_role("link", name="u/admin/echo", exact=True).click()
    page.get_by_label("x").fill("41")
    page.get_by_role("button", name="Run u/admin/echo").click()
    expect(page).to_have_url(re.compile(re.escape("/jobs/")))
    job_id = page.url.rsplit("/", 1)[1]
    done = fleet.gm.wait(job_id, 30)
    assert done.args == {"x": 41, "name": "Ada"} and done.result == {"x": 41}
    # The page's log stream ends with the job and the page shows the outcome.
    expect(page.locator("#job-status")).to_have_text("success")
    expect(page.locator("#result")).to_contain_text("41")


def test_pages_are_accessible_on_desktop_and_phone(page: Page, fleet: UiFleet) -> None:
    """axe-core finds no serious violation on any page; at phone width nothing overflows."""
    made = [fleet.post("/api/jobs/run/p/u/admin/echo", "admin", {"x": i}) for i in range(4)]
    made += [fleet.preview(f"import time\n\n\ndef main():\n    time.sleep({i / 10})\n")
             for i in range(3)]
    failed = fleet.preview(FAIL)
    for job_id in [*made, failed]:
        fleet.gm.wait(job_id, 30)
    fleet.post("/api/schedules", "admin", {"path": "u/admin/every_hour",
                                            "script_path": "u/admin/echo", "cron": "0 * * * *"})
    page.goto(fleet.base + "/signin")
    assert serious_violations(page) == []
    screenshot(page, "signin")
    sign_in(page, fleet, "admin")
    pages = {"runs": "/runs", "job": f"/jobs/{failed}", "workers": "/workers",
             "schedules": "/schedules", "scripts": "/scripts", "script": "/scripts/p/u/admin/echo"}
    for name, route in pages.items():
        page.goto(fleet.base + route)
        if name == "runs":  # no refresh while axe reads the page
            page.locator("#live").uncheck()
        assert serious_violations(page) == [], name
        screenshot(page, name)
    page.set_viewport_size({"width": 390, "height": 844})
    for name, route in pages.items():
        page.goto(fleet.base + route)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        wide = page.evaluate("""[...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                         && !e.closest('.table-wrap, pre, svg'))
            .map(e => e.tagName + '.' + e.className).slice(0, 5)""")
        assert overflow <= 1, (name, overflow, wide)
        assert serious_violations(page) == [], name
        if name == "runs":
            screenshot(page, "runs-phone")


def test_keyboard_reaches_the_tabs_and_opens_one(page: Page, fleet: UiFleet) -> None:
    """From the top of the page, Tab moves through the links to the kind tabs; Enter opens one."""
    sign_in(page, fleet, "admin")
    page.goto(fleet.base + "/runs")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.kind") == "preview":
            break
    else:
        raise AssertionError("Tab never reached the preview tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(re.escape("kind=preview")))


UI_FLOW: dict[str, Any] = {"summary": "ui", "value": {"modules": [
    {"id": "a", "value": {"type": "rawscript", "language": "python3",
                          "content": "def main():\n    return [1, 2]", "input_transforms": {}}},
    {"id": "b", "value": {"type": "forloopflow", "iterator": {"type": "javascript", "expr": "results.a"},
                          "modules": [{"id": "c", "value": {
                              "type": "rawscript", "language": "python3",
                              "content": "def main(x: int):\n    return x * 10",
                              "input_transforms": {"x": {"type": "javascript",
                                                         "expr": "flow_input.iter.value"}}}}]}},
    {"id": "d", "value": {"type": "branchone",
                          "branches": [{"expr": "results.b[1] == 20", "modules": [
                              {"id": "e", "value": {"type": "identity"}}]}],
                          "default": []},
     "suspend": {"required_events": 1, "timeout": 600}},
]}}


def test_a_flow_page_shows_its_step_graph_and_approves_a_suspended_step(
        page: Page, fleet: UiFleet, console_errors: list[str]) -> None:
    """The graph: modules, loop iterations, the branch; step links open the step's page; Approve resumes."""
    flow_id = fleet.post("/api/jobs/run/preview_flow", "alice", {"value": UI_FLOW, "args": {}})
    sign_in(page, fleet, "alice")
    page.goto(f"{fleet.base}/jobs/{flow_id}")
    expect(page.locator("#job-status")).to_have_text("running")
    steps = page.locator("#flow-steps")
    approve = steps.get_by_role("button", name="Approve step d")
    expect(approve).to_be_visible()  # the graph refreshes itself until the step waits
    expect(steps.locator('li[data-addr="a"] .badge')).to_have_text("success")
    expect(steps.locator('li[data-addr="b/0"]')).to_contain_text("iteration 0")
    expect(steps.locator('li[data-addr="b/1/c"] .badge')).to_have_text("success")
    expect(steps.locator('li[data-addr="d"]')).to_contain_text("branch chosen: 0")
    expect(steps.locator('li[data-addr="d"] .badge')).to_have_text("suspended")
    assert serious_violations(page) == []
    screenshot(page, "flow")
    approve.click()
    assert fleet.gm.wait(flow_id, 30).status.value == "success"
    page.goto(f"{fleet.base}/jobs/{flow_id}")
    expect(page.locator("#job-status")).to_have_text("success")
    expect(steps.locator('li[data-addr="d"] .badge')).to_have_text("success")
    expect(steps.get_by_role("button", name="Approve step d")).to_have_count(0)
    steps.get_by_role("link", name="step b/1/c: success").click()
    expect(page.locator("h1")).to_contain_text("Job")
    expect(page.locator("#result")).to_contain_text("20")
    expect(page.get_by_role("link", name=flow_id).first).to_be_visible()  # parent and root
    # bob may not see alice's flow, nor approve its steps: the server answers as if it did not exist.
    with pytest.raises(urllib.error.HTTPError) as refused:
        fleet.post(f"/api/jobs/{flow_id}/approve/d", "bob", {})
    assert refused.value.code == 404
    refused.value.close()
    assert console_errors == []
