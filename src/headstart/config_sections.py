"""The sections of a run config (``data:``, ``backbone:``, ``strategy:`` ...), each a strict pydantic model.

:mod:`headstart.config` assembles them into :class:`~headstart.config.RunConfig`, resolves what depends on
several sections (the task, target defaults) and reads YAML; import the sections from there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from headstart.errors import did_you_mean

__all__ = [
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
    "SequenceEncoderConfig",
    "StrategyConfig",
    "Strict",
    "TrainerConfig",
    "UniMolConfig",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(Strict):
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


class MixConfig(Strict):
    """Fine-tune on B mixed with a fraction of dataset A (same label space); metrics stay on B only."""

    path: str
    ratio: float = Field(0.2, gt=0.0, le=10.0)  # A rows added = ratio x B training rows (sampled, seeded)


class EventsConfig(Strict):
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


class MoleculesConfig(Strict):
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


class DataConfig(Strict):
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
    # Text: fit stops when more than this share of the training text's word pieces are the tokenizer's unknown
    # token (an English vocabulary on Chinese text, say); accept_unk: true trains anyway.
    max_unk_rate: float = Field(0.05, ge=0.0, le=1.0)
    accept_unk: bool = False
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


class SequenceEncoderConfig(Strict):
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


class GraphEncoderConfig(Strict):
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


class UniMolConfig(Strict):
    """Uni-Mol (unimol-tools) from local files only: nothing is downloaded."""

    weights: str  # the checkpoint (.pt), e.g. mol_pre_no_h_220816.pt
    dictionary: str | None = None  # its token dictionary; default: dict.txt beside the weights
    remove_hs: bool = True  # the no_h weights; all_h weights need false
    max_atoms: int = Field(256, ge=8)  # larger molecules are cropped (seeded), as unimol-tools does
    conformer_seed: int = 42  # RDKit conformer generation (cached by content)


class ExtendVocabConfig(Strict):
    """``backbone.extend_vocab``: add the characters / words of the data the tokenizer maps to [UNK] (see
    headstart.data.vocab_extension for the rule and how new embedding rows start)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)

    # "train": the training split's text (and text_pair) column; else a text file (one document per line) or a
    # csv / tsv / parquet / jsonl file read like data.train (its data.text_column / text_pair_column)
    from_: str = Field("train", alias="from", min_length=1)
    min_freq: int = Field(2, ge=1)  # a token must occur at least this often to be added
    max_new: int = Field(20000, ge=1)  # at most this many tokens, the most frequent first


class BackboneConfig(Strict):
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
    extend_vocab: ExtendVocabConfig | None = None  # hf: add the data's missing characters / words to the tokenizer

    @model_validator(mode="after")
    def _module_needed(self) -> BackboneConfig:
        if self.type == "torch" and not self.module:
            raise ValueError("backbone.type 'torch' needs backbone.module ('package.module:ClassName')")
        if self.module and self.sequence is not None:
            raise ValueError("backbone.module and backbone.sequence both describe the encoder; keep backbone.module "
                             "for your own ptls encoder, or backbone.sequence to build one from the data")
        if self.extend_vocab is not None and self.type != "hf":
            raise ValueError(f"backbone.extend_vocab adds tokens to a Hugging Face tokenizer, so it needs backbone.type "
                             f"'hf', not '{self.type}'; remove backbone.extend_vocab or use an hf backbone")
        return self


class HeadConfig(Strict):
    type: Literal["mlp", "cosface", "arcface"] = "mlp"
    scale: float = Field(30.0, gt=0.0)  # cosface / arcface: logit scale s
    margin: float | None = Field(None, ge=0.0)  # cosface / arcface: m (default 0.35 / 0.5 rad)
    hidden_dims: list[int] = Field(default_factory=list)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "tanh", "silu", "leaky_relu"] = "gelu"


class LossConfig(Strict):
    # ce / focal: classification (binary cross-entropy per task with several label_columns); mse / huber:
    # regression (the default there), on targets standardised with the training split's mean / std
    type: Literal["ce", "focal", "mse", "huber"] = "ce"
    huber_delta: float = Field(1.0, gt=0.0)  # in standardised units
    standardize: bool = True  # regression: train on (y - mean) / std of the training split; undone in outputs
    class_weights: Literal["balanced"] | list[float] | None = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)


class LoraConfig(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None


class StrategyConfig(Strict):
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


class OptimConfig(Strict):
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


class EarlyStoppingConfig(Strict):
    monitor: str = "val_loss"
    patience: int = Field(3, ge=1)
    mode: Literal["min", "max"] = "min"
    min_delta: float = Field(0.0, ge=0.0)


class TrainerConfig(Strict):
    epochs: int = Field(3, ge=1)
    precision: Literal["auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = "auto"  # per node; 2 or more processes train with DDP (docs: "Beyond one process")
    num_nodes: int = Field(1, ge=1)
    # Lightning's strategy. Several processes run DDP (the weights, param groups and frozen-weight store are
    # whole on every rank); FSDP / DeepSpeed sharding and ddp_spawn are not supported.
    strategy: Literal["auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false"] = "auto"
    # Recompute each training block's activations in the backward pass instead of keeping them: less memory for
    # more time per step (benchmarks/results/scale.md). Only blocks that train are checkpointed.
    gradient_checkpointing: bool = False
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


class CacheConfig(Strict):
    """Feature cache of the frozen prefix (DESIGN rule 4); used only where it is exact."""

    enabled: bool = True
    dir: str | None = None  # default: $HEADSTART_CACHE_DIR or ~/.cache/headstart/features
    dtype: Literal["float32", "float16"] = "float32"  # float16 halves the disk size but is not exact


class OODConfig(Strict):
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


class PretrainObjectiveConfig(Strict):
    """What ``headstart pretrain`` trains the encoder on (``headstart fit`` always trains on the labels).

    ``attribute_masking`` (molecules, graph encoder, no labels read): the atom types of ``mask_rate`` of each
    molecule's atoms are hidden and predicted from the message-passing states (Hu et al., 2020).

    ``mlm`` (text, Hugging Face encoder, no labels read): masked-language-model training continued on the text of
    data.train (its text / text_pair columns) and ``text_files``; ``mask_rate`` of each document's tokens are
    picked, per word piece (``masking: token``; on CJK text a BERT tokenizer makes every character a piece, so
    this is character masking) or per word (``whole_word``: all pieces of a word together), and replaced 80/10/10
    by the mask token / a random token / themselves (Devlin et al., 2019).

    ``supervised`` (every task): fit on the labels, then export. ``coles`` (event sequences, no labels read):
    contrastive learning over ``split_count`` views (sub-sequences of ``min_len``..``max_len`` events) per entity
    and batch; views of one entity are positives, views of the batch's other entities negatives. An entity with
    fewer than ``min_len`` events has one possible view, its whole history: ``short_histories: keep`` uses it
    (identical views add no positive loss; the entity still serves as a negative), ``drop`` leaves it out of
    pretraining (counted in the log). The other keys configure ptls' CoLES loss.
    """

    name: str = "supervised"  # a registered objective (headstart.pretraining): supervised, coles, attribute_masking, mlm
    split_count: int = Field(5, ge=2)  # coles: views per entity in a batch
    min_len: int = Field(1, ge=1)  # coles: shortest view; 1 lets 2-event histories give different views
    max_len: int = Field(100, ge=1)  # coles: longest view
    sampling: Literal["random_slices", "random"] = "random_slices"  # coles: contiguous slices, or random subsets
    short_histories: Literal["keep", "drop"] = "keep"  # coles: entities with fewer than min_len events
    loss: Literal["contrastive", "softmax"] = "contrastive"  # coles: ptls ContrastiveLoss or SoftmaxLoss
    margin: float = Field(0.5, gt=0.0)  # coles contrastive: distance negatives are pushed beyond
    neg_count: int = Field(5, ge=1)  # coles contrastive: hardest negatives per view
    temperature: float = Field(0.05, gt=0.0)  # coles softmax
    mask_rate: float = Field(0.15, gt=0.0, lt=1.0)  # attribute_masking: share of atoms per graph; mlm: of tokens
    # mlm: token = each word piece alone (character masking on CJK text), whole_word = a word's pieces together
    masking: Literal["token", "whole_word"] = "token"
    # mlm: more unlabelled text besides data.train's text column: csv / tsv / jsonl / parquet (their
    # data.text_column), or any other UTF-8 file (.txt ...) with one document per line
    text_files: list[str] = Field(default_factory=list)

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
