"""Report, compare, gate and export commands (filled in by the reports work)."""


def register(app) -> None:
    """Add the report/compare/gate/export commands to the typer ``app``."""
