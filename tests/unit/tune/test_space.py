"""The search space: conditional sampling never sets an inactive key; bad spaces are config errors."""

from __future__ import annotations

import pytest

from headstart.config_sections import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies import ENCODER_OPTIM_KEYS, STRATEGY_FIELDS
from headstart.tune.space import load_space
from headstart.tune.study import import_optuna

BASE = {"strategy": {"name": "partial", "freeze": "0-1"}, "optim": {"lr": 1e-3}, "head": {"dropout": 0.1}}
SPACE = {"params": {
    "optim.encoder_lr": {"low": 1e-6, "high": 1e-4, "log": True},  # listed before strategy.name on purpose
    "optim.layer_decay": {"low": 0.5, "high": 1.0},
    "strategy.name": {"choices": ["linear_probe", "partial", "gradual", "lora", "full"]},
    "strategy.train_last": {"low": 1, "high": 3},
    "strategy.freeze_epochs": {"low": 1, "high": 2},
    "strategy.lora.r": {"choices": [4, 8, 16]},
    "optim.lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "head.hidden_dims": {"choices": [[], [32], [64, 32]]},
    "head.dropout": {"low": 0.0, "high": 0.5, "when": {"head.hidden_dims": [[32], [64, 32]]}},
    "optim.weight_decay": {"low": 0.0, "high": 0.1, "when": {"strategy.name": ["full", "lora"]}},
}}


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_sampling_never_sets_a_key_inactive_for_the_chosen_strategy(sampler: str) -> None:
    optuna = import_optuna()
    space = load_space(SPACE, BASE)
    sampler_obj = (optuna.samplers.RandomSampler(seed=0) if sampler == "random"
                   else optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=5))
    study = optuna.create_study(sampler=sampler_obj)
    seen = set()
    for i in range(60):
        trial = study.ask()
        raw, params = space.sample(trial, BASE)
        name = params["strategy.name"]
        seen.add(name)
        assert trial.params.keys() == params.keys()  # what Optuna records is exactly what the run used
        for key in params:
            if key.startswith("strategy.") and key != "strategy.name":
                assert key.split(".")[1] in STRATEGY_FIELDS[name], (name, key)
            if key in ENCODER_OPTIM_KEYS:
                assert name != "linear_probe"
        assert ("head.dropout" in params) == (params["head.hidden_dims"] != [])
        assert ("optim.weight_decay" in params) == (name in ("full", "lora"))
        # the trial's strategy section holds only fields its strategy reads, and is valid as it stands
        assert set(raw["strategy"]) - {"name"} <= STRATEGY_FIELDS[name]
        StrategyConfig.model_validate(raw["strategy"])
        if name == "partial":  # the sampled train_last replaced the base's freeze (partial takes one of them)
            assert raw["strategy"] == {"name": "partial", "train_last": params["strategy.train_last"]}
        assert raw["head"]["dropout"] == params.get("head.dropout", BASE["head"]["dropout"])
        study.tell(trial, float(i % 7))
    assert seen == {"linear_probe", "partial", "gradual", "lora", "full"}


def test_keys_are_sampled_after_the_keys_they_depend_on() -> None:
    order = load_space(SPACE, BASE).sampling_order()
    assert order.index("strategy.name") < order.index("optim.encoder_lr")
    assert order.index("head.hidden_dims") < order.index("head.dropout")


def test_int_when_both_bounds_are_whole_numbers() -> None:
    space = load_space({"params": {"data.batch_size": {"low": 8, "high": 32, "step": 8},
                                   "optim.lr": {"low": 1, "high": 2.0}}}, BASE)
    assert space.params["data.batch_size"].kind == "int" and space.params["optim.lr"].kind == "float"


@pytest.mark.parametrize(("params", "message"), [
    ({"optim.lrr": {"low": 1e-4, "high": 1e-2}}, "optim has no 'lrr'. Did you mean 'lr'?"),
    ({"optimm.lr": {"low": 1e-4, "high": 1e-2}}, "the config has no 'optimm'. Did you mean 'optim'?"),
    ({"optim.lr": {"low": 1e-2, "high": 1e-4}}, "low 0.01 is above high 0.0001; swap them"),
    ({"optim.lr": {"low": 0.0, "high": 1e-2, "log": True}}, "log: true needs low > 0"),
    ({"optim.lr": {"low": -1.0, "high": 1e-2}}, "the value -1.0 is not allowed there (Input should be greater than 0)"),
    ({"optim.lr": {"low": 1e-4, "hihg": 1e-2}}, "unknown field. Did you mean 'high'?"),
    ({"optim.lr": {"low": 1e-4}}, "needs both low and high"),
    ({"optim.optimizer": {"choices": []}}, "choices is empty"),
    ({"optim.optimizer": {"choices": ["adamw", "lion"]}}, "the value 'lion' is not allowed there"),
    ({"strategy.name": {"choices": ["full", "lienar_probe"]}}, "'lienar_probe' is not a strategy. Did you mean "
                                                               "'linear_probe'?"),
    ({"strategy.name": {"choices": ["full", "lora"]}, "strategy.train_last": {"low": 1, "high": 2}},
     "'strategy.train_last' is read only by partial, which this space never picks"),
    ({"strategy.name": {"choices": ["linear_probe"]}, "optim.encoder_lr": {"low": 1e-6, "high": 1e-4}},
     "no encoder weight trains"),
    ({"trainer.seed": {"low": 0, "high": 3}}, "'trainer.seed' cannot be searched"),
    ({"trainer.monitor": {"choices": ["val_f1"]}}, "it is --metric"),
    ({"optim.lr.x": {"low": 1, "high": 2}}, "optim.lr is a single value"),
    ({"strategy.name": {"choices": ["full"]}, "optim.lr": {"low": 1e-3, "high": 1e-2, "when": {"strategy.name": "lora"}}},
     "this key would never be sampled"),
    ({"optim.lr": {"low": 1e-3, "high": 1e-2, "when": {"optim.wd": 0}}}, "optim has no 'wd'"),
    ({"optim.lr": {"low": 1e-3, "high": 1e-2, "when": {"optim.momentum": 0.9}},
      "optim.momentum": {"low": 0.5, "high": 0.9, "when": {"optim.lr": 1e-3}}}, "form a cycle"),
])
def test_bad_spaces_are_config_errors_that_say_what_to_fix(params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_space({"params": params}, BASE)
    assert message in str(err.value)


def test_a_missing_or_empty_space_file_says_what_it_needs(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "nope.yaml", BASE)
    (tmp_path / "empty.yaml").write_text("other: 1\n")
    with pytest.raises(ConfigError, match="needs a non-empty 'params' mapping"):
        load_space(tmp_path / "empty.yaml", BASE)


def test_the_shipped_example_spaces_fit_their_configs() -> None:
    from pathlib import Path

    from headstart.config import load_config

    root = Path(__file__).resolve().parents[3]
    base = load_config(root / "examples" / "quickstart.yaml").model_dump(mode="json")
    space = load_space(root / "examples" / "tune_text_space.yaml", base)
    assert {"strategy.name", "strategy.train_last", "strategy.lora.r", "optim.encoder_lr"} <= set(space.params)
    # the image space is checked against the schema alone (its base config reads ../shared/data)
    image = load_space(root / "examples" / "tune_image_space.yaml", {"strategy": {"name": "full"}})
    assert image.params["head.scale"].when == {"head.type": "cosface"}
