"""The application layer: one typed function per job a user runs.

Each takes one request (its scenario part a :class:`~sim.app.spec.ScenarioSpec`) and
returns dataclasses; the click commands in :mod:`sim.cli` only parse options, call one
of these and print. A sweep, the tuner and a notebook call the same functions.

- :func:`sim.app.whatif.whatif` — every requested strategy on one scenario.
- :func:`sim.app.whatif.run` — one strategy, with its Trace.
- :func:`sim.app.convergence.read_iterations_to_target` — a ``dtsim convergence``
  result as the what-if and the tuner use it.
"""
