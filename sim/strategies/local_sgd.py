"""``local-sgd:k``: every worker applies its own gradient each iteration, and the models
are averaged (one all-reduce of every parameter) every k iterations.

Local SGD (Stich, ICLR 2019; Lin et al., "Don't Use Large Mini-Batches, Use Local
SGD", ICLR 2020): communication is paid once per k iterations instead of every
iteration, at the price of models that drift apart between averagings. Iteration t
averages when (t + 1) mod k = 0: after its local update, the all-reduce of the
parameters (as many bytes as the gradients), and forward(t + 1) waits for the average.
``local-sgd:1`` communicates every iteration, as ``sync`` does (the average of models
after one local step is the model after one step on the averaged gradient, for SGD).

Its update rule is its own: ``whatif --convergence`` uses a figure only if the
convergence run measured ``local-sgd:k`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import COMPUTE, TaskGraph, channel
from sim.strategies._params import int_param
from sim.strategies.base import BuildContext, StrategyDefaults


@dataclass(frozen=True)
class LocalSGD(StrategyDefaults):
    family = "local-sgd"
    k: int = 1
    name: str = "local-sgd"

    @property
    def update_rule(self) -> str:
        return self.name

    @property
    def period(self) -> int:
        return self.k

    def build(self, ctx: BuildContext) -> TaskGraph:
        g = TaskGraph(channels=1)
        model_bytes = sum(ctx.grad_bytes)
        cost = ctx.allreduce(model_bytes)
        gate: list[int] = []  # what forward(t, 0) waits for
        for t in range(ctx.iterations):
            prev = gate
            for layer in range(ctx.layers):
                prev = [
                    g.add(
                        "forward",
                        COMPUTE,
                        t,
                        ctx.names[layer],
                        ctx.forward_s[layer],
                        prev,
                        (t, 0, layer),
                        memory_bytes=ctx.activation_bytes[layer],
                    )
                ]
            for k, layer in enumerate(reversed(range(ctx.layers))):
                prev = [
                    g.add(
                        "backward",
                        COMPUTE,
                        t,
                        ctx.names[layer],
                        ctx.backward_s[layer],
                        prev,
                        (t, 1, k),
                        memory_bytes=-ctx.activation_bytes[layer],
                    )
                ]
            gate = [g.add("update", COMPUTE, t, "all", sum(ctx.update_s), prev, (t, 2, 0))]
            if (t + 1) % self.k == 0 and model_bytes > 0:
                gate = [
                    g.add(
                        "comm",
                        channel(0),
                        t,
                        "average",
                        cost.bandwidth_s,
                        gate,
                        (t, 0),
                        latency_s=cost.latency_s,
                        links=cost.links,
                        nbytes=model_bytes,
                    )
                ]
        return g


def parse(spec: str, param: str | None, **_options) -> LocalSGD:
    k = int_param(spec, param, default=4, minimum=1, meaning="the averaging period k (iterations)")
    return LocalSGD(k=k, name=f"local-sgd:{k}")
