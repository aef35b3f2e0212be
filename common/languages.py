"""The languages a job can be written in, and the default tag of each."""

from __future__ import annotations

LANGUAGES = ("python3", "bash")


def is_supported(language: str) -> bool:
    return language in LANGUAGES
