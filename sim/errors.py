"""Error types: bad input (the CLI exits 2) and a broken physical bound (an internal
error: exit 1)."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: names the file (if any), the key (if any) and what is wrong."""

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None):
        self.reason = reason
        self.file = file
        self.key = key
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.key:
            where.append(f"key '{self.key}'")
        prefix = ": ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class PhysicalBoundError(Exception):
    """A simulated result broke a physical lower bound (an iteration shorter than its
    compute, or than the work on one channel or link): a bug in the simulator, never a
    result. The CLI turns it into exit code 1 ("internal error")."""
