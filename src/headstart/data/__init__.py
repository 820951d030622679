"""Data loading: tabular files, label maps, stratified splits, tokenized text and event-sequence datasets."""

from __future__ import annotations

from headstart.data.events import (
    EventEncoders,
    EventFields,
    EventSet,
    EventSplits,
    collate_events,
    load_event_splits,
    read_events,
)
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
    "EventEncoders",
    "EventFields",
    "EventSet",
    "EventSplits",
    "Label",
    "LabelMap",
    "LengthGroupedBatchSampler",
    "LengthSortedSampler",
    "TextClassificationDataset",
    "TextCollator",
    "TextSplits",
    "collate_events",
    "detect_format",
    "load_event_splits",
    "load_text_frame",
    "load_text_splits",
    "read_events",
    "read_table",
    "restore_order",
    "stratified_split",
    "stratified_subset",
]
