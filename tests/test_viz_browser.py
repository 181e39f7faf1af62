"""The HTML pages in a real browser: headless Chromium over the DevTools protocol
(tests/cdp.py; no selenium, no websocket library).

Each test loads a page written by sim.viz.figures, waits for plotly to finish drawing (the page
marks it), and checks what a reader would see: every trace drawn, no JavaScript error,
a screenshot that is not blank and shows the bars' colours (so the WebGL layer drew),
hover text on a span, a legend click hiding a kind in every lane group, and one zoom
for every group. Skipped without chromium (apt-get install chromium).
"""

from __future__ import annotations

import pytest
from cdp import Browser, BrowserError, Screenshot, find_chromium

from hardware_profiles import load_profile
from sim.engine.simulate import simulate
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from sim.viz import figures as viz

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None, reason="needs chromium (apt-get install chromium)"),
]

PLOT = "document.getElementById('dtsim-plot-{i}')"
STRATEGIES = ("sync", "bucketed", "delayed:2")


@pytest.fixture(scope="module")
def browser():
    page = Browser.start(width=1400, height=900)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def traces():
    from workloads import load_workload

    sc = make_scenario(
        load_workload("alexnet"), load_profile("dgx1-p100"), 8, global_batch=256, iterations=6
    )
    return [(s, simulate(sc, parse_strategy(s))[0]) for s in STRATEGIES]


@pytest.fixture(scope="module")
def timeline_page(tmp_path_factory, traces):
    fig = viz.timeline_figure(traces)
    path = tmp_path_factory.mktemp("viz") / "timeline.html"
    viz.write_html(fig, path)
    return path, fig


def click(browser: Browser, start, end) -> None:
    """Press the left button at ``start``, move to ``end``, release (a click or a drag)."""
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": start[0], "y": start[1]})
    for kind, (x, y) in (("mousePressed", start), ("mouseMoved", end), ("mouseReleased", end)):
        browser.send(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1},
        )


def open_page(browser: Browser, path, plots: int = 1) -> None:
    browser.load(path)
    for i in range(plots):
        browser.wait_for(f"!!{PLOT.format(i=i)}.dataset.dtsimRendered", timeout_s=60)


def test_timeline_draws_every_trace_and_span(browser, timeline_page, traces):
    path, fig = timeline_page
    open_page(browser, path)
    gd = PLOT.format(i=0)
    assert browser.evaluate(f"{gd}.data.length") == len(fig.data)
    full = browser.evaluate(f"{gd}._fullData.map(t => [t.type, t.mode || '', t._length || 0])")
    bars = [n for kind, mode, n in full if kind == "scattergl" and mode == "lines"]
    links = sum(len(viz.link_spans(t, t.spans)) - len(t) for _, t in traces)
    assert sum(bars) // 3 == sum(len(t) for _, t in traces) + links
    ticks = browser.evaluate(
        "Array.from(document.querySelectorAll('.yaxislayer-above text')).map(e => e.textContent)"
    )
    assert "rank 0 (representative of 8) · comm1" in ticks
    assert browser.errors() == []
    shot = Screenshot(browser.screenshot())
    assert shot.variance > 100 and shot.colours > 50
    # The WebGL bars drew: their exact colours cover many pixels.
    for kind in ("forward", "backward", "comm"):
        assert shot.count(viz.KIND_COLOURS[kind]) > 1000, kind


def test_hover_over_a_span_names_it(browser, timeline_page):
    path, fig = timeline_page
    open_page(browser, path)
    gd = PLOT.format(i=0)
    i = next(k for k, t in enumerate(fig.data) if t.type == "scattergl" and t.mode == "markers")
    point = browser.evaluate(
        f"""(() => {{
        const gd = {gd}, t = gd._fullData[{i}], L = gd._fullLayout;
        const xa = L[t.xaxis.replace('x', 'xaxis')], ya = L[t.yaxis.replace('y', 'yaxis')];
        const box = gd.getBoundingClientRect();
        return [box.x + xa._offset + xa.l2p(t.x[1]), box.y + ya._offset + ya.l2p(t.y[1])];
        }})()"""
    )
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": point[0], "y": point[1]})
    text = browser.wait_value(
        "Array.from(document.querySelectorAll('.hovertext')).map(e => e.textContent).join('|')"
    )
    label = fig.data[i].text[1]
    assert label in text and "iteration" in text and "duration" in text and "start" in text


def test_legend_click_hides_a_kind_in_every_group(browser, timeline_page):
    path, fig = timeline_page
    open_page(browser, path)
    gd = PLOT.format(i=0)
    point = browser.evaluate(
        """(() => {
        const item = Array.from(document.querySelectorAll('.legend .traces'))
            .find(e => e.textContent === 'forward');
        const r = item.querySelector('.legendtoggle').getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2];
        })()"""
    )
    click(browser, point, point)
    forward = f"{gd}._fullData.filter(t => t.legendgroup === 'forward').map(t => t.visible)"
    browser.wait_for(f"{forward}.every(v => v === 'legendonly')")
    # Two shades of bars and the hover points, in every group.
    assert len(browser.evaluate(forward)) == 3 * len(STRATEGIES)
    others = f"{gd}._fullData.filter(t => t.legendgroup === 'backward').map(t => t.visible)"
    assert set(browser.evaluate(others)) == {True}
    assert browser.errors() == []


def test_a_zoom_in_one_group_zooms_every_group(browser, timeline_page):
    path, fig = timeline_page
    open_page(browser, path)
    gd = PLOT.format(i=0)
    axes = ["xaxis", "xaxis2", "xaxis3"]
    before = browser.evaluate(f"{axes}.map(a => {gd}._fullLayout[a].range)")
    # Drag a box across the top group's middle fifth (a mostly horizontal drag zooms time).
    x0, x1, y = browser.evaluate(
        f"""(() => {{
        const gd = {gd}, L = gd._fullLayout, xa = L.xaxis, ya = L.yaxis;
        const box = gd.getBoundingClientRect();
        const y = box.y + ya._offset + ya._length / 2;
        return [box.x + xa._offset + 0.4 * xa._length, box.x + xa._offset + 0.6 * xa._length, y];
        }})()"""
    )
    click(browser, (x0, y), (x1, y + 2))
    after = browser.wait_value(
        f"(() => {{ const r = {axes}.map(a => {gd}._fullLayout[a].range);"
        f" return r[0][0] !== {before[0][0]} ? r : null; }})()"
    )
    width = before[0][1] - before[0][0]
    assert after[0] == after[1] == after[2]
    assert after[0][0] == pytest.approx(before[0][0] + 0.4 * width, rel=0.02)
    assert after[0][1] - after[0][0] == pytest.approx(0.2 * width, rel=0.05)
    assert browser.errors() == []


def test_aggregated_timeline_says_what_it_left_out(browser, tmp_path, traces):
    path = tmp_path / "small.html"
    viz.write_html(viz.timeline_figure(traces, max_spans=200), path)
    open_page(browser, path)
    notes = browser.evaluate(
        "Array.from(document.querySelectorAll('.annotation-text')).map(e => e.textContent)"
    )
    assert any(n.startswith("Showing 150 spans") for n in notes), notes
    assert browser.errors() == []


def test_scaling_and_breakdown_page(browser, tmp_path):
    rows = [
        {
            "devices": n,
            "strategy": s,
            "iteration_time_s": 0.1 * (1 + n / 64) * f,
            "parallel_efficiency": 1 / ((1 + n / 64) * f),
            "comm_s": 0.02,
            "exposed_comm_s": 0.01 * f,
        }
        for n in (8, 16, 32, 64)
        for s, f in (("sync", 1.2), ("bucketed", 1.0))
    ]
    path = tmp_path / "scaling.html"
    figs = [viz.scaling_figure(rows), viz.breakdown_figure(rows)]
    viz.write_html(figs, path)
    open_page(browser, path, plots=2)
    counts = browser.evaluate(
        "Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => g.data.length)"
    )
    assert counts == [len(f.data) for f in figs]
    lines = browser.evaluate(
        f"{PLOT.format(i=0)}.querySelectorAll('.scatterlayer .trace .js-line').length"
    )
    assert lines == len(figs[0].data)
    bars = browser.evaluate(f"{PLOT.format(i=1)}.querySelectorAll('.bars .point').length")
    assert bars == 3 * len(rows)  # compute, exposed, hidden per row
    assert browser.errors() == []
    shot = Screenshot(browser.screenshot())
    assert shot.variance > 100 and shot.count(viz.STRATEGY_COLOURS[0]) > 100


def test_a_page_error_is_caught(browser, tmp_path):
    """The error check can fail: a page that throws is reported."""
    path = tmp_path / "bad.html"
    path.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    browser.load(path)
    browser.pump(0.2)
    errors = browser.errors()
    assert len(errors) == 1 and "undefinedFunction" in errors[0]
    with pytest.raises(BrowserError, match="threw"):
        browser.evaluate("undefinedFunction()")


def test_export_static_png_and_svg(tmp_path):
    """kaleido (optional: pip install kaleido) drives the same Debian chromium."""
    pytest.importorskip("kaleido")
    fig = viz.scaling_figure(
        [
            {"devices": n, "strategy": "sync", "parallel_efficiency": e}
            for n, e in ((8, 0.9), (16, 0.8))
        ]
    )
    viz.export_static(fig, tmp_path / "s.png", width_px=800)
    viz.export_static(fig, tmp_path / "s.svg", width_px=800)
    shot = Screenshot((tmp_path / "s.png").read_bytes())
    assert shot.width == 800 and shot.variance > 100
    assert (tmp_path / "s.svg").read_text().lstrip().startswith("<svg")
