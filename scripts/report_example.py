"""Make the docs' example of a map's report from a real map: its page, a screenshot of it
and its text (docs/_static/report_example.html, .png, .txt).

    python scripts/report_example.py [BACKEND [DIRECTORY]]   (local, docs/_static)

24 tasks sleep known, uneven times on 4 workers, two of them raising; the map's work_dir
(a temporary directory under .poolparty/, which the nodes of a cluster see when the
repository is on a shared file system) is kept for the report, then removed. The
screenshot is headless Chromium's (``apt-get install chromium``): the page needs nothing
from the network, so neither does Chromium here. tests/test_report_browser.py checks
pages through the same functions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "docs" / "_static"
#: each task's sleep in seconds: uneven, so that the timeline and the histogram show it
DURATIONS = [0.2, 0.4, 1.5, 0.3, 0.2, 2.5, 0.6, 0.4, 0.3, 1.2, 0.2, 0.8,
             3.0, 0.5, 0.4, 0.3, 1.0, 0.2, 0.7, 0.4, 2.0, 0.3, 0.6, 0.5]
RAISING = {9, 17}
CHROMIUM = "chromium"
#: a headless Chromium that talks to nobody: no updates, sync or first-run pages (root
#: needs --no-sandbox)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--hide-scrollbars"]
CHROMIUM_TIMEOUT = 60


class ExampleError(Exception):
    """What the example's raising tasks raise: a failure the report counts."""


def nap(index: int) -> int:
    time.sleep(DURATIONS[index])
    if index in RAISING:
        raise ExampleError(f"task {index} raises, as the example wants")
    return index


def chromium(page: Path, *arguments: str) -> str:
    """Run headless Chromium on a page, with a profile of its own thrown away after;
    what it printed on stdout."""
    executable = shutil.which(CHROMIUM)
    if executable is None:
        raise FileNotFoundError(f"{CHROMIUM} is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="poolparty-chromium-") as profile:
        process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments,
             page.resolve().as_uri()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its group: a hung Chromium's helpers end with it
        try:
            stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    if process.returncode != 0:
        raise RuntimeError(f"{executable} {' '.join(arguments)} failed "
                           f"({process.returncode}): {stderr[-2000:]}")
    return stdout


def rendered_dom(page: Path) -> str:
    """The page's DOM as Chromium rendered it (what a browser shows, not the file)."""
    return chromium(page, "--dump-dom")


def screenshot(page: Path, png: Path) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    chromium(page, f"--screenshot={png.resolve()}", "--window-size=1400,1000")


def outcomes(results: Iterator) -> list:
    """Every task's result or exception: imap goes on past a task that raised."""
    got = []
    while True:
        try:
            got.append(next(results))
        except StopIteration:
            return got
        except ExampleError as error:
            got.append(error)


def run_map(backend: str, root: Path) -> Path:
    """The example map, its work_dir kept under ``root``: that directory."""
    import poolparty

    with poolparty.Pool(backend=backend, processes=4, keep_work_dir=True,
                        work_dir=root) as pool:
        got = outcomes(pool.imap(nap, range(len(DURATIONS))))
    raised = [index for index, outcome in enumerate(got) if isinstance(outcome, Exception)]
    print(f"{len(got)} tasks, raised: {raised}")
    (map_dir,) = [path for path in root.iterdir() if (path / "map.json").exists()]
    return map_dir


def main(argv: list[str]) -> None:
    import poolparty

    backend = argv[1] if len(argv) > 1 else "local"
    directory = Path(argv[2]) if len(argv) > 2 else STATIC
    (ROOT / ".poolparty").mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".poolparty",
                                     prefix="report-example-") as root:
        report = poolparty.map_report(run_map(backend, Path(root)))
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "report_example.html"
    page.write_text(report.html())
    (directory / "report_example.txt").write_text(report.text() + "\n")
    screenshot(page, directory / "report_example.png")
    print(report.text())
    print(f"wrote report_example.html, .png and .txt in {directory}")


if __name__ == "__main__":
    main(sys.argv)
