"""Data loading: tabular files, label maps, stratified splits and tokenized text datasets."""

from __future__ import annotations

from headstart.data.labels import Label, LabelMap
from headstart.data.readers import FORMATS, SUFFIXES, detect_format, read_table
from headstart.data.samplers import (
    EpochShuffleSampler,
    LengthGroupedBatchSampler,
    LengthSortedSampler,
    restore_order,
)
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
    "LengthGroupedBatchSampler",
    "LengthSortedSampler",
    "TextClassificationDataset",
    "TextCollator",
    "TextSplits",
    "detect_format",
    "load_text_frame",
    "load_text_splits",
    "read_table",
    "restore_order",
    "stratified_split",
    "stratified_subset",
]
