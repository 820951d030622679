"""The best trials of a tune as ``compare`` cells: re-run them over seeds, so a lucky seed is not crowned.

A trial is its tune's base config (``base.yaml``: pinned split, tuned metric) plus its sampled params, so a
cell is the trial's strategy section and its other params as overrides, and ``compare`` runs each over the
seeds it is given on that same split.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from headstart.errors import ConfigError
from headstart.tune.space import keep_strategy_fields, set_key

__all__ = ["is_tune_dir", "top_trial_cells"]


def is_tune_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "tune.json").exists() and (p / "base.yaml").exists()


def _value(text: str) -> Any:
    """A trials.csv cell back to its YAML / JSON value (numbers, names, lists such as ``[64, 32]``)."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def top_trial_cells(tune_dir: str | Path, k: int) -> tuple[Path, list[Any], str]:
    """(base.yaml, the ``k`` best complete trials as compare cells, the tuned metric), best first."""
    from headstart.experiments.compare import StrategyCell
    from headstart.strategies import format_strategy_spec

    out = Path(tune_dir)
    if k < 1:
        raise ConfigError(f"--top must be at least 1 (got {k}).")
    state = json.loads((out / "tune.json").read_text(encoding="utf-8"))
    base = yaml.safe_load((out / "base.yaml").read_text(encoding="utf-8"))
    with (out / "trials.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["state"] == "COMPLETE" and r["value"]]
    if not rows:
        raise ConfigError(f"The tune in '{out}' has no complete trial yet (trials.csv); run headstart tune first.")
    rows.sort(key=lambda r: float(r["value"]), reverse=state.get("direction") == "maximize")
    cells = []
    for r in rows[:k]:
        raw = json.loads(json.dumps(base))
        params = {key.removeprefix("param:"): _value(v) for key, v in r.items() if key.startswith("param:") and v}
        for key, value in params.items():
            set_key(raw, key, value)
        keep_strategy_fields(raw, set(params))
        overrides = tuple((tuple(key.split(".")), v) for key, v in params.items() if not key.startswith("strategy."))
        label = f"trial{r['number']} {format_strategy_spec(raw['strategy'])}"
        cells.append(StrategyCell(label, raw["strategy"], overrides))
    return out / "base.yaml", cells, state["metric"]
