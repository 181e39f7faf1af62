"""Errors of a calibration run on real hardware.

Bad input (a missing ``mpirun``, an unknown op, a malformed nccl-tests file) is
:class:`sim.errors.InputError` (CLI exit 2). :class:`CalibrationError` is a run that
started and then failed: a rank died, hung or raised. The CLI exits 1 with its message.
"""

from __future__ import annotations


class CalibrationError(RuntimeError):
    """A calibration run failed after it started; the message names the rank and where."""
