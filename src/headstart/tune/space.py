"""A search space as data: which config keys a tune samples, from which distribution, and when.

A space file maps config keys to distributions::

    params:
      strategy.name: {choices: [linear_probe, partial, lora]}
      strategy.train_last: {low: 1, high: 2}                 # int (both bounds whole numbers): partial only
      strategy.lora.r: {choices: [4, 8, 16]}                  # lora only
      optim.lr: {low: 1.0e-4, high: 1.0e-1, log: true}
      optim.encoder_lr: {low: 1.0e-6, high: 1.0e-4, log: true}  # only where encoder weights train
      head.dropout: {low: 0.0, high: 0.3, when: {optim.optimizer: adamw}}

A key is sampled only where it means something: ``strategy.<field>`` only for the strategies that read that
field, the encoder's optimizer settings only for strategies that train encoder weights, and any key only where
its ``when`` holds (on the values sampled so far, else the base config's). Keys are sampled in dependency
order (``strategy.name`` and every ``when`` key before the keys that depend on them), so a trial's params
never hold an inactive key: what Optuna's define-by-run trials record is what the run used.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from headstart.config import RunConfig, apply_overrides
from headstart.errors import ConfigError, did_you_mean
from headstart.strategies import ENCODER_OPTIM_KEYS, STRATEGY_FIELDS, STRATEGY_NAMES

__all__ = ["ParamSpec", "SearchSpace", "get_key", "inactive_reason", "keep_strategy_fields", "load_space", "set_key",
           "space_size_note"]

# Set by tune for every trial (the pinned split, the tuned metric, the trial's directory): not searchable.
RESERVED = {"name": "tune names each trial", "output_dir": "each trial writes DIR/trials/<number>",
            "data.split_seed": "every trial uses the same pinned split (--set data.split_seed=N pins another)",
            "trainer.monitor": "it is --metric", "trainer.monitor_mode": "it is --direction",
            "trainer.seed": "trials share one seed so they differ only by their params (`compare` re-runs the "
                            "best ones over seeds)"}
STRATEGY_NAME = "strategy.name"


class ParamSpec(BaseModel):
    """One searched key: ``choices`` (categorical) or ``low``/``high`` (int when both are written as whole
    numbers, ``1`` not ``1.0``; ``type`` overrides)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"] | None = None
    low: int | float | None = None  # int when both bounds are written as whole numbers (1, not 1.0)
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: list[Any] | None = None
    when: dict[str, Any] = Field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.type:
            return self.type
        if self.choices is not None:
            return "categorical"
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        return "int" if whole else "float"

    def problems(self) -> list[str]:
        """What is wrong with the distribution itself (bounds, log, choices), as sentences."""
        kind = self.kind
        if kind == "categorical":
            if not self.choices:
                return ["choices is empty: list at least one value, e.g. choices: [linear_probe, full]"]
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (["log"] if self.log else [])
            return [f"{', '.join(extra)} mean nothing with choices; give either choices or low/high"] if extra else []
        out = []
        if self.choices is not None:
            out.append(f"type {kind} takes low/high, not choices")
        if self.low is None or self.high is None:
            return [*out, f"a {kind} range needs both low and high (got low={self.low}, high={self.high})"]
        if self.low > self.high:
            out.append(f"low {self.low:g} is above high {self.high:g}; swap them")
        if self.log and self.low <= 0:
            out.append(f"log: true needs low > 0 (got {self.low:g}); raise low or drop log")
        if self.log and self.step is not None:
            out.append("log and step cannot be combined (Optuna samples a log range without a grid)")
        if kind == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            out.append(f"an int range needs whole-number bounds (got low={self.low:g}, high={self.high:g})")
        return out

    def values_to_check(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.choices or [])
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


class SearchSpace(BaseModel):
    """The whole space: ``params`` in the file's order (sampling order is resolved from their dependencies)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, ParamSpec]

    def sampling_order(self) -> list[str]:
        """Keys ordered so that each comes after the keys it depends on (``strategy.name``, its ``when`` keys)."""
        deps = {k: [d for d in _dependencies(k, spec) if d in self.params and d != k]
                for k, spec in self.params.items()}
        order: list[str] = []
        visiting: set[str] = set()

        def visit(key: str, path: list[str]) -> None:
            if key in order:
                return
            if key in visiting:
                raise ConfigError(f"Search space: the 'when' conditions form a cycle ({' -> '.join([*path, key])}); "
                                  f"a key cannot depend on itself.")
            visiting.add(key)
            for d in deps[key]:
                visit(d, [*path, key])
            visiting.discard(key)
            order.append(key)

        for key in self.params:
            visit(key, [])
        return order

    def sample(self, trial: Any, base: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the trial's raw config, the params it set): ``base`` with every active key sampled from ``trial``."""
        raw = copy.deepcopy(base)
        params: dict[str, Any] = {}
        for key in self.sampling_order():
            spec = self.params[key]
            if inactive_reason(key, spec, raw) is not None:
                continue
            value = _suggest(trial, key, spec)
            set_key(raw, key, value)
            params[key] = value
        keep_strategy_fields(raw, set(params))
        return raw, params


def _dependencies(key: str, spec: ParamSpec) -> list[str]:
    strategy_field = key.startswith("strategy.") and key != STRATEGY_NAME
    implicit = [STRATEGY_NAME] if strategy_field or key in ENCODER_OPTIM_KEYS else []
    return [*implicit, *spec.when]


def inactive_reason(key: str, spec: ParamSpec | None, raw: dict[str, Any]) -> str | None:
    """Why ``key`` means nothing in config ``raw`` (None when it is active)."""
    strategy = (raw.get("strategy") or {}).get("name", "full")
    if key.startswith("strategy.") and key != STRATEGY_NAME:
        field = key.split(".")[1]
        if field not in STRATEGY_FIELDS.get(strategy, frozenset()):
            return f"strategy '{strategy}' does not read strategy.{field}"
    if key in ENCODER_OPTIM_KEYS and strategy == "linear_probe":
        return "no encoder weight trains under linear_probe"
    for cond, allowed in (spec.when if spec else {}).items():
        options = allowed if isinstance(allowed, list) else [allowed]
        if get_key(raw, cond) not in options:
            return f"when {cond} is {allowed} (it is {get_key(raw, cond)!r})"
    return None


def keep_strategy_fields(raw: dict[str, Any], sampled: set[str]) -> None:
    """Drop the base's strategy fields the sampled strategy does not read, and the base's half of partial's
    either-or (freeze / train_last) when the other half was sampled: the trial config says only what it uses."""
    section = raw.get("strategy") or {}
    fields = STRATEGY_FIELDS.get(section.get("name", "full"), frozenset())
    for name in [k for k in section if k != "name" and k not in fields]:
        del section[name]
    for a, b in (("freeze", "train_last"), ("train_last", "freeze")):
        if f"strategy.{a}" in sampled and f"strategy.{b}" not in sampled:
            section.pop(b, None)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _suggest(trial: Any, key: str, spec: ParamSpec) -> Any:
    kind = spec.kind
    if kind == "categorical":
        choices = spec.choices or []
        if all(_scalar(c) for c in choices):
            return trial.suggest_categorical(key, choices)
        # Optuna stores scalars only: lists / mappings (head.hidden_dims: [[], [64]]) travel as JSON text.
        return json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in choices]))
    if kind == "int":
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(key, float(spec.low), float(spec.high), step=spec.step, log=spec.log)


def get_key(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw[a][b] = value`` for ``key`` ``"a.b"``, as a ``--set a.b=value`` would."""
    apply_overrides(raw, [(key.split("."), value)])


# ----------------------------------------------------------------------------------------------------
# loading and checking against the config schema


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``X | None`` -> [X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (Union, types.UnionType, Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _is_mapping(annotation: Any) -> bool:
    return annotation is dict or typing.get_origin(annotation) is dict or any(
        _is_mapping(a) for a in typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType))


def _field(key: str) -> tuple[Any, str | None]:
    """(the field's validator or None below a free-form mapping, a problem with the key or None)."""
    model: type[BaseModel] = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "the config"
            return None, (f"'{key}' is not a config key: {where} has no '{part}'.{did_you_mean(part, fields)} "
                          f"Keys are dotted paths of the run config, e.g. optim.lr or strategy.train_last.")
        info = fields[part]
        if i == len(parts) - 1:
            ann = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            return TypeAdapter(ann), None
        if _is_mapping(info.annotation):
            return None, None  # free-form below: checked when a trial's config is validated
        models = _models(info.annotation)
        if not models:
            return None, f"'{key}': {'.'.join(parts[:i + 1])} is a single value, it has no '{parts[i + 1]}'."
        model = models[0]
    return None, None


def _check(space: SearchSpace, base: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    strategies = space.params.get(STRATEGY_NAME)
    reachable = set(strategies.choices or []) if strategies and strategies.kind == "categorical" else \
        {(base.get("strategy") or {}).get("name", "full")}
    for key, spec in space.params.items():
        if key in RESERVED:
            problems.append(f"'{key}' cannot be searched: {RESERVED[key]}.")
            continue
        adapter, problem = _field(key)
        if problem:
            problems.append(problem)
            continue
        problems += [f"'{key}': {p}." for p in spec.problems()]
        if adapter is not None and not spec.problems() and key != STRATEGY_NAME:
            for value in spec.values_to_check():
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    why = "; ".join(e["msg"] for e in exc.errors())
                    problems.append(f"'{key}': the value {value!r} is not allowed there ({why}).")
        if key == STRATEGY_NAME and spec.kind == "categorical":
            bad = [c for c in spec.choices or [] if c not in STRATEGY_NAMES]
            problems += [f"'{key}': '{c}' is not a strategy.{did_you_mean(str(c), STRATEGY_NAMES)}" for c in bad]
        if key.startswith("strategy.") and key != STRATEGY_NAME:
            field = key.split(".")[1]
            users = [s for s in STRATEGY_NAMES if field in STRATEGY_FIELDS[s]]
            if users and not reachable & set(users):
                problems.append(f"'{key}' is read only by {', '.join(users)}, which this space never picks "
                                f"(strategies: {', '.join(sorted(map(str, reachable)))}); add one of them to "
                                f"strategy.name's choices or drop the key.")
        if key in ENCODER_OPTIM_KEYS and reachable == {"linear_probe"}:
            problems.append(f"'{key}' means nothing here: the only strategy is linear_probe, under which no encoder "
                            f"weight trains; add strategies that train the encoder or drop the key.")
        for cond, allowed in spec.when.items():
            if cond == key:
                problems.append(f"'{key}': its when refers to itself.")
                continue
            _, problem_c = _field(cond)
            if problem_c:
                problems.append(f"'{key}': when {problem_c}")
            elif cond in space.params and space.params[cond].kind == "categorical":
                options = allowed if isinstance(allowed, list) else [allowed]
                missing = [o for o in options if o not in (space.params[cond].choices or [])]
                if missing:
                    problems.append(f"'{key}': when {cond} is {missing}, but {cond}'s choices are "
                                    f"{space.params[cond].choices}; this key would never be sampled.")
    return problems


def load_space(source: str | Path | dict[str, Any], base: dict[str, Any]) -> SearchSpace:
    """Read and check a space (file or mapping) against the base config; every problem in one ConfigError."""
    where = "search space"
    if not isinstance(source, dict):
        path = Path(source)
        where = f"search space '{path}'"
        if not path.is_file():
            raise ConfigError(f"The {where} does not exist; pass a YAML file with a 'params' mapping (examples: "
                              f"examples/tune_text_space.yaml).")
        try:
            source = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"The {where} is not valid YAML: {exc}") from None
    if not isinstance(source, dict) or not isinstance(source.get("params"), dict) or not source["params"]:
        raise ConfigError(f"The {where} needs a non-empty 'params' mapping of config keys to distributions, e.g. "
                          f"params: {{optim.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}}}.")
    try:
        space = SearchSpace.model_validate(source)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                name = str(e["loc"][-1])
                lines.append(f"{loc}: unknown field.{did_you_mean(name, ParamSpec.model_fields)} A param takes "
                             f"choices, or low/high (with log, step), and when.")
            else:
                lines.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(f"The {where} has {len(lines)} problem(s):\n  " + "\n  ".join(lines)) from None
    problems = _check(space, base)
    if problems:
        raise ConfigError(f"The {where} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    space.sampling_order()  # cycles fail now
    return space


def space_size_note(space: SearchSpace) -> str:
    """A one-line description for the console."""
    parts = []
    for key, spec in space.params.items():
        if spec.kind == "categorical":
            parts.append(f"{key} in {spec.choices}")
        else:
            lo, hi = (f"{v:g}" for v in (spec.low, spec.high))
            parts.append(f"{key} in [{lo}, {hi}]{' (log)' if spec.log else ''}")
        if spec.when:
            parts[-1] += f" when {spec.when}"
    return "; ".join(parts)

