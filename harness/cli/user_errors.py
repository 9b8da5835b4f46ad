"""User errors of every ``tbench`` command: ``error: ...`` lines on stderr and exit code 2, never a
traceback. One place knows what counts as bad input:

  * ``SuiteError`` (a suite, a sweep, an override), ``RunDirError`` (a run folder that cannot be
    used as asked, e.g. ``--resume`` on a results file with a corrupt line: the file and the line
    number), ``BadInput`` (a run folder or results file that cannot be read), ``ServerError``
    (the fork server did not start or refused to fork), ``SubmitError`` (sbatch refused a job);
  * ``OSError`` of any kind (a missing file, a read-only folder, a full disk, permission denied):
    one line naming the file and the reason; whatever was already measured stays on disk;
  * a pydantic ``ValidationError`` that escaped a loader (a corrupt point file).

The error types are imported lazily, so ``report``/``compare``/``export`` stay torch-free.
"""
from __future__ import annotations

import errno
from contextlib import contextmanager

import typer


def fail(*lines: str) -> typer.Exit:
    """Print ``error: <line>`` for each line; the exit to raise (code 2)."""
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    return typer.Exit(2)


def os_error_line(exc: OSError) -> str:
    """``<file>: <reason>`` for an OSError, with a hint for the common cases."""
    where = exc.filename if exc.filename is not None else "(no file named)"
    reason = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some space or choose another --out folder",
            errno.EDQUOT: "free some space or choose another --out folder",
            errno.EROFS: "choose a writable --out folder",
            errno.EACCES: "choose a folder you may write to, or fix its permissions",
            errno.EPERM: "choose a folder you may write to, or fix its permissions"}.get(exc.errno)
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


@contextmanager
def user_errors():
    """Turn every kind of bad input into ``error: ...`` lines and exit code 2."""
    from pydantic import ValidationError

    from harness.records import BadInput
    from harness.run.forkserver import ServerError
    from harness.run.rundir import RunDirError
    from harness.run.slurm import SubmitError
    from harness.suite.errors import SuiteError

    try:
        yield
    except SuiteError as exc:
        raise fail(*exc.lines) from None
    except (BadInput, RunDirError, ServerError, SubmitError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(os_error_line(exc)) from None
    except ValidationError as exc:
        raise fail(*(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                     for e in exc.errors(include_url=False))) from None
