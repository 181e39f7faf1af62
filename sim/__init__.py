"""dtsim: a discrete-event simulator of data-parallel deep-learning training timelines."""

__version__ = "0.1.0"
