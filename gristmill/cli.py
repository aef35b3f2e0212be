"""`gristmill`: one entry point for every process and for people."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from common.errors import BadRecord, GristmillError
from common.languages import LANGUAGES
from common.models import Kind, Status
from common.queries import JobFilter
from gristmill import format as fmt
from gristmill.cli_deps import add_deps_commands
from gristmill.cli_flows import FLOW_KINDS, add_flow_commands, print_flow_logs, steps_text
from gristmill.cli_identity import add_identity_commands
from gristmill.cli_redis import add_redis_user_commands
from gristmill.durations import parse_arg_pairs, parse_duration_ms
from jobs.spec import parse_time

EXTENSIONS = {".py": "python3", ".sh": "bash", ".bash": "bash"}
WAIT_SLICE_S = 5.0  # `--wait` re-checks that a worker serves the job's group this often
WAIT_TIMED_OUT = 124  # like timeout(1)


def _client() -> Any:
    from gristmill.client import Gristmill

    return Gristmill()


def left_out(damaged: BadRecord) -> None:
    """Name on stderr a job record a command leaves out because it cannot be read."""
    print(f"gristmill: left out: {damaged}", file=sys.stderr)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--arg", action="append", default=[], metavar="K=V",
                        help="an argument; V is parsed as JSON when it can be")
    parser.add_argument("--args-json", metavar="JSON", help="all arguments as one JSON object")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="ISO", help="run at this time (ISO 8601 or epoch ms)")
    when.add_argument("--in", dest="in_", metavar="DURATION", help="run after 30s, 5m, 2h, ...")
    parser.add_argument("--tag", help="worker tag (default: the language)")
    parser.add_argument("--id", help="your own job UUID; a repeated id is not run twice")
    parser.add_argument("--timeout", type=int, metavar="SECONDS", help="kill the job after this")
    parser.add_argument("--priority", type=int, default=0, help="> 0 jumps the ready queue")
    parser.add_argument("--retry", metavar="JSON",
                        help='retry policy, e.g. \'{"constant": {"attempts": 3, "seconds": 10}}\'')
    parser.add_argument("--wait", action="store_true",
                        help="wait, print the result, exit 1 when the job failed")
    parser.add_argument("--wait-timeout", type=float, metavar="SECONDS",
                        help="with --wait: give up waiting after this long (exit 124; the job "
                        "stays queued). --timeout is the job's own run time limit")


def _spec_options(ns: argparse.Namespace) -> dict[str, Any]:
    from common.clock import now_ms

    args = _json_object(ns.args_json, "--args-json") if ns.args_json else {}
    args.update(parse_arg_pairs(ns.arg))
    spec: dict[str, Any] = {"args": args, "priority": ns.priority}
    if ns.at:
        spec["scheduled_for"] = parse_time(ns.at)
        ago_s = (now_ms() - spec["scheduled_for"]) / 1000
        if ago_s > 1:
            print(f"gristmill: warning: --at {ns.at} is {ago_s:.0f} s in the past: the job runs now",
                  file=sys.stderr)
    elif ns.in_:
        spec["scheduled_for"] = now_ms() + parse_duration_ms(ns.in_)
    for key, value in (("tag", ns.tag), ("id", ns.id), ("timeout_s", ns.timeout)):
        if value is not None:
            spec[key] = value
    if ns.retry:
        spec["retry"] = _json_object(ns.retry, "--retry")
    return spec


def parse_limits(pairs: list[str]) -> dict[str, int] | None:
    """``--limit memory_mb=256`` pairs as a dict (checked further by the script store)."""
    limits: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise GristmillError(f"--limit expects NAME=N (a whole number), got {pair!r}")
        limits[name.strip()] = int(value)
    return limits or None


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise GristmillError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise GristmillError(f"{option} must be a JSON object")
    return value


def _submit(spec: dict[str, Any], wait: bool, wait_timeout_s: float | None = None) -> int:
    from flows.jobs import answered_early

    client = _client()
    job_id = client.submit(spec)
    if not wait and wait_timeout_s is None:
        print(job_id)
        return 0
    print(job_id, file=sys.stderr)
    job = _wait(client, job_id, wait_timeout_s)
    if job is None:
        return WAIT_TIMED_OUT
    if job.status == Status.SUCCESS or answered_early(job):
        print(json.dumps(job.result, ensure_ascii=False))
        return 0
    error = job.error or {}
    print(f"{job.status.value}: {error.get('name')}: {error.get('message')}", file=sys.stderr)
    if error.get("traceback"):
        print(error["traceback"], file=sys.stderr)
    return 1


def _wait(client: Any, job_id: str, timeout_s: float | None) -> Any:
    """The completed job, or None after ``timeout_s``; says once when no worker serves its group."""
    from common.errors import JobTimeout

    end = time.monotonic() + (timeout_s if timeout_s is not None else float("inf"))
    warned = False
    while True:
        if not warned:
            group = client.get_job(job_id).group
            if not _live_workers(client, group):
                warned = True
                print(f"gristmill: no live worker serves group {group!r}: the job waits until one "
                      f"starts (`gristmill worker --group {group}`, or `gristmill up`)",
                      file=sys.stderr)
        left = end - time.monotonic()
        try:
            # A flow answers as soon as its early_return step completed (Windmill's --wait).
            return client.wait(job_id, max(0.0, min(WAIT_SLICE_S, left)), early_return=True)
        except JobTimeout:
            if time.monotonic() >= end:
                status = client.get_job(job_id).status.value
                print(f"gristmill: job {job_id} is still {status} after {timeout_s:g} s; "
                      f"`gristmill job get {job_id}` shows it later", file=sys.stderr)
                return None


def _live_workers(client: Any, group: str) -> int:
    """Workers of ``group`` whose heartbeat is within the lease."""
    from common.clock import now_ms

    oldest = now_ms() - int(client.settings.worker_lease_s * 1000)
    return sum(1 for w in client.fleet.workers() if w.group == group and w.last_seen_ms >= oldest)


def cmd_run(ns: argparse.Namespace) -> int:
    if ns.many is not None:
        if ns.path is not None or ns.id or ns.wait or ns.wait_timeout is not None:
            raise GristmillError("--many takes its specs from the file: no path, --id or --wait")
        return _submit_many(ns.many, _spec_options(ns))
    if ns.path is None:
        raise GristmillError("run: give a script path, or --many FILE.jsonl")
    what = "flow_path" if ns.flow else "path"
    return _submit({what: ns.path, **_spec_options(ns)}, ns.wait, ns.wait_timeout)


def _submit_many(source: str, defaults: dict[str, Any]) -> int:
    """Enqueue every line of ``source``; ids on stdout, a summary and rejections on stderr."""
    client = _client()
    numbers: list[int] = []

    def specs(stream: IO[bytes]) -> Iterator[Any]:
        for number, raw in enumerate(stream, 1):
            if raw.strip():
                numbers.append(number)
                yield _with_defaults(raw.rstrip(b"\r\n"), defaults)

    if source == "-":
        outcome = client.enqueue_many(specs(sys.stdin.buffer))
    else:
        with Path(source).open("rb") as stream:
            outcome = client.enqueue_many(specs(stream))
    for job_id in outcome.ids:
        print(job_id)
    for index, why in sorted(outcome.rejected.items()):
        print(f"gristmill: line {numbers[index]}: rejected ({why}); recorded as failed job "
              f"{outcome.ids[index]}", file=sys.stderr)
    for index in outcome.duplicates:
        print(f"gristmill: line {numbers[index]}: job {outcome.ids[index]} exists; not run again",
              file=sys.stderr)
    queued = len(outcome.ids) - len(outcome.rejected) - len(outcome.duplicates)
    print(f"gristmill: {queued} queued, {len(outcome.duplicates)} duplicates, "
          f"{len(outcome.rejected)} rejected", file=sys.stderr)
    return 1 if outcome.rejected else 0


def _with_defaults(raw: bytes, defaults: dict[str, Any]) -> Any:
    """A line's spec over the command line's options (its own fields win), or the raw line
    when it is not a JSON object (admission records it as rejected, saying why)."""
    try:
        line = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(line, dict):
        return raw
    args = {**defaults.get("args", {}), **(line.get("args") or {})} \
        if isinstance(line.get("args", {}), dict) else line["args"]
    return {**defaults, **line, "args": args}


def cmd_preview(ns: argparse.Namespace) -> int:
    path = Path(ns.file)
    language = ns.language or EXTENSIONS.get(path.suffix)
    if language is None:
        raise GristmillError(f"cannot tell the language of {path.name}; pass --language")
    return _submit({"code": path.read_text(), "language": language, **_spec_options(ns)}, ns.wait,
                   ns.wait_timeout)


def cmd_script_deploy(ns: argparse.Namespace) -> int:
    path = Path(ns.file)
    language = ns.language or EXTENSIONS.get(path.suffix)
    if language is None:
        raise GristmillError(f"cannot tell the language of {path.name}; pass --language")
    version, new = _client().locker.deploy(
        ns.path, language, path.read_text(), timeout_s=ns.timeout, tag=ns.tag,
        retry=_json_object(ns.retry, "--retry") if ns.retry else None,
        limits=parse_limits(ns.limit),
    )
    print(version.hash)
    if not new:
        print(f"(identical to an existing version of {ns.path})", file=sys.stderr)
    elif version.lock_status == "locking":
        print(f"(locking its dependencies: job {version.lock_job})", file=sys.stderr)
    return 0


def cmd_script_show(ns: argparse.Namespace) -> int:
    client = _client()
    version = client.get_script(ns.ref)
    print(fmt.script_details(version))
    history = client.scripts.history(version.path)
    if len(history) > 1:
        print(f"---\nhistory of {version.path}: {' '.join(history)}")
    return 0


def cmd_job_get(ns: argparse.Namespace) -> int:
    client = _client()
    job = client.get_job(ns.id)
    attempts = client.store.attempts(job)
    if ns.json:
        extra = ({"steps": [vars(row) for row in client.flow_steps(job.id)]}
                 if job.kind in FLOW_KINDS else {})
        print(json.dumps({**fmt.job_json(job), "attempts": attempts, **extra}, indent=2,
                         ensure_ascii=False, default=str))
    else:
        print(fmt.job_details(job, attempts))
        if job.kind in FLOW_KINDS:
            print(f"steps:\n{steps_text(client, job.id)}")
    return 0


def cmd_job_cancel(ns: argparse.Namespace) -> int:
    outcome = _client().cancel(ns.id, reason=ns.reason)
    print(f"{ns.id}: {'canceled' if outcome == 'canceled' else 'cancel requested; its worker stops it'}")
    return 0


def cmd_jobs_cancel(ns: argparse.Namespace) -> int:
    client = _client()
    if ns.status == Status.QUEUED.value:
        # One script per batch of 500: 100,000 queued jobs take seconds, not minutes.
        done = client.cancel_queued(group=ns.group, reason=ns.reason, limit=ns.limit)
        print(f"{done} job(s) canceled")
        return 0
    flt = JobFilter(status=Status(ns.status), group=ns.group)
    # Collected first: cancelling while paging would move jobs out of the status index.
    # A record that cannot be read cannot be canceled either (Store.cancel reads it first):
    # it is named on stderr, left alone, and the command exits 1 (not everything asked for
    # was done). Pages hold at most --limit jobs, so the records named are those among the
    # jobs taken, not from further down the index.
    damaged: list[BadRecord] = []

    def uncancelable(record: BadRecord) -> None:
        damaged.append(record)
        left_out(record)

    page_size = min(ns.limit, 500) if ns.limit else 500
    jobs = list(itertools.islice(
        client.iter_jobs(flt, page_size=page_size, on_damaged=uncancelable), ns.limit))
    done = 0
    for job in jobs:
        try:
            client.cancel(job.id, reason=ns.reason)
            done += 1
        except GristmillError as exc:  # completed meanwhile: say so and go on
            print(f"{job.id}: {exc}", file=sys.stderr)
    print(f"{done} job(s) canceled")
    if damaged:
        print(f"gristmill: {len(damaged)} job(s) not canceled: their records cannot be read",
              file=sys.stderr)
        return 1
    return 0


def cmd_job_logs(ns: argparse.Namespace) -> int:
    client = _client()
    job = client.get_job(ns.id)
    if job.kind in FLOW_KINDS:
        return print_flow_logs(client, job, ns.follow)
    for entry in client.logs(ns.id, follow=ns.follow):
        stream = sys.stderr if entry.stream == "stderr" else sys.stdout
        print(entry.line, file=stream, flush=ns.follow)
    return 0


def cmd_jobs_list(ns: argparse.Namespace) -> int:
    try:
        after = parse_time(ns.created_after) if ns.created_after else None
        before = parse_time(ns.created_before) if ns.created_before else None
    except ValueError as exc:
        raise GristmillError(f"--created-after/--created-before: {exc}") from None
    flt = JobFilter(
        status=Status(ns.status) if ns.status else None, kind=Kind(ns.kind) if ns.kind else None,
        group=ns.group, path=ns.path, created_by=ns.created_by,
        permissioned_as=ns.permissioned_as, tag=ns.tag, schedule=ns.schedule,
        created_after=after, created_before=before,
    )
    page = _client().list_page(flt, cursor=ns.cursor, limit=ns.limit)
    if ns.json:
        print(json.dumps([fmt.job_json(job) for job in page.jobs], ensure_ascii=False))
    else:
        for job in page.jobs:
            print(fmt.job_row(job))
        if not page.jobs and not page.damaged:
            print("gristmill: no job matches", file=sys.stderr)
    for damaged in page.damaged:  # left out of the listing, not a reason to fail it
        left_out(damaged)
    if page.next_cursor:
        print(f"more: --cursor '{page.next_cursor}'", file=sys.stderr)
    return 0


def cmd_inbox_push(ns: argparse.Namespace) -> int:
    """LPUSH a raw spec to gm:inbox, as any Redis client would (no redis-cli needed)."""
    text = sys.stdin.read() if ns.spec == "-" else ns.spec
    client = _client()
    client.push_raw(text)
    try:
        spec = json.loads(text)
    except ValueError:
        spec = None
    named = f" (job id {spec['id']})" if isinstance(spec, dict) and spec.get("id") else ""
    print(f"pushed to {client.keys.inbox}{named}; the scheduler admits it, "
          "`gristmill jobs list` shows it (a spec it rejects: as a failed job saying why)",
          file=sys.stderr)
    return 0


def cmd_settings_get(ns: argparse.Namespace) -> int:
    settings = _client().instance_settings().model_dump()
    shown = {key: "(unset)" if value is None else value for key, value in settings.items()}
    if ns.key:
        if ns.key not in shown:
            raise GristmillError(f"unknown setting {ns.key!r}; known: {', '.join(shown)}")
        print(shown[ns.key])
    else:
        for key, value in shown.items():
            print(f"{key} = {value}")
    return 0


def cmd_settings_set(ns: argparse.Namespace) -> int:
    stored = _client().set_setting(ns.key, ns.value)
    print(f"{ns.key} = {stored}")
    return 0


def cmd_schedule_create(ns: argparse.Namespace) -> int:
    from schedules.store import Schedule

    args = _json_object(ns.args_json, "--args-json") if ns.args_json else {}
    args.update(parse_arg_pairs(ns.arg))
    schedule = _client().schedules.create(Schedule(
        path=ns.path, script_path=ns.script or ns.flow, cron=ns.cron, tz=ns.tz, args=args,
        no_overlap=ns.no_overlap, paused=ns.paused, catch_up=ns.catch_up, is_flow=ns.flow is not None,
    ))
    print(fmt.schedule_row(schedule))
    return 0


def cmd_schedule_list(ns: argparse.Namespace) -> int:
    for schedule in _client().schedules.all():
        print(fmt.schedule_row(schedule))
    return 0


def cmd_schedule_show(ns: argparse.Namespace) -> int:
    client = _client()
    schedule = client.schedules.get(ns.path)
    runs = []
    for job_id in client.schedules.runs(ns.path, ns.runs):
        try:
            runs.append(client.get_job(job_id))
        except BadRecord as exc:
            left_out(exc)
        except GristmillError:
            continue  # expired with the retention period
    print(fmt.schedule_details(schedule, runs))
    return 0


def cmd_schedule_change(ns: argparse.Namespace) -> int:
    action = getattr(_client().schedules, ns.action)
    action(ns.path)
    print(f"{ns.path}: {ns.action}d")
    return 0


def cmd_route(ns: argparse.Namespace) -> int:
    client = _client()
    if ns.action == "set":
        client.set_route(ns.tag, ns.group)
        print(f"jobs tagged {ns.tag} go to group {ns.group}")
    elif ns.action == "unset":
        client.set_route(ns.tag, None)
        print(f"jobs tagged {ns.tag} go to the default route ({client.settings.default_route})")
    else:
        for tag, group in client.routes().items():
            print(f"{tag} -> {group}")
        print(f"(any other tag -> {client.settings.default_route})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gristmill import processes

    parser = argparse.ArgumentParser(prog="gristmill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    processes.add_process_commands(sub)
    add_identity_commands(sub)
    add_redis_user_commands(sub)

    p = sub.add_parser("run", help="run the latest version of a script (a flow: --flow; or many specs)")
    p.add_argument("path", nargs="?")
    p.add_argument("--many", metavar="FILE.jsonl",
                   help="enqueue one spec per line (as the inbox takes them; - reads stdin) in "
                   "pipelined batches; the options given are defaults of every line")
    p.add_argument("--flow", action="store_true", help="PATH is a flow's")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)
    add_flow_commands(sub, _add_run_options, _spec_options, _submit)

    p = sub.add_parser("inbox", help="the raw-spec inbox (DESIGN.md §6)").add_subparsers(
        dest="action", required=True).add_parser(
        "push", help="push one raw JSON spec, exactly as `LPUSH gm:inbox` does")
    p.add_argument("spec", help="the JSON spec, e.g. '{\"path\": \"u/alice/hello\"}'; - reads stdin")
    p.set_defaults(func=cmd_inbox_push)

    p = sub.add_parser("preview", help="run a file of raw code")
    p.add_argument("file")
    p.add_argument("--language", choices=LANGUAGES)
    _add_run_options(p)
    p.set_defaults(func=cmd_preview)

    script = sub.add_parser("script", help="deploy and show scripts").add_subparsers(
        dest="action", required=True)
    p = script.add_parser("deploy", help="save a new version; prints its hash")
    p.add_argument("path", help="u/<user>/<name>, g/<group>/<name> or f/<folder>/<name>")
    p.add_argument("file")
    p.add_argument("--language", choices=LANGUAGES)
    p.add_argument("--timeout", type=int, metavar="SECONDS", help="default timeout of its jobs")
    p.add_argument("--retry", metavar="JSON", help="default retry policy of its jobs")
    p.add_argument("--limit", action="append", default=[], metavar="NAME=N",
                   help="a sandbox limit of its jobs (memory_mb, max_procs, file_mb, open_files, "
                   "disk_mb); it can only lower the worker's own; repeatable")
    p.add_argument("--tag", help="default tag of its jobs")
    p.set_defaults(func=cmd_script_deploy)
    p = script.add_parser("show", help="show a version by path (latest) or hash")
    p.add_argument("ref")
    p.set_defaults(func=cmd_script_show)
    add_deps_commands(sub, script)

    job = sub.add_parser("job", help="one job").add_subparsers(dest="action", required=True)
    p = job.add_parser("get", help="did it run? did it succeed?")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_job_get)
    p = job.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("id")
    p.add_argument("--reason", default="", help="recorded as canceled_reason")
    p.set_defaults(func=cmd_job_cancel)
    p = job.add_parser("logs", help="the job's log lines")
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true", help="until the job completes")
    p.set_defaults(func=cmd_job_logs)

    jobs = sub.add_parser("jobs", help="many jobs").add_subparsers(dest="action", required=True)
    p = jobs.add_parser("list", help="newest first")
    p.add_argument("--status", choices=[s.value for s in Status])
    p.add_argument("--kind", choices=[k.value for k in Kind])
    p.add_argument("--group")
    p.add_argument("--path", help="script path")
    p.add_argument("--created-by", help="u/<user>")
    p.add_argument("--permissioned-as", help="u/<user> or g/<group>")
    p.add_argument("--tag")
    p.add_argument("--schedule", help="schedule path")
    p.add_argument("--created-after", help="ISO 8601 or epoch ms (inclusive)")
    p.add_argument("--created-before", help="ISO 8601 or epoch ms (exclusive)")
    p.add_argument("--cursor", help="the cursor a previous page printed")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs_list)

    p = jobs.add_parser("cancel", help="cancel many jobs")
    p.add_argument("--status", choices=["queued", "running"], required=True)
    p.add_argument("--group")
    p.add_argument("--limit", type=int, default=None, help="at most this many (default: all)")
    p.add_argument("--reason", default="")
    p.set_defaults(func=cmd_jobs_cancel)

    schedule = sub.add_parser("schedule", help="cron schedules").add_subparsers(
        dest="action", required=True)
    p = schedule.add_parser("create", help="run a script (or a flow) on a cron schedule")
    p.add_argument("path", help="the schedule's own path, e.g. u/alice/nightly")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--script", help="path of the script to run")
    target.add_argument("--flow", help="path of the flow to run")
    p.add_argument("--cron", required=True,
                   help='5 fields, or 6 with seconds first: "0 */5 * * * *"')
    p.add_argument("--tz", default="UTC", help="IANA time zone, e.g. Europe/Paris")
    p.add_argument("--args-json", metavar="JSON")
    p.add_argument("-a", "--arg", action="append", default=[], metavar="K=V")
    p.add_argument("--no-overlap", action="store_true",
                   help="skip a fire while the previous run is still running")
    p.add_argument("--paused", action="store_true")
    p.add_argument("--catch-up", choices=["skip", "one", "all"], default="skip",
                   help="fires missed while the fleet was down: none, the latest, or all")
    p.set_defaults(func=cmd_schedule_create)
    p = schedule.add_parser("list")
    p.set_defaults(func=cmd_schedule_list)
    p = schedule.add_parser("show", help="definition, next fire and recent runs")
    p.add_argument("path")
    p.add_argument("--runs", type=int, default=20)
    p.set_defaults(func=cmd_schedule_show)
    for action, text in (("pause", "stop firing"), ("resume", "fire again from now"),
                         ("delete", "remove it and its queued fire")):
        p = schedule.add_parser(action, help=text)
        p.add_argument("path")
        p.set_defaults(func=cmd_schedule_change)

    route = sub.add_parser("route", help="which worker group serves a tag").add_subparsers(
        dest="action", required=True)
    p = route.add_parser("set", help="send jobs tagged TAG to GROUP")
    p.add_argument("tag")
    p.add_argument("group")
    p.set_defaults(func=cmd_route)
    p = route.add_parser("unset", help="send jobs tagged TAG to the default route again")
    p.add_argument("tag")
    p.set_defaults(func=cmd_route)
    p = route.add_parser("list")
    p.set_defaults(func=cmd_route)

    settings = sub.add_parser("settings", help="instance settings").add_subparsers(
        dest="action", required=True)
    p = settings.add_parser("get")
    p.add_argument("key", nargs="?")
    p.set_defaults(func=cmd_settings_get)
    p = settings.add_parser("set")
    p.add_argument("key")
    p.add_argument("value")
    p.set_defaults(func=cmd_settings_set)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except BrokenPipeError:
        # The reader went away (`... | head`, `grep -q`): stop quietly, as Unix tools do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (GristmillError, ValueError, OSError) as exc:
        print(f"gristmill: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
