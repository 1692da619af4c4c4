"""A report's page in a real browser: headless Chromium renders it, and the DOM it built
has a bar per claim and the failures; its screenshot is kept as an artifact of the run
(``$POOLPARTY_ARTIFACTS``, else artifacts/ at the repository's root) for a person to look at.

Chromium is driven through scripts/report_example.py's functions, those that make the
docs' screenshot. Skipped where Chromium is not installed (``apt-get install chromium``),
a failure instead in CI (.ci/run installs it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from test_report_html import Elements, make_report

ROOT = Path(__file__).resolve().parent.parent
#: set in CI: there a browser test that can't run fails (as tests/conftest.py's views)
REQUIRED_BY = ("CI", "POOLPARTY_REQUIRE_SCHEDULERS")
#: a screenshot of the page is tens of kilobytes; a blank one, a few
SMALLEST_SCREENSHOT = 10_000


def example_script():
    spec = importlib.util.spec_from_file_location(
        "report_example", ROOT / "scripts" / "report_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def browser():
    """scripts/report_example.py as a module (rendered_dom, screenshot), where
    Chromium is installed."""
    script = example_script()
    if shutil.which(script.CHROMIUM) is None:
        message = f"{script.CHROMIUM} is not installed: apt-get install chromium enables it"
        if any(os.environ.get(name) not in (None, "", "false") for name in REQUIRED_BY):
            pytest.fail(message + " (required here: CI)")
        pytest.skip(message)
    return script


def artifacts() -> Path:
    return Path(os.environ.get("POOLPARTY_ARTIFACTS") or ROOT / "artifacts")


def test_chromium_renders_a_bar_per_claim_and_the_failures(browser, tmp_path):
    report = make_report(workers=5, claims=40, failures={"its job reached its time limit": 2},
                         task_errors={"ZeroDivisionError": 3})
    page = tmp_path / "report.html"
    page.write_text(report.html())
    rendered = Elements(browser.rendered_dom(page))
    assert len(rendered.of_class("rect", "claim")) == len(report.claims)
    assert len(rendered.of_class("rect", "failed")) == sum(c.failed > 0 for c in report.claims)
    cells = rendered.texts["td"]
    assert cells[cells.index("worker lost: its job reached its time limit") + 1] == "2"
    assert cells[cells.index("task raised: ZeroDivisionError") + 1] == "3"

    png = artifacts() / "report_browser.png"
    png.unlink(missing_ok=True)
    browser.screenshot(page, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > SMALLEST_SCREENSHOT


def nap_and_raise_on_three(x: int) -> int:
    """Every task sleeps, so a worker killed at any moment holds a claim; 3 raises."""
    import time

    time.sleep(0.4)
    if x == 3:
        raise ValueError("three")
    return x


def test_chromium_shows_a_real_maps_chunks_and_failures(browser, work_root, tmp_path):
    """A map on the dummy SLURM whose first worker is killed mid-claim and whose task 3
    raises (imap goes on past it): the rendered page has one bar per claim that ran
    (the claim files say how many), the lost worker and the task's exception in its
    failure table."""
    from conftest import attempts_per_claim, made_backend, the_map_dir

    with made_backend("dummy-slurm-array", work_root, tmp_path) as slurm:
        slurm.queue.inject(kill_after=(0.6, 1))
        with slurm.make_pool(processes=2, max_num_resubmissions=2,
                             keep_work_dir=True) as pool:
            results = pool.imap(nap_and_raise_on_three, range(8), chunksize=1)
            for position in range(8):
                if position == 3:
                    with pytest.raises(ValueError):
                        next(results)
                else:
                    assert next(results) == position
            assert list(results) == []  # the end: the map is over
            report = pool.report()
        claims_run = len(attempts_per_claim(the_map_dir(work_root)))
    assert report.state == "finished" and report.wall_seconds is not None  # its end read
    page = tmp_path / "real.html"
    page.write_text(report.html())
    rendered = Elements(browser.rendered_dom(page))
    assert len(rendered.of_class("rect", "claim")) == len(report.claims) == claims_run == 8
    assert len(rendered.of_class("rect", "failed")) == 1
    cells = rendered.texts["td"]
    assert cells[cells.index("task raised: ValueError") + 1] == "1"
    assert any(cell.startswith("worker lost: ") for cell in cells)
    browser.screenshot(page, artifacts() / "report_real_map.png")
