"""backbone.module names user code: it is announced, checked before it is called, and its result checked after.

A config that names a module runs that module's code on import (like Hydra's ``_target_``); these tests
pin what headstart does around it: one "Importing user code" line first, builtins / standard-library
functions / non-callables refused without being called, every failure one ConfigError paragraph.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from torch import nn

from conftest import tiny_run_config
from headstart.backbones import TorchBackbone, build_backbone, check_module_factory, import_object
from headstart.config import BackboneConfig
from headstart.errors import ConfigError

EXPECTED = ("a torch.nn.Module subclass or a function returning one, from your own module or an installed package, "
            "e.g. my_models:TinyEncoder")
USER_MODULES = {
    "hs_user_models": """
        from torch import nn

        class Encoder(nn.Module):
            def __init__(self, width: int = 4) -> None:
                super().__init__()
                self.layers = nn.Sequential(nn.Linear(3, width), nn.Linear(width, width))
                self.out_dim = width

            def forward(self, x):
                return self.layers(x)

        def make_encoder(width: int = 4):
            return Encoder(width)

        def make_number(width: int = 4):
            return width

        def make_failing(width: int = 4):
            raise RuntimeError("no weights for width " + str(width))

        built = Encoder()
    """,
    "hs_user_broken": """
        x = 1
        y = undefined_name + x
    """,
    "hs_user_needs_dep": """
        import hs_no_such_dependency_xyz
    """,
}


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name, source in USER_MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in USER_MODULES:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("backbone_type", ["torch", "ptls"])
def test_os_system_is_refused_and_never_called(tmp_path: Path, caplog, backbone_type: str) -> None:
    marker = tmp_path / "pwned"
    cfg = BackboneConfig(type=backbone_type, module="os:system", kwargs={"command": f"touch {marker}"})
    with caplog.at_level(logging.INFO, logger="headstart"):
        message = _message(build_backbone, cfg)
    assert not marker.exists()
    assert "backbone.module 'os:system' is the built-in function" in message and "It was not called" in message
    assert EXPECTED in message
    # the fix: what to set, where such a module comes from, and how a local file is found
    assert "Set backbone.module to a torch.nn.Module subclass" in message and "PYTHONPATH=." in message
    assert "called" in message and "backbone.kwargs as keyword arguments" in message
    assert ("Importing user code: os:system (backbone.module in the config; a config that names a module runs "
            "its code)") in caplog.text


@pytest.mark.parametrize(
    ("path", "kwargs", "fact"),
    [
        ("subprocess:run", {"args": "touch {marker}", "shell": True}, "is the standard-library function subprocess.run"),
        ("builtins:exec", {"source": "open('{marker}', 'w')"}, "is the built-in function builtins.exec"),
        ("collections:OrderedDict", {}, "is the class collections.OrderedDict, which is not a torch.nn.Module subclass"),
        ("math:pi", {}, "is a float value, not a class or a function"),
    ],
)
def test_non_factories_are_refused_before_the_call(tmp_path: Path, path: str, kwargs: dict, fact: str) -> None:
    marker = tmp_path / "pwned"
    kwargs = {k: v.format(marker=marker) if isinstance(v, str) else v for k, v in kwargs.items()}
    message = _message(TorchBackbone.from_import, path, kwargs)
    assert fact in message and "It was not called" in message and EXPECTED in message
    assert not marker.exists()


def test_module_instance_is_refused(user_code: Path) -> None:
    message = _message(TorchBackbone.from_import, "hs_user_models:built")
    assert "is an already built Encoder instance, not a class or a factory" in message and "backbone.kwargs" in message


def test_user_class_and_factory_function_are_built(user_code: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="headstart"):
        assert TorchBackbone.from_import("hs_user_models:Encoder", {"width": 5}).out_dim == 5
        assert TorchBackbone.from_import("hs_user_models.make_encoder", {"width": 6}).out_dim == 6
    assert "Importing user code: hs_user_models:make_encoder" in caplog.text
    check_module_factory(nn.GRU, "torch.nn:GRU")  # library nn.Module classes pass


def test_factory_returning_a_non_module(user_code: Path) -> None:
    message = _message(TorchBackbone.from_import, "hs_user_models:make_number", {"width": 7})
    assert "backbone.module 'hs_user_models:make_number' returned int (7), not a torch.nn.Module" in message
    assert EXPECTED in message


def test_factory_that_raises_is_one_paragraph(user_code: Path) -> None:
    message = _message(TorchBackbone.from_import, "hs_user_models:make_failing", {"width": 2})
    assert "raised RuntimeError when built with backbone.kwargs={'width': 2}: no weights for width 2" in message
    assert "hs_user_models.py, line" in message and "HEADSTART_DEBUG=1" in message


def test_wrong_keyword_shows_the_signature(user_code: Path) -> None:
    message = _message(TorchBackbone.from_import, "hs_user_models:make_encoder", {"widht": 2})
    assert "could not be built with backbone.kwargs={'widht': 2}" in message and "make_encoder(width: int = 4)" in message


def test_missing_module_and_attribute(user_code: Path) -> None:
    message = _message(import_object, "hs_no_such_pkg_xyz.models:Encoder")
    assert "cannot import module 'hs_no_such_pkg_xyz.models': no module named 'hs_no_such_pkg_xyz'" in message
    assert "PYTHONPATH" in message
    message = _message(import_object, "torch.nn.modules.rnnn:GRU")
    assert "no module named 'torch.nn.modules.rnnn'. Did you mean 'rnn'?" in message
    message = _message(import_object, "hs_user_models:Encodr")
    assert "module 'hs_user_models' (" in message and "hs_user_models.py) has no attribute 'Encodr'" in message
    assert "Did you mean one of 'Encoder'" in message
    assert EXPECTED in message
    message = _message(import_object, "hs_user_models:Zzzzz")
    assert "nn.Module classes in it: 'Encoder'" in message
    message = _message(import_object, ".models:Encoder")
    assert "is not an import path" in message and "'package.module:Name'" in message


def test_module_whose_code_fails_on_import(user_code: Path) -> None:
    message = _message(import_object, "hs_user_broken:Encoder")
    assert "importing module 'hs_user_broken' raised NameError: name 'undefined_name' is not defined" in message
    assert "hs_user_broken.py, line 3" in message  # the source starts with a blank line
    message = _message(import_object, "hs_user_needs_dep:Encoder")
    assert "importing it fails because it imports 'hs_no_such_dependency_xyz', which is not installed" in message


def test_ptls_type_with_a_plain_module(user_code: Path) -> None:
    message = _message(build_backbone, BackboneConfig(type="ptls", module="hs_user_models:Encoder"))
    assert "backbone.type 'ptls' needs a ptls sequence encoder" in message and "hs_user_models.Encoder" in message
    assert "backbone.type: torch" in message


def test_inspect_refuses_os_system_through_the_cli(tmp_path: Path, tiny_hf_dir: Path, capsys, monkeypatch) -> None:
    from headstart.cli.main import main

    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)
    marker = tmp_path / "pwned"
    raw = tiny_run_config(tmp_path, tiny_hf_dir,
                          backbone={"type": "torch", "module": "os:system", "kwargs": {"command": f"touch {marker}"}})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["inspect", str(config)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.startswith("error: backbone.module 'os:system' is the built-in function") and "Traceback" not in err
    assert "Set backbone.module to" in err and "my_models:TinyEncoder" in err


@pytest.mark.parametrize("command", ["fit", "inspect"])
@pytest.mark.parametrize("mistake", ["unknown key", "missing data file"])
def test_nothing_is_imported_before_the_whole_config_validates(tmp_path: Path, tiny_hf_dir: Path, capsys,
                                                               monkeypatch, command: str, mistake: str) -> None:
    """A module named by the config whose import leaves a marker: a config mistake elsewhere stops the
    command before the import."""
    from headstart.cli.main import main

    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)
    marker = tmp_path / "imported"
    (tmp_path / "hs_marker_models.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = tiny_run_config(tmp_path, tiny_hf_dir, task="image_classification",
                          backbone={"type": "torch", "module": "hs_marker_models:Encoder"})
    if mistake == "unknown key":
        raw["optim"]["lr_typo"] = 1e-3
    else:
        raw["data"]["train"] = str(tmp_path / "nowhere.csv")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main([command, str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and ("lr_typo" in err or "nowhere.csv" in err)
    assert "Importing user code" not in err
    assert not marker.exists() and "hs_marker_models" not in sys.modules
