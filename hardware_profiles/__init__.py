"""Built-in hardware profiles (YAML, shipped as package data) and their loader.

``load_profile(name_or_path)`` takes a built-in name (see ``builtin_names()``) or a
path to a user's YAML file written to ``SCHEMA.md``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from hardware_profiles.loader import load_profile_file, parse_profile
from sim.errors import InputError
from sim.model.hardware import HardwareProfile

HERE = Path(__file__).resolve().parent


def builtin_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load_profile(name_or_path: str) -> HardwareProfile:
    """A built-in profile by name, or a user's profile by path."""
    from sim.formats.safe_read import excerpt, is_regular_file

    builtin = HERE / f"{name_or_path}.yaml"
    if "/" not in name_or_path and is_regular_file(builtin):
        return load_profile_file(builtin)
    path = Path(name_or_path)
    # os.path.exists, not Path.exists: a name too long for the file system is False.
    if path.suffix in (".yaml", ".yml") or os.path.lexists(name_or_path):
        return load_profile_file(path)
    close = difflib.get_close_matches(name_or_path[:200], builtin_names(), n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise InputError(
        f"unknown hardware profile {excerpt(name_or_path)}{hint} "
        f"(built-ins: {', '.join(builtin_names())}; or give a path to a YAML file)",
        key="hardware",
    )


__all__ = ["builtin_names", "load_profile", "load_profile_file", "parse_profile"]
