"""Rendering the benchmark's figures: a readable table, the PASS/MISS targets, JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bench.idle import IdleCost
from bench.phases import PhaseResult
from bench.startup import StartupFigures
from bench.stats import Summary

DUE_P50_TARGET_MS = 5.0
SCHEDULED_P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class Target:
    """One figure compared with its goal: PASS when ``measured <= limit``."""

    name: str
    measured: float | None
    limit: float

    @property
    def passed(self) -> bool:
        return self.measured is not None and self.measured <= self.limit

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "measured_ms": self.measured, "limit_ms": self.limit,
                "result": "PASS" if self.passed else "MISS"}


ENQUEUE_MANY_TARGET = 50_000  # jobs/s from one Python process (issue 9)


@dataclass
class Report:
    """Everything one run measured."""

    config: dict[str, Any]
    machine: dict[str, Any]
    startup: StartupFigures | None = None
    due: PhaseResult | None = None
    free_worker: PhaseResult | None = None
    paced: PhaseResult | None = None
    scheduled: PhaseResult | None = None
    scheduled_free: PhaseResult | None = None
    enqueue_only: PhaseResult | None = None
    enqueue_batched: PhaseResult | None = None
    idle: IdleCost | None = None

    def targets(self) -> list[Target]:
        out = []
        if self.free_worker is not None:
            out.append(Target(
                "due job starts <= 5 ms after enqueue, p50, worker free",
                _pick(self.free_worker.start_latency, "p50"), DUE_P50_TARGET_MS))
        ahead = self.config["scheduled_ahead_s"]
        if self.scheduled is not None:
            out.append(Target(
                f"scheduled {ahead:g} s ahead starts <= 10 ms late, p99, "
                f"{self.scheduled.jobs} jobs in {self.config['scheduled_spread_ms']} ms",
                _pick(self.scheduled.start_lateness, "p99"), SCHEDULED_P99_TARGET_MS))
        if self.scheduled_free is not None:
            out.append(Target(
                f"scheduled {ahead:g} s ahead starts <= 10 ms late, p99, worker free",
                _pick(self.scheduled_free.start_lateness, "p99"), SCHEDULED_P99_TARGET_MS))
        return out

    def arrival_vs_capacity(self) -> tuple[float, float] | None:
        """Phase 2's arrival rate and phase 1's throughput (jobs/s), when both are known."""
        if self.scheduled is None or self.due is None or not self.due.throughput:
            return None
        window_s = max(self.config["scheduled_spread_ms"], 1) / 1000
        return self.scheduled.jobs / window_s, self.due.throughput

    def _capacity_note(self) -> list[str]:
        rates = self.arrival_vs_capacity()
        if rates is None or rates[0] <= rates[1]:
            return []
        return [f"  note: these jobs fall due at {rates[0]:.0f} jobs/s but the fleet completes "
                f"{rates[1]:.1f} jobs/s (phase 1): the lateness is queueing for a free slot, "
                "not promotion delay; see the worker-free row for the scheduler's precision"]

    def to_dict(self) -> dict[str, object]:
        phases = {p.name: p.to_dict() for p in
                  (self.due, self.free_worker, self.paced, self.scheduled, self.scheduled_free,
                   self.enqueue_only, self.enqueue_batched)
                  if p}
        return {
            "config": self.config, "machine": self.machine,
            "startup": self.startup.to_dict() if self.startup else None,
            "phases": phases,
            "idle": self.idle.to_dict() if self.idle else None,
            "targets": [t.to_dict() for t in self.targets()],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines: list[str] = []
        c, m = self.config, self.machine
        job = f"sleep {c['sleep_ms']} ms" if c["sleep_ms"] else "no-op"
        lines.append(f"gristmill throughput benchmark: {c['jobs']} jobs, {c['workers']} workers x "
                     f"{c['concurrency']} slots, job = {job}, "
                     f"execution {c.get('mode', 'cold')}")
        lines.append(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, "
                     f"{m['redis']}, load avg at start {m['loadavg_start']}, "
                     f"at end {m.get('loadavg_end', '?')}")
        if self.due is not None:
            lines += _phase_lines("phase 1: due jobs", self.due, show_rate=True)
        if self.enqueue_only is not None:
            e = self.enqueue_only
            lines.append(f"  enqueue rate, fleet idle     {e.enqueue_rate:10.0f} jobs/s "
                         f"({e.jobs} jobs in {e.enqueue_s:.2f} s, nobody consuming)")
        if self.enqueue_batched is not None:
            e = self.enqueue_batched
            lines.append(f"  enqueue_many, fleet idle     {e.enqueue_rate:10.0f} jobs/s "
                         f"({e.jobs} runs by path in {e.enqueue_s:.2f} s, batches of 1000; "
                         f"target >= {ENQUEUE_MANY_TARGET:,}: "
                         f"{'PASS' if e.enqueue_rate >= ENQUEUE_MANY_TARGET else 'MISS'})")
            if e.admit_rate is not None and e.admit_s is not None:
                lines.append(f"  admission of that backlog    {e.admit_rate:10.0f} jobs/s "
                             f"({e.jobs} jobs in {e.admit_s:.2f} s by one scheduler's inbox "
                             f"thread: the end-to-end ceiling)")
        if self.free_worker is not None:
            lines += _phase_lines("due jobs one at a time (a worker always free)",
                                  self.free_worker)
        if self.paced is not None:
            lines += _phase_lines(f"due jobs arriving at {c['paced_rate']:g} jobs/s",
                                  self.paced)
        if self.scheduled is not None:
            lines += _phase_lines(f"phase 2: scheduled {c['scheduled_ahead_s']:g} s ahead",
                                  self.scheduled)
            lines += self._capacity_note()
        if self.scheduled_free is not None:
            lines += _phase_lines(
                f"scheduled {c['scheduled_ahead_s']:g} s ahead, "
                f"{c['scheduled_free_gap_ms']} ms apart (a worker always free)",
                self.scheduled_free)
        if self.startup is not None:
            s = self.startup
            lines.append("")
            lines.append(f"interpreter start-up (median of {s.reps}, ms, measured before the "
                         "fleet started)")
            lines.append(f"  python -c pass                           {s.python_pass_ms:8.1f}")
            lines.append(f"  python -I -S -c pass (bare interpreter)  "
                         f"{s.python_isolated_pass_ms:8.1f}")
            lines.append(f"  pywrapper, no-op main, spawned directly  {s.pywrapper_noop_ms:8.1f}")
            lines.append(f"  worker spawn path, shared sandbox        "
                         f"{s.worker_spawn_path_ms:8.1f}")
            if s.isolated_spawn_path_ms is not None:
                lines.append(f"  worker spawn path, isolated sandbox      "
                             f"{s.isolated_spawn_path_ms:8.1f}")
            if s.warm_spawn_path_ms is not None:
                lines.append(f"  warm spawn path, shared sandbox          "
                             f"{s.warm_spawn_path_ms:8.1f}")
            if s.warm_isolated_spawn_path_ms is not None:
                lines.append(f"  warm spawn path, isolated sandbox        "
                             f"{s.warm_isolated_spawn_path_ms:8.1f}")
            for phase in (self.free_worker, self.due):
                if phase is not None and phase.duration_median_ms is not None:
                    lines.append(f"  job duration_ms, median, {phase.name:<14}  "
                                 f"{phase.duration_median_ms:8.1f}")
        if self.idle is not None:
            lines += _idle_lines(self.idle)
        lines.append("")
        lines.append("targets")
        for t in self.targets():
            measured = "n/a" if t.measured is None else f"{t.measured:.1f} ms"
            lines.append(f"  {'PASS' if t.passed else 'MISS'}  {t.name}: {measured}")
        return "\n".join(lines)


def _pick(summary: Summary | None, field: str) -> float | None:
    return None if summary is None else float(getattr(summary, field))


def _summary_line(label: str, s: Summary | None) -> str:
    if s is None:
        return f"  {label:<28} (no samples)"
    return (f"  {label:<28} p50 {s.p50:8.1f}  p90 {s.p90:8.1f}  p99 {s.p99:8.1f}  "
            f"max {s.max:8.1f}  min {s.min:6.1f}")


def _phase_lines(title: str, p: PhaseResult, *, show_rate: bool = False) -> list[str]:
    lines = ["", f"{title}: {p.jobs} jobs, statuses {p.statuses}"]
    if show_rate:
        lines.append(f"  enqueue rate (1 producer)    {p.enqueue_rate:10.0f} jobs/s "
                     f"({p.enqueue_s:.2f} s)")
    if p.throughput is not None and p.wall_s is not None:
        lines.append(f"  end-to-end throughput        {p.throughput:10.1f} jobs/s "
                     f"(first enqueue -> last completion {p.wall_s:.2f} s)")
    if p.start_latency is not None:
        lines.append(_summary_line("enqueue -> start (ms)", p.start_latency))
    if p.start_lateness is not None:
        lines.append(_summary_line("scheduled_for -> start (ms)", p.start_lateness))
        lines.append(_summary_line("scheduled_for -> done (ms)", p.complete_latency))
    elif p.complete_latency is not None:
        lines.append(_summary_line("enqueue -> completed (ms)", p.complete_latency))
    if p.duration_median_ms is not None:
        lines.append(f"  job duration_ms, median      {p.duration_median_ms:10.1f}")
    if p.cpu_ms_per_job:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in p.cpu_ms_per_job.items())
        lines.append(f"  CPU ms per job: {parts} (total {sum(p.cpu_ms_per_job.values()):.1f})")
    if p.cpu_ceiling is not None and p.cpu_share is not None:
        lines.append(f"  CPU-bound ceiling            {p.cpu_ceiling:10.1f} jobs/s (all cores / CPU "
                     f"per job); the benchmark got {p.cpu_share:.0%} of the machine's CPU")
    lines += [f"  note: {n}" for n in p.notes]
    return lines


def _idle_lines(idle: IdleCost) -> list[str]:
    lines = ["", f"phase 3: idle fleet for {idle.seconds:.1f} s: "
             f"{idle.total_per_s:.2f} commands/s in all"]
    for r in idle.rates:
        lines.append(f"  {r.command:<14} {r.kind:<10} {r.calls:6d} calls  {r.per_s:7.2f}/s")
    lines.append(f"  {idle.claim_line()}")
    return lines
