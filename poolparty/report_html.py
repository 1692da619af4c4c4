"""A map's report as HTML: a fragment for Jupyter (``Report._repr_html_``) and a page of
its own (``Report.html()``, ``poolparty report --html``).

The page is read where the map ran, often on a cluster without internet access, or
mailed as an attachment: it loads nothing, neither script nor font nor stylesheet, and
needs no JavaScript. The charts are SVG written here; hovering a bar shows its SVG
``<title>``. Colours are SVG attributes, not CSS, so that the charts keep them where a
notebook viewer strips ``<style>``. Every text from the map (a host name, an exception
type) is escaped.
"""

from __future__ import annotations

import math
from html import escape

from .report import (
    ClaimRecord,
    Report,
    WorkerRecord,
    headline,
    seconds_text,
    summary_rows,
)

#: the charts' width in SVG units (the page scales them down to fit)
WIDTH = 900
#: room on the left of the timeline for the workers' labels, and below for the axis
LABEL_WIDTH = 190
AXIS_HEIGHT = 34
#: room above the first row, for its label
TOP_MARGIN = 8
#: a row's height, at most; past MAX_ROWS_HEIGHT, rows get thinner (hundreds of workers)
ROW_HEIGHT = 22
MAX_ROWS_HEIGHT = 640
#: rows thinner than this have their claims fill them, without the room around
THIN_ROW = 6
#: the smallest gap between two workers' labels: thinner rows label only some of them
LABEL_SPACING = 11
HISTOGRAM_HEIGHT = 220
MIN_BINS, MAX_BINS = 10, 20
#: the steps of time axes: as people count time (seconds, minutes, hours, days)
TICK_STEPS = ([m * 10.0**k for k in range(-3, 2) for m in (1, 2, 5)]
              + [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400])
MAX_TICKS = 8
COLOURS = {"ok": "#4c78a8", "failed": "#e45756", "queued": "#9a9a9a", "run": "#dfe6ee",
           "lost": "#f6d5d5", "bin": "#72a0c9", "axis": "#555555"}

STYLE = """
.poolparty-report { font-family: sans-serif; font-size: 14px; color: #222; }
.poolparty-report h3 { font-size: 15px; margin: 18px 0 6px; }
.poolparty-report svg { max-width: 100%; height: auto; display: block; }
.poolparty-report svg text { font-size: 11px; fill: #333; }
.poolparty-report table { border-collapse: collapse; }
.poolparty-report th, .poolparty-report td { padding: 2px 12px 2px 0; text-align: left;
  vertical-align: top; }
.poolparty-report td.count { text-align: right; }
.poolparty-report table.failures th { border-bottom: 1px solid #999; }
.poolparty-report .legend span { display: inline-block; margin-right: 14px; }
.poolparty-report .swatch { display: inline-block; width: 10px; height: 10px;
  margin-right: 4px; }
"""


def render_fragment(report: Report) -> str:
    """The report as one ``<div>`` (no ``<html>``): what a notebook shows."""
    return "\n".join([
        '<div class="poolparty-report">',
        f"<style>{STYLE}</style>",
        summary(report),
        f"<h3>Timeline: {len(report.claims)} claim(s) on {len(report.workers)} "
        "worker(s)</h3>",
        legend(),
        timeline(report),
        f"<h3>Task durations: {len(report.tasks)} task(s) recorded</h3>",
        histogram([task.seconds for task in report.tasks]),
        "<h3>Failures</h3>",
        failure_table(report),
        "</div>",
    ])


def render_page(report: Report) -> str:
    """A whole HTML5 page around the fragment, that needs nothing else to be viewed."""
    title = escape(f"poolparty report: map {report.map_id}")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title>",
        "<style>body { margin: 24px; max-width: 960px; } "
        "h2 { font-family: sans-serif; font-size: 18px; }</style>",
        "</head>",
        "<body>",
        f"<h2>{title}</h2>",
        render_fragment(report),
        "</body>",
        "</html>",
        "",
    ])


# ---------------------------------------------------------------------------- summary
def summary(report: Report) -> str:
    """The numbers a user acts on, as the text report has them; the fields not known
    (None) left out."""
    head = headline(report)
    rows = "\n".join(f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>"
                     for name, value in summary_rows(report))
    return f'<p class="headline">{escape(head)}</p>\n<table class="summary">\n{rows}\n</table>'


def legend() -> str:
    entries = (("ok", "claim, no task raised"), ("failed", "claim with a task that raised"),
               ("queued", "worker queued (submitted -> started)"), ("run", "worker running"),
               ("lost", "worker lost"))
    return '<div class="legend">' + "".join(
        f'<span><span class="swatch" style="background: {COLOURS[key]}"></span>'
        f"{escape(text)}</span>" for key, text in entries) + "</div>"


# ---------------------------------------------------------------------------- timeline
class Scale:
    """Seconds to SVG x: ``low``..``high`` onto ``left``..``right``."""

    def __init__(self, low: float, high: float, left: float, right: float) -> None:
        self.low, self.left = low, left
        self.factor = (right - left) / (high - low) if high > low else 0.0

    def __call__(self, seconds: float) -> float:
        return self.left + (seconds - self.low) * self.factor


def timeline(report: Report) -> str:
    """One row per worker (its queue wait, its run, its claims), time across."""
    rows = sorted({w.worker for w in report.workers} | {c.worker for c in report.claims})
    if not rows:
        return '<p class="empty">no worker ran</p>'
    row = min(ROW_HEIGHT, MAX_ROWS_HEIGHT / len(rows))
    top_of = {worker: TOP_MARGIN + position * row for position, worker in enumerate(rows)}
    bottom = TOP_MARGIN + row * len(rows)
    low, high = time_span(report)
    x = Scale(low, high, LABEL_WIDTH, WIDTH - 10)
    parts = [svg_open("timeline", bottom + AXIS_HEIGHT)]
    parts += [worker_marks(w, x, top_of[w.worker], row) for w in report.workers]
    parts += [claim_rect(c, x, top_of[c.worker], row) for c in report.claims]
    parts += worker_labels(rows, report.workers, row)
    parts += time_axis(x, low, high, bottom)
    parts.append("</svg>")
    return "\n".join(parts)


def time_span(report: Report) -> tuple[float, float]:
    """From the map's start (or the earliest time, a node's clock may be a little
    behind) to the latest time known."""
    times = [0.0, report.wall_seconds or 0.0]
    for worker in report.workers:
        times += [t for t in (worker.submitted, worker.started, worker.ended) if t is not None]
    for claim in report.claims:
        times += [claim.start, claim.start + claim.seconds]
    low, high = min(times), max(times)
    return low, high if high > low else low + 1.0


def svg_open(name: str, height: float) -> str:
    return (f'<svg class="{name}" width="{WIDTH}" height="{height:.0f}" '
            f'viewBox="0 0 {WIDTH} {height:.0f}" role="img">')


def rect(css: str, x0: float, x1: float, y: float, height: float, fill: str, title: str,
         data: dict[str, int] | None = None, outline: float = 0.0) -> str:
    """A bar from x0 to x1 (at least half a unit wide: a short claim must show), its
    hover text an SVG title; ``outline``: the width of a white edge that keeps
    neighbouring bars apart."""
    attributes = "".join(f' data-{key}="{escape(str(value))}"'
                         for key, value in (data or {}).items())
    if outline:
        attributes += f' stroke="#ffffff" stroke-width="{outline:.2f}"'
    return (f'<rect class="{css}"{attributes} x="{x0:.2f}" y="{y:.2f}" '
            f'width="{max(x1 - x0, 0.5):.2f}" height="{max(height, 0.5):.2f}" '
            f'fill="{fill}"><title>{escape(title)}</title></rect>')


def worker_name(worker: WorkerRecord) -> str:
    return f"worker {worker.worker}" + (f" on {worker.host}" if worker.host else "")


def worker_marks(worker: WorkerRecord, x: Scale, top: float, row: float) -> str:
    """The worker's queue wait, a thin grey line, and its run, a faint band (red when
    it was lost), where the times are known."""
    marks = []
    if worker.submitted is not None and worker.started is not None:
        marks.append(rect("queued", x(worker.submitted), x(worker.started),
                          top + row * 0.45, row * 0.1, COLOURS["queued"],
                          f"{worker_name(worker)}: queued "
                          f"{seconds_text(worker.started - worker.submitted)} s"
                          + (f" (job {worker.job})" if worker.job else "")))
    if worker.started is not None and worker.ended is not None:
        lost = worker.ending not in ("finished", "unknown")
        marks.append(rect("run lost" if lost else "run", x(worker.started), x(worker.ended),
                          top + row * 0.05, row * 0.9, COLOURS["lost" if lost else "run"],
                          f"{worker_name(worker)}: ran {seconds_text(worker.started)}-"
                          f"{seconds_text(worker.ended)} s, {worker.ending}, "
                          f"{worker.claims} claim(s), {worker.tasks} task(s)"))
    return "\n".join(marks)


def claim_rect(claim: ClaimRecord, x: Scale, top: float, row: float) -> str:
    last = claim.first + claim.tasks - 1
    tasks = f"task {claim.first}" if claim.tasks == 1 else f"tasks {claim.first}-{last}"
    title = (f"claim {claim.claim} (worker {claim.worker}): {tasks}, "
             f"{seconds_text(claim.seconds)} s" + (f", {claim.failed} raised" if claim.failed
                                                   else ""))
    outcome = "failed" if claim.failed > 0 else "ok"
    inset = row * (0.2 if row >= THIN_ROW else 0.05)  # thin rows: the claims fill them
    return rect(f"claim {outcome}", x(claim.start), x(claim.start + claim.seconds),
                top + inset, row - 2 * inset, COLOURS[outcome], title,
                {"claim": claim.claim, "worker": claim.worker, "first": claim.first,
                 "tasks": claim.tasks}, outline=min(0.5, row / 20))


def worker_labels(rows: list[int], workers: list[WorkerRecord], row: float) -> list[str]:
    """A label per row, or per few rows when they are thin (hundreds of workers)."""
    by_id = {worker.worker: worker for worker in workers}
    every = max(1, math.ceil(LABEL_SPACING / row))
    labels = []
    for position in range(0, len(rows), every):
        worker = by_id.get(rows[position])
        text = worker_name(worker) if worker else f"worker {rows[position]}"
        labels.append(f'<text class="worker" x="{LABEL_WIDTH - 6}" '
                      f'y="{TOP_MARGIN + (position + 0.5) * row:.2f}" text-anchor="end" '
                      f'dominant-baseline="middle">{escape(shorten(text, 30))}</text>')
    return labels


def shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + "\u2026"


def time_axis(x: Scale, low: float, high: float, top: float) -> list[str]:
    """The axis under the rows: a tick every round number of seconds, minutes or
    hours, at most MAX_TICKS of them."""
    step = tick_step(high - low)
    unit, divisor = ("h", 3600) if step >= 3600 else ("min", 60) if step >= 60 else ("s", 1)
    axis = [line(x(low), top, x(high), top)]
    tick = math.ceil(low / step) * step
    while tick <= high + step * 1e-9:
        axis.append(line(x(tick), top, x(tick), top + 4))
        axis.append(f'<text x="{x(tick):.2f}" y="{top + 16}" text-anchor="middle">'
                    f"{tick / divisor:g} {unit}</text>")
        tick += step
    axis.append(f'<text x="{(x(low) + x(high)) / 2:.2f}" y="{top + 30}" '
                'text-anchor="middle">since the map\'s start</text>')
    return axis


def tick_step(span: float) -> float:
    wanted = span / MAX_TICKS
    for step in TICK_STEPS:
        if step >= wanted:
            return step
    return 86400 * math.ceil(wanted / 86400)


def line(x0: float, y0: float, x1: float, y1: float) -> str:
    return (f'<line x1="{x0:.2f}" y1="{y0:.2f}" x2="{x1:.2f}" y2="{y1:.2f}" '
            f'stroke="{COLOURS["axis"]}" stroke-width="1"/>')


# ---------------------------------------------------------------------------- histogram
def histogram(durations: list[float]) -> str:
    """How the tasks' durations spread: what a chunk size or a time limit must allow."""
    if not durations:
        return '<p class="empty">no task recorded</p>'
    low, high = min(durations), max(durations)
    count = 1 if high == low else min(MAX_BINS, max(MIN_BINS, math.ceil(math.sqrt(len(
        durations)))))
    width = (high - low) / count
    bins = [0] * count
    for duration in durations:
        bins[min(int((duration - low) / width), count - 1) if width else 0] += 1
    left, bottom, top = 50, HISTOGRAM_HEIGHT - AXIS_HEIGHT, 10
    x = Scale(0, count, left, WIDTH - 10)
    tallest = max(bins)
    parts = [svg_open("histogram", HISTOGRAM_HEIGHT)]
    for number, tasks in enumerate(bins):
        height = (bottom - top) * tasks / tallest
        first, last = low + number * width, low + (number + 1) * width
        parts.append(rect("bin", x(number) + 1, x(number + 1) - 1, bottom - height, height,
                          COLOURS["bin"], f"{tasks} tasks of {range_text(first, last, width)} s")
                     if tasks else "")
    parts += [line(left, bottom, WIDTH - 10, bottom), line(left, top, left, bottom)]
    parts += [f'<text x="{x(edge):.2f}" y="{bottom + 15}" text-anchor="middle">'
              f"{edge_text(low + edge * width, width)}</text>" for edge in edge_labels(count)]
    parts += [f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{tallest}</text>',
              f'<text x="{left - 6}" y="{bottom}" text-anchor="end">0</text>',
              f'<text x="{(left + WIDTH) / 2:.0f}" y="{bottom + 30}" text-anchor="middle">'
              "task duration (s)</text>",
              f'<text x="12" y="{(top + bottom) / 2:.0f}" text-anchor="middle" '
              f'transform="rotate(-90 12 {(top + bottom) / 2:.0f})">tasks</text>',
              "</svg>"]
    return "\n".join(part for part in parts if part)


def range_text(first: float, last: float, width: float = 0.0) -> str:
    return edge_text(first, width) if first == last else \
        f"{edge_text(first, width)}-{edge_text(last, width)}"


def edge_text(seconds: float, width: float) -> str:
    """An edge of the histogram's bins ``width`` apart, with the decimals that tell it
    from the next: tasks that all take about 0.40 s have edges 0.4001, 0.4006..."""
    if width <= 0 or width >= 0.01:
        return seconds_text(seconds)
    return f"{seconds:.{min(6, 1 - math.floor(math.log10(width)))}f}"


def edge_labels(count: int) -> list[int]:
    """Which bins' edges get a label: about five of them, both ends included."""
    every = max(1, math.ceil(count / 5))
    return sorted({*range(0, count + 1, every), count})


# ---------------------------------------------------------------------------- failures
def failure_table(report: Report) -> str:
    """Workers lost by how they ended, tasks that raised by exception type."""
    rows = [(f"worker lost: {how}", count) for how, count in report.failures.items()]
    rows += [(f"task raised: {kind}", count) for kind, count in report.task_errors.items()]
    if not rows:
        return '<p class="no-failures">no failures</p>'
    lines = [f'<tr><td>{escape(text)}</td><td class="count">{count}</td></tr>'
             for text, count in rows]
    return "\n".join(['<table class="failures">', "<tr><th>failure</th><th>count</th></tr>",
                      *lines, "</table>"])
