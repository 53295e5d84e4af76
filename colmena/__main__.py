"""Allows `python -m colmena`, which the worker and dev modes use to re-exec themselves."""

from colmena.cli import main

main()
