"""The typer application every ``tbench`` command registers on, and the consoles it prints with."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark and profile Transformer optimisation strategies.")


def default(text: str) -> str:
    """`` [default: TEXT]`` to end an option's help with. Typer renders help through rich, which
    reads a bare ``[default: ...]`` as a markup tag and drops it; the escaped bracket survives.
    For defaults typer cannot show itself (None standing for "computed", empty lists, flags)."""
    return rf" \[default: {text}]"


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160, highlight=False)
