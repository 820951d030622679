"""Event sequences: RFM aggregates per entity + LightGBM (``rfm_lightgbm``), the marketing analyst's model.

Per entity, from the events the encoder sees (the latest ``data.events.max_events``):

- recency (``cut`` minus the last event's time) and tenure (``cut`` minus the first), where ``cut`` is the
  latest event time of the training split, in the time column's units (days for dates);
- frequency (events) and distinct event times (purchase days, for dates);
- per numeric field, in the data's units (the run's log1p / standardisation undone): sum, mean, min, max and
  the last event's value (monetary value, quantities);
- per categorical field: the number of distinct values and the share of events holding each of its
  ``TOP_VALUES`` most frequent training values.

Then :func:`headstart.baselines.boosting.lightgbm_outputs`, early-stopped on val, seeded by ``trainer.seed``.
:func:`rfm_features` is also what ``benchmarks/sequences_cdnow_baselines.py`` builds its CDNOW features with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from headstart.baselines.base import BaselineOutputs, BaselineUnavailable, ClassicBaseline, register_baseline

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["TOP_VALUES", "RfmLightgbm", "event_set_features", "rfm_features"]

TOP_VALUES = 5
# LightGBM settings of the CDNOW benchmark (slower learning, smaller leaves than the default) but with a leaf
# size that still lets a few hundred entities split
RFM_LGB = {"learning_rate": 0.02, "num_leaves": 15, "min_data_in_leaf": 20, "lambda_l2": 1.0}


def rfm_features(entity: np.ndarray, n_entities: int, time: np.ndarray | None, numeric: Mapping[str, np.ndarray],
                 cut: float | None, stats: Sequence[str] = ("sum", "mean")) -> pd.DataFrame:
    """Recency / frequency / monetary aggregates per entity, one row per entity ``0 .. n_entities - 1``.

    ``entity``: each event's entity position, events of an entity in time order; ``time``: each event's time
    (None: no recency, tenure or distinct times); ``numeric``: per-event values aggregated with ``stats``
    (pandas names: sum, mean, min, max, last...). Columns: recency, tenure, frequency, distinct_times, then
    ``<field>_<stat>`` per numeric field."""
    frame = pd.DataFrame({"entity": np.asarray(entity), **{k: np.asarray(v) for k, v in numeric.items()}})
    if time is not None:
        frame["time"] = np.asarray(time, dtype=np.float64)
    g = frame.groupby("entity", sort=True)
    out: dict[str, Any] = {}
    if time is not None and cut is not None:
        out["recency"] = cut - g["time"].max()
        out["tenure"] = cut - g["time"].min()
    out["frequency"] = g.size()
    if time is not None:
        out["distinct_times"] = g["time"].nunique()
    for name in numeric:
        for stat in stats:
            out[f"{name}_{stat}"] = g[name].agg(stat)
    return pd.DataFrame(out).reindex(range(n_entities)).reset_index(drop=True)


def _raw_numeric(rows: Any, encoders: Any) -> dict[str, np.ndarray]:
    """The numeric fields in the data's units: the run's scaling (log1p, standardize) undone."""
    out = {}
    for name, transform in (encoders.numeric if encoders is not None else {}).items():
        values = rows.columns[name].astype(np.float64)
        if transform.kind == "log1p":
            values = np.expm1(values)
        elif transform.kind == "standardize":
            values = values * transform.std + transform.mean
        out[name] = values
    return out


def event_set_features(rows: Any, encoders: Any, cut: float | None) -> pd.DataFrame:
    """:func:`rfm_features` of an ``EventSet`` (sum, mean, min, max, last per numeric field) plus, per
    categorical field, its distinct values and the shares of its top training values."""
    from headstart.data.events import OOV_INDEX

    n = len(rows)
    entity = np.repeat(np.arange(n), rows.lengths)
    times = getattr(rows, "times", None)
    feats = rfm_features(entity, n, times, _raw_numeric(rows, encoders), cut,
                         stats=("sum", "mean", "min", "max", "last"))
    for name in (encoders.vocabularies if encoders is not None else {}):
        codes = rows.columns[name]
        frame = pd.DataFrame({"entity": entity, "code": codes})
        feats[f"{name}_distinct"] = frame.groupby("entity")["code"].nunique().reindex(range(n)).to_numpy()
        for k in range(TOP_VALUES):  # index 2 is the most frequent training value, 3 the next ...
            hits = np.bincount(entity, weights=(codes == OOV_INDEX + 1 + k).astype(np.float64), minlength=n)
            feats[f"{name}_top{k + 1}_share"] = hits / np.maximum(rows.lengths, 1)
    return feats


class RfmLightgbm(ClassicBaseline):
    name = "rfm_lightgbm"
    label = "RFM aggregates + LightGBM"
    requires = ("lightgbm",)

    def fit_predict(self, cfg: RunConfig, splits: Any) -> BaselineOutputs:
        from headstart.baselines.boosting import lightgbm_outputs

        encoders = getattr(splits, "encoders", None)
        parts = {"train": splits.train, "val": splits.val, **({"test": splits.test} if splits.test is not None else {})}
        if any(p.labels is None for p in parts.values()):
            raise BaselineUnavailable("the event splits carry no labels, so there is nothing to fit RFM features to")
        train_times = getattr(splits.train, "times", None)
        cut = float(train_times.max()) if train_times is not None and len(train_times) else None
        x = {name: event_set_features(rows, encoders, cut) for name, rows in parts.items()}
        y = {name: np.asarray(rows.labels) for name, rows in parts.items()}
        label_map = splits.label_map
        outputs, params = lightgbm_outputs(label_map.kind, label_map.n_classes, x, y, cfg.trainer.seed, **RFM_LGB)
        features = f"{x['train'].shape[1]} RFM aggregates per entity"
        return BaselineOutputs(outputs, {"features": features, "feature_names": list(x["train"].columns),
                                         "cut": cut, **params})


register_baseline(RfmLightgbm())
