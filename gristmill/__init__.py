"""Gristmill: a Redis-backed distributed job runner.

``Gristmill`` is the client for producers and operators (over Redis); the
functions below are the in-job client (over the HTTP API, with WM_TOKEN).
"""

from gristmill.client import Gristmill
from gristmill.injob import (
    JobClientError,
    get_job,
    get_resource,
    get_result,
    get_resume_urls,
    get_variable,
    run_script,
    run_script_async,
    set_variable,
)

__version__ = "0.1.0"
__all__ = [
    "Gristmill", "JobClientError", "__version__", "get_job", "get_resource", "get_result", "get_resume_urls",
    "get_variable", "run_script", "run_script_async", "set_variable",
]
