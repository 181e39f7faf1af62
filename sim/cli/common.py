"""What every ``dtsim`` command module shares: the consoles, one-document JSON output,
and the rule that bad input is one line on stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, cast

import click
from rich.console import Console
from rich.markup import escape

from sim.errors import InputError, PhysicalBoundError
from sim.formats.io import json_text
from sim.model.scenario import OPTIMIZER_STATE_COPIES

# --optimizer's choices: the optimizers whose state and step dtsim models (and times).
OPTIMIZER_CHOICE = click.Choice(list(OPTIMIZER_STATE_COPIES))


class _StreamConsole:
    """A rich Console for what sys.stdout (or sys.stderr) is when it prints, made anew when
    that stream changes (click's CliRunner swaps it for each in-process run), so width and
    colour follow the stream written to, as they do when the console script starts."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._stream: Any = None
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        stream = sys.stderr if self._stderr else sys.stdout
        # Under a live progress bar rich wraps the stream; the console is still the same.
        stream = getattr(stream, "rich_proxied_file", stream)
        if self._console is None or stream is not self._stream:
            # Wide enough for the what-if table when output goes to a file or a pipe.
            width = None if stream.isatty() else 130
            # emoji=False: ':100:' in a name or a strategy spec stays text.
            self._console = Console(stderr=self._stderr, highlight=False, emoji=False, width=width)
            self._stream = stream
        return getattr(self._console, name)


out = cast(Console, _StreamConsole())
err = cast(Console, _StreamConsole(stderr=True))


def emit_json(doc: Any, **options: Any) -> None:
    """One JSON document on stdout, standard JSON (a NaN or an infinity is null: see
    :func:`sim.formats.io.json_text`, the one place every JSON of dtsim is made)."""
    sys.stdout.write(json_text(doc, indent=2, **options) + "\n")


# C0 and C1 control characters, DEL, and the bidirectional overrides that can make a
# line read backwards: shown as escapes (\x1b), never sent to the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_MESSAGE_CHARS = 1000


def plain_text(value: object) -> str:
    """Text from an input (a name in a profile, a strategy spec, a file name) as it
    should reach the terminal: control characters as escapes (``\\x1b``), no newlines."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode(), str(value))


def literal(value: object) -> str:
    """Input-derived text to embed in rich markup (``out.print(f"... {literal(name)}")``,
    a table cell): printed as given, never read as markup (``[/]``, ``[bold]``) or as
    control sequences. (Emoji shortcodes such as ``:100:`` are off in both consoles.)"""
    return escape(plain_text(value))


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut in the middle to at most about ``limit`` characters."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 3 // 4], text[-limit // 5 :]
    return f"{head} ... ({len(text) - len(head) - len(tail):,} characters cut) ... {tail}"


def error_line(label: str, text: str) -> None:
    """``label: text`` on stderr, one line of at most about :data:`MAX_MESSAGE_CHARS`
    characters (user text is never read as markup or control sequences)."""
    text = shorten(plain_text(text))
    err.print(f"[bold red]{escape(label)}:[/] {escape(text)}", soft_wrap=True)


def handles_errors(
    failures: tuple[type[BaseException], ...] = (), label: str = "failed"
) -> Callable[[Callable], Callable]:
    """InputError -> exit 2; any of ``failures`` (e.g. a calibration whose rank died)
    and PhysicalBoundError (a result that breaks a physical bound: a simulator bug, its
    message names the scenario) -> exit 1; each as one line on stderr."""

    def decorate(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except InputError as e:
                error_line("error", e.message)
                raise SystemExit(2) from None
            except UnicodeDecodeError as e:
                # A binary file where text (YAML, JSON, CSV) was expected.
                error_line(
                    "error", f"a file given is not text (UTF-8): {e.reason} at byte {e.start}"
                )
                raise SystemExit(2) from None
            except PhysicalBoundError as e:
                error_line("internal error", str(e))
                raise SystemExit(1) from None
            except failures as e:
                text = str(e)
                if text.startswith(f"{label}: "):
                    text = text[len(label) + 2 :]
                error_line(label, text)
                raise SystemExit(1) from None

        return wrapper

    return decorate


handles_input_errors = handles_errors()


def check_run_outputs(
    csv_path: str | None,
    chrome_path: str | None,
    html_path: str | None,
    *,
    inputs: tuple[str, ...],
) -> None:
    """Refuse, before any simulation, `dtsim run`'s outputs that coincide with each other
    or with an input, or that cannot be written."""
    from sim.cli.timeline import check_html_path
    from sim.formats.io import check_distinct_outputs, check_writable

    check_distinct_outputs(
        {"--csv": csv_path, "--chrome-trace": chrome_path, "--html": html_path},
        inputs=inputs,
    )
    for path in (csv_path, chrome_path):
        if path:
            check_writable(path)
    if html_path:
        check_html_path(html_path)
