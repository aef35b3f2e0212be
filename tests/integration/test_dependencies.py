"""Dependencies jobs, locks and environments, end to end on a real Redis and real workers.

No package index is reached: the tests write two tiny wheels (one depending on
the other) into a directory and the workers resolve with ``--no-index
--find-links`` it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import SpecError
from common.fleet import Fleet
from common.models import Kind, Status
from common.settings import Settings
from common.store import Store
from gristmill.format import script_details
from jobs.admission import Admission
from jobs.locking import Locker
from jobs.scripts import ScriptStore
from jobs.spec import parse_spec
from tests.wheels import write_wheel
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

USES_TOP = "import gmtesttop\n\ndef main():\n    return gmtesttop.answer()\n"
INSTALLING = "[gristmill] installing environment"


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    write_wheel(directory, "gmtestbase", "1.2.0", "VALUE = 41\n")
    write_wheel(directory, "gmtesttop", "0.3.0",
                "import gmtestbase\n\ndef answer():\n    return gmtestbase.VALUE + 1\n",
                ("gmtestbase>=1.0",))
    directory.chmod(0o755)
    return directory


@pytest.fixture
def deps_settings(settings: Settings, wheels: Path, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"pip_find_links": str(wheels), "pip_no_index": True,
                                       "deps_dir": tmp_path / "deps"})


@pytest.fixture
def admission(store: Store, scripts: ScriptStore, deps_settings: Settings) -> Admission:
    return Admission(store, scripts, deps_settings)


@pytest.fixture
def locker(scripts: ScriptStore, admission: Admission) -> Locker:
    return Locker(scripts, admission)


class Workers:
    """Starts in-process workers (in threads) and stops them."""

    def __init__(self, store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings,
                 sandbox: Sandbox) -> None:
        self.store, self.scripts, self.fleet = store, scripts, fleet
        self.settings, self.sandbox = settings, sandbox
        self.threads: dict[str, tuple[Worker, threading.Thread]] = {}

    def __call__(self, settings: Settings | None = None, concurrency: int = 1) -> Worker:
        worker = Worker(store=self.store, scripts=self.scripts, fleet=self.fleet,
                        settings=settings or self.settings, concurrency=concurrency,
                        claim_block_s=0.5, sandbox=self.sandbox)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        self.threads[worker.worker_id] = (worker, thread)
        return worker

    def stop(self, worker: Worker) -> None:
        """Stop ``worker`` and wait until its loops have ended."""
        worker.stop()
        worker.kill_running()
        self.threads[worker.worker_id][1].join(15)


WorkerFactory = Workers


@pytest.fixture
def start_worker(store: Store, scripts: ScriptStore, fleet: Fleet, deps_settings: Settings,
                 sandbox: Sandbox) -> Iterator[Workers]:
    workers = Workers(store, scripts, fleet, deps_settings, sandbox)
    yield workers
    for worker, _thread in list(workers.threads.values()):
        workers.stop(worker)


def log_text(store: Store, job_id: str) -> str:
    return "\n".join(entry.line for entry in store.logs(job_id))


def run(admission: Admission, store: Store, spec: dict[str, object], timeout_s: float = 60):
    job = admission.submit(parse_spec(spec))
    return store.wait(job.id, timeout_s)


def test_deploy_locks_then_runs_and_reuses_the_environment(
    locker: Locker, scripts: ScriptStore, store: Store, admission: Admission,
    start_worker: WorkerFactory,
) -> None:
    """A deploy queues a dependencies job; the lock lands on the version; the first run
    installs, the second reuses the environment."""
    version, created = locker.deploy("u/admin/top", "python3", USES_TOP)
    assert created and version.lock_state == "locking" and version.lock_job
    start_worker()
    deps_job = store.wait(version.lock_job, 60)
    assert deps_job.kind == Kind.DEPENDENCIES
    assert deps_job.status == Status.SUCCESS, deps_job.error
    assert "Resolved 2 packages" in log_text(store, deps_job.id)
    locked = scripts.by_hash(version.hash)
    assert locked.lock_state == "locked"
    assert locked.lock == "gmtestbase==1.2.0\ngmtesttop==0.3.0\n"
    assert "lock      locked\n          gmtestbase==1.2.0\n" in script_details(locked)
    first = run(admission, store, {"path": "u/admin/top"})
    assert (first.status, first.result) == (Status.SUCCESS, 42), first.error
    assert INSTALLING in log_text(store, first.id)
    second = run(admission, store, {"path": "u/admin/top"})
    assert (second.status, second.result) == (Status.SUCCESS, 42), second.error
    assert INSTALLING not in log_text(store, second.id)


def test_a_run_by_hash_waits_for_a_pending_lock(
    locker: Locker, store: Store, admission: Admission, start_worker: WorkerFactory,
) -> None:
    """Enqueued before the lock exists, the job waits for its dependencies job, then runs."""
    version, _ = locker.deploy("u/admin/top", "python3", USES_TOP)
    job = admission.submit(parse_spec({"hash": version.hash}))
    start_worker(concurrency=2)
    done = store.wait(job.id, 90)
    assert (done.status, done.result) == (Status.SUCCESS, 42), done.error


def test_an_unresolvable_requirement_fails_its_lock_and_never_runs(
    locker: Locker, scripts: ScriptStore, store: Store, admission: Admission,
    start_worker: WorkerFactory,
) -> None:
    """The dependencies job fails with uv's reason and what to do; the version is refused."""
    good, _ = locker.deploy("u/admin/s", "python3", USES_TOP)
    bad, _ = locker.deploy("u/admin/s", "python3", "import gmnosuchthing\n\ndef main():\n"
                           "    return 1\n")
    start_worker()
    assert store.wait(good.lock_job or "", 60).status == Status.SUCCESS
    failed = store.wait(bad.lock_job or "", 60)
    assert failed.status == Status.FAILURE and failed.error is not None
    assert failed.error["name"] == "LockFailed"
    assert "gmnosuchthing" in failed.error["message"]
    assert "# requirements:" in failed.error["message"]
    assert scripts.by_hash(bad.hash).lock_state == f"lock failed: {bad.lock_job}"
    assert f"lock      lock failed: {bad.lock_job}\n" in script_details(scripts.by_hash(bad.hash))
    with pytest.raises(SpecError, match=f"lock failed: {bad.lock_job}"):
        admission.submit(parse_spec({"hash": bad.hash}))
    by_path = run(admission, store, {"path": "u/admin/s"})  # the latest *locked* version
    assert (by_path.script_hash, by_path.result) == (good.hash, 42)


def test_a_script_without_third_party_imports_is_locked_at_deploy(
    locker: Locker, store: Store, admission: Admission,
) -> None:
    """No dependencies job, no delay: runnable at once."""
    version, _ = locker.deploy("u/admin/plain", "python3", "import json\ndef main():\n"
                               "    return json.dumps(1)\n")
    assert version.lock_state == "locked" and version.lock == "" and version.lock_job == "none"
    assert store.client.zcard(store.keys.group("default").scheduled) == 0
    assert store.client.llen(store.keys.group("default").ready) == 0


def test_a_preview_resolves_inline_and_caches_the_resolution(
    store: Store, admission: Admission, scripts: ScriptStore, start_worker: WorkerFactory,
) -> None:
    """A preview importing a package runs with it; the second resolves nothing."""
    start_worker()
    spec = {"code": USES_TOP, "language": "python3", "tag": "python3"}
    first = run(admission, store, spec)
    assert (first.status, first.result) == (Status.SUCCESS, 42), first.error
    assert "resolving this preview's requirements" in log_text(store, first.id)
    second = run(admission, store, spec)
    assert (second.status, second.result) == (Status.SUCCESS, 42), second.error
    assert "resolving" not in log_text(store, second.id)


def test_concurrent_first_runs_on_two_workers_build_once(
    locker: Locker, store: Store, admission: Admission, start_worker: WorkerFactory,
) -> None:
    """Two workers of one host, two first runs at once: one install."""
    version, _ = locker.deploy("u/admin/top", "python3", USES_TOP)
    start_worker()
    assert store.wait(version.lock_job or "", 60).status == Status.SUCCESS
    jobs = [admission.submit(parse_spec({"hash": version.hash})) for _ in range(4)]
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    done = [store.wait(job.id, 90) for job in jobs]
    assert all((d.status, d.result) == (Status.SUCCESS, 42) for d in done), \
        [d.error for d in done]
    assert sum(log_text(store, d.id).count(INSTALLING) for d in done) == 1


def test_the_resolver_runs_in_the_sandbox(
    locker: Locker, store: Store, deps_settings: Settings, isolated: Sandbox,
    start_worker: WorkerFactory,
) -> None:
    """A requirement naming a file of the worker's data directory cannot read it."""
    assert isolated.mode == "isolated"
    secret_dir = deps_settings.data_dir
    secret_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    wheel = write_wheel(secret_dir, "gmtestbase", "1.2.0", "TOKEN = 'secret'\n")
    code = f"# requirements:\n# gmtestbase @ file://{wheel}\n\ndef main():\n    return 1\n"
    version, _ = locker.deploy("u/admin/sneaky", "python3", code)
    start_worker()
    failed = store.wait(version.lock_job or "", 60)
    assert failed.status == Status.FAILURE and failed.error is not None
    # uv never saw the file: had it, the lock would have been refused as a direct reference.
    assert failed.error["name"] == "LockFailed", failed.error
    assert "not found" in failed.error["message"] or "No such file" in failed.error["message"]
    assert "secret" not in log_text(store, failed.id).replace(str(wheel), "")


def test_script_lock_relocks_a_version(
    locker: Locker, scripts: ScriptStore, store: Store, start_worker: WorkerFactory,
) -> None:
    """`gristmill script lock`: a new dependencies job, the version locked again by it."""
    version, _ = locker.deploy("u/admin/top", "python3", USES_TOP)
    start_worker()
    assert store.wait(version.lock_job or "", 60).status == Status.SUCCESS
    relocked = locker.relock(version.hash)
    assert relocked.lock_job != version.lock_job
    assert relocked.runnable  # the previous lock stays usable meanwhile
    assert store.wait(relocked.lock_job or "", 60).status == Status.SUCCESS
    assert scripts.by_hash(version.hash).lock_job == relocked.lock_job


def test_an_environment_built_on_one_host_is_downloaded_by_another(
    locker: Locker, store: Store, admission: Admission, deps_settings: Settings,
    start_worker: WorkerFactory, s3_url: str, tmp_path: Path,
) -> None:
    """Worker A builds and uploads the archive; worker B, with another cache, downloads it."""
    host_a = deps_settings.model_copy(update={"object_store_url": s3_url,
                                              "deps_dir": tmp_path / "host-a"})
    host_b = host_a.model_copy(update={"deps_dir": tmp_path / "host-b"})
    version, _ = locker.deploy("u/admin/top", "python3", USES_TOP)
    worker_a = start_worker(host_a)
    assert store.wait(version.lock_job or "", 60).status == Status.SUCCESS
    first = run(admission, store, {"hash": version.hash})
    assert (first.status, first.result) == (Status.SUCCESS, 42), first.error
    assert INSTALLING in log_text(store, first.id)
    start_worker.stop(worker_a)
    start_worker(host_b)
    second = run(admission, store, {"hash": version.hash})
    assert (second.status, second.result) == (Status.SUCCESS, 42), second.error
    assert "downloaded from the object store" in log_text(store, second.id)
    assert INSTALLING not in log_text(store, second.id)
    assert list((tmp_path / "host-b" / "envs").glob("*/gmtesttop/__init__.py"))


TAMPER = """
import errno, os
import gmtesttop

def main():
    env = os.path.dirname(os.path.dirname(gmtesttop.__file__))
    try:
        with open(os.path.join(env, "gmtestbase", "__init__.py"), "a") as f:
            f.write("VALUE = 0\\n")
        return {"wrote": True}
    except OSError as exc:
        with open("/proc/self/mounts") as mounts:
            options = [line.split()[3] for line in mounts if line.split()[1] == env]
        return {"wrote": False, "errno": errno.errorcode[exc.errno], "uid": os.getuid(),
                "mount": options}
"""


def test_a_job_cannot_change_its_environment(
    locker: Locker, store: Store, admission: Admission, isolated: Sandbox,
    start_worker: WorkerFactory,
) -> None:
    """The environment is read-only in the sandbox, and the job is not root: the next job of
    the same lock gets the packages unchanged."""
    assert isolated.mode == "isolated"
    version, _ = locker.deploy("u/admin/tamper", "python3", TAMPER)
    start_worker()
    assert store.wait(version.lock_job or "", 60).status == Status.SUCCESS
    done = run(admission, store, {"hash": version.hash})
    assert done.status == Status.SUCCESS, done.error
    assert done.result["wrote"] is False and done.result["errno"] in ("EACCES", "EROFS")
    assert done.result["uid"] != 0
    assert done.result["mount"] and done.result["mount"][-1].split(",")[0] == "ro"
    again = run(admission, store, {"code": USES_TOP, "language": "python3"})
    assert again.result == 42


def test_deps_prune_removes_only_unused_environments(
    locker: Locker, store: Store, admission: Admission, deps_settings: Settings,
    start_worker: WorkerFactory,
) -> None:
    """An environment no current version uses goes; the one in use stays."""
    from deps.environments import EnvironmentCache
    from deps.resolver import IndexOptions, lock_hash

    version, _ = locker.deploy("u/admin/top", "python3", USES_TOP)
    start_worker()
    assert store.wait(version.lock_job or "", 60).status == Status.SUCCESS
    assert run(admission, store, {"hash": version.hash}).result == 42
    root = (deps_settings.deps_dir or Path()).resolve()
    stale = root / "envs" / "0123456789abcdef"
    stale.mkdir()
    cache = EnvironmentCache(root, "uv", IndexOptions())
    in_use = lock_hash(locker.scripts.by_hash(version.hash).lock or "")
    assert cache.prune({in_use}) == ["0123456789abcdef"]
    assert not stale.exists() and (root / "envs" / in_use / "gmtesttop").is_dir()


def test_a_preview_canceled_while_resolving_stops_at_once(
    store: Store, admission: Admission, deps_settings: Settings, start_worker: WorkerFactory,
) -> None:
    """The resolver of a preview is what a cancel stops: an index that never answers does not
    keep the job (or the worker's slot) until uv gives up."""
    import socket

    from tests.e2e.conftest import deadline

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        start_worker(deps_settings.model_copy(update={"pip_index_url": index,
                                                      "pip_no_index": False,
                                                      "pip_find_links": ""}))
        job = admission.submit(parse_spec({"code": "import gmhangs\n\ndef main():\n    return 1\n",
                                           "language": "python3"}))
        deadline(lambda: "resolving this preview's requirements" in log_text(store, job.id), 30,
                 "the preview's resolution to start")
        store.cancel(job.id, by="u/admin", reason="test", retention_s=3600)
        done = store.wait(job.id, 20)
    assert done.status == Status.CANCELED, (done.status, done.error)
