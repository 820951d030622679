"""Runs: fit (one config -> one run directory), reload for evaluate/predict/embed, inspect."""
