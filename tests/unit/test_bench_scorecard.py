"""bench/scorecard.py: issue 9's table from a run's figures (a pure function), and the figures
read from the runs' JSON reports."""

from __future__ import annotations

import pytest

from bench.scorecard import Figures, read_peers, read_throughput, rows

pytestmark = pytest.mark.timeout(10)

WARM_CPU = {"job processes": 6.0, "worker processes": 1.5, "redis": 0.5, "scheduler": 0.0,
            "producer (bench)": 1.0}
FAST_CPU = {"job processes": 3.0, "worker processes": 1.0, "redis": 0.5}  # 4.5 ms
ALL = Figures(cpus=2, paced_rate=100.0, warm_jobs_s=216.0, warm_cpu=WARM_CPU, warm_latency=(7.0, 9.0),
              warm_duration_ms=5.0, dedicated_cpu={"worker processes": 0.5, "redis": 0.3},
              dedicated_latency=(2.0, 3.0), dedicated_start=(1.0, 1.0),
              dedicated_peers_jobs_s=1600.0, peers_jobs_s={"huey": 2255.0, "rq": 42.0},
              enqueue_many_jobs_s=72_000.0, round_trips_per_job=0.53, idle_per_process=1.6)


def verdicts(figures: Figures) -> dict[str, str]:
    return {row.figure: row.verdict for row in rows(figures)}


@pytest.mark.parametrize(("figures", "figure", "verdict", "in_cause"), [
    (ALL, "no-op python3 jobs/s, warm sandboxed, 2 worker processes", "MISS", "2 cores do 222"),
    (Figures(warm_jobs_s=500.0), "no-op python3 jobs/s, warm sandboxed, 2 worker processes",
     "PASS", ""),
    (ALL, "CPU per warm job (worker + job + Redis)", "MISS", "6.0 ms of it is the job's own"),
    (Figures(warm_cpu=FAST_CPU), "CPU per warm job (worker + job + Redis)", "MISS", "3.0 ms"),
    (Figures(warm_cpu={"job processes": 2.0, "worker processes": 1.5, "redis": 0.5}),
     "CPU per warm job (worker + job + Redis)", "PASS", ""),           # 4.0 ms: at the limit
    (ALL, "no-op jobs/s, dedicated, 2 worker processes", "MISS", "no job record"),
    (Figures(dedicated_peers_jobs_s=3000.0, peers_jobs_s={"huey": 2999.0}),
     "no-op jobs/s, dedicated, 2 worker processes", "PASS", ""),
    (Figures(dedicated_peers_jobs_s=3000.0), "no-op jobs/s, dedicated, 2 worker processes",
     "not run", ""),                                                    # no peer ran
    (ALL, "enqueue -> completed p50 / p99, at 100 jobs/s, warm", "MISS", "the job lasts 5 ms"),
    (Figures(warm_latency=(5.0, 15.0)), "enqueue -> completed p50 / p99, a worker free, warm",
     "PASS", ""),
    (Figures(warm_latency=(4.0, 16.0)), "enqueue -> completed p50 / p99, a worker free, warm",
     "MISS", ""),                                                       # p99 alone misses
    (ALL, "enqueue -> completed p50 / p99, at 100 jobs/s, dedicated", "MISS",
     "start p50 1 ms (the enqueue's write, the BLMOVE with its claim_start), then 1 ms to run"),
    (Figures(dedicated_latency=(1.0, 4.0)),
     "enqueue -> completed p50 / p99, a worker free, dedicated", "PASS", ""),
    (ALL, "enqueue_many jobs/s from one Python process", "PASS", ""),
    (Figures(enqueue_many_jobs_s=49_999.0), "enqueue_many jobs/s from one Python process",
     "MISS", "producer"),
    (ALL, "Redis round trips per job on the worker", "PASS", ""),
    (Figures(round_trips_per_job=2.5), "Redis round trips per job on the worker", "MISS", "log"),
    (ALL, "Redis commands/s of an idle fleet, per process", "PASS", ""),
    (Figures(idle_per_process=2.1), "Redis commands/s of an idle fleet, per process", "MISS",
     "bench.idle"),
    (Figures(), "Redis commands/s of an idle fleet, per process", "not run", ""),
])
def test_each_row_is_scored_with_its_cause(figures: Figures, figure: str, verdict: str,
                                           in_cause: str) -> None:
    (row,) = [r for r in rows(figures) if r.figure == figure]
    assert row.verdict == verdict
    assert in_cause in row.cause
    assert bool(row.cause) == (verdict == "MISS")


def test_the_table_has_every_row_of_the_issue() -> None:
    assert len(rows(Figures())) == 8
    assert set(verdicts(Figures()).values()) == {"not run"}


def test_figures_are_read_from_the_runs_reports() -> None:
    figures = Figures()
    free = {"complete_latency": {"p50": 7.0, "p99": 9.0}, "start_latency": {"p50": 1.0, "p99": 2.0},
            "duration_median_ms": 5.0}
    read_throughput({"machine": {"cpus": 2}, "phases": {
        "due": {"throughput": 216.0, "cpu_ms_per_job": WARM_CPU}, "free_worker": free,
        "enqueue_many": {"enqueue_rate": 72_000.0}}, "idle": {"total_per_s": 4.8}},
        figures, "warm")
    read_throughput({"phases": {"due": {"cpu_ms_per_job": {"redis": 0.3}},
                                "free_worker": free}}, figures, "dedicated")
    read_peers({"results": {"gristmill-dedicated": {"noop": {"jobs_per_s": 1600.0}},
                            "huey": {"noop": {"jobs_per_s": 2255.0}},
                            "saq": {"error": "it failed"}}}, figures)
    assert (figures.warm_jobs_s, figures.warm_latency, figures.warm_duration_ms) == \
        (216.0, (7.0, 9.0), 5.0)
    assert figures.paced_rate is None  # no paced phase: the latency of a worker free
    assert figures.enqueue_many_jobs_s == 72_000.0
    assert figures.idle_per_process == pytest.approx(1.6)  # 2 workers and a scheduler
    assert figures.dedicated_cpu == {"redis": 0.3} and figures.dedicated_start == (1.0, 2.0)
    assert figures.dedicated_peers_jobs_s == 1600.0 and figures.peers_jobs_s == {"huey": 2255.0}


def test_a_paced_phase_is_the_latency_when_there_is_one() -> None:
    figures = Figures()
    free = {"complete_latency": {"p50": 7.0, "p99": 9.0}, "duration_median_ms": 5.0}
    paced = {"complete_latency": {"p50": 11.0, "p99": 30.0}, "duration_median_ms": 6.0}
    read_throughput({"config": {"paced_rate": 100.0},
                     "phases": {"free_worker": free, "paced": paced}}, figures, "warm")
    assert (figures.paced_rate, figures.warm_latency, figures.warm_duration_ms) == \
        (100.0, (11.0, 30.0), 6.0)
    (row,) = [r for r in rows(figures) if r.figure.endswith("warm") and "p50" in r.figure]
    assert row.figure == "enqueue -> completed p50 / p99, at 100 jobs/s, warm"
    assert (row.measured, row.verdict) == ("11 / 30 ms", "MISS")
