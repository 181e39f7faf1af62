"""Calibration on real hardware: the only package that will import torch or mpi4py.

Per-layer timing, collective sweeps and the real MPI validation run arrive with the
calibration issue; nothing here is used by the simulator yet.
"""
