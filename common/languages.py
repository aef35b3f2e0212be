"""The languages a job can be written in (a job's default tag is its language)."""

from __future__ import annotations

LANGUAGES = ("python3", "bash")

