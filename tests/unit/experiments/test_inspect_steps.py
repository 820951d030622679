"""``headstart inspect`` takes its LR column's steps per epoch and its class count from the data, as fit does.

The step count is checked three ways: against the count fit itself computes for the same config, against
Lightning's own optimizer-step count (``trainer.global_step``) under ``limit_train_batches`` and gradient
accumulation, and against the formula; unreadable data falls back to an assumed count that the text names.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import quiet_trainer, tiny_run_config, write_text_csv
from headstart.cli.main import main
from headstart.experiments.inspect import DEFAULT_STEPS_PER_EPOCH, epoch_steps, train_batches


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)


def _config(tmp_path: Path, model_dir: Path, n_train: int = 45, **sections: dict) -> Path:
    raw = tiny_run_config(tmp_path, model_dir, **sections)
    write_text_csv(Path(raw["data"]["train"]), n_train, seed=1)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _inspect(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    assert main(["inspect", *(str(a) for a in argv)]) == 0
    return capsys.readouterr().out


def _table_steps(text: str) -> int:
    """The steps per epoch the param-group table was computed with ("... 2 epochs x 6 steps")."""
    return int(re.search(r"epochs x (\d+) steps", text).group(1))


class _StopAfterInspect(Exception):
    pass


def test_inspect_uses_the_step_count_fit_computes(tmp_path, tiny_hf_dir, capsys, monkeypatch) -> None:
    """45 rows, batch 8 -> 6 batches; accumulate 4 -> 2 optimizer steps, in inspect and in fit alike."""
    cfg = _config(tmp_path, tiny_hf_dir, optim={"accumulate": 4})
    out = _inspect(capsys, cfg)
    assert "LR column: 2 optimizer steps per epoch (45 training rows, batch size 8, accumulate 4)" in out
    assert _table_steps(out) == 2

    import headstart.experiments.fit as fit

    seen: list[int] = []

    def record(model, epochs, steps_per_epoch):  # fit prints its own table with the count it trains with
        seen.append(steps_per_epoch)
        raise _StopAfterInspect

    monkeypatch.setattr(fit, "format_inspect", record)
    with pytest.raises(_StopAfterInspect):
        main(["fit", str(cfg)])
    assert seen == [2]


def test_inspect_head_has_the_data_class_count(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, tiny_hf_dir)
    raw = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    for split, n in (("train", 30), ("val", 9), ("test", 9)):
        rows = [f"text number {i} is {'abc'[i % 3]},{'abc'[i % 3]}" for i in range(n)]
        Path(raw["data"][split]).write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = _inspect(capsys, cfg)
    assert "Head: 3 classes from the training split ('a', 'b', 'c')" in out
    assert "LR column: 4 optimizer steps per epoch (30 training rows, batch size 8, accumulate 1)" in out
    assert "head shown for 2 classes" not in out


def test_explicit_steps_per_epoch_wins_and_names_the_data_count(tmp_path, tiny_hf_dir, capsys) -> None:
    out = _inspect(capsys, _config(tmp_path, tiny_hf_dir), "--steps-per-epoch", 7)
    assert _table_steps(out) == 7
    assert "LR column: 7 optimizer steps per epoch (from --steps-per-epoch; the data gives 6 optimizer steps " \
           "per epoch (45 training rows, batch size 8, accumulate 1))" in out


def test_limit_train_batches_caps_the_count(tmp_path, tiny_hf_dir, capsys) -> None:
    out = _inspect(capsys, _config(tmp_path, tiny_hf_dir, trainer={"limit_train_batches": 0.5}))
    assert "LR column: 3 optimizer steps per epoch (45 training rows, batch size 8, accumulate 1, " \
           "trainer.limit_train_batches=0.5: 3 batches)" in out


def test_unreadable_data_falls_back_to_an_assumed_count(tmp_path, tiny_hf_dir, capsys) -> None:
    """The training file lacks the label column: inspect still shows the model, and says why the LR column
    assumes its step count."""
    cfg = _config(tmp_path, tiny_hf_dir)
    train = Path(yaml.safe_load(cfg.read_text(encoding="utf-8"))["data"]["train"])
    train.write_text(train.read_text(encoding="utf-8").replace("text,label", "text,lable", 1), encoding="utf-8")
    out = _inspect(capsys, cfg)
    assert _table_steps(out) == DEFAULT_STEPS_PER_EPOCH
    lr_line = next(line for line in out.splitlines() if line.startswith("LR column:"))
    assert lr_line.startswith(f"LR column: {DEFAULT_STEPS_PER_EPOCH} optimizer steps per epoch (assumed; pass "
                              f"--steps-per-epoch N to set it): the training data could not be read")
    assert "data.label_column" in lr_line and "'lable'" in lr_line
    assert "(head shown for 2 classes; the class count comes from the data at fit time)" in out


def test_explicit_steps_without_readable_data(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, tiny_hf_dir, data={"label_column": "category"})
    out = _inspect(capsys, cfg, "--steps-per-epoch", 12)
    assert _table_steps(out) == 12
    assert "LR column: 12 optimizer steps per epoch (from --steps-per-epoch): the training data could not " \
           "be read" in out


# The count itself: Lightning's optimizer steps in one epoch --------------------------------------------------


def _lightning_steps(n: int, batch_size: int, accumulate: int, limit: int | float | None) -> int:
    """Optimizer steps Lightning takes in one epoch of ``n`` rows (``trainer.global_step``)."""
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    loader = DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=batch_size, shuffle=True)
    kwargs = {} if limit is None else {"limit_train_batches": limit}
    trainer = quiet_trainer(1, accumulate_grad_batches=accumulate, **kwargs)
    trainer.fit(Tiny(), loader)
    return trainer.global_step


@pytest.mark.parametrize(("n", "batch_size", "accumulate", "limit"), [
    (45, 8, 1, None), (45, 8, 4, None), (45, 8, 1, 3), (45, 8, 2, 0.5), (45, 8, 4, 0.34), (16, 8, 3, 100),
])
def test_epoch_steps_match_lightning(n, batch_size, accumulate, limit) -> None:
    cfg = SimpleNamespace(data=SimpleNamespace(batch_size=batch_size), optim=SimpleNamespace(accumulate=accumulate),
                          trainer=SimpleNamespace(limit_train_batches=limit))
    assert epoch_steps(cfg, n).steps == _lightning_steps(n, batch_size, accumulate, limit)


@pytest.mark.parametrize(("n", "batch_size", "limit", "batches"), [
    (45, 8, None, 6), (48, 8, None, 6), (49, 8, None, 7), (45, 8, 2, 2), (45, 8, 10, 6), (45, 8, 0.5, 3),
    (45, 8, 1.0, 6), (45, 8, 0.1, 0),
])
def test_train_batches_formula(n, batch_size, limit, batches) -> None:
    assert train_batches(n, batch_size, limit) == batches
