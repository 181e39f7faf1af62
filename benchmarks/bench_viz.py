"""Timeline HTML: file size and render time in headless Chromium, at ~10k and ~100k spans.

    python benchmarks/bench_viz.py [--out /tmp/viz_shots] [--repeat 1]

Traces: ResNet-50 on dgx-a100, bucketed, explicit mode, 16 ranks (224 spans per rank
and iteration): 3 iterations (10,752 spans) and 28 iterations (100,352 spans). Prints,
per size: spans, seconds to build the figure and write the page, the page's size, and
the render time: from navigation start to the end of ``Plotly.newPlot`` (the page marks
it; this includes reading and parsing the page and plotly.js), best of --repeat, with a
fresh browser each time. Also writes a screenshot of each page and of a scaling plot to
--out. Needs chromium (apt-get install chromium); the numbers are wall times on this
machine: compare them only with runs on the same machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import plotly.graph_objects as go
from playwright.sync_api import sync_playwright

from hardware_profiles import load_profile
from sim.analysis.device_sweep import sweep_devices
from sim.app.spec import ScenarioSpec
from sim.engine.simulate import simulate
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategies, parse_strategy
from sim.viz import figures as viz
from workloads import load_workload

RENDERED = "document.getElementById('dtsim-plot-0').dataset.dtsimRendered || null"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's chromium, driven by playwright (no `playwright install`), as tests/test_viz_browser.py.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def big_trace(iterations: int):
    sc = make_scenario(
        load_workload("resnet50"),
        load_profile("dgx-a100"),
        16,
        batch_per_device=64,
        iterations=iterations,
        ranks="explicit",
    )
    trace, _ = simulate(sc, parse_strategy("bucketed"))
    return trace


def render(path: Path, shot: Path | None, repeat: int) -> tuple[float, int, list[str]]:
    best, n_traces, errors = float("inf"), 0, []
    with sync_playwright() as p:
        for i in range(repeat):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                errors = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(path.as_uri(), timeout=120_000)
                page.wait_for_function(f"!!({RENDERED})", timeout=120_000)
                best = min(best, float(page.evaluate(RENDERED)) / 1e3)
                n_traces = page.evaluate("document.getElementById('dtsim-plot-0').data.length")
                if shot and i == 0:
                    page.screenshot(path=shot)
            finally:
                browser.close()
    return best, n_traces, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/viz_shots")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if CHROMIUM is None:
        sys.exit("needs chromium (apt-get install chromium)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    # Baseline: a page with plotly.js and an empty figure (reading and parsing the
    # library is most of a small page's time).
    page = out / "empty.html"
    viz.write_html(go.Figure(), page)
    seconds, _, _ = render(page, None, args.repeat)
    size = page.stat().st_size / 1e6
    print(f"empty figure (plotly.js alone): {size:.2f} MB, render {seconds:.2f} s")
    for label, iterations in (("10k", 3), ("100k", 28)):
        trace = big_trace(iterations)
        t0 = time.perf_counter()
        # A limit above the trace: draw every span (the point is the cost of 100k).
        fig = viz.timeline_figure([("bucketed, 16 ranks", trace)], max_spans=len(trace))
        t1 = time.perf_counter()
        page = out / f"timeline_{label}.html"
        viz.write_html(fig, page)
        t2 = time.perf_counter()
        seconds, n_traces, errors = render(page, out / f"timeline_{label}.png", args.repeat)
        print(
            f"{label}: {len(trace):,} spans, figure {t1 - t0:.2f} s, write {t2 - t1:.2f} s, "
            f"{page.stat().st_size / 1e6:.2f} MB, render {seconds:.2f} s "
            f"({n_traces} plotly traces, {len(errors)} JS errors)"
        )
    # A scaling plot (AlexNet's 61M parameters on 10 Gb/s NICs: communication-bound),
    # with the breakdown at the largest count.
    options = {
        "hardware": "dgx1-p100",
        "workload": "alexnet",
        "batch_per_device": 32,
        "iterations": 12,
        "nic_gbps": 10,
    }
    strategies = parse_strategies("sync,bucketed,delayed:1")
    counts = [8, 16, 32, 64]
    rows = sweep_devices(ScenarioSpec(**options, devices=counts[0]), strategies, counts)
    last = [r for r in rows if r["devices"] == counts[-1]]
    page = out / "scaling.html"
    viz.write_html([viz.scaling_figure(rows), viz.breakdown_figure(last)], page)
    seconds, _, errors = render(page, out / "scaling.png", 1)
    size = page.stat().st_size / 1e6
    print(f"scaling: {size:.2f} MB, render {seconds:.2f} s, {len(errors)} JS errors")
    # The what-if page of the largest count: three strategies' timelines.
    from sim.app.whatif import WhatifRequest, whatif

    spec = ScenarioSpec(**options, devices=counts[-1])
    traces = whatif(WhatifRequest(spec, strategies="sync,bucketed,delayed:1")).traces_in_row_order()
    page = out / "whatif_timeline.html"
    viz.write_html(viz.timeline_figure(traces), page)
    seconds, _, errors = render(page, out / "whatif_timeline.png", 1)
    size = page.stat().st_size / 1e6
    print(f"what-if timeline: {size:.2f} MB, render {seconds:.2f} s, {len(errors)} JS errors")
    print(f"screenshots and pages in {out}")


if __name__ == "__main__":
    main()
