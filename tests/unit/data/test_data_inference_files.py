"""New files given to predict / evaluate / embed: a malformed csv is one clear error, an empty text is fine.

Regression: a one-column csv whose first data line held an unquoted comma was read by pandas with the
first field as the index, so every text became NaN, predict warned about empty texts and then crashed
inside the tokenizer with a raw traceback.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import tiny_run_config
from headstart.cli.main import main


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_hf_dir: Path) -> Path:
    """One training step of the tiny BERT (a few seconds)."""
    root = tmp_path_factory.mktemp("finished")
    raw = tiny_run_config(root, tiny_hf_dir, trainer={"epochs": 1, "limit_train_batches": 1})
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["fit", str(config)]) == 0
    return Path(raw["output_dir"])


@pytest.mark.parametrize("command", ["evaluate", "predict", "embed"])
@pytest.mark.parametrize(
    ("content", "facts"),
    [
        ("text\nhello, world\nit was great\nok\n",
         ["line 2 has 2 fields, expected 1, and starts 'hello, world'", "its header (line 1: 'text'; 1 field)"]),
        ("text,label\nit was great,pos\nhello, world,neg\n",
         ["line 3 has 3 fields, expected 2, and starts 'hello, world,neg'"]),
    ],
)
def test_malformed_csv_is_one_clear_error(finished_run, tmp_path, capsys, command, content, facts) -> None:
    data = tmp_path / "new.csv"
    data.write_text(content, encoding="utf-8")
    code = main([command, str(finished_run), "--data", str(data), "--output", str(tmp_path / "out.csv")])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error:") and "Traceback" not in out + err, err
    message = err.removeprefix("error:").strip()
    assert "\n" not in message, message
    for fact in ["--data", "new.csv", *facts, 'Quote fields that contain the separator, e.g. "a, b"',
                 "format: tsv"]:
        assert fact in message, (fact, message)
    assert not (tmp_path / "out.csv").exists()


def test_empty_text_is_predicted_not_a_crash(finished_run, tmp_path, capsys) -> None:
    data = tmp_path / "new.csv"
    data.write_text('text\n""\nit was great\n"a, quoted comma"\n', encoding="utf-8")
    with pytest.warns(UserWarning, match=r"1 row\(s\) have an empty 'text' \(data rows 1\)"):
        code = main(["predict", str(finished_run), "--data", str(data), "--output", str(tmp_path / "out.csv")])
    assert code == 0, capsys.readouterr().err
    preds = pd.read_csv(tmp_path / "out.csv")
    assert preds["row"].tolist() == [0, 1, 2] and preds["prediction"].isin(["neg", "pos"]).all()
