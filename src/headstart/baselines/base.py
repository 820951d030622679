"""The classic baseline of a modality: what a fine-tuned strategy has to beat before it is worth its cost.

A :class:`ClassicBaseline` turns a run's splits (as the modality's ``load_splits`` returns them, so the rows are
exactly the strategies' rows) into per-split outputs in the form the run's target decodes to: class
probabilities ``[N, C]``, numbers ``[N, T]`` or per-task probabilities ``[N, T]``. :func:`run_classic_baseline`
times it and scores the outputs with the run's own target metrics (``headstart.train.targets``), so the
baseline's row and the strategies' rows come from the same metric code and compare one to one.

Baselines register under a stable name (``tfidf_logreg``, ``pixels_logreg``, ``rfm_lightgbm``,
``morgan_lightgbm``); a modality names its own through ``Modality.classic_baseline()``, so compare and fit never
ask which modality they run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.errors import ConfigError, HeadstartError, did_you_mean, format_choices

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = [
    "BaselineOutputs",
    "BaselineResult",
    "BaselineUnavailable",
    "ClassicBaseline",
    "baseline_names",
    "full_proba",
    "get_baseline",
    "monitored",
    "register_baseline",
    "run_classic_baseline",
    "split_items",
]


class BaselineUnavailable(HeadstartError):
    """The baseline cannot run on this data or in this environment; the message (why, and how to get it) goes
    into the baseline's row instead of a number."""


@dataclass
class BaselineOutputs:
    """What a baseline's ``fit_predict`` returns: outputs per split (``val``, ``test``) and its chosen settings."""

    outputs: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class BaselineResult:
    """A scored baseline: metrics per split as a fit run's summary.json has them (``val`` / ``test``)."""

    name: str
    label: str
    status: str  # done | skipped
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    reason: str | None = None  # why it was skipped
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # not written to JSON

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "status": self.status, "reason": self.reason,
                "val": self.metrics.get("val", {}), "test": self.metrics.get("test", {}), "params": self.params,
                "wall_time_s": self.wall_time_s}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> BaselineResult:
        metrics = {k: dict(payload[k]) for k in ("val", "test") if payload.get(k)}
        return cls(str(payload["name"]), str(payload["label"]), str(payload["status"]), metrics,
                   dict(payload.get("params") or {}), float(payload.get("wall_time_s") or 0.0), payload.get("reason"))


class ClassicBaseline:
    """Base class of the baselines: subclasses set ``name`` / ``label`` and implement :meth:`fit_predict`."""

    name: str = ""
    label: str = ""  # human words: "TF-IDF + logistic regression"
    requires: tuple[str, ...] = ()  # importable modules it needs (scikit-learn, lightgbm, rdkit)

    def describe(self) -> str:
        return self.label

    def missing(self) -> str | None:
        """Why the baseline cannot run here (a package that does not import), or None."""
        import importlib

        for module in self.requires:
            try:
                importlib.import_module(module)
            except Exception as exc:
                extra = "molecules" if module == "rdkit" else "experiments"
                return (f"{self.label} needs the Python package '{module}', which does not import "
                        f"({type(exc).__name__}: {exc}); install it with pip install 'headstart[{extra}]'.")
        return None

    def fit_predict(self, cfg: RunConfig, splits: Any) -> BaselineOutputs:
        """Fit on ``splits.train`` (choosing settings on ``splits.val``); outputs for val and test."""
        raise NotImplementedError


_REGISTRY: dict[str, ClassicBaseline] = {}
_BUILTIN_LOADED: list[bool] = []


def register_baseline(baseline: ClassicBaseline) -> ClassicBaseline:
    """Make ``baseline`` reachable by its stable name (what a modality's ``classic_baseline`` names)."""
    if not baseline.name or not baseline.label:
        raise ValueError(f"{type(baseline).__name__} needs a name and a label")
    _REGISTRY[baseline.name] = baseline
    return baseline


def baseline_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_baseline(name: str) -> ClassicBaseline:
    """The baseline registered as ``name``; a ConfigError naming the known ones otherwise."""
    _load_builtin()
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        raise ConfigError(f"No classic baseline is named '{name}'. Known: {format_choices(names)}."
                          f"{did_you_mean(name, names)}")
    return _REGISTRY[name]


def _load_builtin() -> None:
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED.append(True)
    import headstart.baselines.image
    import headstart.baselines.molecule
    import headstart.baselines.sequence
    import headstart.baselines.text  # noqa: F401


# ----- helpers the baselines share --------------------------------------------------------------------------


def split_items(splits: Any) -> dict[str, Any]:
    """The evaluated splits present: val and (when there is one) test."""
    return {name: getattr(splits, name) for name in ("val", "test") if getattr(splits, name, None) is not None}


def full_proba(classes: np.ndarray, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """``proba`` over the classes a model saw (``classes``) spread to all ``n_classes`` columns (0 elsewhere):
    a class absent from the training rows still has its column, as in the run's predictions."""
    out = np.zeros((len(proba), n_classes), dtype=np.float64)
    out[:, np.asarray(classes, dtype=np.int64)] = proba
    return out


def monitored(cfg: RunConfig, metrics: dict[str, float], kind: str) -> tuple[str, float, bool]:
    """(metric name, value, higher is better) that chooses settings on val: the run's ``trainer.monitor``
    where the baseline's metrics have it, else accuracy (classes), RMSE (numbers) or mean AUC (tasks)."""
    key = cfg.trainer.monitor.removeprefix("val_")
    if key in metrics and np.isfinite(metrics[key]):
        return key, float(metrics[key]), cfg.trainer.monitor_mode == "max"
    key, higher = {"classification": ("acc", True), "regression": ("rmse", False)}.get(kind, ("auc", True))
    return key, float(metrics.get(key, np.nan)), higher


def run_classic_baseline(cfg: RunConfig, splits: Any, baseline: ClassicBaseline | None = None) -> BaselineResult:
    """Fit ``cfg``'s modality baseline (or ``baseline``) on ``splits`` and score val / test with the run's metrics.

    Never raises for data the baseline cannot handle or a package it lacks: the result is ``skipped`` with the
    reason, so a compare grid still reports its strategies."""
    from headstart.modalities import get_modality
    from headstart.train.targets import make_target

    modality = get_modality(cfg.task)
    if baseline is None:
        baseline = modality.classic_baseline()
    if baseline is None:
        return BaselineResult("none", "no classic baseline", "skipped",
                              reason=f"the {modality.name} modality names no classic baseline")
    why = baseline.missing()
    if why is not None:
        return BaselineResult(baseline.name, baseline.label, "skipped", reason=why)
    t0 = time.perf_counter()
    try:
        fitted = baseline.fit_predict(cfg, splits)
    except BaselineUnavailable as exc:
        return BaselineResult(baseline.name, baseline.label, "skipped", reason=str(exc))
    label_map = splits.label_map
    target = make_target(label_map.spec(), label_map.n_classes)
    metrics = {}
    for name, rows in split_items(splits).items():
        labels = np.asarray(modality.labels(rows))
        metrics[name] = target.metrics(labels, fitted.outputs[name])
    return BaselineResult(baseline.name, baseline.label, "done", metrics, fitted.params,
                          round(time.perf_counter() - t0, 3), outputs=fitted.outputs)
