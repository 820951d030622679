"""Modalities are plug-ins: outside ``headstart/modalities/`` and config validation, no code asks which
modality (task) it runs. A new modality then touches its own module and the registry only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from headstart.errors import ConfigError
from headstart.modalities import Modality, get_modality, modality_names

SRC = Path(__file__).resolve().parents[3] / "src" / "headstart"
ALLOWED = {SRC / "config.py"}  # validation: which backbone types a task accepts
BRANCH = re.compile(r"""task\s*[!=]=|(["'])(text|image|sequence|molecule)_(classification|regression)\1|\bimage\s*=\s*(cfg|True|False)|is_image""")


def test_no_task_branches_outside_the_modalities() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path in ALLOWED or (SRC / "modalities") in path.parents:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if BRANCH.search(code) and "f\"" not in code and "f'" not in code:
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    # stack compares the tasks of its bases (all must be equal), it does not branch on one
    offenders = [o for o in offenders if not o.startswith("experiments/stack.py") or "first.task" not in o]
    assert not offenders, "modality branches outside modalities/:\n" + "\n".join(offenders)


def test_registry_names_and_unknown_task() -> None:
    assert {"text_classification", "image_classification", "sequence_classification"} <= set(modality_names())
    assert all(isinstance(get_modality(name), Modality) for name in modality_names())
    with pytest.raises(ConfigError, match="Did you mean one of 'text_classification'"):
        get_modality("text_clasification")
