"""Subcommands of `python -m sf_core` (see `sf_core.__main__`)."""
