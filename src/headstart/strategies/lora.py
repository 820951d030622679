"""LoRA adapters injected in place with peft (the backbone's module paths and layer map stay the same).

peft's ``PeftModel`` wrapper drops heads it does not know about unless they are listed in
``modules_to_save`` (peft #310/#577). We inject adapters into the backbone only and save the whole
module ourselves (adapters, head and every new module), so nothing is lost on reload.
"""

from __future__ import annotations

from torch import nn

from headstart.errors import ConfigError, LayerMapError, did_you_mean, format_choices
from headstart.strategies.base import LoraSpec

__all__ = ["DEFAULT_LORA_TARGETS", "apply_lora", "lora_candidates"]

# Attention projections of common Hugging Face encoders.
DEFAULT_LORA_TARGETS = ("query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "qkv", "Wqkv")


def lora_candidates(model: nn.Module) -> list[str]:
    """Leaf names of the Linear/Conv1d/Embedding modules LoRA can wrap."""
    kinds = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and isinstance(m, kinds)})


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _generic_targets(model: nn.Module) -> list[str]:
    """Every Linear layer by its full path, except the projections inside ``nn.MultiheadAttention``: torch reads
    those weights directly, so an adapter on ``out_proj`` would never get a gradient (the feed-forward layers
    around the attention take the adapters; name attention modules in target_modules to adapt them)."""
    attention = tuple(f"{n}." for n, m in model.named_modules() if n and isinstance(m, nn.MultiheadAttention))
    return [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear) and not n.startswith(attention)]


def apply_lora(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Inject LoRA into ``model`` in place, freeze every non-adapter weight, return the adapter names."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ConfigError("strategy 'lora' needs peft: pip install -c constraints.txt -e '.[text]'.") from exc
    names = [n for n, m in model.named_modules() if n]
    candidates = lora_candidates(model)
    if spec.target_modules:
        targets = list(spec.target_modules)
        unmatched = [t for t in targets if not any(_matches(n, t) for n in names)]
        if unmatched:
            hints = " ".join(did_you_mean(t, candidates).strip() for t in unmatched)
            raise LayerMapError(
                f"strategy.lora.target_modules {format_choices(unmatched)} "
                f"{'matches' if len(unmatched) == 1 else 'match'} no module of the backbone. "
                f"{hints} Candidates (Linear/Embedding/Conv leaf names): {format_choices(candidates)}. Set "
                f"strategy.lora.target_modules to some of these, or leave it unset for the attention defaults."
            )
    else:
        targets = [t for t in DEFAULT_LORA_TARGETS if any(_matches(n, t) for n in names)]
        if not targets:
            targets = _generic_targets(model)
        if not targets:
            rnn = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
            why = (f" Its recurrent layers ({format_choices(rnn)}) cannot take LoRA adapters: use strategy partial "
                   f"(e.g. --strategy partial:1), gradual or full for this encoder." if rnn else "")
            raise LayerMapError(
                f"No LoRA target found in {type(model).__name__}: it has no Linear layers.{why} Or set "
                f"strategy.lora.target_modules; candidates: {format_choices(candidates) or 'none'}."
            )
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                        bias="none")
    inject_adapter_in_model(config, model)
    adapter_names = []
    for name, p in model.named_parameters():
        is_adapter = "lora_" in name
        p.requires_grad_(is_adapter)
        if is_adapter:
            adapter_names.append(name)
    return adapter_names
