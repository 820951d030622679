"""The ``headstart`` command line."""
