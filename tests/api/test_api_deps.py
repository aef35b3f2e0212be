"""Lock states over HTTP: a deploy answers its lock state; bad requirement comments are a 400."""

from __future__ import annotations

from tests.api.conftest import Api


def test_a_deploy_answers_its_lock_state_and_lock(api: Api) -> None:
    """No third-party import: locked with an empty lock; one import: locking, with its job."""
    plain = api.post("/api/scripts", "alice", json={
        "path": "u/alice/plain", "code": "import json\ndef main():\n    return 1\n",
        "language": "python3"}).json()
    assert (plain["lock_state"], plain["lock"], plain["lock_job"]) == ("locked", "", "none")
    fancy = api.post("/api/scripts", "alice", json={
        "path": "u/alice/fancy", "code": "import yaml\ndef main():\n    return 1\n",
        "language": "python3"}).json()
    assert fancy["lock_state"] == "locking" and fancy["requirements"] == "pyyaml\n"
    job = api.get(f"/api/jobs/{fancy['lock_job']}", "alice").json()
    assert (job["kind"], job["script_hash"], job["status"]) == (
        "dependencies", fancy["hash"], "queued")
    shown = api.get("/api/scripts/p/u/alice/fancy", "alice").json()
    assert shown["lock_state"] == "locking"


def test_relock_needs_write_and_makes_a_new_job(api: Api) -> None:
    """POST /api/scripts/h/<hash>/lock: a new dependencies job; others may not."""
    digest = api.script("u/alice/r", "import yaml\ndef main():\n    return 1\n", who="alice")
    first = api.get(f"/api/scripts/h/{digest}", "alice").json()["lock_job"]
    assert api.post(f"/api/scripts/h/{digest}/lock", "carol").status_code == 404
    again = api.post(f"/api/scripts/h/{digest}/lock", "alice")
    assert again.status_code == 200, again.text
    assert again.json()["lock_job"] != first and again.json()["lock_state"] == "locking"


def test_a_bad_requirement_comment_is_refused_naming_the_line(api: Api) -> None:
    """An option smuggled as a requirement never reaches a resolver."""
    answer = api.post("/api/scripts", "alice", json={
        "path": "u/alice/bad", "language": "python3",
        "code": "# requirements:\n# -r /etc/shadow\ndef main():\n    return 1\n"})
    assert answer.status_code == 400 and "line 2" in answer.text


def test_the_script_page_shows_the_lock_state_and_its_job(api: Api) -> None:
    """The web UI's script page: lock state, a link to the dependencies job, per-version state."""
    from tests.api.test_ui_http import signed_in

    digest = api.script("u/admin/fancy", "import yaml\ndef main():\n    return 1\n")
    job = api.get(f"/api/scripts/h/{digest}").json()["lock_job"]
    page = signed_in(api, "admin").get("/scripts/p/u/admin/fancy").text
    assert "Lock: locking" in page and f'href="/jobs/{job}"' in page
    assert "<td>locking</td>" in page
