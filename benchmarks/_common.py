"""Shared helpers of the text throughput benchmarks (paths, threads, worker subprocesses, stats).

Every measurement runs in its own ``python benchmarks/<bench>.py --worker ...`` subprocess that prints
exactly one line ``BENCH_RESULT {json}``: peak RSS (``VmHWM``) is then per measurement, and no side
inherits another's allocator state, page cache warm-up aside. All workers get the same thread settings
(``torch.set_num_threads(threads)`` plus ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in their environment).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "text_throughput"  # gitignored (benchmarks/runs/)
DATA = ROOT.parent / "shared" / "data"
SST2 = DATA / "sst2"
RESULT_MARK = "BENCH_RESULT "
DEFAULT_THREADS = 2


def data_available() -> bool:
    """True when ``../shared/data/sst2`` holds the three SST-2 files the benchmarks read."""
    return all((SST2 / name).is_file() for name in ("train.tsv", "dev.tsv", "test.tsv"))


def skip_message() -> str:
    return f"{SST2} is absent: nothing to benchmark (the throughput benchmarks need ../shared/data/sst2)."


def set_threads(threads: int) -> int:
    """Same intra-op thread count in every worker and in-process measurement."""
    import torch

    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def worker_env(threads: int) -> dict[str, str]:
    """Environment of every worker: equal thread caps, offline Hugging Face, quiet tokenizers."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
    )
    return env


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (the Trainer workers must not import headstart,
    so this repeats ``headstart.experiments.rundir.peak_rss_mb``): Linux ``VmHWM``, because ``ru_maxrss``
    inherits the parent's RSS across fork + exec and would floor every worker at the driver's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def emit(result: dict[str, Any]) -> None:
    """A worker's one result line (the parent reads the last line starting with RESULT_MARK)."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_worker(cmd: Sequence[str], threads: int, timeout: float) -> dict[str, Any]:
    """Run one worker subprocess from the repo root; its result dict, or an ``error`` entry."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), cwd=ROOT, env=worker_env(threads), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-3000:]
        return {"error": f"timed out after {timeout:.0f} s", "stderr_tail": _text(tail),
                "worker_wall_s": round(time.perf_counter() - t0, 2)}
    wall = round(time.perf_counter() - t0, 2)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        return {"error": f"worker exited with {proc.returncode} and {'a' if lines else 'no'} result line",
                "stderr_tail": proc.stderr[-3000:], "stdout_tail": proc.stdout[-1500:], "worker_wall_s": wall}
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result["worker_wall_s"] = wall
    return result


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def command_line(cmd: Sequence[str]) -> str:
    """The command as typed from the repo root (``python`` instead of the interpreter's full path)."""
    parts = ["python" if i == 0 and part == sys.executable else part for i, part in enumerate(cmd)]
    return shlex.join(parts)


def median(values: Sequence[float | None]) -> float | None:
    clean = [float(v) for v in values if v is not None]
    return statistics.median(clean) if clean else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": threads,
        "python": platform.python_version(), "torch": torch.__version__,
    }
    for name in ("transformers", "accelerate", "pytorch_lightning"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
