"""Data preparation scripts (python -m data.prepare ...)."""
