"""``python -m sim.cli``: the same as the ``dtsim`` console script."""

from sim.cli.entry import cli_entry

cli_entry()
