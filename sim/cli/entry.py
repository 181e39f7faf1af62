"""The ``dtsim`` console script (and ``python -m sim.cli``): Ctrl-C and SIGTERM are taken
in hand before the commands are imported, so that one pressed while they load (most of
a second) ends dtsim as quietly as one pressed while a command runs."""

from __future__ import annotations

import signal


def cli_entry() -> None:
    """Run ``dtsim`` on the command line's arguments (``sim.cli.main.run_console_script``).
    SIGTERM stops a command as Ctrl-C (SIGINT) does: what finished is written, MPI jobs
    and Dask workers are stopped, one line is printed; the exit code is then the shell's
    for that signal, 128 + its number (130 for Ctrl-C, 143 for SIGTERM)."""
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt  # each command's own cleanup runs as for Ctrl-C

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, stop)
    if previous[signal.SIGINT] is signal.default_int_handler:  # not if ignored (nohup, &)
        signal.signal(signal.SIGINT, stop)
    try:
        from sim.cli.main import run_console_script

        run_console_script()
    except KeyboardInterrupt:  # while the commands loaded, or after one ended
        raise SystemExit(128 + (received[0] if received else signal.SIGINT)) from None
    except SystemExit as e:
        # A command reports an interrupt as a failure (exit 1) once it has cleaned up.
        if received and e.code not in (0, None):
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        for signum, handler in previous.items():  # as it was, for a caller in this process
            signal.signal(signum, handler)
