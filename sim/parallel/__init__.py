"""3D parallelism of transformer decoders: data (D), tensor (T) and pipeline (P).

layout (the layout, its validation and rank placement) -> tensor (Megatron's split of
each layer) -> stages (what each stage's GPU does and holds per micro-batch) ->
pipeline (GPipe and 1F1B schedules, the task graph with one lane per stage) ->
simulate (engine -> Trace -> MFU, bubble, memory per GPU); analytic (closed forms)
and search (``dtsim tune --layouts``) read the same stage plans.
"""
