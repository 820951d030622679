"""Feature cache: frozen-prefix outputs computed once, stored on disk by content key (DESIGN rule 4)."""

from __future__ import annotations

from headstart.cache.features import (
    CACHED_KEYS,
    CachedCollator,
    CachedFeatureDataset,
    CachePlan,
    cached_features,
    plan_cache,
    pooled_features,
)
from headstart.cache.key import array_digest, cache_key, module_digest, prefix_components
from headstart.cache.store import CacheEntry, FeatureCache, default_cache_dir, format_bytes

__all__ = [
    "CACHED_KEYS",
    "CacheEntry",
    "CachePlan",
    "CachedCollator",
    "CachedFeatureDataset",
    "FeatureCache",
    "array_digest",
    "cache_key",
    "cached_features",
    "default_cache_dir",
    "format_bytes",
    "module_digest",
    "plan_cache",
    "pooled_features",
    "prefix_components",
]
