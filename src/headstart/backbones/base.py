"""The backbone protocol and its layer map.

Every backbone, whatever it wraps, exposes the same three things: ``forward(inputs) -> [B, D]``
features, ``out_dim`` and ``blocks()``, the ordered list of ``(name, module)`` from input to output.
Strategies, param groups, the LR schedule and ``headstart inspect`` work only on that layer map, so
a new encoder family needs an adapter and nothing else.

The layer map must cover every parameter exactly once (DESIGN rule 3): :func:`check_layer_map`
enforces it, and :func:`detect_blocks` builds one from any ``nn.Module`` by taking its largest
``ModuleList``/``Sequential`` as the core blocks and gathering what comes before into a ``stem``
block and what comes after into a ``neck`` block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from headstart.errors import LayerMapError, did_you_mean, format_choices

__all__ = [
    "Backbone",
    "BlockGroup",
    "check_layer_map",
    "detect_blocks",
    "named_blocks_from_paths",
]


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
