"""A ptls sequence encoder built from ``backbone.sequence`` and the data's event fields (no user code).

Why our own assembly rather than ptls' ``RnnSeqEncoder``: its RNN is one ``nn.GRU``/``nn.LSTM`` holding
every layer, so a strategy could only freeze all of it or none, and its backward direction reads the
padding (ptls warns about it). Here each RNN layer is its own module over packed sequences, so padding
never enters the recurrence and a longer padding gives the same features. The transformer is ptls'
``TransformerSeqEncoder`` as it is (its state-dict keys stay those of ptls checkpoints); its forward is
run layer by layer by the adapter, which is what the layer map and the feature cache need.

Layer map, input to output:

* ``stem``: the ``TrxEncoder`` (one embedding per categorical field, the numeric fields as they come,
  batch-normalised over real events only); for a transformer also the CLS starter and the positional
  encoding (so its random start shift stops when the stem is frozen);
* ``layer_0`` ... ``layer_{N-1}``: one RNN layer (dropout on its input from the second on) or one
  transformer layer each;
* ``neck`` (transformer only): the final LayerNorm.

Features: an RNN gives the state after the last real event (bidirectional: that forward state next to
the backward state at the first event, ``2 * hidden_size``); a transformer gives its CLS output.

Call the backbone, not ``backbone.module``: it maps field names that torch refuses as module keys
(:func:`module_keys`) and runs the layers as the layer map cuts them.
:meth:`SequenceEncoderBackbone.architecture` records the resolved settings and the fields (vocabulary
sizes included); :func:`rebuild_sequence_encoder` turns that record back into the same module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from headstart.backbones.base import BlockGroup
from headstart.backbones.ptls import PtlsBackbone, exact_attention
from headstart.errors import CheckpointError, ConfigError, DataError, did_you_mean, format_choices

if TYPE_CHECKING:
    from headstart.config import SequenceEncoderConfig

__all__ = [
    "SEQUENCE_ENCODERS",
    "RnnLayer",
    "RnnSequenceEncoder",
    "SequenceEncoderBackbone",
    "build_sequence_encoder",
    "default_embedding_dim",
    "module_keys",
    "rebuild_sequence_encoder",
]

SEQUENCE_ENCODERS = ("gru", "lstm", "transformer")
_MAX_SEQ_LEN = 5000  # ptls' positional-encoding table length (its default)


def default_embedding_dim(vocab_size: int) -> int:
    """Embedding width of a categorical field with ``vocab_size`` ids (padding and OOV included)."""
    return min(32, round(1.6 * vocab_size**0.56))


class RnnLayer(nn.Module):
    """One single-layer GRU/LSTM run over packed sequences: padding never enters the recurrence."""

    def __init__(self, kind: str, input_size: int, hidden_size: int, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        # Dropout on the input of layers after the first = torch's dropout between stacked RNN layers.
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        rnn = nn.GRU if kind == "gru" else nn.LSTM
        self.rnn = rnn(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, T, in]`` and lengths ``[B]`` -> ``[B, T, hidden * directions]``, zeros after each length."""
        packed = pack_padded_sequence(self.dropout(hidden), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=hidden.shape[1])
        return out


class RnnSequenceEncoder(nn.Module):
    """``TrxEncoder`` then ``num_layers`` :class:`RnnLayer` modules; ``PaddedBatch`` -> ``[B, embedding_size]``."""

    def __init__(self, trx_encoder: nn.Module, kind: str, hidden_size: int, num_layers: int, bidirectional: bool,
                 dropout: float) -> None:
        super().__init__()
        self.trx_encoder = trx_encoder
        self.hidden_size = int(hidden_size)
        self.bidirectional = bool(bidirectional)
        width = self.hidden_size * (2 if bidirectional else 1)
        self.layers = nn.ModuleList(
            RnnLayer(kind, trx_encoder.output_size if i == 0 else width, self.hidden_size, bidirectional,
                     dropout if i > 0 else 0.0)
            for i in range(num_layers)
        )

    @property
    def embedding_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    def pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Forward state at the last real event; backward state at the first (it has read the whole sequence)."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, lengths.to(hidden.device) - 1]
        if not self.bidirectional:
            return last
        return torch.cat([last[:, : self.hidden_size], hidden[:, 0, self.hidden_size :]], dim=-1)

    def forward(self, batch: Any) -> torch.Tensor:
        """Standalone use; payload keys are the :func:`module_keys` (the backbone maps the field names)."""
        lengths = _lengths(batch.seq_lens)
        hidden = self.trx_encoder(batch).payload
        for layer in self.layers:
            hidden = layer(hidden, lengths)
        return self.pool(hidden, lengths)


def module_keys(fields: list[str]) -> dict[str, str]:
    """Field -> its key in the ``TrxEncoder``'s ``ModuleDict``: the field name, unless torch refuses it there.

    A ``ModuleDict`` key cannot contain '.' nor shadow one of its attributes (``type``, ``float``, ``keys``
    ...), and both are ordinary column names; such a field gets '_' in place of '.' and a trailing '_'.
    """
    probe = nn.ModuleDict()
    taken = set(fields)
    keys: dict[str, str] = {}
    for field in fields:
        key = field
        if not key or "." in key or hasattr(probe, key):
            key = field.replace(".", "_") + "_"
            while hasattr(probe, key) or key in taken:
                key += "_"
            taken.add(key)
        keys[field] = key
    return keys


def _lengths(seq_lens: torch.Tensor) -> torch.Tensor:
    # An entity without events would be an empty packed sequence (an error in torch): it reads one padding step.
    return seq_lens.long().clamp_min(1)


class SequenceEncoderBackbone(PtlsBackbone):
    """The encoder :func:`build_sequence_encoder` assembles, with its layer map and its architecture record."""

    def __init__(self, module: nn.Module, record: dict[str, Any]) -> None:
        super().__init__(module)
        self.record = record
        self.kind: str = record["sequence"]["encoder"]
        self.fields: list[str] = [*record["fields"]["categorical"], *record["fields"]["numeric"]]
        self._keys = module_keys(self.fields)

    # ----- layer map ------------------------------------------------------------------------------
    def _layers(self) -> nn.ModuleList:
        return self.module.layers if self.kind != "transformer" else self.module.seq_encoder.enc.layers

    def blocks(self) -> list[tuple[str, nn.Module]]:
        layers = [(f"layer_{i}", layer) for i, layer in enumerate(self._layers())]
        if self.kind != "transformer":
            return [("stem", self.module.trx_encoder), *layers]
        seq = self.module.seq_encoder
        stem = BlockGroup([self.module.trx_encoder, seq.pe], [seq.starter])
        return [("stem", stem), *layers, ("neck", seq.enc.norm)]

    # ----- forward: stem -> layers -> pooling, each step on a {hidden, attention_mask} state --------
    def _stem(self, batch: Any) -> dict[str, torch.Tensor]:
        payload = getattr(batch, "payload", None)
        if not isinstance(payload, dict) or getattr(batch, "seq_lens", None) is None:
            raise DataError(
                f"The sequence encoder takes a ptls PaddedBatch (payload: field -> [B, T] tensor, seq_lens: [B]), "
                f"got a {type(batch).__name__}. Feed it the loader of the sequence data (task "
                f"sequence_classification) or build a ptls.data_load.padded_batch.PaddedBatch."
            )
        missing = [f for f in self.fields if f not in payload]
        if missing:
            raise DataError(
                f"The batch lacks the event field(s) {format_choices(missing)} that the sequence encoder was built "
                f"for (fields {format_choices(self.fields)}); it holds {format_choices(payload)}. Feed data with "
                f"the same data.events fields as the run that built the encoder."
            )
        if any(key != field for field, key in self._keys.items()):
            from ptls.data_load.padded_batch import PaddedBatch

            batch = PaddedBatch({self._keys[f]: payload[f] for f in self.fields}, batch.seq_lens)
        hidden = self.module.trx_encoder(batch).payload
        lengths = batch.seq_lens.to(hidden.device)
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        if self.kind == "transformer":
            seq = self.module.seq_encoder
            hidden = seq.pe(hidden)
            hidden = torch.cat([seq.starter.expand(hidden.shape[0], 1, hidden.shape[2]), hidden], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        return {"hidden": hidden, "attention_mask": mask.long()}

    def _run_layers(self, state: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
        hidden, mask = state["hidden"], state["attention_mask"]
        layers = self._layers()
        if self.kind == "transformer":
            padding = mask == 0
            with exact_attention(layers):
                for layer in layers[start:stop]:
                    hidden = layer(hidden, src_key_padding_mask=padding)
        else:
            lengths = _lengths(mask.sum(dim=1))
            for layer in layers[start:stop]:
                hidden = layer(hidden, lengths)
        return {"hidden": hidden, "attention_mask": mask}

    def _pool(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = state["hidden"]
        if self.kind == "transformer":
            return self.module.seq_encoder.enc.norm(hidden[:, 0])
        return self.module.pool(hidden, _lengths(state["attention_mask"].sum(dim=1)))

    def forward(self, inputs: Any) -> torch.Tensor:
        return self._pool(self._run_layers(self._stem(inputs), 0, len(self._layers())))

    # ----- split forward (feature cache): cut k = blocks 0..k-1 ran ------------------------------------
    def can_split(self, k: int) -> bool:
        return 1 <= k < len(self.blocks())

    def forward_prefix(self, inputs: Any, k: int) -> dict[str, torch.Tensor]:
        if not self.can_split(k):
            return super().forward_prefix(inputs, k)
        return self._run_layers(self._stem(inputs), 0, k - 1)

    def forward_suffix(self, state: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        if not self.can_split(k):
            return super().forward_suffix(state, k)
        return self._pool(self._run_layers(state, k - 1, len(self._layers())))

    # ----- records ------------------------------------------------------------------------------
    def describe(self) -> dict[str, object]:
        return {**super().describe(), "sequence": self.record["sequence"], "fields": self.record["fields"]}

    def architecture(self) -> dict[str, object]:
        return {"type": type(self).__name__, **self.record}


def build_sequence_encoder(
    spec: SequenceEncoderConfig, categorical: dict[str, int], numeric: list[str]
) -> SequenceEncoderBackbone:
    """The encoder ``backbone.sequence`` describes over these event fields.

    ``categorical`` maps each categorical field to its vocabulary size (padding id 0 and OOV id 1
    included); ``numeric`` names the numeric fields (the time feature too), read as they come since the
    data reader has already transformed them. Fields are taken in sorted order, so the order in which the
    caller lists them does not change the module.
    """
    categorical = {str(f): categorical[f] for f in sorted(categorical)}
    numeric = sorted(str(f) for f in numeric)
    sequence = _resolved_spec(spec, categorical, numeric)
    record = {"sequence": sequence, "fields": {"categorical": categorical, "numeric": numeric},
              "layout": _layout(sequence)}
    return SequenceEncoderBackbone(_assemble(sequence, categorical, numeric), record)


def rebuild_sequence_encoder(record: dict[str, Any]) -> SequenceEncoderBackbone:
    """The module an :meth:`SequenceEncoderBackbone.architecture` record describes (weights not loaded)."""
    from headstart.config import SequenceEncoderConfig

    try:
        spec = SequenceEncoderConfig(**record["sequence"])
        fields = record["fields"]
        backbone = build_sequence_encoder(spec, dict(fields["categorical"]), list(fields["numeric"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"The architecture record of the sequence encoder is not usable ({type(exc).__name__}: {exc}); "
            f"expected the dict SequenceEncoderBackbone.architecture() writes, with 'sequence', 'fields' "
            f"(categorical, numeric) and 'layout', got keys {format_choices(record) if isinstance(record, dict) else record!r}."
        ) from exc
    recorded = record.get("layout")
    if recorded != backbone.record["layout"]:
        raise CheckpointError(
            f"The sequence encoder's record was written with the layout {recorded}, but this headstart builds "
            f"{backbone.record['layout']} for the same settings, so its weights would not mean the same. Use the "
            f"headstart version that wrote the checkpoint."
        )
    return backbone


def _resolved_spec(spec: Any, categorical: dict[str, int], numeric: list[str]) -> dict[str, Any]:
    """The spec as plain data with every default made explicit (embedding widths per field)."""
    encoder = str(spec.encoder)
    if encoder not in SEQUENCE_ENCODERS:
        raise ConfigError(f"backbone.sequence.encoder '{encoder}' is unknown.{did_you_mean(encoder, SEQUENCE_ENCODERS)} "
                          f"Valid: {', '.join(SEQUENCE_ENCODERS)}.")
    if not categorical and not numeric:
        raise DataError("The sequence encoder needs at least one event field, got no categorical and no numeric "
                        "field. List columns under data.events.categorical or data.events.numeric.")
    twice = sorted(set(categorical) & set(numeric))
    if twice:
        raise DataError(f"The event field(s) {format_choices(twice)} are given as both categorical and numeric; "
                        f"give each field one role in data.events.")
    bad = {f: v for f, v in categorical.items() if isinstance(v, bool) or not isinstance(v, int) or v < 2}
    if bad:
        raise DataError(f"Vocabulary sizes must be whole numbers >= 2 (padding id 0, OOV id 1, then the values seen), "
                        f"got {bad}. They come from the training split's vocabularies (the run's data state).")
    dims = dict(spec.embedding_dims or {})
    unknown = [f for f in dims if f not in categorical]
    if unknown:
        hints = " ".join(did_you_mean(f, categorical).strip() for f in unknown)
        raise ConfigError(f"backbone.sequence.embedding_dims names {format_choices(unknown)}, which "
                          f"{'is' if len(unknown) == 1 else 'are'} not a categorical event field. {hints} Categorical "
                          f"fields: {format_choices(categorical) or 'none'}.".replace("  ", " "))
    small = {f: d for f, d in dims.items() if isinstance(d, bool) or not isinstance(d, int) or d < 1}
    if small:
        raise ConfigError(f"backbone.sequence.embedding_dims must be whole numbers >= 1, got {small}.")
    hidden, heads = int(spec.hidden_size), int(spec.n_heads)
    if encoder == "transformer":
        if spec.bidirectional:
            raise ConfigError("backbone.sequence.bidirectional applies to gru / lstm; a transformer already reads "
                              "the whole sequence in both directions. Remove bidirectional or pick encoder gru/lstm.")
        if hidden % heads:
            fits = [h for h in range(1, hidden + 1) if hidden % h == 0]
            raise ConfigError(f"backbone.sequence.n_heads={heads} does not divide hidden_size={hidden}: each attention "
                              f"head gets hidden_size / n_heads channels. Use n_heads in {fits} or change hidden_size.")
    return {
        "encoder": encoder, "hidden_size": hidden, "num_layers": int(spec.num_layers),
        "embedding_dims": {f: int(dims.get(f, default_embedding_dim(v))) for f, v in categorical.items()},
        "dropout": float(spec.dropout), "n_heads": heads, "bidirectional": bool(spec.bidirectional),
    }


def _layout(sequence: dict[str, Any]) -> dict[str, Any]:
    """Fixed choices of this builder (not in the config): recorded so a rebuild can refuse a different one."""
    layout: dict[str, Any] = {"numeric": "identity", "numeric_norm": "batch_norm_over_events"}
    if sequence["encoder"] == "transformer":
        h = sequence["hidden_size"]
        return {**layout, "projection": h, "ffn_size": 4 * h, "positional": "sinusoidal", "max_seq_len": _MAX_SEQ_LEN,
                "pooling": "cls", "final_norm": True}
    return {**layout, "pooling": "last_event"}


def _assemble(sequence: dict[str, Any], categorical: dict[str, int], numeric: list[str]) -> nn.Module:
    from ptls.nn import TransformerSeqEncoder, TrxEncoder

    transformer = sequence["encoder"] == "transformer"
    hidden = sequence["hidden_size"]
    keys = module_keys([*categorical, *numeric])
    trx = TrxEncoder(
        embeddings={keys[f]: {"in": v, "out": sequence["embedding_dims"][f]} for f, v in categorical.items()},
        numeric_values={keys[f]: "identity" for f in numeric},
        use_batch_norm=True,
        use_batch_norm_with_lens=True,  # statistics of real events only, so padding changes nothing
        linear_projection_size=hidden if transformer else 0,  # the transformer's width is hidden_size
    )
    if not transformer:
        return RnnSequenceEncoder(trx, sequence["encoder"], hidden, sequence["num_layers"], sequence["bidirectional"],
                                  sequence["dropout"])
    return TransformerSeqEncoder(
        trx_encoder=trx, is_reduce_sequence=True, starter="randn", n_heads=sequence["n_heads"], dim_hidden=4 * hidden,
        dropout=sequence["dropout"], n_layers=sequence["num_layers"], use_positional_encoding=True,
        use_start_random_shift=True, max_seq_len=_MAX_SEQ_LEN, use_norm_layer=True,
    )
