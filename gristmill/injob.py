"""The in-job client: what job code calls, through the API, with its WM_TOKEN.

    import gristmill
    password = gristmill.get_variable("u/alice/db_password")
    result = gristmill.run_script("u/alice/child", {"n": 3})

Everything goes through the HTTP API with the job's ephemeral token, so the
same script run by two users does what each of them may, and nothing more.
Standard library only.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_WAIT_S = 600


class JobClientError(Exception):
    """The API refused or failed a call; ``status`` is the HTTP status (0: unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status


def _call(method: str, route: str, body: Any = None, query: dict[str, Any] | None = None,
          timeout_s: float = 30) -> Any:
    base = os.environ.get("WM_BASE_URL")
    token = os.environ.get("WM_TOKEN")
    if not base or not token:
        raise JobClientError(0, "WM_BASE_URL and WM_TOKEN are not set: this runs inside a job")
    url = base.rstrip("/") + route
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
            kind = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = str(exc.reason)
        raise JobClientError(exc.code, str(message)) from None
    except urllib.error.URLError as exc:
        raise JobClientError(0, f"the API at {base} is unreachable: {exc.reason}") from None
    if kind == "application/json":
        return json.loads(payload)
    return payload.decode()


def _quote(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def get_variable(path: str) -> str:
    """A variable's value (a secret decrypted); the job's identity must be allowed to read it."""
    value: str = _call("GET", f"/api/variables/{_quote(path)}")
    return value


def set_variable(path: str, value: str, *, is_secret: bool | None = None) -> None:
    """Create or update a variable the job's identity may write."""
    _call("POST", "/api/variables", {"path": path, "value": value, "is_secret": is_secret})


def get_resource(path: str) -> dict[str, Any]:
    """A resource's JSON value."""
    resource: dict[str, Any] = _call("GET", f"/api/resources/{_quote(path)}")
    return dict(resource["value"])


def run_script_async(path: str, args: dict[str, Any] | None = None) -> str:
    """Start the script at ``path`` as a child job (same identity); return its id."""
    job_id: str = _call("POST", f"/api/jobs/run/p/{_quote(path)}", args or {})
    return job_id


def run_script(path: str, args: dict[str, Any] | None = None, *,
               wait_s: float = DEFAULT_WAIT_S) -> Any:
    """Run the script at ``path`` as a child job and return its result (raises if it failed)."""
    return _call("POST", f"/api/jobs/run_wait_result/p/{_quote(path)}", args or {},
                 query={"wait_s": wait_s}, timeout_s=wait_s + 10)


def get_resume_urls() -> dict[str, str]:
    """Signed URLs that resume or cancel the suspend after this flow step, Windmill's
    ``get_resume_urls()``: ``{"resume": url, "cancel": url}``, e.g. to mail an approver.

    Only the running step whose module has a ``suspend`` gets them, for its own flow; the
    URLs work once the step has completed and the flow waits. Each call mints a new pair
    (each pair counts once).
    """
    job_id = os.environ.get("WM_JOB_ID")
    if not job_id:
        raise JobClientError(0, "WM_JOB_ID is not set: this runs inside a flow step")
    urls: dict[str, str] = _call("GET", f"/api/jobs/resume_urls/{urllib.parse.quote(job_id, safe='')}")
    return urls


def get_job(job_id: str) -> dict[str, Any]:
    """A job's record, as the API shows it."""
    job: dict[str, Any] = _call("GET", f"/api/jobs/{job_id}")
    return job


def get_result(job_id: str) -> Any:
    """A completed job's result; raises JobClientError if it failed or is not done yet."""
    answer = _call("GET", f"/api/jobs/{job_id}/result")
    if answer["status"] == "success":
        return answer["result"]
    if answer["status"] in ("queued", "running"):
        raise JobClientError(409, f"job {job_id} is still {answer['status']}")
    error = answer.get("error") or {}
    raise JobClientError(409, f"job {job_id} ended {answer['status']}: "
                              f"{error.get('name', '')}: {error.get('message', '')}")
