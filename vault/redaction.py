"""Keeping secrets out of job logs: what to look for, and replacing it (pure functions).

A job that reads a secret records it sealed in its group's redact set
(:meth:`vault.store.Vault.get_variable`); :func:`redaction_values` opens those
members and :func:`redact` blanks them in each log line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from vault.crypto import DecryptionError, SecretBox

REDACTED = "[redacted]"
# Lines of a multi-line secret are redacted one by one too (logs arrive a line
# at a time), but not lines this short: "{" or "}" would blank half the log.
MIN_FRAGMENT = 4

def secret_fragments(value: str) -> list[str]:
    """What to look for in logs for one secret: the value, its JSON-escaped form, and
    each line (of at least MIN_FRAGMENT characters) of a multi-line value."""
    found = {value, json.dumps(value)[1:-1]}
    if "\n" in value:
        found.update(line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_FRAGMENT)
    return sorted(f for f in found if f)


def redaction_values(box: SecretBox, members: Iterable[str | bytes]) -> list[str]:
    """The strings to redact from a job's logs, from its redact set's members.

    Each member is ``{"p": path, "v": sealed}`` as :meth:`Vault.get_variable`
    wrote it. A member that does not open raises DecryptionError: the worker
    and the API then disagree on the key, and logs could not be redacted.
    """
    values: set[str] = set()
    for member in members:
        try:
            entry = json.loads(member)
            path, sealed = entry["p"], entry["v"]
        except (ValueError, TypeError, KeyError) as exc:
            raise DecryptionError("a redact set member is not {\"p\": path, \"v\": sealed}") from exc
        values.update(secret_fragments(box.open(sealed, context=path)))
    return sorted(values, key=lambda v: (-len(v), v))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every non-empty secret replaced by ``[redacted]``.

    Matches are found on the original text, overlapping ones included, and
    each run of secret characters becomes one marker, so overlapping secrets
    leave no tail and a marker never creates a new match. Every non-empty
    value is redacted, however short: a secret of one or two characters will
    blank those characters wherever they appear in the log.
    """
    spans: list[tuple[int, int]] = []
    for secret in {s for s in secrets if s}:
        start = text.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    cursor = 0
    run_start, run_end = spans[0]
    for start, end in spans[1:]:
        if start <= run_end:
            run_end = max(run_end, end)
            continue
        out += [text[cursor:run_start], REDACTED]
        cursor, run_start, run_end = run_end, start, end
    out += [text[cursor:run_start], REDACTED, text[run_end:]]
    return "".join(out)
