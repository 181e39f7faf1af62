"""MPI jobs launched from dtsim: the one supervisor (:mod:`calibrate.mpi.supervisor`) that
the calibration runs (:mod:`calibrate.measure.comm`) and the real training runs
(:mod:`calibrate.realrun.training`) share."""
