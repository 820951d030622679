"""`--shard I/N` and `--collect` for compare and stack: disjoint deterministic shards, no blocking between
shards, and collected results equal to one unsharded run."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re

import numpy as np
import pytest
import yaml

from conftest import tiny_run_config
from headstart.cli.main import main
from headstart.errors import ConfigError, RunDirError
from headstart.experiments.compare import run_compare
from headstart.experiments.rundir import RunLock
from headstart.experiments.shard import Shard, parse_shard, shard_positions

TIMING = {"wall_time_s", "train_time_s", "peak_rss_mb", "peak_rss_train_mb", "cache_used"}
SPEC = "linear_probe[optim.lr=5e-2],full"


def _rows(path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


@pytest.mark.parametrize("n_jobs", [0, 1, 5, 12, 13])
def test_shards_are_disjoint_complete_balanced_and_deterministic(n_jobs: int) -> None:
    for count in range(1, 8):
        parts = [shard_positions(n_jobs, Shard(i, count)) for i in range(1, count + 1)]
        flat = [p for part in parts for p in part]
        assert sorted(flat) == list(range(n_jobs)) and len(flat) == len(set(flat))  # complete, no overlap
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # round-robin: sizes differ by at most one
        assert parts == [shard_positions(n_jobs, parse_shard(f"{i}/{count}")) for i in range(1, count + 1)]
    assert shard_positions(5, Shard(2, 2)) == [1, 3]


def test_shard_names_its_files() -> None:
    shard = parse_shard(" 2 / 3 ")
    assert (shard.index, shard.count, shard.label) == (2, 3, "2/3")
    assert shard.file("compare.json") == "compare.shard-2-of-3.json"
    assert shard.file("results.csv") == "results.shard-2-of-3.csv"
    assert shard.lock_name == ".headstart.shard-2-of-3.lock"


@pytest.mark.parametrize(("value", "message"), [
    ("2", "--shard '2' is not of the form I/N"),
    ("a/b", "--shard 'a/b' is not of the form I/N"),
    ("1/2/3", "--shard '1/2/3' is not of the form I/N"),
    ("0/2", "--shard '0/2': shard 0 does not exist among 2 shards; shards are numbered from 1"),
    ("3/2", "--shard '3/2': shard 3 does not exist among 2 shards"),
    ("1/0", "--shard '1/0': the number of shards N is 0; it must be at least 1"),
])
@pytest.mark.parametrize("command", ["compare", "stack"])
def test_bad_shard_values_are_refused_by_the_cli(command: str, value: str, message: str, tmp_path, capsys) -> None:
    argv = [command, str(tmp_path / "a.yaml"), *([str(tmp_path / "b.yaml")] if command == "stack" else
                                                 ["--strategies", "full"]), "--shard", value]
    assert main(argv) == 2  # refused before the (missing) config files are read
    assert f"error: {message}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_shard(value)


def test_shard_with_collect_is_refused(tmp_path, capsys) -> None:
    assert main(["compare", str(tmp_path / "a.yaml"), "--strategies", "full", "--shard", "1/2", "--collect"]) == 2
    assert "--shard 1/2 and --collect cannot be used together" in capsys.readouterr().err
    runs = [str(tmp_path / "r1"), str(tmp_path / "r2")]
    assert main(["compare", *runs, "--collect"]) == 2  # run directories made by hand: nothing to split
    assert "finished run directories are compared as they are" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_hf_dir):
    """One grid (2 strategies x seeds 0, 1) run whole into one directory, and as shards 1/2 and 2/2 (plus a
    --collect between them that must fail, and one at the end) into another, all through the CLI."""
    tmp = tmp_path_factory.mktemp("shards")
    config = tmp / "base.yaml"
    raw = tiny_run_config(tmp, tiny_hf_dir)
    raw["data"]["train_subset"] = 40
    config.write_text(yaml.safe_dump(raw))
    common = ["compare", str(config), "--strategies", SPEC, "--seeds", "0,1", "--workers", "0"]
    out: dict = {"tmp": tmp, "config": config, "common": common}
    assert main([*common, "--output-dir", str(tmp / "whole")]) == 0
    run = lambda *extra: main([*common, "--output-dir", str(tmp / "split"), *extra])  # noqa: E731
    with RunLock(tmp / "split", "compare directory (shard 2/2)", name=Shard(2, 2).lock_name):
        out["shard1"] = run("--shard", "1/2")  # runs while shard 2/2 holds its lock: shards never wait
    with contextlib.redirect_stderr(io.StringIO()) as err:
        out["early_collect"] = (run("--collect"), err.getvalue())
    out["shard2"] = run("--shard", "2/2")
    out["collect"] = run("--collect")
    return out


def test_shards_then_collect_equal_one_unsharded_compare(sharded) -> None:
    tmp = sharded["tmp"]
    assert (sharded["shard1"], sharded["shard2"], sharded["collect"]) == (0, 0, 0)
    whole, split = _rows(tmp / "whole" / "results.csv"), _rows(tmp / "split" / "results.csv")
    assert [(r["strategy"], r["seed"]) for r in split[:-1]] == [
        (s, seed) for s in ("linear_probe[optim.lr=5e-2]", "full") for seed in ("0", "1")]
    assert split[-1]["strategy"] == "baseline:tfidf_logreg"  # --collect fits (or reuses) the classic baseline
    assert split == whole  # same cells, order, statuses and every val/test metric
    assert all(r["status"] == "done" for r in split)
    for name in ("summary.md", "report.html", "compare.json"):
        assert (tmp / "split" / name).exists(), name
    state = json.loads((tmp / "split" / "compare.json").read_text())
    assert {r["status"] for r in state["runs"].values()} == {"done"} and len(state["runs"]) == 4


def test_each_shard_runs_its_own_cells_with_its_own_files(sharded) -> None:
    split = sharded["tmp"] / "split"
    # grid order: lp_s0, lp_s1, full_s0, full_s1 -> shard 1/2 gets positions 0 and 2, shard 2/2 gets 1 and 3
    for shard in (1, 2):
        state = json.loads((split / f"compare.shard-{shard}-of-2.json").read_text())
        names = sorted(state["runs"])  # full_s<k> sorts before linear_probe-<hash>_s<k>
        assert names[0] == f"full_s{shard - 1}" and len(names) == 2
        assert names[1].startswith("linear_probe-") and names[1].endswith(f"_s{shard - 1}")
        assert state["shard"] == f"{shard}/2"
        rows = _rows(split / f"results.shard-{shard}-of-2.csv")
        assert sorted(r["run"] for r in rows) == names
        assert not (split / f".headstart.shard-{shard}-of-2.lock").read_text()  # released
    assert not (split / ".headstart.lock").read_text()


def test_shard_prints_what_it_ran_and_how_to_collect(sharded, capsys, tmp_path) -> None:
    """A rerun of a finished shard trains nothing and says so; its closing words name --collect."""
    rc = main([*sharded["common"], "--output-dir", str(sharded["tmp"] / "split"), "--shard", "2/2"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "compare shard 2/2: 2 of the grid's 4 runs" in text and "2 finished before, 0 to run" in text
    assert "compare shard 2/2: 2 of its 2 runs are finished (linear_probe-" in text
    assert "run the same command with --collect instead of --shard 2/2" in text
    assert "Report:" not in text and "| strategy" not in text  # no summary table until --collect


def test_collect_with_a_missing_shard_names_the_runs_and_the_fix(sharded) -> None:
    """--collect after shard 1/2 only: exit 2, the missing runs, their shard and the fix; nothing written."""
    code, message = sharded["early_collect"]
    split = sharded["tmp"] / "split"
    assert code == 2
    assert f"error: compare --collect: 2 of the 4 runs in '{split}' are not finished" in message
    assert "  - linear_probe-" in message and "_s1 (shard 2/2): not started" in message
    assert "  - full_s1 (shard 2/2): not started" in message
    assert "Fix: run --shard 2/2 again (the same command with --shard instead of --collect" in message
    assert "then run --collect again" in message


def test_collect_without_shards_or_with_another_grid_says_so(sharded) -> None:
    tmp = sharded["tmp"]
    with pytest.raises(RunDirError, match=r"No shard has run in .*start the shards with --shard 1/N"):
        run_compare(sharded["config"], SPEC, "0,1", output_dir=tmp / "none", workers=0, verbose=False, collect=True)
    with pytest.raises(RunDirError) as info:  # seeds differ from the shards': seed 2's runs are missing
        run_compare(sharded["config"], SPEC, "0,1,2", output_dir=tmp / "split", workers=0, verbose=False,
                    collect=True)
    message = str(info.value)
    assert "2 of the 6 runs" in message and "  - full_s2 (shard 2/2): not started" in message
    assert ("Note: shard 1/2 ran another grid (seeds [0, 1] in compare.shard-1-of-2.json; here seeds [0, 1, 2]): "
            "give --collect the same config") in message
    with pytest.raises(ConfigError, match="--shard and --collect cannot be used together"):
        run_compare(sharded["config"], SPEC, "0,1", output_dir=tmp / "split", shard="1/2", collect=True)


def test_unsharded_compare_reuses_runs_made_by_shards(sharded) -> None:
    split = sharded["tmp"] / "split"
    stamps = {p: p.stat().st_mtime_ns for p in (split / "runs").glob("*/checkpoints/best.safetensors")}
    result = run_compare(sharded["config"], SPEC, "0,1", output_dir=split, workers=0, verbose=False)
    assert len(stamps) == 4 and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert _rows(split / "results.csv") == _rows(sharded["tmp"] / "whole" / "results.csv")
    assert [r["status"] for r in result.rows] == ["done"] * 4


def test_unsharded_and_sharded_runs_exclude_each_other(sharded) -> None:
    split = sharded["tmp"] / "split"
    with RunLock(split, "compare directory (shard 2/2)", name=Shard(2, 2).lock_name), \
            pytest.raises(RunDirError, match=r"Shards of a `headstart compare` are running in .*shard 2/2: PID \d+"):
        run_compare(sharded["config"], SPEC, "0,1", output_dir=split, workers=0, verbose=False)
    with RunLock(split, "compare directory"), \
            pytest.raises(RunDirError, match=r"in use by an unsharded `headstart compare` or its --collect"):
        run_compare(sharded["config"], SPEC, "0,1", output_dir=split, workers=0, verbose=False, shard="1/2")


@pytest.fixture(scope="module")
def stacked(tmp_path_factory, tiny_hf_dir):
    """Two bases x 2 folds stacked whole, and as shards 1/2 and 2/2 then --collect, through the CLI."""
    tmp = tmp_path_factory.mktemp("stack_shards")
    paths = []
    for name, strategy, lr in (("probe", "linear_probe", 5e-2), ("full", "full", 1e-2)):
        raw = tiny_run_config(tmp, tiny_hf_dir, name=name, strategy={"name": strategy})
        raw["optim"]["lr"] = lr
        raw["trainer"]["epochs"] = 1
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        paths.append(str(path))
    common = ["stack", *paths, "--folds", "2", "--meta", "logreg", "--workers", "0"]
    codes = {"whole": main([*common, "--output-dir", str(tmp / "whole")])}
    run = lambda *extra: main([*common, "--output-dir", str(tmp / "split"), *extra])  # noqa: E731
    codes["shard2"] = run("--shard", "2/2")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        codes["early_collect"] = (run("--collect"), err.getvalue())
    codes["shard1"] = run("--shard", "1/2")
    codes["collect"] = run("--collect")
    return tmp, codes


def test_stack_shards_then_collect_equal_one_unsharded_stack(stacked) -> None:
    tmp, codes = stacked
    assert (codes["whole"], codes["shard1"], codes["shard2"], codes["collect"]) == (0, 0, 0, 0)
    whole, split = tmp / "whole", tmp / "split"
    assert json.loads((split / "stack.json").read_text())["results"] == \
        json.loads((whole / "stack.json").read_text())["results"]
    assert (split / "test_predictions.csv").read_text() == (whole / "test_predictions.csv").read_text()
    for base in ("probe", "full"):
        a, b = np.load(whole / "oof" / f"{base}.npz"), np.load(split / "oof" / f"{base}.npz")
        np.testing.assert_array_equal(a["oof"], b["oof"])
        np.testing.assert_array_equal(a["test"], b["test"])
    # bases x folds in order: probe/fold0, probe/fold1, full/fold0, full/fold1 -> round-robin over 2 shards
    for shard, keys in ((1, ["full/fold0", "probe/fold0"]), (2, ["full/fold1", "probe/fold1"])):
        state = json.loads((split / f"stack.shard-{shard}-of-2.json").read_text())
        assert sorted(state["runs"]) == keys and state["shard"] == f"{shard}/2"
    stack_md = (split / "stack.md").read_text()
    assert stack_md == (whole / "stack.md").read_text()


def test_stack_collect_before_every_shard_finished_names_the_missing_fold_runs(stacked) -> None:
    tmp, codes = stacked
    code, message = codes["early_collect"]  # after shard 2/2 only
    assert code == 2
    assert f"error: stack --collect: 2 of the 4 runs in '{tmp / 'split'}' are not finished" in message
    assert "  - probe/fold0 (shard 1/2): not started" in message
    assert "  - full/fold0 (shard 1/2): not started" in message and "fold1" not in message
    assert "Fix: run --shard 1/2 again" in message
