"""One path rule: relative paths in a config file resolve from the config file's folder, paths on the command
line (--output-dir, --pretrain, --set data.train=...) from the working directory; a missing file states the
rule and shows both resolutions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config, write_text_csv
from headstart.cli.main import main
from headstart.config import load_config

RULE = ("Path rule: relative paths in a config file resolve from the config file's folder; paths given on the "
        "command line resolve from the working directory.")
QUICK = {"epochs": 1, "limit_train_batches": 1, "seed": 0, "progress_bar": False, "threads": 1}


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)


@pytest.fixture
def layout(tmp_path: Path, tiny_hf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """tmp/cfgs/run.yaml with paths relative to tmp/cfgs; the working directory is tmp/work/deep."""
    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer=QUICK)  # writes tmp/data/{train,val,test}.csv
    cfgs, cwd = tmp_path / "cfgs", tmp_path / "work" / "deep"
    cfgs.mkdir()
    cwd.mkdir(parents=True)
    raw["data"].update(train="../data/train.csv", val="../data/val.csv", test="../data/test.csv")
    raw["backbone"]["name_or_path"] = os.path.relpath(tiny_hf_dir, cfgs)  # a local model folder, relative
    raw["output_dir"] = "../runs/x"
    config = cfgs / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.chdir(cwd)
    return {"root": tmp_path, "config": config, "cfgs": cfgs, "cwd": cwd, "raw": raw}


def _write(config: Path, raw: dict) -> Path:
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return config


def _fails(capsys: pytest.CaptureFixture[str], argv: list, *facts: str) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert err.startswith("error:") and "Traceback" not in out + err, err
    message = " ".join(err.removeprefix("error:").split())  # the terminal may wrap long paths
    missing = [f for f in facts if f not in message]
    assert not missing, f"{missing} not in message: {message}"
    return message


def test_config_paths_resolve_from_the_config_folder_not_the_working_directory(layout, tiny_hf_dir) -> None:
    root, cwd = layout["root"], layout["cwd"]
    assert main(["fit", str(layout["config"])]) == 0
    run = root / "runs" / "x"
    assert (run / "summary.json").exists()
    assert not (cwd.parent / "runs").exists() and not (cwd / "runs").exists()  # ../runs/x from the cwd
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["output_dir"] == str(run)
    for split in ("train", "val", "test"):
        assert saved["data"][split] == str(root / "data" / f"{split}.csv")
    assert saved["backbone"]["name_or_path"] == str(tiny_hf_dir.resolve())
    assert load_config(run / "config.yaml").data.train == str(root / "data" / "train.csv")  # reloads anywhere


def test_output_dir_on_the_command_line_resolves_from_the_working_directory(layout) -> None:
    assert main(["fit", str(layout["config"]), "--output-dir", "rel/out"]) == 0
    run = layout["cwd"] / "rel" / "out"
    assert (run / "summary.json").exists()
    assert not (layout["cfgs"] / "rel").exists() and not (layout["root"] / "runs").exists()
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["output_dir"] == str(run)


def test_set_data_train_resolves_from_the_working_directory(layout) -> None:
    write_text_csv(layout["cwd"] / "rel.csv", 40, seed=5)
    write_text_csv(layout["cfgs"] / "rel.csv", 24, seed=6)  # the same name beside the config: not used
    assert main(["fit", str(layout["config"]), "--set", "data.train=rel.csv"]) == 0
    run = layout["root"] / "runs" / "x"  # output_dir still from the file, so from the config's folder
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["n_train"] == 40
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["train"] == str(layout["cwd"] / "rel.csv")
    assert saved["data"]["val"] == str(layout["root"] / "data" / "val.csv")


def test_path_that_exists_only_from_the_working_directory(layout, capsys) -> None:
    raw, cwd, cfgs = layout["raw"], layout["cwd"], layout["cfgs"]
    write_text_csv(cwd / "data" / "train.csv", 24)
    config = _write(layout["config"], {**raw, "data": {**raw["data"], "train": "data/train.csv"}})
    message = _fails(capsys, ["fit", config],
                     f"Config '{config}'",
                     f"data.train 'data/train.csv' does not exist (resolved to {cfgs / 'data' / 'train.csv'}).",
                     f"Its folder {cfgs / 'data'} does not exist either.", RULE,
                     f"From the working directory it would be {cwd / 'data' / 'train.csv'}, which exists: write it "
                     f"relative to the config's folder (../work/deep/data/train.csv) or as an absolute path.",
                     "Fix the path.")
    assert message.count("does not exist") == 2  # only data.train: the other paths resolve
    assert not (layout["root"] / "runs").exists()


def test_command_line_path_resolves_from_the_working_directory_even_if_it_exists_beside_the_config(
        layout, capsys) -> None:
    write_text_csv(layout["cfgs"] / "only_here.csv", 24)
    _fails(capsys, ["fit", layout["config"], "--set", "data.train=only_here.csv"],
           f"data.train (--set data.train=...) 'only_here.csv' does not exist (resolved to "
           f"{layout['cwd'] / 'only_here.csv'}).", RULE, "Fix the path.")
    assert not (layout["root"] / "runs").exists()


def test_command_line_path_that_exists_only_from_the_config_folder_shows_both_resolutions(layout, capsys) -> None:
    write_text_csv(layout["cfgs"] / "only_here.csv", 24)
    message = _fails(capsys, ["fit", layout["config"], "--set", "data.train=only_here.csv"],
                     f"data.train (--set data.train=...) 'only_here.csv' does not exist (resolved to "
                     f"{layout['cwd'] / 'only_here.csv'}).", RULE,
                     f"From the config's folder it would be {layout['cfgs'] / 'only_here.csv'}, which exists: give it "
                     f"relative to the working directory (../../cfgs/only_here.csv) or as an absolute path.",
                     "Fix the path.")
    assert "From the working directory" not in message  # that is where it was resolved: shown once, not twice


def test_missing_path_whose_folder_does_not_exist(layout, capsys) -> None:
    raw, cfgs, cwd = layout["raw"], layout["cfgs"], layout["cwd"]
    config = _write(layout["config"], {**raw, "data": {**raw["data"], "val": "nowhere/val.csv"}})
    _fails(capsys, ["fit", config],
           f"data.val 'nowhere/val.csv' does not exist (resolved to {cfgs / 'nowhere' / 'val.csv'}).",
           f"Its folder {cfgs / 'nowhere'} does not exist either.", RULE,
           f"From the working directory it would be {cwd / 'nowhere' / 'val.csv'}, which does not exist either.")


def test_missing_file_in_an_existing_folder_suggests_a_close_name(layout, capsys) -> None:
    raw, root = layout["raw"], layout["root"]
    config = _write(layout["config"], {**raw, "data": {**raw["data"], "test": "../data/tset.csv"}})
    _fails(capsys, ["fit", config],
           f"data.test '../data/tset.csv' does not exist (resolved to {root / 'data' / 'tset.csv'}).",
           "Did you mean one of 'test.csv', 'train.csv'?", RULE)


def test_pretrain_paths_follow_the_same_rule(layout, capsys) -> None:
    raw, root, cwd = layout["raw"], layout["root"], layout["cwd"]
    config = _write(layout["config"], {**raw, "pretrain": "../weights/enc.safetensors"})
    _fails(capsys, ["fit", config],
           f"pretrain '../weights/enc.safetensors' does not exist (resolved to {root / 'weights' / 'enc.safetensors'})")
    _fails(capsys, ["fit", layout["config"], "--pretrain", "enc.safetensors"],
           f"--pretrain 'enc.safetensors' does not exist (resolved to {cwd / 'enc.safetensors'})", RULE,
           f"From the config's folder it would be {layout['cfgs'] / 'enc.safetensors'}, which does not exist either.")


def test_every_config_path_is_absolute_after_loading(layout) -> None:
    raw, root, cfgs = layout["raw"], layout["root"], layout["cfgs"]
    config = _write(layout["config"], {**raw, "cache": {"dir": "cache_here"}})
    cfg = load_config(config)
    assert cfg.output_dir == str(root / "runs" / "x")
    assert cfg.cache.dir == str(cfgs / "cache_here")
    assert cfg.data.test == str(root / "data" / "test.csv")
    cli = load_config(config, [(["cache", "dir"], "c2"), (["output_dir"], "o2")])
    assert cli.cache.dir == str(layout["cwd"] / "c2") and cli.output_dir == str(layout["cwd"] / "o2")


def test_hub_model_id_is_not_treated_as_a_path(layout) -> None:
    raw = layout["raw"]
    config = _write(layout["config"], {**raw, "backbone": {**raw["backbone"], "name_or_path": "org/model"}})
    assert load_config(config).backbone.name_or_path == "org/model"


def test_default_output_dir_is_under_the_working_directory(tmp_path: Path, tiny_hf_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The default is not a path the config wrote, so it follows the working directory (as the README says)."""
    raw = tiny_run_config(tmp_path, tiny_hf_dir)
    raw.pop("output_dir")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config(tmp_path / "configs" / "c.yaml").output_dir == "runs/run"
