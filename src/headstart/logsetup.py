"""Logging and warning filters of headstart's processes (the CLI and compare/stack worker processes).

A module of its own, stdlib-only, so the CLI can set it up without importing the experiment runners
(``headstart --help`` must not pay for them); ``headstart.experiments.jobs`` re-exports it.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["setup_logging"]


def setup_logging() -> None:
    """Quiet Lightning's chatter and the warnings headstart handles on purpose (CLI and worker processes)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    # Frozen blocks are in eval mode on purpose (DESIGN rule 6); each phase change is logged instead.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
