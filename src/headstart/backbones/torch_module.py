"""Any user ``nn.Module`` as a backbone: import path + constructor kwargs + optional checkpoint.

The module must map its inputs to ``[B, D]`` features (or to ``[B, T, D]``, pooled by the mean over
T). ``out_dim`` is read from a common attribute (``out_dim``, ``embedding_size``, ``hidden_size``,
``output_size``, ``num_features``) or given explicitly. Blocks are auto-detected (largest
``ModuleList``/``Sequential``) unless listed.

A config's ``backbone.module`` is code: importing it runs the module. headstart announces the import,
calls only an ``nn.Module`` subclass or a plain Python function (never a builtin such as ``os:system``,
a standard-library function or a non-callable) and checks that the result is an ``nn.Module``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, detect_blocks, named_blocks_from_paths
from headstart.errors import ConfigError, HeadstartError, did_you_mean, format_choices

__all__ = ["TorchBackbone", "check_module_factory", "import_object", "infer_out_dim"]

log = logging.getLogger("headstart")

_DIM_ATTRS = ("out_dim", "embedding_size", "hidden_size", "output_size", "num_features", "d_model")
_FACTORY_EXPECTED = (
    "a torch.nn.Module subclass or a function returning one, from your own module or an installed package, e.g. "
    "my_models:TinyEncoder (class TinyEncoder in my_models.py; a file in the working directory is found with "
    "PYTHONPATH=.) or torch.nn:GRU"
)


def import_object(path: str, where: str = "backbone.module") -> Any:
    """Import ``package.module:Name`` (or ``package.module.Name``); every failure is one ConfigError.

    Importing runs the module's code, so the import is announced first (one log line): a config that names
    a module is code, like Hydra's ``_target_``, and the user should see which code it runs.
    """
    path = str(path).strip()
    if ":" in path:
        mod_name, _, attr = path.partition(":")
    else:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr or mod_name.startswith(".") or not attr.isidentifier():
        raise ConfigError(
            f"{where} is '{path}', which is not an import path: expected 'package.module:Name' (an absolute "
            f"module path, a colon, then a class or function defined in it), e.g. mypkg.models:Encoder."
        )
    log.info("Importing user code: %s:%s (%s in the config; a config that names a module runs its code)",
             mod_name, attr, where)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(_missing_module(path, mod_name, exc, where)) from exc
    except Exception as exc:  # the module's own code failed (SyntaxError, NameError, a failing import ...)
        raise ConfigError(
            f"{where} '{path}': importing module '{mod_name}' raised {type(exc).__name__}: "
            f"{' '.join(str(exc).split()) or '(no message)'}{_origin(exc)}. The module is found but its code "
            f"fails on import; fix it (HEADSTART_DEBUG=1 shows the full traceback)."
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        names = [n for n in dir(module) if not n.startswith("_")]
        hint = did_you_mean(attr, names)
        if not hint:  # nothing close: show what the module offers, model classes first
            modules = [n for n in names if inspect.isclass(getattr(module, n, None))
                       and issubclass(getattr(module, n), nn.Module)]
            hint = (f" nn.Module classes in it: {format_choices(modules, limit=10)}." if modules
                    else f" Its public names: {format_choices(names, limit=10)}." if names else "")
        raise ConfigError(
            f"{where} '{path}': module '{mod_name}' ({getattr(module, '__file__', None) or 'built in'}) has no "
            f"attribute '{attr}'.{hint} Expected {_FACTORY_EXPECTED}; fix the name after the colon."
        ) from exc


def check_module_factory(factory: Any, path: str, where: str = "backbone.module") -> None:
    """Refuse, before calling it, anything but an nn.Module subclass or a plain Python function.

    This catches mistakes, not malice (a config names code; only run configs you trust): builtins such as
    ``os:system``, standard-library functions, instances and other non-callables are never called.
    """
    kind = _kind(factory)
    origin = str(getattr(factory, "__module__", "") or "").split(".")[0]
    if inspect.isclass(factory):
        if issubclass(factory, nn.Module):
            return
        problem = (f"is the class {factory.__module__}.{factory.__qualname__}, which is not a torch.nn.Module "
                   f"subclass, so it cannot build one")
    elif inspect.isfunction(factory):
        if origin not in sys.stdlib_module_names:
            return
        problem = (f"is the standard-library function {factory.__module__}.{factory.__qualname__}, which builds "
                   f"no model (a config must not call arbitrary library functions)")
    elif inspect.isbuiltin(factory) or inspect.ismethoddescriptor(factory):
        problem = f"is the built-in function {_qualified(factory)}, which builds no model"
    elif isinstance(factory, nn.Module):
        problem = (f"is an already built {type(factory).__name__} instance, not a class or a factory; name its "
                   f"class (or a function returning it) and give the arguments in backbone.kwargs")
    else:
        problem = f"is {kind}, not a class or a function"
    raise ConfigError(
        f"{where} '{path}' {problem}. It was not called. Set {where} to {_FACTORY_EXPECTED}; headstart calls it "
        f"with backbone.kwargs as keyword arguments (a factory must be a function defined with def)."
    )


def _kind(obj: Any) -> str:
    """What an object is, for a message: 'a str value', 'a callable partial object' ..."""
    return f"a callable {type(obj).__name__} object" if callable(obj) else f"a {type(obj).__name__} value"


def _qualified(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or getattr(getattr(obj, "__self__", None), "__name__", "")
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}".lstrip(".")


def _missing_module(path: str, mod_name: str, exc: ModuleNotFoundError, where: str) -> str:
    """The configured module itself (or a parent package) is missing, or a module it imports is."""
    missing = exc.name or mod_name
    if not (mod_name == missing or mod_name.startswith(missing + ".")):
        return (
            f"{where} '{path}': module '{mod_name}' is found, but importing it fails because it imports "
            f"'{missing}', which is not installed. Install that package (pip install ...) in this environment."
        )
    hint = ""
    parent, _, leaf = missing.rpartition(".")
    if parent:
        try:
            import pkgutil

            siblings = [m.name for m in pkgutil.iter_modules(importlib.import_module(parent).__path__)]
            hint = did_you_mean(leaf, siblings)
        except Exception:  # a hint only; the parent package's own failure is not this error
            hint = ""
    return (
        f"{where} '{path}': cannot import module '{mod_name}': no module named '{missing}'.{hint} Check the "
        f"spelling and that the package is installed or on PYTHONPATH (a module file in the current directory "
        f"is found only with PYTHONPATH=. or after pip install -e of its package)."
    )


def _origin(exc: BaseException) -> str:
    """' (file.py, line 12)': where an import failed, the innermost frame (or the SyntaxError's own line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}, line {exc.lineno})"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})" if tb is not None else ""


def infer_out_dim(module: nn.Module, given: int | None = None) -> int:
    if given is not None:
        return int(given)
    for attr in _DIM_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(module, "config", None)
    if config is not None and isinstance(getattr(config, "hidden_size", None), int):
        return int(config.hidden_size)
    raise ConfigError(
        f"Cannot tell the feature size of {type(module).__name__}: it has none of the attributes "
        f"{', '.join(_DIM_ATTRS)}. Pass out_dim explicitly (backbone.out_dim in a config, or "
        f"out_dim=... in create_finetune_model)."
    )


class TorchBackbone(Backbone):
    """Wraps a user module; features are its output, mean-pooled over time when 3-D."""

    # Blocks are the user's modules: checkpointing wraps the ones forward calls (a block whose parameters are used
    # without calling it, e.g. a loose parameter, is simply not recomputed).
    supports_gradient_checkpointing = True

    def __init__(
        self,
        module: nn.Module,
        out_dim: int | None = None,
        blocks: list[str] | None = None,
        block_container: str | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.out_dim = infer_out_dim(module, out_dim)
        self._block_paths = list(blocks) if blocks else None
        self._block_container = block_container

    @classmethod
    def from_import(
        cls,
        module: str,
        kwargs: dict[str, Any] | None = None,
        out_dim: int | None = None,
        blocks: list[str] | None = None,
        block_container: str | None = None,
    ) -> TorchBackbone:
        factory = import_object(module)
        check_module_factory(factory, module)
        try:
            instance = factory(**(kwargs or {}))
        except TypeError as exc:
            raise ConfigError(
                f"backbone.module '{module}' could not be built with backbone.kwargs={kwargs or {}}: {exc}. "
                f"Give backbone.kwargs the keyword arguments its signature takes: {_signature(factory)}."
            ) from exc
        except HeadstartError:  # already one clear paragraph (e.g. a headstart factory's own check)
            raise
        except Exception as exc:  # the user's constructor failed on these arguments
            raise ConfigError(
                f"backbone.module '{module}' raised {type(exc).__name__} when built with backbone.kwargs="
                f"{kwargs or {}}: {' '.join(str(exc).split()) or '(no message)'}{_origin(exc)}. Fix the "
                f"arguments in backbone.kwargs or the module's code (HEADSTART_DEBUG=1 shows the full traceback)."
            ) from exc
        if not isinstance(instance, nn.Module):
            raise ConfigError(
                f"backbone.module '{module}' returned {type(instance).__name__} "
                f"({_short_repr(instance)}), not a torch.nn.Module. Expected {_FACTORY_EXPECTED}; make the "
                f"factory return the model, or name the model class itself."
            )
        return cls(instance, out_dim=out_dim, blocks=blocks, block_container=block_container)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        if self._block_paths:
            return named_blocks_from_paths(self.module, self._block_paths)
        return detect_blocks(self.module, self._block_container)

    def forward(self, inputs: Any) -> torch.Tensor:
        out = self.module(inputs)
        if isinstance(out, tuple | list):
            out = out[0]
        if out.dim() == 3:
            out = out.mean(dim=1)
        return out


def _signature(factory: Any) -> str:
    try:
        return f"{getattr(factory, '__name__', 'factory')}{inspect.signature(factory)}"
    except (TypeError, ValueError):
        return "(signature not available)"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
