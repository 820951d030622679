"""Bad input through the real CLI entry: exit code 2 and one clear ``error:`` paragraph, never a traceback.

Every case goes through ``headstart.cli.main.main([...])`` and checks that the message says what went
wrong, where, the value seen and how to fix it. Validation runs before training, so every case here stops
in well under a second (the model-building ones build the 2-layer tiny BERT, nothing trains).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_run_config, write_text_csv
from headstart.cli.main import main


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)


def _config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _raw(tmp_path: Path, model_dir: Path, **sections: dict) -> dict:
    return tiny_run_config(tmp_path, model_dir, **sections)


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *facts: str) -> str:
    """Run the CLI, check the user-error contract, and that every fact is in the message."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert err.startswith("error:"), err
    assert "Traceback" not in out and "Traceback" not in err, err
    message = err.removeprefix("error:").strip()
    assert message.count("\n\n") == 0, f"not one paragraph: {message}"
    missing = [f for f in facts if f not in message]
    assert not missing, f"{missing} not in message: {message}"
    return message


def _blank_labels(path: Path, data_rows: list[int]) -> None:
    """Empty the label cell of the given data rows (1-based, after the header)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for row in data_rows:
        lines[row] = lines[row].rsplit(",", 1)[0] + ","
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _relabel(path: Path, data_rows: list[int], label: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for row in data_rows:
        lines[row] = lines[row].rsplit(",", 1)[0] + "," + label
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# 1. Missing data file -------------------------------------------------------------------------------------


def test_missing_data_file_names_path_and_close_file(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    raw["data"]["train"] = str(tmp_path / "data" / "trian.csv")
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           "data.train", "trian.csv", "does not exist", "Did you mean", "'train.csv'", "Fix the path")


def test_missing_data_dir_says_directory_is_missing(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    raw["data"]["test"] = str(tmp_path / "nowhere" / "test.csv")
    _fails(capsys, ["fit", _config(tmp_path, raw)], "data.test", "nowhere", "does not exist either")


# 2. Missing column ----------------------------------------------------------------------------------------


def test_missing_column_lists_available_and_did_you_mean(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir, data={"label_column": "lable"})
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           "'lable'", "data.label_column", "train.csv", "Available columns: 'text', 'label'",
           "Did you mean 'label'?")


# 3. Unknown label in val/test ----------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["val", "test"])
def test_unknown_label_names_value_count_and_classes(tmp_path, tiny_hf_dir, capsys, split) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    _relabel(Path(raw["data"][split]), [2, 5, 9], "maybe")
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           f"data.{split}", f"{split}.csv", "'maybe' (3 rows)", "never occur in the training data",
           "Known classes: 'neg', 'pos'", "add rows with those labels")


# 4. Empty split -------------------------------------------------------------------------------------------


def test_empty_val_file_header_only(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    Path(raw["data"]["val"]).write_text("text,label\n", encoding="utf-8")
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           "data.val", "val.csv", "no data rows", "'text', 'label'", "at least one row")


def test_zero_byte_val_file(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    Path(raw["data"]["val"]).write_text("", encoding="utf-8")
    _fails(capsys, ["fit", _config(tmp_path, raw)], "data.val", "val.csv", "is empty")


def test_carved_val_split_rounding_to_zero_rows(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    raw["data"].update({"val": None, "val_fraction": 0.005})
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           "val split", "data.val_fraction=0.005", "48 rows", "rounds to 0 rows", "Raise data.val_fraction")


# 5. A split with one class --------------------------------------------------------------------------------


def test_val_with_a_single_class(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    write_text_csv(Path(raw["data"]["val"]), 8, labels=("pos", "pos"))
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           "data.val", "only one class ('pos')", "8 rows", "at least two classes")


def test_train_with_a_single_class(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    write_text_csv(Path(raw["data"]["train"]), 20, labels=("neg", "neg"))
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           "data.train", "only one class ('neg')", "20 training rows", "at least two classes")


# 6. NaN labels --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_label_cells_count_and_rows(tmp_path, tiny_hf_dir, capsys, split) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    _blank_labels(Path(raw["data"][split]), [3, 7])
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           f"data.{split}", f"{split}.csv", "2 rows with an empty label", "rows 3, 7", "fill in those labels")


# 7. Bad YAML keys -----------------------------------------------------------------------------------------


def test_unknown_keys_with_did_you_mean_reported_together(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    raw["optim"]["lerning_rate"] = 1e-3
    raw["stratgy"] = {"name": "full"}
    message = _fails(capsys, ["fit", _config(tmp_path, raw)],
                     "run.yaml", "2 problem(s)", "unknown key 'optim.lerning_rate'", "Did you mean 'lr'?",
                     "unknown key 'stratgy'", "Did you mean 'strategy'?", "Valid keys here")
    assert "errors.pydantic.dev" not in message


def test_bad_values_collected_with_expected_and_choices(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir, strategy={"name": "lineer_probe"})
    raw["data"]["batch_size"] = 0
    message = _fails(capsys, ["fit", _config(tmp_path, raw)],
                     "2 problem(s)", "'data.batch_size' is 0", "greater than or equal to 1",
                     "'strategy.name' is 'lineer_probe'", "Did you mean 'linear_probe'?")
    assert "Input should be" not in message


# 8. Block range out of bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["fit", "inspect"])
def test_block_range_out_of_bounds_lists_blocks(tmp_path, tiny_hf_dir, capsys, command) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, [command, cfg, "--strategy", "partial:0-9"],
           "'0-9'", "strategy.freeze", "3 blocks", "0 to 2", "0=embeddings", "1=encoder.layer.0",
           "2=encoder.layer.1", "partial:0-1")


def test_train_last_out_of_bounds(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--strategy", "partial:7"],
           "strategy.train_last=7", "3 blocks", "0=embeddings", "from 0 to 3")


# 9. LoRA target matching nothing --------------------------------------------------------------------------


def test_lora_target_matching_nothing_lists_candidates(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--set", "strategy.name=lora", "--set", "strategy.lora.target_modules=[qury]"],
           "strategy.lora.target_modules", "'qury'", "matches no module", "Did you mean 'query'?",
           "'key'", "'value'", "'dense'")


# 10. Pretrained checkpoint whose keys do not match --------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pretrain_checkpoint_with_unrelated_keys(tmp_path, tiny_hf_dir, capsys, suffix) -> None:
    ckpt = tmp_path / f"other{suffix}"
    if suffix == ".pt":
        torch.save({"foo.weight": torch.zeros(3)}, ckpt)
    else:
        from safetensors.torch import save_file

        save_file({"foo.weight": torch.zeros(3)}, str(ckpt))
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--pretrain", ckpt],
           str(ckpt), "No key of the checkpoint", "'foo.weight'", "model.embeddings.", "--pretrain")


def test_pretrain_checkpoint_missing(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--pretrain", tmp_path / "nope.safetensors"],
           "nope.safetensors", "--pretrain", "does not exist", "Fix the path", "working directory")


def test_pretrain_checkpoint_with_pickled_object(tmp_path, tiny_hf_dir, capsys) -> None:
    ckpt = tmp_path / "pickled.pt"
    torch.save({"weights": torch.zeros(2), "optimizer": Path("x")}, ckpt)
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--pretrain", ckpt], "pickled.pt", "--pretrain", "weights_only=True", "pickled pathlib.PosixPath", "state_dict")


def test_pretrain_checkpoint_with_non_tensor_values(tmp_path, tiny_hf_dir, capsys) -> None:
    ckpt = tmp_path / "mixed.pt"
    torch.save({"epoch": 3, "encoder.weight": torch.zeros(2)}, ckpt)
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--pretrain", ckpt],
           "mixed.pt", "not hold a state_dict of tensors", "'epoch'", "torch.save(model.state_dict(), path)")


# 11. Run directories --------------------------------------------------------------------------------------


def test_existing_run_dir_without_overwrite(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    run = Path(raw["output_dir"])
    run.mkdir()
    (run / "notes.txt").write_text("keep me", encoding="utf-8")
    _fails(capsys, ["fit", _config(tmp_path, raw)],
           str(run), "already exists", "--overwrite", "--output-dir")
    assert (run / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    run = Path(raw["output_dir"])
    run.mkdir()
    (run / "notes.txt").write_text("keep me", encoding="utf-8")
    _fails(capsys, ["fit", _config(tmp_path, raw), "--overwrite"],
           str(run), "--overwrite refused", "does not look like a headstart run directory")
    assert (run / "notes.txt").exists()


def test_failed_start_does_not_block_the_next_attempt(tmp_path, tiny_hf_dir, capsys) -> None:
    """A data error after the run dir was created must not turn into 'run dir exists' on the retry."""
    raw = _raw(tmp_path, tiny_hf_dir, data={"label_column": "lable"})
    cfg = _config(tmp_path, raw)
    run = Path(raw["output_dir"])
    for _ in range(2):
        message = _fails(capsys, ["fit", cfg], "'lable'", "Did you mean 'label'?")
        assert "already exists" not in message
        # nothing half-made is left: no empty checkpoints/ or plots/, only failed.json saying why and what next
        assert sorted(p.name for p in run.iterdir() if p.name != ".headstart.lock") == ["failed.json"]
        failed = json.loads((run / "failed.json").read_text(encoding="utf-8"))
        assert failed["error"] == "DataError" and "'lable'" in failed["message"] and failed["epochs_done"] == 0
        assert "run the same command again" in failed["next"]
    # after the fix the directory is reused and the record of the failure goes
    raw["data"]["label_column"] = "label"
    raw["trainer"]["epochs"] = 1
    assert main(["fit", str(_config(tmp_path, raw))]) == 0
    assert not (run / "failed.json").exists() and (run / "summary.json").exists()


def test_failure_after_files_were_written_says_overwrite(tmp_path, tiny_hf_dir, capsys) -> None:
    """A run that fails once config.yaml exists keeps its files, says why in failed.json, and the next attempt's
    refusal quotes that failure."""
    from headstart.errors import DataError
    from headstart.experiments.rundir import record_failure

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("task: text_classification\n", encoding="utf-8")
    record_failure(run, DataError("the val file went missing\nsecond line"))
    failed = json.loads((run / "failed.json").read_text(encoding="utf-8"))
    assert not (run / "checkpoints").exists() and "--overwrite" in failed["next"]
    raw = _raw(tmp_path, tiny_hf_dir, output_dir=str(run))
    _fails(capsys, ["fit", _config(tmp_path, raw)], "already exists", "an earlier attempt failed: DataError: the val "
           "file went missing", "--overwrite")


def test_resume_without_last_checkpoint(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = _raw(tmp_path, tiny_hf_dir)
    _fails(capsys, ["fit", _config(tmp_path, raw), "--resume"],
           "Cannot resume", "does not exist", str(raw["output_dir"]), "without --resume")


@pytest.mark.parametrize("command", ["evaluate", "predict", "embed"])
def test_inference_on_a_directory_that_is_not_a_run(tmp_path, capsys, command) -> None:
    (tmp_path / "notarun").mkdir()
    data = write_text_csv(tmp_path / "val.csv", 4)
    _fails(capsys, [command, tmp_path / "notarun", "--data", data],
           "notarun", "not a finished headstart run directory", "config.yaml", "labels.json",
           "best.safetensors", "headstart fit")


def test_evaluate_on_a_missing_directory(tmp_path, capsys) -> None:
    data = write_text_csv(tmp_path / "val.csv", 4)
    _fails(capsys, ["evaluate", tmp_path / "runs" / "nope", "--data", data],
           "nope", "does not exist", "headstart fit")


# 12. Bad command-line values ------------------------------------------------------------------------------


def test_non_numeric_lr(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    message = _fails(capsys, ["fit", cfg, "--lr", "abc"],
                     "'optim.lr' is 'abc'", "expected a number", "command line")
    assert "Input should be" not in message


def test_fractional_epochs(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--epochs", "1.5"], "'trainer.epochs' is 1.5", "whole number")


def test_lr_with_yaml_syntax_characters(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--lr", "[1e-3"], "'optim.lr' is '[1e-3'", "expected a number")


def test_set_without_equals(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--set", "optim.lr"], "--set 'optim.lr'", "no '='", "key.subkey=value")


def test_set_without_key(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--set", "=3"], "--set '=3'", "names no key", "key.subkey=value")


def test_set_unknown_key(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--set", "data.batchsize=16"],
           "unknown key 'data.batchsize'", "Did you mean one of 'batch_size'", "command line")


@pytest.mark.parametrize(("spec", "facts"), [
    ("lineer_probe", ("'lineer_probe' is not a strategy", "Did you mean 'linear_probe'?")),
    ("partail:2", ("'partail' is not a strategy", "Did you mean 'partial'?")),
    ("lora:big", ("'big'", "whole-number rank")),
    ("full:3", ("takes no ':' argument",)),
])
def test_bad_strategy_spec(tmp_path, tiny_hf_dir, capsys, spec, facts) -> None:
    cfg = _config(tmp_path, _raw(tmp_path, tiny_hf_dir))
    _fails(capsys, ["fit", cfg, "--strategy", spec], f"--strategy '{spec}'", *facts, "Use one of:")


# Config files ---------------------------------------------------------------------------------------------


def test_config_file_that_does_not_exist(tmp_path, tiny_hf_dir, capsys) -> None:
    _config(tmp_path, _raw(tmp_path, tiny_hf_dir))  # run.yaml exists; run.yml does not
    _fails(capsys, ["fit", tmp_path / "run.yml"],
           "run.yml", "does not exist", "Did you mean 'run.yaml'?", "Check the path")


def test_config_file_with_invalid_yaml(tmp_path, capsys) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("data:\n  train: [a.csv, b.csv\n  val: c.csv\n", encoding="utf-8")
    message = _fails(capsys, ["fit", cfg],
                     "broken.yaml", "not valid YAML", "line 3", "started at line 2", "unclosed bracket")
    assert "^" not in message


def test_config_file_that_is_not_a_mapping(tmp_path, capsys) -> None:
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- a\n- b\n", encoding="utf-8")
    _fails(capsys, ["fit", cfg], "list.yaml", "mapping", "list")


def test_config_without_data_section(tmp_path, capsys) -> None:
    cfg = tmp_path / "nodata.yaml"
    cfg.write_text("name: x\n", encoding="utf-8")
    _fails(capsys, ["inspect", cfg], "'data' is required but missing")


# evaluate / predict / embed on a finished run with bad input ---------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_hf_dir: Path) -> Path:
    """A real run directory from one training step of the tiny BERT (about two seconds)."""
    root = tmp_path_factory.mktemp("finished")
    raw = tiny_run_config(root, tiny_hf_dir, trainer={"epochs": 1, "limit_train_batches": 1})
    assert main(["fit", str(_config(root, raw))]) == 0
    return Path(raw["output_dir"])


def _copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run_copy"))


def test_evaluate_data_file_missing(finished_run, tmp_path, capsys) -> None:
    data = write_text_csv(tmp_path / "holdout.csv", 6)
    _fails(capsys, ["evaluate", finished_run, "--data", tmp_path / "holdot.csv"],
           "--data", "holdot.csv", "does not exist", "Did you mean 'holdout.csv'?")
    assert data.exists()


def test_evaluate_unknown_label(finished_run, tmp_path, capsys) -> None:
    data = write_text_csv(tmp_path / "holdout.csv", 6)
    _relabel(data, [1, 2], "maybe")
    _fails(capsys, ["evaluate", finished_run, "--data", data],
           "--data", "holdout.csv", "'maybe' (2 rows)", "Known classes: 'neg', 'pos'")


def test_evaluate_empty_labels(finished_run, tmp_path, capsys) -> None:
    data = write_text_csv(tmp_path / "holdout.csv", 6)
    _blank_labels(data, [2])
    _fails(capsys, ["evaluate", finished_run, "--data", data], "--data", "1 row with an empty label", "row 2")


@pytest.mark.parametrize("command", ["evaluate", "predict", "embed"])
def test_inference_data_without_the_text_column(finished_run, tmp_path, capsys, command) -> None:
    data = tmp_path / "renamed.csv"
    data.write_text("sentence,label\nit was great,pos\nit was awful,neg\n", encoding="utf-8")
    _fails(capsys, [command, finished_run, "--data", data, "--output", tmp_path / "out.csv"],
           "--data", "renamed.csv", "no column 'text'", "Available columns: 'sentence', 'label'",
           "data.text_column='text'", "rename the column")


def test_evaluate_with_a_damaged_checkpoint(finished_run, tmp_path, capsys) -> None:
    run = _copy_run(finished_run, tmp_path)
    (run / "checkpoints" / "best.safetensors").write_bytes(b"not a safetensors file")
    _fails(capsys, ["evaluate", run, "--data", write_text_csv(tmp_path / "holdout.csv", 6)],
           "best.safetensors", "damaged", "digest recorded in 'best.json'", "refuses")


def test_evaluate_with_a_damaged_label_map(finished_run, tmp_path, capsys) -> None:
    run = _copy_run(finished_run, tmp_path)
    (run / "labels.json").write_text("{broken", encoding="utf-8")
    _fails(capsys, ["evaluate", run, "--data", write_text_csv(tmp_path / "holdout.csv", 6)],
           "labels.json", "cannot be read", '{"classes": [0, 1]}')


def test_evaluate_with_an_edited_run_config(finished_run, tmp_path, capsys) -> None:
    run = _copy_run(finished_run, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg["head"]["hiden_dims"] = [8]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    _fails(capsys, ["evaluate", run, "--data", write_text_csv(tmp_path / "holdout.csv", 6)],
           "config.yaml", "unknown key 'head.hiden_dims'", "Did you mean 'hidden_dims'?")


def test_torch_backbone_with_text_task_is_explained(tmp_path, tiny_hf_dir, capsys) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, backbone={"type": "torch", "module": "torch.nn:GRU"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "backbone.type 'torch'" in err and "create_finetune_model" in err
