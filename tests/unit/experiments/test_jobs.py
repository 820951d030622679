"""Batches of fits (compare, stack) after a stop: queued runs do not start, and the count says what happened."""

from __future__ import annotations

import multiprocessing

import pytest

from headstart.experiments import jobs
from headstart.experiments.jobs import FitJob, JobsInterrupted, run_job


def test_a_run_queued_before_the_parent_stopped_does_not_start(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = multiprocessing.get_context("spawn").Event()
    stop.set()
    monkeypatch.setattr(jobs, "_PARENT_STOP", stop)
    job = FitJob("full_s2", {"output_dir": str(tmp_path / "run"), "not": "a valid config"}, tmp_path / "log.txt")
    result = run_job(job)  # an invalid config: it would fail if the run were started
    assert result["status"] == "not started"
    assert not (tmp_path / "run").exists()
    assert "stopped before this run began" in (tmp_path / "log.txt").read_text()


def test_interruption_counts() -> None:
    stop = JobsInterrupted.count(143, ["done", "done", "interrupted", "not started"], 6)
    assert (stop.exit_code, stop.finished, stop.interrupted, stop.not_started) == (143, 2, 1, 3)
