"""The HTML report in a real browser (headless Chromium): the first screen holds the question, the data and
model summary and the answer per rank; nothing is wider than the page.

Skips when no Chromium is installed, unless ``LATENT_REQUIRE_BROWSER=1`` (set by ``.ci/run`` when it has
one), where a missing browser fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from latent.report import ReportSettings, build_report
from latent.synthetic import make_hierarchical, write_synthetic

FAST = ReportSettings(evaluations=(("knn", "species-disjoint"),), probes=("separability",), permutations=19,
                      probe_settings={"separability": {"permutations": 2, "grid": [0.1, 10], "n_boot": 50}},
                      n_boot=50, projections=("pca",))

#: What the page measures of itself once laid out (written into the DOM, read back with --dump-dom).
_PROBE_SCRIPT = """
<script>
window.addEventListener('load', function () {
  function top(sel) { var e = document.querySelector(sel); return e ? e.getBoundingClientRect().top : -1; }
  function bottom(sel) { var e = document.querySelector(sel); return e ? e.getBoundingClientRect().bottom : -1; }
  var answerTable = document.querySelector('#answer ~ table');
  var out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
             innerHeight: window.innerHeight, data: top('#data'), answer: top('#answer'),
             answerTableBottom: answerTable ? answerTable.getBoundingClientRect().bottom : -1,
             firstFigure: top('figure'), provenance: top('#provenance'),
             tooWide: Array.from(document.querySelectorAll('table')).filter(function (t) {
               return t.getBoundingClientRect().right > window.innerWidth + 1; }).length};
  var pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _browser() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("LATENT_REQUIRE_BROWSER") == "1":
            pytest.fail("LATENT_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    return browser


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    cache = write_synthetic(tmp / "birds.h5", make_hierarchical(per_species=6, dim=16, signal=2.0, seed=0))
    return build_report([cache], tmp / "rep", settings=FAST)


def _layout(browser: str, html: Path, width: int, height: int) -> dict:
    probe = html.with_name("layout_probe.html")
    probe.write_text(html.read_text().replace("</body>", _PROBE_SCRIPT + "</body>"))
    done = _run(browser, f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"<pre id=\"layout\">(.*?)</pre>", done.stdout, flags=re.S)
    assert found, "the page did not report its layout"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_first_screen_has_data_model_and_answer(report):
    browser = _browser()
    layout = _layout(browser, report.html, 1200, 1000)
    # in order: data and model, the answer per rank (its table), then the first figure
    assert 0 <= layout["data"] < layout["answer"] < layout["answerTableBottom"] <= layout["firstFigure"]
    # the answer table ends on the first screen of a 1200 x 1000 window
    assert layout["answerTableBottom"] <= layout["innerHeight"], layout
    # nothing (provenance included) is wider than the window
    assert layout["tooWide"] == 0 and layout["scrollWidth"] <= layout["innerWidth"], layout
    assert layout["provenance"] > layout["firstFigure"]


def test_screenshot_of_the_first_screen_is_drawn(report, tmp_path):
    browser = _browser()
    shot = tmp_path / "first_screen.png"
    done = _run(browser, f"--screenshot={shot}", "--window-size=1200,1000", report.html.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[:2] == (1000, 1200)
    ink = (img[..., :3] < 0.6).any(axis=2)
    # text in the top third (title, data summary) and a verdict cell's colour (the answer table) on screen
    assert ink[:330].mean() > 0.005
    green = (abs(img[..., 0] - 0xd7 / 255) < 0.02) & (abs(img[..., 1] - 0xec / 255) < 0.02) & \
            (abs(img[..., 2] - 0xd9 / 255) < 0.02)
    assert green.sum() > 500, "no 'yes' verdict cell on the first screen"


def test_dom_names_the_model_and_every_rank(report):
    browser = _browser()
    done = _run(browser, "--virtual-time-budget=5000", "--dump-dom", report.html.as_uri())
    assert done.returncode == 0
    dom = done.stdout
    first_figure = dom.index("<figure")
    head = dom[:first_figure]
    assert "Data and model" in head and "The answer per rank" in head
    label = next(iter(report.runs))
    assert label in head and "<td>synthetic</td>" in head  # the model's label and its recorded name
    for rank in ("kingdom", "phylum", "class", "order", "family", "genus", "species", "all"):
        assert f"<td>{rank}</td>" in head or f"<td>{rank} = " in head or f" = {rank}</td>" in head, rank
