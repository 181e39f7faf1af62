"""``python -m sim.cli``: the same as the ``dtsim`` console script."""

from sim.cli.main import cli_entry

cli_entry()
