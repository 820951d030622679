"""Data loading: tabular files, label maps, stratified splits and tokenized text datasets."""

from __future__ import annotations

from headstart.data.labels import Label, LabelMap
from headstart.data.readers import FORMATS, SUFFIXES, detect_format, read_table
from headstart.data.samplers import EpochShuffleSampler
from headstart.data.splits import stratified_split, stratified_subset
from headstart.data.text import (
    TextClassificationDataset,
    TextCollator,
    TextSplits,
    load_text_frame,
    load_text_splits,
)

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "EpochShuffleSampler",
    "Label",
    "LabelMap",
    "TextClassificationDataset",
    "TextCollator",
    "TextSplits",
    "detect_format",
    "load_text_frame",
    "load_text_splits",
    "read_table",
    "stratified_split",
    "stratified_subset",
]
