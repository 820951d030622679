"""The registry of pretraining objectives, and ``run_pretrain``: the one path of ``headstart pretrain``.

An objective turns a modality's data (labelled or not) into a loss on the backbone protocol and writes a run
directory with ``pretrained.safetensors`` + ``pretrained.json`` (the encoder's weights, its architecture record
and the modality's data state), the export ``fit --pretrain RUN_DIR`` loads whatever trained it.
``cfg.objective.name`` picks it:

* ``supervised`` (every modality): today's path, ``fit`` on the labels followed by the export;
* ``coles`` (event sequences, :mod:`headstart.pretraining.coles`): contrastive views of each entity's events;
* ``attribute_masking`` (molecules with the graph encoder, :mod:`headstart.pretraining.masking`): the features of
  some atoms are masked and their elements predicted from the message-passing states (Hu et al., 2020).
* ``mlm`` (text with a Hugging Face encoder, :mod:`headstart.pretraining.mlm`): masked-language-model training
  continued on unlabelled text (domain- / task-adaptive pretraining, Gururangan et al., 2020).

A new objective subclasses :class:`Objective` (a self-supervised one
:class:`~headstart.pretraining.engine.SelfSupervisedObjective`, which only prepares its data and module) and calls
:func:`register_objective`; pretrain, the CLI and the
config check (``objective.name``) then know it. Built-in objectives are listed here by module so that config
validation can name them without importing torch (the CLI validates a config before loading Lightning).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.errors import ConfigError, did_you_mean, format_choices

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = [
    "Objective",
    "PretrainResult",
    "SupervisedObjective",
    "get_objective",
    "objective_names",
    "register_objective",
    "run_pretrain",
]


@dataclass
class PretrainResult:
    """A finished pretraining run: its directory and ``summary.json`` (``pretrained_export`` names the export)."""

    run_dir: Path
    summary: dict[str, Any]


class Objective:
    """Base class of pretraining objectives; subclasses set the class attributes and override :meth:`run`.

    ``modalities``: the modality names (``Modality.name``) it trains on; empty means every modality.
    ``settings``: the ``objective.*`` keys it reads besides ``name``; one of the others set to a non-default
    value is refused before anything runs (it would be silently ignored).
    """

    name: str = ""
    modalities: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()

    def check(self, cfg: RunConfig) -> None:
        """Refuse (or resolve into ``cfg``) what cannot work, before the run directory is touched."""

    def run(self, cfg: RunConfig, *, overwrite: bool, resume: bool, keep_last: bool,
            verbose: bool) -> PretrainResult:
        """Train the encoder as ``cfg`` says and write the run directory with the export."""
        raise NotImplementedError


class SupervisedObjective(Objective):
    """Fit on the labels exactly like ``headstart fit``, then export the best weights (head included)."""

    name = "supervised"

    def run(self, cfg: RunConfig, *, overwrite: bool, resume: bool, keep_last: bool,
            verbose: bool) -> PretrainResult:
        from headstart.experiments.fit import run_fit

        result = run_fit(cfg, overwrite=overwrite, resume=resume, export_pretrained=True, keep_last=keep_last,
                         verbose=verbose)
        return PretrainResult(Path(result.run_dir), result.summary)


_REGISTRY: dict[str, Objective] = {}
# Built-in objectives: the module that registers each on import (imported on first use, not at validation).
_BUILTIN = {"supervised": "headstart.pretraining.objectives", "coles": "headstart.pretraining.coles",
            "attribute_masking": "headstart.pretraining.masking", "mlm": "headstart.pretraining.mlm"}


def register_objective(objective: Objective) -> Objective:
    """Make ``objective`` reachable as ``objective.name`` in configs and ``headstart pretrain --objective``."""
    if not objective.name:
        raise ValueError(f"{type(objective).__name__} needs a name to be registered")
    _REGISTRY[objective.name] = objective
    return objective


def objective_names() -> list[str]:
    """Every objective a config may name (built-in and registered), sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_objective(name: str) -> Objective:
    """The objective registered as ``name``; an unknown name is a ConfigError listing the choices."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        names = objective_names()
        raise ConfigError(f"objective.name (--objective) '{name}' is not a pretraining objective; use one of "
                          f"{', '.join(names)}.{did_you_mean(name, names)}") from None


def run_pretrain(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False, keep_last: bool = False,
                 verbose: bool = True) -> PretrainResult:
    """``headstart pretrain``: check that ``cfg.objective`` fits the config's modality, then let it train and export."""
    objective = get_objective(cfg.objective.name)
    _check_settings(cfg, objective)
    if objective.modalities:
        from headstart.modalities import get_modality

        modality = get_modality(cfg.task)
        if modality.name not in objective.modalities:
            raise ConfigError(
                f"objective '{objective.name}' trains on {' / '.join(objective.modalities)} data, but this config's "
                f"task is {cfg.task} ({modality.name} data). Use objective.name: supervised (fit on the labels, "
                f"then export), or an objective for {modality.name} data."
            )
    objective.check(cfg)
    return objective.run(cfg, overwrite=overwrite, resume=resume, keep_last=keep_last, verbose=verbose)


def _check_settings(cfg: RunConfig, objective: Objective) -> None:
    """``objective.*`` keys the chosen objective does not read must keep their defaults (all reported at once)."""
    section = cfg.objective
    defaults = type(section)()
    unused = [key for key in type(section).model_fields
              if key != "name" and key not in objective.settings and getattr(section, key) != getattr(defaults, key)]
    if unused:
        values = ", ".join(f"objective.{k}={getattr(section, k)!r}" for k in unused)
        reads = format_choices(objective.settings) or "no other key"
        raise ConfigError(f"{values} {'is' if len(unused) == 1 else 'are'} set, but objective '{objective.name}' does "
                          f"not read {'it' if len(unused) == 1 else 'them'} (it reads {reads}). Remove "
                          f"{'it' if len(unused) == 1 else 'them'}, or pick the objective "
                          f"{'it belongs' if len(unused) == 1 else 'they belong'} to.")


register_objective(SupervisedObjective())
