"""A run directory in a read-only location: exit code 2 and one "Cannot write the run directory" paragraph
naming the path, never a traceback.

Permission bits only bind a process without CAP_DAC_OVERRIDE, and tests here often run as root. So the CLI
runs in a child process: as root, with CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH dropped from its capability
bounding set before exec (it stays uid 0 and still reads its root-owned files), or failing that as user
nobody (which needs the interpreter and the package readable by nobody); as another user, as is. The test is
skipped, saying why, when none of these can make a directory read-only for the child.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config

_PR_CAPBSET_DROP = 24
_DAC_CAPS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
_NOBODY = 65534

# Runs headstart's real entry point once per argv in one process (one import of torch, not one per case).
_DRIVER = """
import contextlib, io, json, sys
from headstart.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"argv": argv, "code": code, "err": err.getvalue()})
print("RESULTS " + json.dumps(results))
"""


def _drop_dac_caps() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _DAC_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(_NOBODY)
    os.setuid(_NOBODY)


def _blocked_for(preexec: Callable[[], None] | None, readonly: Path, env: dict[str, str]) -> str | None:
    """None when a child started with ``preexec`` runs headstart's Python and cannot write ``readonly``."""
    probe = (f"import os, headstart.cli.main\ntry:\n    os.mkdir({str(readonly / 'probe')!r})\nexcept "
             f"PermissionError:\n    print('blocked')\nelse:\n    print('writable')")
    try:
        done = subprocess.run([sys.executable, "-c", probe], preexec_fn=preexec, env=env, capture_output=True,
                              text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot start the child ({exc})"
    if done.returncode != 0:
        return f"the child cannot run headstart ({done.stderr.strip().splitlines()[-1:]})"
    if done.stdout.strip() != "blocked":
        (readonly / "probe").rmdir()
        return "the child can still write a 0o555 directory"
    return None


@pytest.fixture
def sandbox(tiny_hf_dir: Path) -> Iterator[Path]:
    """A /tmp folder every user can traverse (pytest's tmp_path parents are 0700), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="headstart-ro-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        for path, dirs, _ in os.walk(root):
            for d in dirs:
                (Path(path) / d).chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def _tree_readable(root: Path) -> None:
    for path, dirs, files in os.walk(root):
        for d in dirs:
            (Path(path) / d).chmod(0o755)
        for f in files:
            (Path(path) / f).chmod(0o644)


def test_read_only_output_location_is_a_clear_error(sandbox, tiny_hf_dir) -> None:
    model = Path(shutil.copytree(tiny_hf_dir, sandbox / "model"))
    raw = tiny_run_config(sandbox, model, trainer={"epochs": 1, "limit_train_batches": 1})
    readonly = sandbox / "readonly"
    (readonly / "existing").mkdir(parents=True)  # an existing, empty run directory inside it
    raw["output_dir"] = str(readonly / "from_config")
    config = sandbox / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    _tree_readable(sandbox)
    writable = sandbox / "home"
    writable.mkdir()
    writable.chmod(0o777)
    readonly.chmod(0o555)
    (readonly / "existing").chmod(0o555)
    env = {**os.environ, "HOME": str(writable), "HEADSTART_CACHE_DIR": str(writable / "features"),
           "HEADSTART_WEIGHTS_DIR": str(writable / "weights"), "MPLCONFIGDIR": str(writable / "mpl")}
    env.pop("HEADSTART_DEBUG", None)

    if os.geteuid() != 0:
        preexec, why = None, _blocked_for(None, readonly, env)
    else:
        preexec, why = _drop_dac_caps, _blocked_for(_drop_dac_caps, readonly, env)
        if why is not None:
            nobody_why = _blocked_for(_as_nobody, readonly, env)
            if nobody_why is None:
                preexec, why = _as_nobody, None
            else:
                why = f"as root without DAC capabilities: {why}; as nobody: {nobody_why}"
    if why is not None:
        pytest.skip(f"cannot make a directory read-only for the CLI here: {why}")

    cases = [
        ["fit", str(config)],  # output_dir from the config, under the read-only folder
        ["fit", str(config), "--output-dir", str(readonly / "new_run")],
        ["fit", str(config), "--output-dir", str(readonly / "existing")],
    ]
    done = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(cases)], preexec_fn=preexec, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULTS ", 1)[1])
    for result, run in zip(results, ("from_config", "new_run", "existing"), strict=True):
        err, path = result["err"], readonly / run
        assert result["code"] == 2, result
        assert "Traceback" not in err and ("\n" + err).count("\nerror:") == 1, err  # (a library may log first)
        message = " ".join(err[err.index("error:"):].removeprefix("error:").split())
        assert f"Cannot write the run directory '{path}' (resolved to {path}): permission denied." in message, err
        assert "Choose a writable location: --output-dir on the command line" in message, err
    assert sorted(p.name for p in readonly.iterdir()) == ["existing"]  # nothing was created
    assert not any((readonly / "existing").iterdir())
    assert stat.S_IMODE(readonly.stat().st_mode) == 0o555
