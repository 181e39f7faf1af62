"""The HTML pages as a reader sees them: Debian's headless Chromium, driven by playwright.

Each test loads a page written by sim.viz.figures, waits for plotly to finish drawing (the
page marks it) and checks what is on the screen: the title and the metrics table, the bars'
colours in a screenshot of every lane group, the iteration-start lines where the time axis
says they are, a hover label naming the span under the mouse, a legend click hiding a kind
in every group, a drag zooming every group, and no JavaScript error. Skipped without
chromium (apt-get install chromium) or playwright (pip install -e '.[dev]'); playwright's
own browser download is not needed.
"""

from __future__ import annotations

import re
import shutil
import struct
import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest

from hardware_profiles import load_profile
from sim.engine.simulate import simulate
from sim.engine.trace import Trace
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from sim.units import fmt_time
from sim.viz import figures as viz

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')"
)
expect = sync_api.expect
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)"),
]
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
STRATEGIES = ("sync", "bucketed", "delayed:2")


# -- pixels -------------------------------------------------------------------------------
def decode_png(png: bytes) -> np.ndarray:
    """RGB pixels (rows x columns x 3) of an 8-bit, non-interlaced RGB or RGBA PNG, as
    Chromium writes them (no image library is installed)."""
    pos, data = 8, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and not interlace, (depth, colour)
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    n = 3 if colour == 2 else 4
    rows = np.frombuffer(zlib.decompress(data), np.uint8).reshape(height, 1 + width * n)
    out = np.zeros((height + 1, width * n), np.uint8)  # out[0]: the zero row above the image
    for y, filtered in enumerate(rows, start=1):
        kind, line, up = filtered[0], filtered[1:], out[y - 1]
        if kind in (0, 1, 2):  # none, left, up (uint8 sums wrap at 256 as PNG's do)
            line = line.reshape(-1, n).cumsum(0, dtype=np.uint8).ravel() if kind == 1 else line
            out[y] = line + up if kind == 2 else line
            continue
        cur, above = line.tolist(), [0] * n + up.tolist()  # 3 average, 4 Paeth: byte by byte
        left = [0] * n + cur
        for i in range(len(cur)):
            a, b, c = left[i], above[i + n], above[i]
            if kind == 3:
                guess = (a + b) >> 1
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                guess = a if pa <= pb and pa <= pc else b if pb <= pc else c
            left[i + n] = (cur[i] + guess) & 255
        out[y] = left[n:]
    return out[1:].reshape(height, width, n)[..., :3]


def rgb(hex_colour: str) -> tuple[int, ...]:
    return tuple(bytes.fromhex(hex_colour.lstrip("#")))


def darker(hex_colour: str) -> tuple[int, ...]:
    """The shade of every other bar on a row (viz.ALTERNATE_DARKER darker)."""
    return tuple(round(c * (1 - viz.ALTERNATE_DARKER)) for c in rgb(hex_colour))


def count(pixels: np.ndarray, *colours: tuple[int, ...]) -> int:
    """Pixels of exactly one of these colours."""
    return int(sum((pixels == c).all(axis=-1).sum() for c in colours))


# -- the page -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def errors() -> list[str]:
    """What the page threw or logged as an error."""
    return []


@pytest.fixture
def page(browser, errors):
    tab = browser.new_page(viewport={"width": 1400, "height": 900})
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def traces() -> list[tuple[str, Trace]]:
    from workloads import load_workload

    sc = make_scenario(
        load_workload("alexnet"), load_profile("dgx1-p100"), 8, global_batch=256, iterations=6
    )
    return [(s, simulate(sc, parse_strategy(s))[0]) for s in STRATEGIES]


@pytest.fixture(scope="module")
def timeline_page(tmp_path_factory, traces):
    path = tmp_path_factory.mktemp("viz") / "timeline.html"
    viz.write_html(viz.timeline_figure(traces), path)
    return path


def open_page(page, path, plots: int = 1) -> None:
    page.goto(path.as_uri())
    for i in range(plots):
        page.wait_for_function(
            f"!!document.getElementById('dtsim-plot-{i}').dataset.dtsimRendered", timeout=60_000
        )


def plot_areas(page, plot: int = 0) -> list[dict[str, float]]:
    """Where the subplots of one figure draw (for a timeline: the lane groups, top to
    bottom): the rectangles a reader drags on to zoom."""
    areas = page.locator(f"#dtsim-plot-{plot} .nsewdrag").all()
    return sorted((a.bounding_box() for a in areas), key=lambda b: (b["y"], b["x"]))


def screenshot(page, area: dict[str, float]) -> np.ndarray:
    clip = {k: round(area[k]) for k in ("x", "y", "width", "height")}
    return decode_png(page.screenshot(clip=clip, full_page=True))


def time_axis(page) -> Callable[[float], float]:
    """ms -> x on the page, read off the time axis's tick labels (centred on their tick)."""
    ticks = [
        (float(t.text_content().replace("\u2212", "-")), t.bounding_box())
        for t in page.locator(".xaxislayer-above text").all()
    ]
    assert len(ticks) >= 2, ticks
    (t0, b0), (t1, b1) = ticks[0], ticks[-1]
    x0, x1 = b0["x"] + b0["width"] / 2, b1["x"] + b1["width"] / 2
    return lambda ms: x0 + (ms - t0) * (x1 - x0) / (t1 - t0)


def grey_lines(pixels: np.ndarray) -> list[float]:
    """Columns of the vertical grey lines (the iteration starts) in a lane group's pixels:
    grey darker than the grid, down at least a third of the group's height."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    grey = (r == g) & (g == b) & (r < 225)
    columns = np.flatnonzero(grey.sum(axis=0) >= pixels.shape[0] / 3)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1) if len(columns) else []
    return [float(run.mean()) for run in runs]


def iteration_starts_ms(trace: Trace) -> list[float]:
    """Rank 0's first forward of each iteration, in ms."""
    starts: dict[int, float] = {}
    for s in trace.spans:
        if s.rank == 0 and s.kind == "forward":
            starts[s.iteration] = min(starts.get(s.iteration, s.start_s), s.start_s)
    return sorted(t * 1e3 for t in starts.values())


def assert_lines_at_iteration_starts(page, traces) -> None:
    """In every lane group, a grey line at each iteration start in view, where the time
    axis puts it (within 2 px), and no other."""
    x_of = time_axis(page)
    for (name, trace), area in zip(traces, plot_areas(page), strict=True):
        want = [x_of(t) for t in iteration_starts_ms(trace)]
        want = [x - area["x"] for x in want if area["x"] + 2 < x < area["x"] + area["width"] - 2]
        seen = grey_lines(screenshot(page, area))
        assert len(seen) == len(want) and np.allclose(seen, want, atol=2), (name, seen, want)


def wait_until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the page did not change"
        time.sleep(0.1)


# -- the timeline -------------------------------------------------------------------------
def test_timeline_shows_the_metrics_and_every_group_in_colour(page, errors, timeline_page, traces):
    open_page(page, timeline_page)
    expect(page.get_by_text("dtsim timeline: sync, bucketed, delayed:2")).to_be_visible()
    expect(page.get_by_text("metrics (steady state)")).to_be_visible()
    for row in viz.summary_rows(traces):
        for cell in (row["name"], fmt_time(row["iteration_time_s"]), fmt_time(row["comm_s"])):
            expect(page.get_by_text(cell, exact=True).first).to_be_visible()
    expect(page.get_by_text("rank 0 (representative of 8) · comm1")).to_be_visible()
    expect(page.get_by_text("time (ms)")).to_be_visible()
    for name, area in zip(STRATEGIES, plot_areas(page), strict=True):
        expect(page.get_by_text(name, exact=True).last).to_be_visible()
        pixels = screenshot(page, area)
        # The WebGL bars drew, in both shades of their kind's colour.
        for kind in ("forward", "backward", "comm"):
            colour = viz.KIND_COLOURS[kind]
            assert count(pixels, rgb(colour)) > 300, (name, kind)
            assert count(pixels, darker(colour)) > 300, (name, kind)
        # The update is one short bar per iteration: in either shade, as the spans
        # before it on the row fall (sync's gradient copy moved it to the darker one).
        update = viz.KIND_COLOURS["update"]
        assert count(pixels, rgb(update)) + count(pixels, darker(update)) > 20, name
    assert_lines_at_iteration_starts(page, traces)
    assert errors == []


def test_hover_over_a_bar_names_its_span(page, errors, timeline_page, traces):
    open_page(page, timeline_page)
    area = plot_areas(page)[0]  # sync
    pixels = screenshot(page, area)
    # The mouse goes to the middle of the widest collective on the first row that has one
    # (rank 0's comm0: the link rows below draw the same collectives again).
    mask = (pixels == rgb(viz.KIND_COLOURS["comm"])).all(axis=-1)
    top = int(np.flatnonzero(mask.any(axis=1))[0])
    row = top + viz.BAR_PX // 2
    columns = np.flatnonzero(mask[row])
    bar = max(np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1), key=len)
    x, y = area["x"] + bar.mean(), area["y"] + row
    page.mouse.move(x - 5, y)
    page.mouse.move(x, y)
    label = page.locator(".hovertext")
    label.wait_for()
    lines = label.locator("tspan.line").all_text_contents()
    name, kind = re.fullmatch(r"(.+) \((\w+)\)", lines[0]).groups()
    assert kind == "comm" and lines[1] == "sync", lines
    iteration = int(re.fullmatch(r"iteration (\d+)", lines[2]).group(1))
    start_ms = float(re.fullmatch(r"start ([\d.]+) ms", lines[3]).group(1))
    duration_ms = float(re.fullmatch(r"duration ([\d.]+) ms", lines[4]).group(1))
    (span,) = [
        s
        for s in traces[0][1].spans
        if (s.rank, s.resource, s.kind, s.label, s.iteration) == (0, "comm0", kind, name, iteration)
    ]
    assert start_ms == pytest.approx(span.start_s * 1e3, abs=0.0015)
    assert duration_ms == pytest.approx(span.duration_s * 1e3, rel=1e-3)
    assert lines[5].endswith("B")  # the bytes it carries
    # It is the bar under the mouse.
    x_of = time_axis(page)
    assert x_of(span.start_s * 1e3) < x < x_of(span.end_s * 1e3)
    assert errors == []


def test_a_legend_click_hides_a_kind_in_every_group(page, errors, timeline_page):
    open_page(page, timeline_page)
    forward = (rgb(viz.KIND_COLOURS["forward"]), darker(viz.KIND_COLOURS["forward"]))
    backward = (rgb(viz.KIND_COLOURS["backward"]), darker(viz.KIND_COLOURS["backward"]))
    areas = plot_areas(page)
    assert all(count(screenshot(page, a), *forward) > 0 for a in areas)
    entry = page.get_by_text("forward", exact=True).bounding_box()
    page.mouse.click(entry["x"] + entry["width"] / 2, entry["y"] + entry["height"] / 2)
    wait_until(lambda: all(count(screenshot(page, a), *forward) == 0 for a in areas))
    assert all(count(screenshot(page, a), *backward) > 300 for a in areas)
    assert errors == []


def test_a_drag_in_one_group_zooms_every_group(page, errors, timeline_page, traces):
    open_page(page, timeline_page)
    assert_lines_at_iteration_starts(page, traces)
    x_of = time_axis(page)
    ms_per_px = 1 / (x_of(1) - x_of(0))
    top = plot_areas(page)[0]
    # Drag across the top group's middle fifth (mostly horizontal: it zooms time).
    x0, x1 = top["x"] + 0.4 * top["width"], top["x"] + 0.6 * top["width"]
    y = top["y"] + top["height"] / 2
    window = [(x - x_of(0)) * ms_per_px for x in (x0, x1)]  # ms
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, y + 1, steps=5)
    page.mouse.move(x1, y + 2, steps=5)
    page.mouse.up()
    wait_until(lambda: time_axis(page)(window[0]) < top["x"] + 5)
    # The time axis now spans the dragged window...
    zoomed = time_axis(page)
    assert zoomed(window[0]) == pytest.approx(top["x"], abs=0.02 * top["width"])
    assert zoomed(window[1]) == pytest.approx(top["x"] + top["width"], abs=0.02 * top["width"])
    # ...and every group draws its iteration starts on it.
    assert_lines_at_iteration_starts(page, traces)
    assert errors == []


def test_a_large_timeline_says_what_it_left_out(page, errors, tmp_path, traces):
    path = tmp_path / "small.html"
    viz.write_html(viz.timeline_figure(traces, max_spans=200), path)
    open_page(page, path)
    expect(page.get_by_text(re.compile(r"^Showing 162 spans"))).to_be_visible()
    assert errors == []


# -- scaling and breakdown ----------------------------------------------------------------
def test_scaling_and_breakdown_page(page, errors, tmp_path):
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
    viz.write_html([viz.scaling_figure(rows), viz.breakdown_figure(rows)], path)
    open_page(page, path, plots=2)
    for text in (
        "dtsim scaling",
        "speedup over one device",
        "parallel efficiency",
        "Where an iteration goes (steady state)",
        "sync @ 8",
        "bucketed @ 64",
    ):
        expect(page.get_by_text(text, exact=True).first).to_be_visible()
    # One line per strategy in both panels, in the strategies' colours.
    for area in plot_areas(page, 0):
        pixels = screenshot(page, area)
        for colour in viz.STRATEGY_COLOURS[:2]:
            assert count(pixels, rgb(colour)) > 50, colour
    # A stacked bar per row: compute at the bottom, exposed communication on it.
    (area,) = plot_areas(page, 1)
    pixels = screenshot(page, area)
    for kind in ("forward", "comm"):
        columns = np.flatnonzero((pixels == rgb(viz.KIND_COLOURS[kind])).all(axis=-1).any(0))
        assert len(np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)) == len(rows)
    assert errors == []


def test_a_page_error_is_caught(page, errors, tmp_path):
    """The error check can fail: a page that throws is reported."""
    path = tmp_path / "bad.html"
    path.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    page.goto(path.as_uri())
    wait_until(lambda: bool(errors), timeout_s=5)
    assert len(errors) == 1 and "undefinedFunction" in errors[0]


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
    pixels = decode_png((tmp_path / "s.png").read_bytes())
    assert pixels.shape[1] == 800 and pixels.mean(axis=-1).var() > 100
    assert count(pixels, rgb(viz.STRATEGY_COLOURS[0])) > 50
    assert (tmp_path / "s.svg").read_text().lstrip().startswith("<svg")
