"""What every ``dtsim`` command module shares: the consoles, one-document JSON output,
and the rule that bad input is one line on stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

from rich.console import Console
from rich.markup import escape

from sim.errors import InputError

# Wide enough for the what-if table when output goes to a file or a pipe.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 130)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 130)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def error_line(label: str, text: str) -> None:
    """``label: text`` on stderr, one line (user text is never read as markup)."""
    err.print(f"[bold red]{escape(label)}:[/] {escape(text)}", soft_wrap=True)


def handles_errors(
    failures: tuple[type[BaseException], ...] = (), label: str = "failed"
) -> Callable[[Callable], Callable]:
    """InputError -> exit 2; any of ``failures`` (e.g. a calibration whose rank died)
    -> exit 1; both as one line on stderr."""

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
            except failures as e:
                text = str(e)
                if text.startswith(f"{label}: "):
                    text = text[len(label) + 2 :]
                error_line(label, text)
                raise SystemExit(1) from None

        return wrapper

    return decorate


handles_input_errors = handles_errors()
