"""The backbone protocol and its layer map.

Every backbone, whatever it wraps, exposes the same three things: ``forward(inputs) -> [B, D]``
features, ``out_dim`` and ``blocks()``, the ordered list of ``(name, module)`` from input to output.
Strategies, param groups, the LR schedule and ``headstart inspect`` work only on that layer map, so
a new encoder family needs an adapter and nothing else.

The layer map must cover every parameter exactly once (DESIGN rule 3): :func:`check_layer_map`
enforces it, and :func:`detect_blocks` builds one from any ``nn.Module`` by taking its largest
``ModuleList``/``Sequential`` as the core blocks and gathering what comes before into a ``stem``
block and what comes after into a ``neck`` block.

Gradient checkpointing (``trainer.gradient_checkpointing``) works on the same layer map:
:meth:`Backbone.set_gradient_checkpointing` takes the indices of the blocks that train and makes each of them
recompute its activations in the backward pass (torch's non-reentrant ``checkpoint``) instead of keeping them.
The generic way wraps the block module's ``forward`` (:func:`set_module_checkpointing`), which is exact when the
block is called as a module and its output depends only on its inputs, parameters, buffers and torch's RNG
(restored for the recompute; Python's ``random`` and numpy's are not). Adapters declare that with
``supports_gradient_checkpointing``; Hugging Face layers use transformers' own per-layer switch instead.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from headstart.errors import ConfigError, LayerMapError, did_you_mean, format_choices

__all__ = [
    "GRADIENT_CHECKPOINTING_BACKBONES",
    "Backbone",
    "BlockGroup",
    "check_layer_map",
    "checkpointed_call",
    "checkpointed_modules",
    "detect_blocks",
    "named_blocks_from_paths",
    "set_module_checkpointing",
]

# What trainer.gradient_checkpointing works with (said in the error of the adapters that do not opt in).
GRADIENT_CHECKPOINTING_BACKBONES = (
    "hf (the transformer layers through transformers' own per-layer switch, the other blocks as below), resnet, "
    "graph, unimol, ptls (the encoders built from backbone.sequence and user ptls encoders), torch (any nn.Module "
    "whose blocks run as modules in its forward) and siamese pairs of these"
)


class BlockGroup(nn.Module):
    """A block made of several sibling modules and/or loose parameters (e.g. a ``stem``).

    It holds references (the modules stay registered in the backbone too), so freezing or switching
    the mode of the group acts on the real modules.
    """

    def __init__(self, modules: Sequence[nn.Module], params: Sequence[nn.Parameter] = ()) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        for i, p in enumerate(params):
            self.register_parameter(f"loose_{i}", p)


class Backbone(nn.Module):
    """Base class of backbone adapters.

    Subclasses set ``self.out_dim`` and implement ``forward(inputs) -> Tensor[B, out_dim]`` and
    ``blocks()``. ``inputs`` is whatever the matching data pipeline yields (a dict of tensors for
    text, a ``PaddedBatch`` for event sequences, a tensor for generic modules).
    """

    out_dim: int
    # Whether every block of the layer map runs as a module call in forward whose result depends only on its
    # inputs, parameters, buffers and the RNG: then the generic per-block checkpointing below is exact.
    supports_gradient_checkpointing: bool = False

    def blocks(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def block_names(self) -> list[str]:
        return [name for name, _ in self.blocks()]

    def load_tokenizer(self) -> object | None:
        """The tokenizer that feeds this backbone (text encoders); None for images and tensors."""
        return None

    def describe(self) -> dict[str, object]:
        """Facts recorded in checkpoints and the run summary."""
        return {"type": type(self).__name__, "out_dim": self.out_dim, "blocks": self.block_names()}

    # ----- split forward (feature cache of a frozen prefix, DESIGN rule 4) ---------------------
    # A cut at ``k`` means blocks 0..k-1 ran; the cut after the last block is the pooled feature
    # vector and needs nothing from the adapter. Adapters that can resume from an intermediate block
    # override the three methods below; the state is a dict of tensors, per-token ones as
    # ``hidden [B, T, H]`` + ``attention_mask [B, T]`` so the cache stores only real tokens.

    def can_split(self, k: int) -> bool:
        """Whether ``forward_prefix``/``forward_suffix`` support a cut after block ``k - 1``."""
        return False

    def forward_prefix(self, inputs: object, k: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} cannot stop after block {k - 1}.")

    def forward_suffix(self, state: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot resume at block {k}.")

    def architecture(self) -> dict[str, object]:
        """What, besides the weights, decides the outputs (part of the feature-cache key)."""
        return {"type": type(self).__name__, "module": repr(self)}

    # ----- gradient checkpointing (trainer.gradient_checkpointing) --------------------------------
    def check_gradient_checkpointing(self) -> None:
        """ConfigError when this adapter has not declared that its blocks can be checkpointed."""
        if not self.supports_gradient_checkpointing:
            raise ConfigError(
                f"trainer.gradient_checkpointing is not supported by the backbone {type(self).__name__}: it does not "
                f"declare that its blocks run as module calls that recomputing gives back exactly. Supported: "
                f"{GRADIENT_CHECKPOINTING_BACKBONES}. Set trainer.gradient_checkpointing: false (or, for your own "
                f"adapter whose blocks qualify, set supports_gradient_checkpointing = True on its class)."
            )

    def set_gradient_checkpointing(self, blocks: Collection[int]) -> None:
        """Checkpoint exactly these blocks (indices into :meth:`blocks`); the others keep their activations.

        Only blocks that train need it: a frozen block's activations are not kept for a backward pass anyway.
        Called again whenever the trainable set changes (gradual unfreezing), so it also switches blocks off.
        """
        layer_map = self.blocks()
        wanted = {int(i) for i in blocks}
        bad = sorted(i for i in wanted if not 0 <= i < len(layer_map))
        if bad:
            raise LayerMapError(f"Cannot checkpoint block(s) {bad} of {type(self).__name__}: it has {len(layer_map)} "
                                f"blocks (0-{len(layer_map) - 1}: {format_choices(n for n, _ in layer_map)}).")
        if wanted:
            self.check_gradient_checkpointing()
        for i, (_, block) in enumerate(layer_map):
            self._checkpoint_block(block, i in wanted)

    def _checkpoint_block(self, block: nn.Module, on: bool) -> None:
        """Switch one block; adapters whose library has its own switch (transformers) override this."""
        for module in checkpointed_modules(block):
            set_module_checkpointing(module, on)


def checkpointed_modules(block: nn.Module) -> list[nn.Module]:
    """The modules that checkpointing a block wraps: the block itself, or a group's parts that hold parameters.

    A :class:`BlockGroup` is a view that forward never calls, so its parts are wrapped one by one. Parts without
    parameters (activations, dropout, pooling) are left alone: recomputing them saves nothing, and an in-place
    activation would change the input its own recompute reads.
    """
    if isinstance(block, BlockGroup):
        return [m for m in block.parts if _param_ids(m)]
    return [block]


def checkpointed_call(module: nn.Module, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` (``module``'s forward) under torch's non-reentrant activation checkpointing.

    * The RNG state is saved and restored for the recompute (torch's default), so dropout draws the same masks.
      torch picks the device whose RNG state it saves from the tensors among the positional arguments (nested in
      lists and dicts too): the keyword arguments go along as one positional dict, and so does one of the module's
      own tensors, so inputs held by objects torch does not look into (a ptls ``PaddedBatch``) still get the GPU's
      state saved. Positional tensors stay positional: torch keeps them for backward and checks that nothing
      modified them in place before the recompute.
    * The recompute runs the module in train mode again, so BatchNorm would update its running statistics a second
      time: the module's buffers are put back as they were after the forward (exactly one update per step).
    """
    anchor = next(iter(module.parameters()), None)
    if anchor is None:
        anchor = next(iter(module.buffers()), None)
    return checkpoint(_call, function, kwargs, anchor, *args, use_reentrant=False, preserve_rng_state=True,
                      context_fn=functools.partial(_recompute_keeps_buffers, module))


def _call(function: Callable[..., Any], kwargs: dict[str, Any], anchor: torch.Tensor | None, *args: Any) -> Any:
    return function(*args, **kwargs)


def _recompute_keeps_buffers(module: nn.Module) -> tuple[contextlib.AbstractContextManager[None],
                                                         contextlib.AbstractContextManager[None]]:
    """(forward context, recompute context) for ``checkpoint(context_fn=...)``.

    The buffers are copied before the recompute and written back after it, all of them: BatchNorm's kernels
    update the running statistics without bumping their version counters, so which ones moved cannot be
    detected. Buffers are small (norm statistics, position ids); the copy lives only during that block's backward.
    """
    return contextlib.nullcontext(), _restore_buffers(module)


@contextlib.contextmanager
def _restore_buffers(module: nn.Module) -> Iterator[None]:
    buffers = [b for b in module.buffers() if b is not None]
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:  # also when torch stops the recompute early (it raises once it has every tensor it needs)
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


class _CheckpointedForward:
    """Stands in for ``module.forward`` while the block trains with checkpointing.

    An instance attribute, not a wrapper module: the module, its class, its state-dict keys and its hooks stay
    as they are (``nn.Module.__call__`` runs the hooks outside the checkpoint, so they run once), and removing the
    attribute restores the module. Outside training or without autograd it calls the forward directly.
    """

    def __init__(self, module: nn.Module, previous: Callable[..., Any] | None) -> None:
        self.module = module
        self.previous = previous  # an instance-level forward set by someone else (e.g. accelerate hooks), or None

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.previous is not None:
            return self.previous(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.module.training and torch.is_grad_enabled():
            return checkpointed_call(self.module, self._forward, *args, **kwargs)
        return self._forward(*args, **kwargs)


def set_module_checkpointing(module: nn.Module, on: bool) -> None:
    """Wrap (``on``) or unwrap ``module``'s forward in :func:`checkpointed_call`; repeating a call changes nothing."""
    current = module.__dict__.get("forward")
    if on and not isinstance(current, _CheckpointedForward):
        module.forward = _CheckpointedForward(module, current)  # type: ignore[method-assign]
    elif not on and isinstance(current, _CheckpointedForward):
        if current.previous is None:
            del module.forward
        else:
            module.forward = current.previous  # type: ignore[method-assign]


def _param_ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def check_layer_map(model: nn.Module, blocks: list[tuple[str, nn.Module]]) -> None:
    """Every parameter of ``model`` must belong to exactly one block; no block may be empty."""
    if not blocks:
        raise LayerMapError(f"The layer map of {type(model).__name__} is empty: no blocks were found.")
    owner: dict[int, str] = {}
    for name, block in blocks:
        ids = _param_ids(block)
        if not ids:
            raise LayerMapError(
                f"Block '{name}' of {type(model).__name__} has no parameters; every block in the layer "
                f"map must hold parameters. Blocks: {format_choices(n for n, _ in blocks)}."
            )
        for pid in ids:
            if pid in owner:
                raise LayerMapError(
                    f"A parameter belongs to two blocks, '{owner[pid]}' and '{name}', in the layer map of "
                    f"{type(model).__name__}. Give each module to exactly one block."
                )
            owner[pid] = name
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [n for pid, n in names.items() if pid not in owner]
    if missing:
        raise LayerMapError(
            f"{len(missing)} parameter(s) of {type(model).__name__} are in no block of the layer map, "
            f"e.g. {format_choices(missing, limit=5)}. Add them to a block (backbone.blocks) so every "
            f"parameter is trained or frozen on purpose."
        )


def _is_container(module: nn.Module) -> bool:
    return isinstance(module, nn.ModuleList | nn.Sequential) and len(module) >= 2


def _largest_container(model: nn.Module) -> tuple[str, nn.Module] | None:
    best: tuple[int, str, nn.Module] | None = None
    for name, module in model.named_modules():
        if not name or not _is_container(module):
            continue
        n = sum(p.numel() for p in module.parameters())
        if n and (best is None or n > best[0]):
            best = (n, name, module)
    return None if best is None else (best[1], best[2])


def detect_blocks(model: nn.Module, container: str | None = None) -> list[tuple[str, nn.Module]]:
    """Layer map of an arbitrary module: ``stem``, the container's children, ``neck``.

    The container is the ``ModuleList``/``Sequential`` holding the most parameters unless
    ``container`` names one. Parameters registered before it go to ``stem`` and after it to
    ``neck`` (registration order of ``named_parameters``). Children of the container without
    parameters join the block before them. A model that is itself a ``Sequential``/``ModuleList``
    (and holds no inner one) gives one block per child; a module without any container is one block.
    """
    if container is not None:
        modules = dict(model.named_modules())
        if container not in modules:
            choices = [n for n, m in modules.items() if isinstance(m, nn.ModuleList | nn.Sequential) and n]
            raise LayerMapError(
                f"backbone.block_container '{container}' is not a module of {type(model).__name__}."
                f"{did_you_mean(container, choices)} ModuleList/Sequential candidates: {format_choices(choices)}."
            )
        found: tuple[str, nn.Module] | None = (container, modules[container])
    else:
        found = _largest_container(model)
        if found is None and _is_container(model) and _param_ids(model):
            found = ("", model)  # the model itself is the Sequential/ModuleList of blocks
    if found is None:
        return [("body", model)]
    cname, cmod = found
    inside = _param_ids(cmod)
    before: list[tuple[str, nn.Parameter]] = []
    after: list[tuple[str, nn.Parameter]] = []
    seen_inside = False
    for pname, p in model.named_parameters():
        if id(p) in inside:
            seen_inside = True
        elif seen_inside:
            after.append((pname, p))
        else:
            before.append((pname, p))
    blocks: list[tuple[str, nn.Module]] = []
    stem = _group_params(model, before)
    if stem is not None:
        blocks.append(("stem", stem))
    blocks.extend(_container_blocks(cname, cmod))
    neck = _group_params(model, after)
    if neck is not None:
        blocks.append(("neck", neck))
    return blocks


def _container_blocks(cname: str, cmod: nn.Module) -> list[tuple[str, nn.Module]]:
    """One block per child holding parameters; parameter-free children (activations, dropout, pooling)
    join the block before them (the first block when they lead), so they follow its train/eval mode
    instead of forming empty blocks."""
    groups: list[tuple[str, list[nn.Module]]] = []
    leading: list[nn.Module] = []
    for child_name, child in cmod.named_children():
        if _param_ids(child):
            groups.append((f"{cname}.{child_name}" if cname else child_name, [*leading, child]))
            leading = []
        elif groups:
            groups[-1][1].append(child)
        else:
            leading.append(child)
    return [(name, mods[0] if len(mods) == 1 else BlockGroup(mods)) for name, mods in groups]


def _group_params(model: nn.Module, params: list[tuple[str, nn.Parameter]]) -> nn.Module | None:
    """Smallest set of top-most submodules (plus loose params) that own exactly ``params``."""
    if not params:
        return None
    wanted = {id(p) for _, p in params}
    modules: list[nn.Module] = []
    covered: set[int] = set()
    loose: list[nn.Parameter] = []
    for pname, p in params:
        if id(p) in covered:
            continue
        parts = pname.split(".")
        owner = None
        # Walk down from the root and take the highest module whose parameters are all wanted.
        for depth in range(1, len(parts)):
            candidate = model.get_submodule(".".join(parts[:depth]))
            ids = _param_ids(candidate)
            if ids and ids <= wanted:
                owner = candidate
                break
        if owner is None:
            loose.append(p)
            covered.add(id(p))
        else:
            modules.append(owner)
            covered |= _param_ids(owner)
    if len(modules) == 1 and not loose:
        return modules[0]
    return BlockGroup(modules, loose)


def named_blocks_from_paths(model: nn.Module, paths: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Layer map given explicitly as module paths (``backbone.blocks`` in a config)."""
    modules = dict(model.named_modules())
    bad = [p for p in paths if p not in modules]
    if bad:
        hints = " ".join(did_you_mean(b, modules).strip() for b in bad)
        raise LayerMapError(
            f"backbone.blocks names module(s) that {type(model).__name__} does not have: "
            f"{format_choices(bad)}. {hints} Valid module paths include: "
            f"{format_choices([n for n in modules if n], limit=40)}."
        )
    return [(p, modules[p]) for p in paths]


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
