"""Usage mistakes, help and version through the real ``headstart`` process: click-style usage plus one
``Error:`` line, the right exit code, never a traceback; and ``main()``'s handling of interrupted runs.

The subprocess cases run ``python -m headstart.cli.main`` (the console script's ``main``), so they see
exactly what a user sees, including how long the import takes: each is a fraction of a second because the
CLI module imports neither torch nor pandas (checked below without timing anything; the wall times are in
benchmarks/cli_startup.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from types import SimpleNamespace

import pytest

from headstart.cli.main import main
from headstart.errors import RunInterrupted

HEAVY = ("torch", "pytorch_lightning", "transformers", "pandas", "numpy")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEADSTART_DEBUG"}
    env["COLUMNS"] = "100"  # the help text wraps the same way on every terminal
    return subprocess.run([sys.executable, "-m", "headstart.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


# Usage mistakes: exit 2, the usage line, "Try ... -h", one Error: line ------------------------------------


@pytest.mark.parametrize(("argv", "usage", "facts"), [
    (["fit", "cfg.yaml", "--epoch", "1"], "headstart fit", ["No such option: --epoch", "--epochs"]),
    (["fitt"], "headstart", ["No such command 'fitt'", "Did you mean 'fit'?"]),
    (["fit"], "headstart fit", ["Missing argument 'CONFIG'"]),
    (["cache", "lss"], "headstart cache", ["No such command 'lss'"]),
    (["inspect", "cfg.yaml", "--steps-per-epoch", "0"], "headstart inspect",
     ["--steps-per-epoch", "greater than or equal to 1"]),
    (["fit", "cfg.yaml", "--overwrite", "--resume"], "headstart fit",
     ["--overwrite and --resume cannot be used together", "--resume continues the run", "--overwrite deletes",
      "Pick one"]),
    (["pretrain", "cfg.yaml", "--resume", "--overwrite"], "headstart pretrain",
     ["--overwrite and --resume cannot be used together"]),
], ids=["unknown-option", "unknown-command", "missing-config", "unknown-subcommand", "out-of-range",
        "overwrite-and-resume", "pretrain-overwrite-and-resume"])
def test_usage_mistake_prints_usage_and_one_error(argv, usage, facts) -> None:
    proc = _cli(*argv)
    _no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"Usage: {usage} [OPTIONS]"), proc.stderr
    assert lines[1] == f"Try '{usage} -h' for help.", proc.stderr
    assert lines[-1].startswith("Error: ") and sum(line.startswith("Error:") for line in lines) == 1, proc.stderr
    missing = [f for f in facts if f not in lines[-1]]
    assert not missing, f"{missing} not in: {lines[-1]}"


def test_overwrite_with_resume_is_refused_before_reading_the_config(tmp_path) -> None:
    """The config does not exist: the usage error comes first, and nothing is created."""
    proc = _cli("fit", str(tmp_path / "nope.yaml"), "--overwrite", "--resume")
    assert proc.returncode == 2 and "Pick one" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [[], ["cache"]], ids=["headstart", "headstart-cache"])
def test_no_arguments_show_help_with_exit_2(argv) -> None:
    """click's no_args_is_help: the help goes to stderr and the exit code is 2 (nothing was run)."""
    proc = _cli(*argv)
    _no_traceback(proc)
    assert proc.returncode == 2
    prog = " ".join(["headstart", *argv])
    assert proc.stderr.startswith(f"Usage: {prog} [OPTIONS] COMMAND [ARGS]..."), proc.stderr
    assert "Commands:" in proc.stderr and "-h, --help" in proc.stderr
    assert "Error" not in proc.stderr


# Help and version: exit 0 on stdout ----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["-h"], ["--help"], ["fit", "-h"], ["pretrain", "--help"], ["inspect", "-h"], ["compare", "-h"],
    ["cache", "-h"], ["cache", "ls", "-h"], ["fit", "cfg.yaml", "--lr", "x", "-h"],
], ids=lambda argv: " ".join(argv))
def test_h_and_help_everywhere(argv) -> None:
    proc = _cli(*argv)
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: headstart"), proc.stdout
    assert "-h, --help" in proc.stdout


def test_root_help_lists_commands_and_version() -> None:
    out = _cli("-h").stdout
    for name in ("fit", "pretrain", "compare", "stack", "inspect", "evaluate", "predict", "embed", "cache",
                 "--version"):
        assert f"  {name} " in out, f"{name} missing from:\n{out}"


@pytest.mark.parametrize("command", ["fit", "pretrain"])
def test_keep_last_option_is_documented(command) -> None:
    out = " ".join(_cli(command, "-h").stdout.split())  # unwrap the help text
    assert "--keep-last Keep checkpoints/last.ckpt (optimizer state) after the run finishes; by default a " \
           "finished run drops it and keeps best.safetensors." in out, out


def test_version() -> None:
    proc = _cli("--version")
    _no_traceback(proc)
    assert proc.returncode == 0
    assert proc.stdout == f"headstart {version('headstart')}\n"
    assert proc.stdout == "headstart 0.1.0\n"


def test_cli_module_imports_nothing_heavy() -> None:
    """The CLI module loads without torch, Lightning, transformers, pandas or numpy (they load in commands)."""
    code = ("import sys, headstart.cli.main; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_lazy_package_keeps_its_public_names() -> None:
    """``headstart``'s torch-backed names load on first use and are the real objects."""
    import headstart
    from headstart import FinetuneModule, LoraSpec, Strategy, create_finetune_model
    from headstart.strategies import base
    from headstart.train import api, module

    assert (FinetuneModule, create_finetune_model) == (module.FinetuneModule, api.create_finetune_model)
    assert (LoraSpec, Strategy) == (base.LoraSpec, base.Strategy)
    assert set(headstart.__all__) <= set(dir(headstart))
    with pytest.raises(AttributeError, match="no attribute 'FineTuneModule'"):
        headstart.FineTuneModule  # noqa: B018


# main(): interrupted runs and the options handed to run_fit -----------------------------------------------


@pytest.fixture
def fake_fit(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """fit without a config or a model: load_config returns a stub, run_fit records its keywords or raises
    ``fake_fit.raises``."""
    import headstart.config

    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)
    state = SimpleNamespace(calls=[], raises=None)

    def run_fit(cfg, **kwargs):
        state.calls.append(kwargs)
        if state.raises is not None:
            raise state.raises
        return SimpleNamespace(run_dir=tmp_path / "run", summary={"pretrained_export": tmp_path / "p.safetensors"})

    # pretrain reads cfg.objective (the default: supervised, i.e. run_fit with the export)
    stub = SimpleNamespace(objective=headstart.config.PretrainObjectiveConfig())
    monkeypatch.setattr(headstart.config, "load_config", lambda path, overrides: stub)
    # the fit command imports run_fit when it runs; a stand-in module spares this test torch and Lightning
    monkeypatch.setitem(sys.modules, "headstart.experiments.fit", SimpleNamespace(run_fit=run_fit))
    return state


@pytest.mark.parametrize(("argv", "expected"), [
    (["fit", "c.yaml"], {"overwrite": False, "resume": False, "export_pretrained": False, "keep_last": False,
                         "classic_baseline": False}),
    (["fit", "c.yaml", "--keep-last", "--resume"],
     {"overwrite": False, "resume": True, "export_pretrained": False, "keep_last": True, "classic_baseline": False}),
    (["fit", "c.yaml", "--baseline"],
     {"overwrite": False, "resume": False, "export_pretrained": False, "keep_last": False, "classic_baseline": True}),
    (["pretrain", "c.yaml", "--keep-last", "--overwrite"],
     {"overwrite": True, "resume": False, "export_pretrained": True, "keep_last": True, "verbose": True}),
])
def test_fit_options_reach_run_fit(fake_fit, capsys, argv, expected) -> None:
    assert main(argv) == 0
    assert fake_fit.calls == [expected]


@pytest.mark.parametrize("exit_code", [130, 143])
def test_run_interrupted_prints_one_line_and_its_exit_code(fake_fit, capsys, exit_code) -> None:
    fake_fit.raises = RunInterrupted("stopped after epoch 2; checkpoints/last.ckpt holds it. Resume with: "
                                     "headstart fit c.yaml --resume", exit_code=exit_code)
    assert main(["fit", "c.yaml"]) == exit_code
    out, err = capsys.readouterr()
    assert err == "interrupted: stopped after epoch 2; checkpoints/last.ckpt holds it. Resume with: " \
                  "headstart fit c.yaml --resume\n"
    assert "error:" not in err and "Traceback" not in out + err


def test_run_interrupted_reraises_under_headstart_debug(fake_fit, monkeypatch) -> None:
    monkeypatch.setenv("HEADSTART_DEBUG", "1")
    fake_fit.raises = RunInterrupted("stopped", exit_code=143)
    with pytest.raises(RunInterrupted):
        main(["fit", "c.yaml"])


def test_ctrl_c_outside_training_exits_130(fake_fit, capsys) -> None:
    """typer turns a KeyboardInterrupt inside a command into exit code 130; main says so on stderr."""
    fake_fit.raises = KeyboardInterrupt()
    assert main(["fit", "c.yaml"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_usage_error_in_process_returns_2(capsys) -> None:
    assert main(["fit", "c.yaml", "--epoch", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: headstart fit") and "No such option: --epoch" in err
