"""Large logs: the part beyond Redis's budget goes to a real S3 server (moto on loopback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from common.fleet import Fleet
from common.models import Status
from common.settings import Settings
from common.store import Store
from gristmill.client import Gristmill
from gristmill.embedded import free_port
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from jobs.spec import parse_spec
from storage.logs import sweep
from storage.objects import ObjectStore
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

LINES, WIDTH = 5000, 10_000  # 50 MB
BIG = f"""
def main():
    pad = "x" * {WIDTH}
    for i in range({LINES}):
        print(f"{{i:05d}} {{pad}}")
    return "done"
"""


@pytest.fixture
def run_worker(store: Store, scripts: ScriptStore, fleet: Fleet,
               sandbox: Sandbox) -> Iterator[object]:
    running: list[tuple[Worker, threading.Thread]] = []

    def start(settings: Settings) -> Worker:
        worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                        claim_block_s=0.5, sandbox=sandbox)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread))
        return worker

    yield start
    for worker, thread in running:
        worker.stop()
        worker.kill_running()
        thread.join(15)


def submit(store: Store, scripts: ScriptStore, settings: Settings, code: str) -> str:
    job = Admission(store, scripts, settings).submit(parse_spec({"code": code,
                                                                 "language": "python3"}))
    return job.id


@pytest.mark.timeout(600)
def test_a_50_mb_log_is_written_and_read_back_whole(
    store: Store, scripts: ScriptStore, settings: Settings, s3_url: str, run_worker: object,
) -> None:
    """1 MiB stays in Redis, the rest is in the store; the client reads every line in order."""
    store.client.hset(store.keys.settings, "max_log_bytes", 1 << 20)
    with_store = settings.model_copy(update={"object_store_url": s3_url})
    run_worker(with_store)  # type: ignore[operator]
    job_id = submit(store, scripts, with_store, BIG)
    done = store.wait(job_id, 500)
    assert (done.status, done.result) == (Status.SUCCESS, "done"), done.error
    assert done.log_dropped_lines is None
    redis_lines = [e for e in store.logs(job_id, count=LINES * 2)]
    assert len(redis_lines) < 200  # most of it is not in Redis
    lines = [e.line for e in Gristmill(settings=with_store).logs(job_id) if e.stream == "stdout"]
    assert len(lines) == LINES
    assert all(line.startswith(f"{i:05d} ") and len(line) == WIDTH + 6
               for i, line in enumerate(lines))
    assert sum(len(line) for line in lines) >= 50_000_000


def test_an_object_store_outage_loses_neither_redis_logs_nor_the_result(
    store: Store, scripts: ScriptStore, settings: Settings, s3_url: str, run_worker: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store is unreachable: the job succeeds, Redis keeps its part, a line says what is
    missing, and readers say the rest cannot be read now."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    store.client.hset(store.keys.settings, "max_log_bytes", 64 * 1024)
    with_store = settings.model_copy(update={"object_store_url": s3_url})
    run_worker(with_store)  # type: ignore[operator]
    code = "def main():\n    for i in range(300):\n        print(f'{i:03d} ' + 'y' * 1000)\n" \
           "    return {'ok': True}\n"
    job_id = submit(store, scripts, with_store, code)
    done = store.wait(job_id, 120)
    assert (done.status, done.result) == (Status.SUCCESS, {"ok": True}), done.error
    kept = [e.line for e in store.logs(job_id)]
    assert kept[0].startswith("000 ") and any("could not be written to the object store" in k
                                               for k in kept)
    read = [e.line for e in Gristmill(settings=with_store).logs(job_id)]
    assert read[0].startswith("000 ") and any("cannot be read now" in r for r in read)


def test_sweep_removes_the_days_whose_records_are_gone(s3_url: str) -> None:
    """Stored log parts live under the day their record is certainly gone by."""
    objects = ObjectStore(s3_url)
    objects.put("logs/2020-01-01/a/001-000000.jsonl", b"{}\n")
    objects.put("logs/2999-01-01/b/001-000000.jsonl", b"{}\n")
    objects.put("envs/x.tar.gz", b"")
    assert sweep(objects) == 1
    assert objects.keys("") == ["envs/x.tar.gz", "logs/2999-01-01/b/001-000000.jsonl"]


def test_the_scheduler_sweeps_past_days(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings, s3_url: str,
) -> None:
    """A scheduler with an object store deletes past days' log parts from its tick (a thread)."""
    from scheduler.scheduler import Scheduler

    objects = ObjectStore(s3_url)
    objects.put("logs/2020-01-01/a/001-000000.jsonl", b"{}\n")
    scheduler = Scheduler(store=store, admission=Admission(store, scripts, settings),
                          fleet=fleet, objects=objects)
    scheduler.tick()
    assert scheduler._sweeper is not None
    scheduler._sweeper.join(30)
    assert objects.keys("logs/") == []


def test_a_result_over_the_limit_is_kept_in_the_store_and_read_back(
    store: Store, scripts: ScriptStore, settings: Settings, s3_url: str, run_worker: object,
) -> None:
    """Instead of ResultTooLarge: the record points at the object, the client reads it."""
    store.client.hset(store.keys.settings, "max_result_bytes", 1024)
    with_store = settings.model_copy(update={"object_store_url": s3_url})
    run_worker(with_store)  # type: ignore[operator]
    job_id = submit(store, scripts, with_store, "def main():\n    return {'big': 'z' * 50000}\n")
    raw = store.wait(job_id, 60)
    assert raw.status == Status.SUCCESS, raw.error
    assert raw.result is None and raw.result_ref and raw.result_bytes and raw.result_bytes > 50000
    assert Gristmill(settings=with_store).get_job(job_id).result == {"big": "z" * 50000}


WAITS_FOR_GO = """
import os, time

def main(go: str):
    pad = "w" * 1000
    for i in range(1500):  # 1.5 MB: past the Redis budget, one chunk uploaded
        print(f"before {i:04d} {pad}")
    end = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > end:
            raise TimeoutError("no go")
        time.sleep(0.02)
    for i in range(200):
        print(f"after {i:04d} {pad}")
    return "finished"
"""


def test_the_store_going_away_during_a_job_loses_neither_result_nor_redis_logs(
    store: Store, scripts: ScriptStore, settings: Settings, run_worker: object,
    monkeypatch: pytest.MonkeyPatch, sharing_sandbox: Sandbox, job_share: object,
) -> None:
    """A chunk is stored, then the S3 server stops: the job completes with its result, the
    Redis part and the stored chunk are read back, and the log says what was lost."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.e2e.conftest import deadline

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t",
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                        "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="gm-outage")
    store.client.hset(store.keys.settings, "max_log_bytes", 64 * 1024)
    with_store = settings.model_copy(update={"object_store_url": "s3://gm-outage/p"})
    worker = Worker(store=store, scripts=scripts, fleet=Fleet(store.client, store.keys),
                    settings=with_store, claim_block_s=0.5, sandbox=sharing_sandbox)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    go = f"{job_share}/go"
    try:
        job = Admission(store, scripts, with_store).submit(parse_spec(
            {"code": WAITS_FOR_GO, "language": "python3", "args": {"go": go}}))
        deadline(lambda: s3.list_objects_v2(Bucket="gm-outage").get("KeyCount", 0) > 0, 60,
                 "a first chunk in the store")
        server.stop()
        with open(go, "w"):
            pass
        done = store.wait(job.id, 120)
    finally:
        worker.stop()
        worker.kill_running()
        thread.join(15)
    assert (done.status, done.result) == (Status.SUCCESS, "finished"), done.error
    kept = [e.line for e in store.logs(job.id, count=100_000)]
    assert kept[0].startswith("before 0000 ")
    assert any("could not be written to the object store" in line for line in kept)
    read = [e.line for e in Gristmill(settings=with_store).logs(job.id)]
    assert read[0].startswith("before 0000 ")
    assert any("cannot be read now" in line for line in read)


def test_jobs_never_see_the_object_store_credentials(
    store: Store, scripts: ScriptStore, settings: Settings, s3_url: str, run_worker: object,
) -> None:
    """The worker holds AWS_* for the store; a job's environment has none of them."""
    with_store = settings.model_copy(update={"object_store_url": s3_url})
    run_worker(with_store)  # type: ignore[operator]
    code = ("import os\n\ndef main():\n"
            "    return sorted(k for k in os.environ if k.startswith(('AWS', 'GRISTMILL')))\n")
    done = store.wait(submit(store, scripts, with_store, code), 60)
    assert (done.status, done.result) == (Status.SUCCESS, []), done.error


PRINTS_SECRET_LATE = """
import os, time

def main(go: str, secret: str):
    for i in range(100):  # 100 KB: past the 64 KiB budget, so what follows is spilled
        print(f"pad {i:03d} " + "p" * 1000)
    end = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > end:
            raise TimeoutError("no go")
        time.sleep(0.02)
    for _ in range(3):
        print(f"the secret is {secret}")
    return "ok"
"""


def test_spilled_lines_are_redacted_like_redis_lines(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings, s3_url: str,
    sharing_sandbox: Sandbox, job_share: object,
) -> None:
    """A secret the job read (the API's redact entry) never reaches the object store."""
    import json

    from vault.crypto import SecretBox, generate_key

    key = generate_key()
    box = SecretBox.from_setting(key)
    secret = "hunter2-swordfish"
    store.client.hset(store.keys.settings, "max_log_bytes", 64 * 1024)
    with_store = settings.model_copy(update={"object_store_url": s3_url, "secret_key": key})
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=with_store,
                    claim_block_s=0.5, sandbox=sharing_sandbox, box=box)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    go = f"{job_share}/go"
    try:
        job = Admission(store, scripts, with_store).submit(parse_spec(
            {"code": PRINTS_SECRET_LATE, "language": "python3",
             "args": {"go": go, "secret": secret}}))
        entry = json.dumps({"p": "u/admin/pw", "v": box.seal(secret, context="u/admin/pw")},
                           separators=(",", ":"))
        store.client.sadd(store.keys.group(job.group).redact(job.id), entry)  # as the API does
        with open(go, "w"):
            pass
        done = store.wait(job.id, 60)
    finally:
        worker.stop()
        worker.kill_running()
        thread.join(15)
    assert (done.status, done.result) == (Status.SUCCESS, "ok"), done.error
    lines = [e.line for e in Gristmill(settings=with_store).logs(job.id)]
    assert lines.count("the secret is [redacted]") == 3
    stored = ObjectStore(s3_url)
    assert all(secret.encode() not in stored.get(k) for k in stored.keys("logs/"))
