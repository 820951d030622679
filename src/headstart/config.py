"""Typed, validated run configs (YAML <-> pydantic, ``extra="forbid"``).

``load_config`` reads YAML, applies overrides (``--set data.batch_size=16`` style dotted keys) and
validates everything at once: every problem in the file is reported together, unknown keys come with
a "did you mean", and each line says where (``optim.lr``), the value seen and what was expected.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)

from headstart.config_sections import (
    AugmentConfig,
    BackboneConfig,
    CacheConfig,
    DataConfig,
    EarlyStoppingConfig,
    EventsConfig,
    ExtendVocabConfig,
    GraphEncoderConfig,
    HeadConfig,
    LoraConfig,
    LossConfig,
    MixConfig,
    MoleculesConfig,
    OODConfig,
    OptimConfig,
    PretrainObjectiveConfig,
    SequenceEncoderConfig,
    StrategyConfig,
    Strict,
    TrainerConfig,
    UniMolConfig,
)
from headstart.errors import ConfigError, did_you_mean
from headstart.paths import missing_path_problems, resolve_paths

__all__ = [  # the sections live in headstart.config_sections and are re-exported here
    "AugmentConfig",
    "BackboneConfig",
    "CacheConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "EventsConfig",
    "ExtendVocabConfig",
    "GraphEncoderConfig",
    "HeadConfig",
    "LoraConfig",
    "LossConfig",
    "MixConfig",
    "MoleculesConfig",
    "OODConfig",
    "OptimConfig",
    "PretrainObjectiveConfig",
    "RunConfig",
    "SequenceEncoderConfig",
    "StrategyConfig",
    "TrainerConfig",
    "UniMolConfig",
    "apply_overrides",
    "config_to_yaml",
    "load_config",
    "parse_override",
    "task_parts",
]


TASKS = tuple(f"{m}_{k}" for m in ("text", "image", "sequence", "molecule") for k in ("classification", "regression"))
TaskName = Literal["auto", "text_classification", "text_regression", "image_classification", "image_regression",
                   "sequence_classification", "sequence_regression", "molecule_classification",
                   "molecule_regression"]


def task_parts(task: str) -> tuple[str, str]:
    """``molecule_regression`` -> (``molecule``, ``regression``): the modality plug-in and what is predicted."""
    modality, _, kind = task.rpartition("_")
    return modality, kind


class RunConfig(Strict):
    name: str = "run"
    # <modality>_<classification|regression>; auto: image for a resnet backbone, sequence for data.events,
    # molecule for data.molecules or a graph / unimol backbone, else text (classification)
    task: TaskName = "auto"
    output_dir: str = "runs/run"
    pretrain: str | None = None  # encoder weights loaded before fine-tuning (strict=False, key report)
    # The pretrained head: auto = load it when its shape and class names match; reset = never (same class ids,
    # other meaning); keep = always (an error says why it cannot be loaded).
    pretrain_head: Literal["auto", "keep", "reset"] = "auto"
    data: DataConfig
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    # Log val_fisher (Fisher ratio of the validation embeddings) each epoch; auto: on for images and margin heads.
    embedding_metrics: bool | Literal["auto"] = "auto"
    # headstart pretrain: the objective the encoder is trained on (supervised = fit on the labels, then export)
    objective: PretrainObjectiveConfig = Field(default_factory=PretrainObjectiveConfig)
    ood: OODConfig | None = None  # OOD scores of the finished run (classification), e.g. frozen vs fine-tuned

    @property
    def modality_name(self) -> str:
        return task_parts(self.task)[0]

    @property
    def is_regression(self) -> bool:
        return task_parts(self.task)[1] == "regression"

    @model_validator(mode="after")
    def _resolve_task(self) -> RunConfig:
        if self.task == "auto":
            b = self.backbone.type
            modality = ("image" if b == "resnet" else
                        "sequence" if self.data.events is not None or b == "ptls" else
                        "molecule" if self.data.molecules is not None or b in ("graph", "unimol") else "text")
            object.__setattr__(self, "task", f"{modality}_classification")
        modality = self.modality_name
        if modality == "sequence":
            if self.data.events is None:
                raise ValueError(f"task {self.task} reads an events table: set data.events (id_column, "
                                 "time_column and the categorical / numeric event fields)")
            if self.backbone.type == "hf" and "type" not in self.backbone.model_fields_set:
                object.__setattr__(self.backbone, "type", "ptls")  # the default encoder of event sequences
            if self.backbone.type not in ("ptls", "torch"):
                raise ValueError(f"task {self.task} needs a sequence encoder (backbone.type: ptls, or "
                                 f"torch with your module), not '{self.backbone.type}'")
            if self.backbone.type == "ptls" and self.backbone.module is None and self.backbone.sequence is None:
                object.__setattr__(self.backbone, "sequence", SequenceEncoderConfig())
        elif self.data.events is not None:
            raise ValueError(f"data.events describes event sequences, but task is {self.task}: remove data.events "
                             f"or set task: sequence_classification (or auto)")
        if modality == "molecule":
            if self.data.molecules is None:
                object.__setattr__(self.data, "molecules", MoleculesConfig())
            if self.backbone.type == "hf" and "type" not in self.backbone.model_fields_set:
                object.__setattr__(self.backbone, "type", "graph")  # the default molecule encoder
            if self.backbone.type not in ("graph", "unimol", "torch"):
                raise ValueError(f"task {self.task} needs a molecule encoder (backbone.type: graph, unimol, or torch "
                                 f"with your module), not '{self.backbone.type}'")
        elif self.data.molecules is not None:
            raise ValueError(f"data.molecules describes a SMILES table, but task is {self.task}: remove "
                             f"data.molecules or set task: molecule_classification / molecule_regression (or auto)")
        if self.backbone.type == "graph" and self.backbone.graph is None:
            object.__setattr__(self.backbone, "graph", GraphEncoderConfig())
        if self.backbone.type == "unimol" and self.backbone.unimol is None:
            raise ValueError("backbone.type 'unimol' needs backbone.unimol.weights: the path of a local Uni-Mol "
                             "checkpoint (e.g. mol_pre_no_h_220816.pt from huggingface.co/dptech/Uni-Mol-Models, "
                             "with its dict.txt beside it); nothing is downloaded")
        if self.backbone.type in ("graph", "unimol") and modality != "molecule":
            raise ValueError(f"backbone.type {self.backbone.type} encodes molecules: set task: "
                             f"molecule_classification / molecule_regression (or auto)")
        if modality == "image" and self.backbone.type in ("hf", "ptls"):
            raise ValueError(f"task {self.task} needs an image backbone (backbone.type: resnet, or torch "
                             f"with your module), not '{self.backbone.type}'")
        if modality == "text" and self.backbone.type == "resnet":
            raise ValueError("backbone.type resnet encodes images: set task: image_classification (or auto)")
        if self.data.label_columns is not None and modality != "molecule":
            raise ValueError(f"data.label_columns (several targets) is read by molecule tasks; task {self.task} "
                             f"reads one label column: set data.label_column")
        self._resolve_target_defaults()
        if self.ood is not None:
            if self.is_regression or (self.data.label_columns is not None and len(self.data.label_columns) > 1):
                raise ValueError("ood scores a single-label classifier (softmax / energy / Mahalanobis); remove the "
                                 "ood section for regression and multi-task runs")
            if self.ood.id_data is None and (self.data.molecules is None or self.data.molecules.id_test_fraction == 0):
                raise ValueError("ood without id_data / ood_data uses the scaffold-OOD protocol: set "
                                 "data.molecules.split: scaffold with data.molecules.id_test_fraction (e.g. 0.1), "
                                 "or name the two files in ood.id_data / ood.ood_data")
        if self.embedding_metrics == "auto":
            on = (modality == "image" or self.head.type != "mlp") and not self.is_regression
            object.__setattr__(self, "embedding_metrics", on)
        return self

    def _resolve_target_defaults(self) -> None:
        """Regression trains on MSE and keeps the best val_rmse unless the config says otherwise."""
        if self.is_regression:
            if "type" not in self.loss.model_fields_set:
                object.__setattr__(self.loss, "type", "mse")
            if self.loss.type not in ("mse", "huber"):
                raise ValueError(f"task {self.task} predicts numbers: loss.type must be mse or huber, not "
                                 f"'{self.loss.type}'")
            if self.head.type != "mlp":
                raise ValueError(f"head.type {self.head.type} is a classification head; task {self.task} needs "
                                 f"head.type mlp")
            if "monitor" not in self.trainer.model_fields_set:
                object.__setattr__(self.trainer, "monitor", "val_rmse")
                object.__setattr__(self.trainer, "monitor_mode", "min")
        elif self.loss.type in ("mse", "huber"):
            raise ValueError(f"loss.type {self.loss.type} is a regression loss, but task is {self.task}: use ce or "
                             f"focal, or set task: {self.modality_name}_regression")
        elif self.data.label_columns is not None and len(self.data.label_columns) > 1:
            if self.modality_name != "molecule":
                raise ValueError(f"data.label_columns with several columns (multi-task binary classification) is "
                                 f"supported for molecules; task {self.task} takes one label_column")
            if self.head.type != "mlp" or self.loss.type != "ce":
                raise ValueError("several label_columns train one binary cross-entropy per task: use head.type mlp "
                                 "and loss.type ce")
            if "monitor" not in self.trainer.model_fields_set:
                object.__setattr__(self.trainer, "monitor", "val_auc")
                object.__setattr__(self.trainer, "monitor_mode", "max")


def _model_for_path(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = candidates[0] if candidates else None
    return model


# Names people often write for a key, mapped to the key headstart uses (for the "did you mean").
_KEY_ALIASES = {
    "learning_rate": "lr", "learningrate": "lr", "lr_head": "lr", "head_lr": "lr", "encoder_learning_rate": "encoder_lr",
    "backbone_lr": "encoder_lr", "max_epochs": "epochs", "num_epochs": "epochs", "n_epochs": "epochs",
    "epoch": "epochs", "optimiser": "optimizer", "optim": "optimizer", "bs": "batch_size", "batchsize": "batch_size",
    "wd": "weight_decay", "weightdecay": "weight_decay", "lr_scheduler": "scheduler", "schedule": "scheduler",
    "warmup": "warmup_epochs", "accumulate_grad_batches": "accumulate", "gradient_accumulation_steps": "accumulate",
    "gradient_clip_val": "grad_clip", "clip_grad_norm": "grad_clip", "model": "backbone", "encoder": "backbone",
    "model_name": "name_or_path", "pretrained": "pretrain", "checkpoint_path": "checkpoint", "out_dir": "output_dir",
    "outdir": "output_dir", "run_dir": "output_dir", "text": "text_column", "label": "label_column",
    "labels": "label_column", "target": "label_column", "train_file": "train", "val_file": "val",
    "valid": "val", "validation": "val", "test_file": "test", "optimizer": "optim", "scheduler": "optim",
    "freeze_layers": "freeze", "rank": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
    "targets": "target_modules", "lora_targets": "target_modules",
}
_NUMBER_ERRORS = {"float_parsing", "float_type", "finite_number"}
_INT_ERRORS = {"int_parsing", "int_type", "int_from_float", "int_parsing_size"}
_BOOL_ERRORS = {"bool_parsing", "bool_type"}


def _suggest_key(key: str, valid: list[str]) -> str:
    """Did-you-mean for an unknown key: spelling first, then common synonyms (learning_rate -> lr)."""
    hint = did_you_mean(key, valid)
    if hint:
        return hint
    normal = key.lower().replace("-", "_")
    aliases = [a for a, target in _KEY_ALIASES.items() if target in valid]
    for alias in difflib.get_close_matches(normal, aliases, n=1, cutoff=0.8):
        return f" Did you mean '{_KEY_ALIASES[alias]}'?"
    return ""


def _show_value(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping {...}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(err: Any, where: str) -> str:
    """One line for a value error: the key, what was expected, the value seen."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind in _NUMBER_ERRORS:
        expected = "a number, e.g. 0.001 or 3.0e-5"
    elif kind in _INT_ERRORS:
        expected = "a whole number, e.g. 3"
    elif kind in _BOOL_ERRORS:
        expected = "true or false"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        return f"- '{where}' is {_show_value(value)}, expected one of {ctx.get('expected', '')}.{hint}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        expected = err["msg"].replace("Input should be ", "a value ")
    elif kind in ("list_type", "tuple_type"):
        expected = "a list, e.g. [a, b]"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        expected = "a mapping of keys (an indented block in YAML)"
    elif kind in ("string_type",):
        expected = "text"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        return f"- '{where}': {msg} (got {_show_value(value)})."
    return f"- '{where}' is {_show_value(value)}, expected {expected}."


def _format_errors(exc: ValidationError, source: str, overridden: set[str] | None = None) -> str:
    lines = []
    overridden = overridden or set()
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal"))))
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            model = _model_for_path(loc)
            valid = list(model.model_fields) if model else []
            hint = _suggest_key(str(loc[-1]), valid)
            line = f"- unknown key '{where}'.{hint} Valid keys here: {', '.join(valid)}."
        elif err["type"] == "missing":
            line = f"- '{where}' is required but missing; add it (examples/quickstart.yaml shows every section)."
        else:
            line = _problem(err, where)
        if any(where == k or where.startswith(k + ".") for k in overridden):
            line += " (Set on the command line.)"
        lines.append(line)
    return (
        f"Invalid config {source}: {len(lines)} problem(s):\n" + "\n".join(lines)
        + "\nFix these keys in the config file (or in the command-line options that set them) and run again."
    )


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key.sub=value`` -> (["key", "sub"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(
            f"--set '{text}' has no '=': an override must look like key.subkey=value, e.g. --set optim.lr=3e-5 "
            f"or --set data.batch_size=16."
        )
    key, _, raw = text.partition("=")
    if not [k for k in key.strip().split(".") if k]:
        raise ConfigError(
            f"--set '{text}' names no key before '=': an override must look like key.subkey=value, e.g. "
            f"--set optim.lr=3e-5."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-2 (no dot) as text; on a command line it means a number
    return [k for k in key.strip().split(".") if k], value


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    for keys, value in overrides:
        node = raw
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return raw


def load_config(path: str | Path | None, overrides: list[tuple[list[str], Any]] | None = None,
                raw: dict[str, Any] | None = None) -> RunConfig:
    """Read, override and validate a run config; every problem is reported in one ConfigError.

    Relative paths in the file resolve from its folder, those in ``overrides`` (the command line) from the
    working directory (``headstart.paths``); files that must exist are checked once the config is valid.
    """
    source = "(in memory)"
    if raw is None:
        if path is None:
            raise ConfigError("No config given.")
        p = Path(path)
        source = f"'{p}'"
        if not p.is_file():
            raise ConfigError(_missing_config_message(p))
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error_message(p, exc)) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"Config file '{p}' is not UTF-8 text ({exc.reason} at byte {exc.start}); is it really a YAML "
                f"file? Re-save it as UTF-8."
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"Config file '{p}' must hold a mapping of keys (key: value lines), but its top level is a "
                f"{type(raw).__name__}. Write it like examples/quickstart.yaml: data:, backbone:, strategy: ..."
            )
    origins = {} if path is None else resolve_paths(raw, Path(path).resolve().parent, "config")
    raw = apply_overrides(dict(raw), overrides or [])
    overridden = {".".join(keys) for keys, _ in overrides or []}
    origins.update(resolve_paths(raw, Path.cwd(), "command line", only=overridden))
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, overridden)) from None
    missing = missing_path_problems(raw, origins, Path(path).resolve().parent) if path is not None else []
    if missing:
        raise ConfigError(f"Config {source}: " + " ".join(missing))
    return cfg


def _missing_config_message(p: Path) -> str:
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if c.suffix in (".yaml", ".yml"))[:5]
        listing = f" YAML files in it: {', '.join(inside)}." if inside else ""
        return f"Config file '{p}' is a directory, not a YAML file.{listing} Give the path of a run config (YAML)."
    hint = ""
    if p.parent.is_dir():
        names = sorted(c.name for c in p.parent.iterdir() if c.is_file())
        hint = did_you_mean(p.name, names)
        if not hint:
            yamls = [n for n in names if n.endswith((".yaml", ".yml"))][:5]
            hint = f" YAML files in '{p.parent}': {', '.join(yamls)}." if yamls else ""
    else:
        hint = f" Its directory '{p.parent}' does not exist either."
    return (
        f"Config file '{p}' does not exist (resolved to {p.resolve()}).{hint} Check the path; "
        f"examples/quickstart.yaml is a complete example to start from."
    )


def _yaml_error_message(p: Path, exc: yaml.YAMLError) -> str:
    """One paragraph: the problem, its line and column, and the usual causes."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    cmark = getattr(exc, "context_mark", None)
    started = ""
    if context and cmark is not None:
        started = f" ({context} that started at line {cmark.line + 1}, column {cmark.column + 1})"
    line = ""
    if mark is not None:
        try:
            text = p.read_text(encoding="utf-8").splitlines()[mark.line].strip()
            line = f" The line reads: {text[:80]!r}." if text else ""
        except (OSError, IndexError, UnicodeDecodeError):
            line = ""
    return (
        f"Config file '{p}' is not valid YAML: {problem}{where}{started}.{line} Fix the syntax there; "
        f"common causes are an unclosed bracket or quote, tabs used for indentation, or a missing space "
        f"after ':'."
    )


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
