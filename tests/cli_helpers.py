"""Running ``dtsim`` for the CLI tests: in this process, through click's CliRunner, as the
console script runs it (tests/test_entry_point.py runs the installed script itself, and
checks that both print the same)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from click import formatting
from click.testing import CliRunner

from sim.cli.main import run_console_script

ROOT = Path(__file__).resolve().parents[1]


class _ConsoleScript:
    """The console script's own handling (``sim.cli.main.run_console_script``), given the
    arguments CliRunner passes."""

    name = "dtsim"

    def main(self, args: Sequence[str], prog_name: str, **extra: object) -> None:
        # CliRunner fixes help at 80 columns; the script measures the terminal (a pipe: 80).
        formatting.FORCED_WIDTH = None  # CliRunner puts its own value back afterwards
        run_console_script(args, prog_name)


class DtsimTimeout(BaseException):
    """A BaseException, so neither the command's nor CliRunner's ``except Exception``
    swallows it."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Stop a run that hangs, as the subprocess's timeout did (SIGALRM, main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise DtsimTimeout(f"dtsim ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _as_a_new_process() -> Iterator[list[warnings.WarningMessage]]:
    """Working directory the repository root; afterwards the environment, working
    directory and torch's thread count as they were (``calibrate`` sets the threads). The
    warnings a new interpreter would print are collected, for stderr."""
    cwd, environ = os.getcwd(), dict(os.environ)
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    os.chdir(ROOT)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Python's default filters, not pytest's.
            warnings.resetwarnings()
            for category in (
                DeprecationWarning,
                PendingDeprecationWarning,
                ImportWarning,
                ResourceWarning,
            ):
                warnings.simplefilter("ignore", category)
            yield caught
    finally:
        os.chdir(cwd)
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)
        if threads is not None:
            torch.set_num_threads(threads)


def dtsim(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``dtsim ARGS`` in this process, from the repository root; what a subprocess
    would return: exit code, stdout and stderr (with the traceback and warnings Python
    would print there)."""
    argv = [str(a) for a in args]
    with _as_a_new_process() as caught, _time_limit(timeout):
        result = CliRunner().invoke(_ConsoleScript(), argv)  # type: ignore[arg-type]
    stderr = result.stderr
    for w in caught:
        stderr += warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["dtsim", *argv], result.exit_code, result.stdout, stderr)


def ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run, expect exit 0 and no traceback."""
    result = dtsim(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def ok_json(*args: str | Path) -> object:
    """Run with --json, expect exit 0; return the one JSON document on stdout."""
    return json.loads(ok(*args, "--json").stdout)


def bad(*args: str | Path, timeout: float = 60) -> str:
    """Run, expect exit 2 with one error line on stderr; return that line."""
    result = dtsim(*args, timeout=timeout)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
