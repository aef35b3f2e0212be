"""The web UI over HTTP, without a browser: sessions, CSRF, permissions, filters."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.ui.session import COOKIE, csrf_value, split_cookie
from tests.api.conftest import Api

PASSWORD = "dave-password-1"


def signed_in(api: Api, who: str) -> TestClient:
    """A browser-like client (no redirects followed) signed in with ``who``'s API token."""
    client = TestClient(api.client.app, follow_redirects=False)
    answer = client.post("/signin", data={"token": api.tokens[who], "next": "/runs"})
    assert answer.status_code == 303, answer.text
    return client


def test_pages_redirect_to_sign_in_and_back(api: Api) -> None:
    """Without a session every page redirects to /signin?next=<the page>; API routes stay JSON."""
    client = TestClient(api.client.app, follow_redirects=False)
    answer = client.get("/workers")
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?next=%2Fworkers"
    assert client.get("/api/jobs").status_code == 401
    signed = client.post("/signin", data={"token": api.tokens["alice"], "next": "%2Fworkers"})
    assert signed.headers["location"] == "/workers"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/workers").status_code == 200


def test_password_sign_in_mints_a_session_token_that_sign_out_revokes(api: Api) -> None:
    """A password sign-in stores a fresh token, not the password; signing out revokes it."""
    api.services.identity.create_user("dave", PASSWORD)
    client = TestClient(api.client.app, follow_redirects=False)
    wrong = client.post("/signin", data={"user": "dave", "password": "nope-nope"})
    assert wrong.status_code == 200 and "unknown user or wrong password" in wrong.text
    answer = client.post("/signin", data={"user": "dave", "password": PASSWORD})
    assert answer.status_code == 303
    parsed = split_cookie(client.cookies[COOKIE])
    assert parsed is not None and parsed[0] == "s" and PASSWORD not in client.cookies[COOKIE]
    token = parsed[1]
    assert [t.label for t in api.services.identity.list_tokens("dave")] == ["web session"]
    refused = client.post("/signout", data={"csrf": "forged"})
    assert refused.status_code == 403
    out = client.post("/signout", data={"csrf": csrf_value(token)})
    assert out.status_code == 303
    assert api.services.identity.list_tokens("dave") == []
    client.cookies.set(COOKIE, f"s:{token}")
    assert client.get("/runs").status_code == 303  # the token is dead: sign in again


def test_a_job_token_cannot_sign_in(api: Api) -> None:
    """WM_TOKENs are for jobs, not browsers."""
    _, token = api.running_job("u/alice", who="alice")
    client = TestClient(api.client.app, follow_redirects=False)
    answer = client.post("/signin", data={"token": token})
    assert answer.status_code == 200 and "not a job token" in answer.text
    assert COOKIE not in client.cookies


def test_forms_need_the_csrf_value(api: Api) -> None:
    """Cancel without the session's CSRF value is refused and the job stays queued."""
    api.script("u/admin/echo")
    job_id = api.run("u/admin/echo")
    client = signed_in(api, "admin")
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf": "x" * 32}).status_code == 403
    assert api.job(job_id).status.value == "queued"
    token = split_cookie(client.cookies[COOKIE])
    assert token is not None
    done = client.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf_value(token[1])})
    assert done.status_code == 303
    assert api.job(job_id).status.value == "canceled"


def test_a_user_neither_lists_nor_opens_nor_cancels_anothers_job(api: Api) -> None:
    """Bob's job: not in carol's runs, 404 for its page, its logs and its cancel form."""
    bobs = api.post("/api/jobs/run/preview", "bob",
                    json={"code": "def main():\n    return 1\n", "language": "python3"}).text
    carol = signed_in(api, "carol")
    assert bobs not in carol.get("/runs").text
    assert bobs not in carol.get("/runs", params={"created_by": "u/bob"}).text
    page = carol.get(f"/jobs/{bobs}")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert carol.get(f"/jobs/{bobs}/logs/stream").status_code == 404
    token = split_cookie(carol.cookies[COOKIE])
    assert token is not None
    assert carol.post(f"/jobs/{bobs}/cancel",
                      data={"csrf": csrf_value(token[1])}).status_code == 404
    assert api.job(bobs).status.value == "queued"
    bob = signed_in(api, "bob")
    assert bobs in bob.get("/runs").text and bob.get(f"/jobs/{bobs}").status_code == 200


def test_runs_filters_and_a_bad_filter(api: Api) -> None:
    """Filters narrow the table; a bad time is shown on the page, not a crash."""
    api.script("u/admin/echo")
    script_job = api.run("u/admin/echo")
    preview = api.post("/api/jobs/run/preview",
                       json={"code": "def main():\n    return 1\n", "language": "python3"}).text
    client = signed_in(api, "admin")
    text = client.get("/runs", params={"kind": "script"}).text
    assert script_job in text and preview not in text
    text = client.get("/runs", params={"path": "u/admin/echo", "status": "queued"}).text
    assert script_job in text and preview not in text
    bad = client.get("/runs", params={"created_after": "yesterday"})
    assert bad.status_code == 200 and "created after" in bad.text
    assert client.get("/runs", params={"kind": "nope"}).status_code == 404
    fragment = client.get("/runs", params={"fragment": "1"}).text
    assert "<html" not in fragment and script_job in fragment


def csrf_of(client: TestClient) -> str:
    parsed = split_cookie(client.cookies[COOKIE])
    assert parsed is not None
    return csrf_value(parsed[1])


def test_rerun_makes_a_new_job_with_the_same_code_and_args_as_the_caller(api: Api) -> None:
    """Re-run of alice's finished script job by alice: same version and args, a new id."""
    api.script("g/ops/echo", who="alice")
    first = api.run("g/ops/echo", {"x": 7}, who="alice", permissioned_as="g/ops")
    api.finish(first)
    client = signed_in(api, "alice")
    answer = client.post(f"/jobs/{first}/rerun", data={"csrf": csrf_of(client)})
    assert answer.status_code == 303
    second = answer.headers["location"].removeprefix("/jobs/")
    old, new = api.job(first), api.job(second)
    assert second != first and new.status.value == "queued"
    assert (new.script_hash, new.args, new.permissioned_as, new.created_by) == (
        old.script_hash, {"x": 7}, "g/ops", "u/alice")
    queued = api.run("g/ops/echo", who="alice")
    assert client.post(f"/jobs/{queued}/rerun", data={"csrf": csrf_of(client)}).status_code == 400


def test_pause_and_resume_a_schedule_from_the_page(api: Api) -> None:
    """The owner pauses and resumes; a user who may only read it cannot."""
    api.script("u/admin/echo")
    made = api.post("/api/schedules", json={"path": "u/admin/hourly", "script_path": "u/admin/echo",
                                            "cron": "0 * * * *"})
    assert made.status_code == 201, made.text
    admin = signed_in(api, "admin")
    assert "u/admin/hourly" in admin.get("/schedules").text
    paused = admin.post("/schedules/pause/u/admin/hourly", data={"csrf": csrf_of(admin)})
    assert paused.status_code == 303
    assert api.services.schedules.get("u/admin/hourly").paused
    admin.post("/schedules/resume/u/admin/hourly", data={"csrf": csrf_of(admin)})
    assert not api.services.schedules.get("u/admin/hourly").paused
    carol = signed_in(api, "carol")
    assert "u/admin/hourly" not in carol.get("/schedules").text
    refused = carol.post("/schedules/pause/u/admin/hourly", data={"csrf": csrf_of(carol)})
    assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]
    assert not api.services.schedules.get("u/admin/hourly").paused


def test_the_run_form_shows_a_bad_value_and_runs_a_good_one(api: Api) -> None:
    """A value that is not an int is explained on the form; a good one runs with typed args."""
    api.script("u/admin/echo")
    client = signed_in(api, "admin")
    form = client.get("/scripts/p/u/admin/echo").text
    assert 'name="arg_x"' in form and 'type="number"' in form and 'value="1"' in form
    bad = client.post("/scripts/p/u/admin/echo", data={"csrf": csrf_of(client), "arg_x": "ten"})
    assert bad.status_code == 200 and "is not a valid int" in bad.text
    good = client.post("/scripts/p/u/admin/echo", data={"csrf": csrf_of(client), "arg_x": "10"})
    assert good.status_code == 303
    assert api.job(good.headers["location"].removeprefix("/jobs/")).args == {"x": 10}
    forged = client.post("/scripts/p/u/admin/echo", data={"csrf": "x", "arg_x": "10"})
    assert forged.status_code == 403


def test_an_unknown_page_is_an_html_404_and_an_unknown_api_route_json(api: Api) -> None:
    """People get a page with a way back; API clients keep JSON errors."""
    client = signed_in(api, "alice")
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "Back to the runs" in page.text
    assert client.get("/api/no/such/route").json() == {"error": "Not Found"}
