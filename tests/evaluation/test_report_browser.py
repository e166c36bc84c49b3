"""The report of a short synthetic training run (tools/train_net.py's Trainer: 2 iterations,
then its evaluation) opened in headless Chromium: no script error, every image loads, the
numbers equal those in metrics.json, and the tables sort. A screenshot is kept for review in
output/report_screenshot.png."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2seg.config import load_config
from tests.evaluation.test_report import ReportPage
from tests.helpers.scripts import REPO_ROOT, load_script
from tests.tools.test_train_net import QUICKSTART, TINY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VAL = "d2seg_test_report_instance_val8"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

# the page's own script, then a check appended by the test: click the AP header of the
# first per-class table twice and record the row order after each click
_SORT_CHECK = """<script>
window.addEventListener("load", function () {
  const table = document.querySelectorAll("table.sortable")[2];
  const header = table.tHead.rows[0].cells[1];
  const order = function () {
    return Array.from(table.tBodies[0].rows).map(function (r) {
      return r.cells[1].dataset.value;
    }).join(",");
  };
  header.click();
  document.body.dataset.ascending = order();
  header.click();
  document.body.dataset.descending = order();
});
</script></body>"""


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """2 iterations of the quickstart model, evaluated on 8 validation images."""
    full = "d2seg_synthetic_instance_val"
    DatasetCatalog.register(VAL, lambda: DatasetCatalog.get(full)[:8])
    metadata = {k: v for k, v in MetadataCatalog.get(full).as_dict().items() if k != "name"}
    MetadataCatalog.get(VAL).set(**metadata)
    output = tmp_path_factory.mktemp("report_run")
    cfg = load_config(
        str(REPO_ROOT / QUICKSTART),
        TINY
        + ["OUTPUT_DIR", str(output), "SOLVER.MAX_ITER", "2", "DATASETS.TEST", f"('{VAL}',)"]
        + ["TEST.DETECTIONS_PER_IMAGE", "5", "TEST.REPORT.GALLERY_SIZE", "2"],
    )
    trainer = load_script("tools/train_net.py").Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    yield output
    DatasetCatalog.remove(VAL)
    MetadataCatalog.remove(VAL)


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={cwd / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


class _Body(ReportPage):
    """Also keeps the <body> data attributes the page's script writes after loading."""

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.body = dict(attrs)
        super().handle_starttag(tag, attrs)


def test_report_in_a_browser(trained, tmp_path):
    folder = trained / "inference" / VAL
    report = folder / "report.html"
    checked = folder / "report_sort_check.html"  # same folder: same relative image links
    checked.write_text(report.read_text().replace("</body>", _SORT_CHECK))
    run = _chromium("--dump-dom", checked.as_uri(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    page = _Body(run.stdout)
    assert page.body.get("data-loaded") == "1", "the page's load handler did not run"
    assert page.body["data-broken-images"] == "", page.body["data-broken-images"]
    assert int(page.body["data-images"]) >= 1 + 2 * 2 * 2  # loss curves + gallery pairs
    assert 'id="js-errors"></pre>' in run.stdout

    # the numbers: every metric on the page is the one metrics.json holds, and back
    records = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    evaluated = next(r for r in reversed(records) if "bbox/AP" in r)
    logged = {k: v for k, v in evaluated.items() if k.split("/")[0] in ("bbox", "segm")}
    assert set(logged) == set(page.metrics)
    for key, value in logged.items():
        shown = page.metrics[key]
        assert (math.isnan(value) and math.isnan(shown)) or shown == value, key

    # sorting: the first per-class table (bbox AP), ascending then descending
    def values(order):
        return [float(v) for v in order.split(",")]

    ascending, descending = (
        values(page.body["data-ascending"]),
        values(page.body["data-descending"]),
    )
    assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)
    assert len(ascending) == 3  # circle, triangle, square

    # the screenshot, kept for review
    screenshot = tmp_path / "report.png"
    run = _chromium(
        f"--screenshot={screenshot}", "--window-size=1280,2600", report.as_uri(), cwd=tmp_path
    )
    assert run.returncode == 0 and screenshot.stat().st_size > 10_000, run.stderr[-2000:]
    review = REPO_ROOT / "output" / "report_screenshot.png"
    review.parent.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, review)
