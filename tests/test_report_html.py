"""A map's report as HTML (poolparty.report_html): one bar per claim with its data, the
failures listed, every text from the map escaped, a page that loads nothing, and the
edge cases (no claim, no task, equal durations, hundreds of workers, a long map).

The reports are made by hand here; tests/test_report_browser.py loads a page in a real
browser."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from poolparty.report import ClaimRecord, Report, TaskRecord, WorkerRecord
from poolparty.report_html import render_fragment, render_page

HOSTILE = '<script>alert("x")</script>&'


def make_report(workers: int = 3, claims: int = 12, tasks_per_claim: int = 4,
                failures: dict[str, int] | None = None,
                task_errors: dict[str, int] | None = None,
                host: str = "node{}", seconds: float = 1.5) -> Report:
    """A report of ``claims`` claims dealt round-robin to ``workers`` workers, each claim
    ``seconds`` long; every seventh claim has a task that raised."""
    claim_records = [
        ClaimRecord(claim=number, worker=number % workers, first=number * tasks_per_claim,
                    tasks=tasks_per_claim, start=2.0 + (number // workers) * seconds,
                    seconds=seconds, failed=int(number % 7 == 6), result_bytes=1000 + number)
        for number in range(claims)]
    task_records = [
        TaskRecord(index=claim.first + offset, worker=claim.worker, claim=claim.claim,
                   start=claim.start + offset * seconds / tasks_per_claim,
                   seconds=seconds / tasks_per_claim * (1 + offset), cpu=0.1,
                   peak_memory=50 * 2**20, ok=not (claim.failed and offset == 0))
        for claim in claim_records for offset in range(tasks_per_claim)]
    end = 2.0 + (claims // max(workers, 1) + 1) * seconds
    worker_records = [
        WorkerRecord(worker=number, host=host.format(number), job=f"{100 + number}",
                     submitted=0.2, started=1.0 + number * 0.1, ended=end,
                     ending="finished" if number else "its job ran out of memory",
                     claims=sum(c.worker == number for c in claim_records),
                     tasks=sum(c.tasks for c in claim_records if c.worker == number))
        for number in range(workers)]
    return Report(
        map_id="20261207-031500-ab12", backend="local", state="failed",
        num_tasks=claims * tasks_per_claim, wall_seconds=end + 0.5, cpus_per_worker=1,
        memory_asked="8G", core_hours_used=0.01, core_hours_reserved=0.02,
        cpu_efficiency=0.5, idle_seconds=3.0, queue_wait_mean=0.9, queue_wait_max=1.0,
        peak_memory=50 * 2**20, memory_hint="asked 8G, peak 50M: 256M would do",
        client_cpu_seconds=0.4,
        failures={"its job ran out of memory": 1} if failures is None else failures,
        task_errors={"ValueError": 2} if task_errors is None else task_errors,
        slowest=sorted(task_records, key=lambda t: -t.seconds)[:5],
        workers=worker_records, claims=claim_records, tasks=task_records)


class Elements(HTMLParser):
    """Every start tag of a document: its name and attributes, and the text of the
    elements of interest (SVG titles, table cells)."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(document)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag):]

    def handle_data(self, data: str) -> None:
        if self._open:
            self.texts.setdefault(self._open[-1], []).append(data)

    def of_class(self, tag: str, name: str) -> list[dict[str, str | None]]:
        return [attrs for found, attrs in self.tags
                if found == tag and name in (attrs.get("class") or "").split()]


def claim_rects(document: str) -> list[dict[str, str | None]]:
    return Elements(document).of_class("rect", "claim")


def test_one_bar_per_claim_with_its_data_and_outcome():
    report = make_report(workers=3, claims=12)
    rects = claim_rects(render_fragment(report))
    assert len(rects) == len(report.claims)
    for attrs, claim in zip(rects, report.claims):
        assert (attrs["data-claim"], attrs["data-worker"], attrs["data-first"],
                attrs["data-tasks"]) == tuple(str(value) for value in (
                    claim.claim, claim.worker, claim.first, claim.tasks))
        assert ("failed" if claim.failed else "ok") in attrs["class"].split()
    assert sum("failed" in a["class"].split() for a in rects) == sum(
        c.failed > 0 for c in report.claims) > 0


def test_bars_hover_text_says_the_claims_tasks_and_time():
    titles = Elements(render_fragment(make_report(workers=2, claims=8))).texts["title"]
    assert "claim 6 (worker 0): tasks 24-27, 1.50 s, 1 raised" in titles
    assert "claim 1 (worker 1): tasks 4-7, 1.50 s" in titles


def test_each_worker_has_a_row_with_its_queue_wait_and_run():
    report = make_report(workers=4, claims=8)
    document = render_fragment(report)
    elements = Elements(document)
    assert len(elements.of_class("rect", "queued")) == 4
    assert len(elements.of_class("rect", "run")) == 4
    assert len(elements.of_class("rect", "lost")) == 1  # worker 0 ran out of memory
    labels = elements.of_class("text", "worker")
    assert len(labels) == 4
    for number in range(4):
        assert f"worker {number} on node{number}" in document


def test_failures_are_listed_with_their_counts():
    report = make_report(failures={"its job reached its time limit": 2,
                                   "its job ran out of memory": 1},
                         task_errors={"ValueError": 3})
    elements = Elements(render_fragment(report))
    assert elements.of_class("table", "failures")
    cells = elements.texts["td"]
    for text, count in (("worker lost: its job reached its time limit", "2"),
                        ("worker lost: its job ran out of memory", "1"),
                        ("task raised: ValueError", "3")):
        assert cells[cells.index(text) + 1] == count


def test_no_failures_is_said():
    document = render_fragment(make_report(failures={}, task_errors={}))
    assert "no failures" in document
    assert 'class="failures"' not in document


def test_the_summary_has_the_numbers_known():
    document = render_fragment(make_report())
    for text in ("wall time", "core-seconds", "36.0 used of 72.0 reserved",
                 "CPU efficiency", "50%", "queue wait",
                 "memory peak", "50M", "asked 8G, peak 50M: 256M would do", "client CPU",
                 "slowest tasks"):
        assert text in document


def test_core_time_is_in_hours_for_long_maps():
    report = make_report()
    report.core_hours_used, report.core_hours_reserved = 1.5, 3.0
    document = render_fragment(report)
    assert "core-hours" in document and "1.50 used of 3.00 reserved" in document


def test_unknown_numbers_are_left_out():
    report = make_report()
    report.wall_seconds = report.cpu_efficiency = report.queue_wait_mean = None
    report.queue_wait_max = report.peak_memory = report.memory_hint = None
    report.client_cpu_seconds = None
    document = render_fragment(report)
    for text in ("wall time", "CPU efficiency", "queue wait", "memory peak", "client CPU"):
        assert text not in document
    assert "None" not in document


def test_every_text_from_the_map_is_escaped():
    report = make_report(host=HOSTILE + "{}", failures={HOSTILE: 1},
                         task_errors={HOSTILE: 2})
    report.map_id = report.backend = HOSTILE
    report.memory_hint = HOSTILE
    report.workers[0].job = HOSTILE
    for document in (render_fragment(report), render_page(report)):
        assert "<script" not in document
        assert "&lt;script&gt;" in document
        elements = Elements(document)
        assert not [tag for tag, _ in elements.tags if tag == "script"]
        assert HOSTILE + "0" in "".join(elements.texts["text"]) + "".join(
            elements.texts["title"])


def test_the_page_is_whole_and_loads_nothing():
    page = render_page(make_report())
    assert page.startswith("<!DOCTYPE html>")
    elements = Elements(page)
    names = [tag for tag, _ in elements.tags]
    for tag in ("html", "head", "title", "body", "svg", "style"):
        assert tag in names
    assert "poolparty report" in elements.texts["title"][0]
    assert not re.search(r"https?://|//[a-z]|\bsrc\s*=|\bhref\s*=|@import|url\(", page)
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(names)


def test_the_fragment_is_one_div_without_a_page():
    fragment = render_fragment(make_report())
    assert fragment.startswith('<div class="poolparty-report">')
    assert fragment.rstrip().endswith("</div>")
    assert "<html" not in fragment and "<body" not in fragment
    assert make_report()._repr_html_() == fragment


@pytest.mark.parametrize("workers, claims", [(0, 0), (1, 0), (3, 0)])
def test_a_report_without_claims_renders(workers, claims):
    report = make_report(workers=workers, claims=claims, failures={}, task_errors={})
    for document in (render_fragment(report), render_page(report)):
        assert claim_rects(document) == []
        assert "no task recorded" in document
    if not workers:
        assert "no worker ran" in render_fragment(report)


def test_one_worker_one_claim():
    report = make_report(workers=1, claims=1)
    rects = claim_rects(render_page(report))
    assert len(rects) == 1 and float(rects[0]["width"]) > 100


def test_hundreds_of_workers_keep_the_timeline_a_sane_height():
    report = make_report(workers=800, claims=1600, tasks_per_claim=1)
    elements = Elements(render_fragment(report))
    (timeline,) = elements.of_class("svg", "timeline")
    assert 200 < float(timeline["height"]) <= 800
    assert len(elements.of_class("rect", "claim")) == 1600
    assert 10 < len(elements.of_class("text", "worker")) < 100


def test_a_long_map_counts_its_time_in_hours():
    report = make_report(workers=2, claims=6, seconds=3 * 3600.0)
    ticks = [text for text in Elements(render_fragment(report)).texts["text"]
             if re.fullmatch(r"[\d.]+ (s|min|h)", text)]
    assert 3 <= len(ticks) <= 9
    assert all(tick.endswith(" h") for tick in ticks)


def histogram_bins(report: Report) -> list[tuple[int, str]]:
    """Each bin's task count and its hover text."""
    document = render_fragment(report)
    bins = re.findall(r'<rect class="bin"[^>]*><title>([^<]*)</title>', document)
    return [(int(title.split()[0]), title) for title in bins]


def test_the_histogram_counts_every_task():
    report = make_report(workers=3, claims=30)
    bins = histogram_bins(report)
    assert sum(count for count, _ in bins) == len(report.tasks)
    assert 1 < len(bins) <= 20
    assert all(re.fullmatch(r"\d+ tasks of [\d.]+-[\d.]+ s", title) for _, title in bins)
    assert "task duration (s)" in render_fragment(report)


def test_the_histogram_of_equal_durations_is_one_bar():
    report = make_report(workers=2, claims=5, tasks_per_claim=1)
    assert histogram_bins(report) == [(5, "5 tasks of 1.50 s")]


def test_histogram_edges_of_nearly_equal_durations_are_told_apart():
    """Tasks that all take about 0.40 s: the axis must not read 0.40 at every edge."""
    from poolparty.report_html import histogram

    document = Elements(histogram([0.4001 + 0.0005 * i for i in range(10)]))
    labels = [text for text in document.texts.get("text", []) if text.startswith("0.4")]
    assert len(labels) == len(set(labels)) > 2
