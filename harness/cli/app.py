"""The typer application every ``tbench`` command registers on, and the consoles it prints with."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark and profile Transformer optimisation strategies.")


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160, highlight=False)
