"""The ``tbench`` command line (typer + rich): ``run``, ``list``, ``env`` (``harness.cli.run``),
``report``, ``compare``, ``gate``, ``export`` (``harness.cli.analyse``) and ``profile``
(``harness.cli.profile``), all registered on
``harness.cli.app.app``; bad input of any command is handled by ``harness.cli.user_errors``.
"""
from __future__ import annotations

from harness.cli import analyse, frontier, profile, run, tune  # noqa: F401  (register their commands)
from harness.cli.app import app


def main() -> None:
    """Console-script entry point ``tbench``."""
    app()

