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
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from headstart.errors import ConfigError, did_you_mean
from headstart.paths import missing_path_problems, resolve_paths

__all__ = [
    "BackboneConfig",
    "CacheConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "GraphEncoderConfig",
    "HeadConfig",
    "LoraConfig",
    "LossConfig",
    "MoleculesConfig",
    "OODConfig",
    "OptimConfig",
    "PretrainObjectiveConfig",
    "RunConfig",
    "StrategyConfig",
    "TrainerConfig",
    "UniMolConfig",
    "apply_overrides",
    "config_to_yaml",
    "load_config",
    "parse_override",
    "task_parts",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Strict):
    """Seeded train-time image augmentation (keyed on seed, epoch and row: identical after a resume)."""

    shift: int = Field(0, ge=0)  # random translation by up to this many pixels (zero fill)
    pad: int = Field(0, ge=0)  # random crop back to size after padding by this many pixels
    hflip: float = Field(0.0, ge=0.0, le=1.0)  # probability of a horizontal flip (off: glyphs change meaning)
    scale: tuple[float, float] | None = None  # random zoom factor [low, high] (log-uniform); > 1 zooms in
    rotate: float = Field(0.0, ge=0.0, le=180.0)  # random rotation within +-rotate degrees
    dilate: int = Field(0, ge=0, le=8)  # thicken strokes by 0..dilate pixels (grey dilation)
    invert: float = Field(0.0, ge=0.0, le=1.0)  # probability of inverting intensities (dark-on-light images)
    erase: float = Field(0.0, ge=0.0, le=1.0)  # probability of zeroing one random rectangle (random erasing)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        from headstart.data.augment import check_scale

        return None if value is None else check_scale(value)


class MixConfig(_Strict):
    """Fine-tune on B mixed with a fraction of dataset A (same label space); metrics stay on B only."""

    path: str
    ratio: float = Field(0.2, gt=0.0, le=10.0)  # A rows added = ratio x B training rows (sampled, seeded)


class EventsConfig(_Strict):
    """Event sequences (task sequence_classification): a transactions table, one row per event.

    ``data.train`` (and ``val`` / ``test``) are events tables (csv / tsv / parquet, optionally .gz) with an
    entity id, an event time and event fields. Labels come from ``labels`` (a per-entity table: the id column
    plus ``data.label_column``) or, without it, from ``data.label_column`` in the events table (one value per
    entity). Splits are per entity: an entity is never in two splits.
    """

    id_column: str
    time_column: str
    # auto: numbers stay numbers (a day index, a timestamp), anything else is parsed as a date / datetime
    time_format: Literal["auto", "number", "date", "datetime"] = "auto"
    categorical: list[str] = Field(default_factory=list)  # vocabularies from the training split; unseen -> OOV
    numeric: dict[str, Literal["identity", "log1p", "standardize"]] = Field(default_factory=dict)
    # time as a feature: days (time units for numbers) since the entity's previous event; none: order only
    time_feature: Literal["delta", "none"] = "delta"
    max_events: int = Field(256, ge=1)  # longer sequences keep their latest events
    labels: str | None = None  # per-entity label table (csv / tsv / parquet): id_column + data.label_column
    # entities with a label but no events (or events but no label, when labels are given): drop them (counted
    # in the log) or refuse the data
    unmatched: Literal["drop", "error"] = "drop"

    @model_validator(mode="after")
    def _fields(self) -> EventsConfig:
        used = [self.id_column, self.time_column, *self.categorical, *self.numeric]
        twice = sorted({c for c in used if used.count(c) > 1})
        if twice:
            raise ValueError(f"data.events names the column(s) {twice} in more than one role (id_column, "
                             f"time_column, categorical, numeric); give each column one role")
        if not self.categorical and not self.numeric:
            raise ValueError("data.events needs at least one event field: list columns under categorical "
                             "(e.g. [mcc_code]) or numeric (e.g. {amount: log1p})")
        return self


class MoleculesConfig(_Strict):
    """Molecules (task molecule_classification / molecule_regression): a table with a SMILES column.

    Targets are ``data.label_column`` (one) or ``data.label_columns`` (several: multi-task, empty cells are
    missing labels, masked in the loss and the metrics). SMILES RDKit cannot parse are refused with their rows
    (``invalid: error``) or left out with a count (``drop``). Splits: ``scaffold`` (Bemis-Murcko scaffold sets,
    largest to train, deterministic), ``random``, ``stratified`` (by the single label), or ``column``
    (``split_column`` holds train / val / test); sizes from data.val_fraction / data.test_fraction.
    """

    smiles_column: str = "smiles"
    invalid: Literal["error", "drop"] = "error"
    split: Literal["scaffold", "random", "stratified", "column"] = "scaffold"
    split_column: str | None = None  # split: column (values train / val / test, case-insensitive)
    include_chirality: bool = False  # scaffold split: keep stereo marks in the scaffold SMILES
    # scaffold split: also hold out this share of the rows whose scaffolds training sees (seeded), as an
    # in-distribution test set beside the unseen-scaffold test split: the scaffold-OOD protocol
    # (`headstart evaluate RUN --data RUN/splits/id_test.csv --ood RUN/splits/test.csv`)
    id_test_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _split_column(self) -> MoleculesConfig:
        if (self.split == "column") != (self.split_column is not None):
            raise ValueError("data.molecules.split 'column' and data.molecules.split_column go together: set "
                             "split: column with split_column: <column holding train / val / test>, or neither")
        if self.id_test_fraction > 0 and self.split != "scaffold":
            raise ValueError(f"data.molecules.id_test_fraction holds out rows of the training scaffolds next to the "
                             f"unseen-scaffold test split, so it needs split: scaffold (got {self.split!r})")
        return self


class DataConfig(_Strict):
    train: str
    val: str | None = None
    test: str | None = None
    format: Literal["auto", "csv", "tsv", "parquet", "jsonl"] = "auto"
    # csv/tsv files without a header line: one name per field, in file order (then use them as columns)
    column_names: list[str] | None = Field(None, min_length=1)
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = Field("label", validate_default=True)  # default checked too: text_column may be 'label'
    # several targets (multi-task molecules, multi-output regression); replaces label_column when set
    label_columns: list[str] | None = Field(None, min_length=1)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    train_subset: int | None = Field(None, gt=0)
    # Seed of the val/test carve and train_subset; unset = trainer.seed. Fix it to keep the same rows while
    # trainer.seed varies (headstart compare does: every strategy and seed sees identical splits).
    split_seed: int | None = None
    max_length: int = Field(128, ge=8, le=8192)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    num_workers: int = Field(0, ge=0)
    # Seeded length-grouped training batches (mega-batches of 50 sorted by length): far less padding.
    group_by_length: bool = True
    # Images (task image_classification): idx(.gz) pairs, .npz, Parquet, or folders of class subfolders.
    image_column: str = "image"  # Parquet: arrays or encoded image bytes
    normalize: bool = True  # per-channel mean/std of the training split, written into mean/std below
    mean: list[float] | None = None  # per channel, in [0, 1] pixel units; filled by fit when normalize
    std: list[float] | None = None
    augment: AugmentConfig | None = None
    mix: MixConfig | None = None
    events: EventsConfig | None = None  # task sequence_classification: the events table's columns
    molecules: MoleculesConfig | None = None  # tasks molecule_*: SMILES column, invalid policy, split

    @field_validator("label_columns")
    @classmethod
    def _distinct_targets(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            twice = sorted({c for c in v if v.count(c) > 1})
            raise ValueError(f"data.label_columns names {twice} more than once; list each target column once")
        return v

    @field_validator("text_pair_column", "label_column")
    @classmethod
    def _distinct_columns(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Text, pair and label must be different columns: one column read as both would train on its labels."""
        roles = {"text_column": "texts", "text_pair_column": "second texts of the pairs", "label_column": "labels"}
        earlier = ["text_column"] if info.field_name == "text_pair_column" else ["text_column", "text_pair_column"]
        for key in earlier:
            if v is not None and info.data.get(key) == v:
                field = str(info.field_name)
                raise ValueError(
                    f"data.{key} and data.{field} are both {v!r}, but the {roles[key]} and the {roles[field]} must "
                    f"come from different columns; set data.{key} to the column holding the {roles[key]} and "
                    f"data.{field} to the one holding the {roles[field]}"
                )
        return v


class SequenceEncoderConfig(_Strict):
    """A ptls encoder built from the config: ``TrxEncoder`` (one embedding per categorical field, the numeric
    fields and the time feature) then an RNN (GRU / LSTM) or a transformer over the events."""

    encoder: Literal["gru", "lstm", "transformer"] = "gru"
    hidden_size: int = Field(64, ge=1)
    num_layers: int = Field(1, ge=1)  # each layer is one block of the layer map
    # embedding size per categorical field; unset fields get min(32, round(1.6 * vocab ** 0.56))
    embedding_dims: dict[str, int] = Field(default_factory=dict)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    n_heads: int = Field(4, ge=1)  # transformer only
    bidirectional: bool = False  # rnn only


class GraphEncoderConfig(_Strict):
    """A message-passing encoder over RDKit atom / bond features (torch-geometric): the atom embeddings are the
    stem, each message-passing layer (with its own bond embeddings, as in Hu et al. 2020) is one block, pooling
    gives the molecule vector."""

    conv: Literal["gine", "gin"] = "gine"  # gine: GIN with bond features in the messages (Hu et al., 2020)
    hidden_size: int = Field(300, ge=1)
    num_layers: int = Field(5, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pooling: Literal["mean", "sum", "max"] = "mean"
    residual: bool = True
    norm: Literal["batch", "layer", "none"] = "batch"


class UniMolConfig(_Strict):
    """Uni-Mol (unimol-tools) from local files only: nothing is downloaded."""

    weights: str  # the checkpoint (.pt), e.g. mol_pre_no_h_220816.pt
    dictionary: str | None = None  # its token dictionary; default: dict.txt beside the weights
    remove_hs: bool = True  # the no_h weights; all_h weights need false
    max_atoms: int = Field(256, ge=8)  # larger molecules are cropped (seeded), as unimol-tools does
    conformer_seed: int = 42  # RDKit conformer generation (cached by content)


class BackboneConfig(_Strict):
    type: Literal["hf", "torch", "ptls", "resnet", "graph", "unimol"] = "hf"
    name_or_path: str | None = None  # hf: local dir or hub id; empty = the packaged MiniLM
    pooling: Literal["mean", "cls", "max"] = "mean"
    module: str | None = None  # torch/ptls: "package.module:Factory"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None  # torch/ptls: weights loaded into the module before fine-tuning
    out_dim: int | None = None
    blocks: list[str] | None = None  # explicit layer map (module paths), overrides auto-detection
    block_container: str | None = None
    # resnet: a preset (resnet8 ... resnet34) or depths + widths per stage; in_channels from the data if unset
    arch: str | None = None
    depths: list[int] | None = None
    widths: list[int] | None = None
    in_channels: int | None = Field(None, ge=1)
    se: bool = False
    stem_stride: Literal[1, 2] = 1
    # Pairs (data.text_pair_column, npz xa/xb): cross = both texts in one transformer input (text only);
    # siamese = one shared encoder per side, then `fusion` of the two embeddings into the head.
    # auto: cross for text pairs, siamese for image pairs (fit writes the resolved value to config.yaml).
    pair: Literal["auto", "cross", "siamese"] = "auto"
    fusion: list[Literal["concat", "diff", "absdiff", "product", "cosine", "l2"]] = Field(
        default_factory=lambda: ["concat", "absdiff", "product"], min_length=1)
    # ptls without backbone.module: built from the data's fields (vocabulary sizes from the training split)
    sequence: SequenceEncoderConfig | None = None
    graph: GraphEncoderConfig | None = None  # type graph (filled with defaults when unset)
    unimol: UniMolConfig | None = None  # type unimol: local weight files

    @model_validator(mode="after")
    def _module_needed(self) -> BackboneConfig:
        if self.type == "torch" and not self.module:
            raise ValueError("backbone.type 'torch' needs backbone.module ('package.module:ClassName')")
        if self.module and self.sequence is not None:
            raise ValueError("backbone.module and backbone.sequence both describe the encoder; keep backbone.module "
                             "for your own ptls encoder, or backbone.sequence to build one from the data")
        return self


class HeadConfig(_Strict):
    type: Literal["mlp", "cosface", "arcface"] = "mlp"
    scale: float = Field(30.0, gt=0.0)  # cosface / arcface: logit scale s
    margin: float | None = Field(None, ge=0.0)  # cosface / arcface: m (default 0.35 / 0.5 rad)
    hidden_dims: list[int] = Field(default_factory=list)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "tanh", "silu", "leaky_relu"] = "gelu"


class LossConfig(_Strict):
    # ce / focal: classification (binary cross-entropy per task with several label_columns); mse / huber:
    # regression (the default there), on targets standardised with the training split's mean / std
    type: Literal["ce", "focal", "mse", "huber"] = "ce"
    huber_delta: float = Field(1.0, gt=0.0)  # in standardised units
    standardize: bool = True  # regression: train on (y - mean) / std of the training split; undone in outputs
    class_weights: Literal["balanced"] | list[float] | None = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)


class LoraConfig(_Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None


class StrategyConfig(_Strict):
    name: Literal["full", "linear_probe", "partial", "gradual", "lora"] = "full"
    freeze: str | None = None
    train_last: int | None = Field(None, ge=0)
    freeze_epochs: int = Field(0, ge=0)
    unfreeze_every: int | None = Field(None, ge=1)
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("freeze")
    @classmethod
    def _freeze_syntax(cls, v: str | None) -> str | None:
        """Reversed, negative or malformed ranges fail at load time; the bounds need the model's layer map."""
        from headstart.strategies import check_block_range

        if v is not None:
            check_block_range(v)
        return v

    @model_validator(mode="after")
    def _fields_of_the_strategy(self) -> StrategyConfig:
        """The checks of ``Strategy`` that need no backbone, so a bad section fails before any model is built."""
        if self.name == "partial" and (self.freeze is None) == (self.train_last is None):
            both = f"both are set (freeze {self.freeze!r}, train_last {self.train_last})" if self.freeze else "neither is set"
            raise ValueError(
                f"strategy 'partial' needs exactly one of strategy.freeze (a block range frozen for the whole run, "
                f"e.g. '0-3') or strategy.train_last (train the last k blocks, e.g. 2), but {both}; set one of them "
                f"(on the command line: --strategy partial:0-3 or --strategy partial:2)"
            )
        if self.name == "gradual" and self.freeze_epochs < 1:
            raise ValueError(
                f"strategy 'gradual' needs strategy.freeze_epochs >= 1 "
                f"({'got 0' if 'freeze_epochs' in self.model_fields_set else 'unset, so 0'}): it counts the "
                f"head-only epochs before the first block unfreezes; set it to 1 or more, or use 'full' to train "
                f"everything from the first epoch"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _gradual_defaults(cls, data: Any) -> Any:
        """Bare ``gradual`` is ULMFiT's schedule: one head-only epoch, then one more block (top first) per epoch."""
        if isinstance(data, dict) and data.get("name") == "gradual" and not {"freeze_epochs", "unfreeze_every"} & set(data):
            return {**data, "freeze_epochs": 1, "unfreeze_every": 1}
        return data


class OptimConfig(_Strict):
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(5e-5, gt=0.0)
    encoder_lr: float | None = Field(None, gt=0.0)
    encoder_lr_ratio: float = Field(1.0, gt=0.0)
    margin_lr: float | None = Field(None, gt=0.0)  # cosface / arcface class weights; default: lr
    layer_decay: float = Field(1.0, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0.0)
    scheduler: Literal["cosine", "linear", "plateau", "none"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    warmup_steps: int | None = Field(None, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)
    plateau_patience: int = Field(1, ge=0)
    plateau_monitor: str = "val_loss"
    grad_clip: float | None = Field(1.0, gt=0.0)
    accumulate: int = Field(1, ge=1)


class EarlyStoppingConfig(_Strict):
    monitor: str = "val_loss"
    patience: int = Field(3, ge=1)
    mode: Literal["min", "max"] = "min"
    min_delta: float = Field(0.0, ge=0.0)


class TrainerConfig(_Strict):
    epochs: int = Field(3, ge=1)
    precision: Literal["auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = "auto"
    seed: int = 42
    monitor: str = "val_acc"
    monitor_mode: Literal["min", "max"] = "max"
    save_top_k: int = Field(1, ge=1)
    early_stopping: EarlyStoppingConfig | None = None
    threads: int | None = Field(None, ge=1)
    deterministic: bool = False
    log_every_n_steps: int = Field(20, ge=1)
    limit_train_batches: int | float | None = None
    val_check_interval: int | float | None = None  # steps (int) or fraction of an epoch; None = each epoch
    progress_bar: bool = True


class CacheConfig(_Strict):
    """Feature cache of the frozen prefix (DESIGN rule 4); used only where it is exact."""

    enabled: bool = True
    dir: str | None = None  # default: $HEADSTART_CACHE_DIR or ~/.cache/headstart/features
    dtype: Literal["float32", "float16"] = "float32"  # float16 halves the disk size but is not exact


class OODConfig(_Strict):
    """Out-of-distribution detection scored at the end of ``fit`` (summary.json ``ood``, compare columns
    ``ood_<score>_<metric>``): an in-distribution file against an OOD file, as ``headstart evaluate RUN --data
    ID --ood OOD`` does. Unset files mean the scaffold-OOD protocol of molecules: the run's ``splits/id_test.csv``
    (data.molecules.id_test_fraction) against ``splits/test.csv`` (scaffolds training never saw)."""

    id_data: str | None = None
    ood_data: str | None = None
    temperature: float = Field(1.0, gt=0.0)  # energy score
    ridge: float = Field(0.0, ge=0.0)  # Mahalanobis: added to the tied covariance's diagonal

    @model_validator(mode="after")
    def _both_files(self) -> OODConfig:
        if (self.id_data is None) != (self.ood_data is None):
            raise ValueError("ood.id_data and ood.ood_data go together (an in-distribution file and an OOD file); "
                             "set both, or neither for the scaffold-OOD protocol of molecules")
        return self


class PretrainObjectiveConfig(_Strict):
    """What ``headstart pretrain`` trains the encoder on (``headstart fit`` always trains on the labels).

    ``attribute_masking`` (molecules, graph encoder, no labels read): the atom types of ``mask_rate`` of each
    molecule's atoms are hidden and predicted from the message-passing states (Hu et al., 2020).

    ``supervised`` (every task): fit on the labels, then export. ``coles`` (event sequences, no labels read):
    contrastive learning over ``split_count`` views (sub-sequences of ``min_len``..``max_len`` events) per entity
    and batch; views of one entity are positives, views of the batch's other entities negatives. An entity with
    fewer than ``min_len`` events has one possible view, its whole history: ``short_histories: keep`` uses it
    (identical views add no positive loss; the entity still serves as a negative), ``drop`` leaves it out of
    pretraining (counted in the log). The other keys configure ptls' CoLES loss.
    """

    name: str = "supervised"  # a registered objective (headstart.pretraining): supervised, coles, attribute_masking
    split_count: int = Field(5, ge=2)  # coles: views per entity in a batch
    min_len: int = Field(1, ge=1)  # coles: shortest view; 1 lets 2-event histories give different views
    max_len: int = Field(100, ge=1)  # coles: longest view
    sampling: Literal["random_slices", "random"] = "random_slices"  # coles: contiguous slices, or random subsets
    short_histories: Literal["keep", "drop"] = "keep"  # coles: entities with fewer than min_len events
    loss: Literal["contrastive", "softmax"] = "contrastive"  # coles: ptls ContrastiveLoss or SoftmaxLoss
    margin: float = Field(0.5, gt=0.0)  # coles contrastive: distance negatives are pushed beyond
    neg_count: int = Field(5, ge=1)  # coles contrastive: hardest negatives per view
    temperature: float = Field(0.05, gt=0.0)  # coles softmax
    mask_rate: float = Field(0.15, gt=0.0, lt=1.0)  # attribute_masking (molecules): share of atoms masked per graph

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        from headstart.pretraining.objectives import objective_names

        names = objective_names()
        if value not in names:
            raise ValueError(f"unknown pretraining objective '{value}'; choose one of {', '.join(names)}."
                             f"{did_you_mean(value, names)}")
        return value

    @model_validator(mode="after")
    def _view_lengths(self) -> PretrainObjectiveConfig:
        if self.max_len < self.min_len:
            raise ValueError(f"objective.max_len ({self.max_len}) is below objective.min_len ({self.min_len}); a view "
                             f"has min_len..max_len events: raise max_len or lower min_len")
        return self


TASKS = tuple(f"{m}_{k}" for m in ("text", "image", "sequence", "molecule") for k in ("classification", "regression"))
TaskName = Literal["auto", "text_classification", "text_regression", "image_classification", "image_regression",
                   "sequence_classification", "sequence_regression", "molecule_classification",
                   "molecule_regression"]


def task_parts(task: str) -> tuple[str, str]:
    """``molecule_regression`` -> (``molecule``, ``regression``): the modality plug-in and what is predicted."""
    modality, _, kind = task.rpartition("_")
    return modality, kind


class RunConfig(_Strict):
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
