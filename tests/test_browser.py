"""The rendered book in a real browser: Debian's headless Chromium, network blocked.

``test_built_book`` opens every page of ``_build/html`` (build it first: ``make book``) with
``tools/check_site.py`` and saves screenshots of each chapter page at desktop and phone widths to
``_build/screenshots/``. The other tests feed the same checker small hand-written pages with one
defect each, to show that it notices.

Without a build or without Chromium these tests skip, saying why; CI sets
``OPD_REQUIRE_BROWSER_TEST=1`` (``.ci/run``), which turns those skips into failures.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
sys.path.insert(0, str(ROOT / "tools"))

import check_site  # noqa: E402

REQUIRED = os.environ.get("OPD_REQUIRE_BROWSER_TEST", "") not in ("", "0")
INTERACTIVE_CHAPTERS = {
    "ch00_why_practice",
    "ch01_autoregressive_trap",
    "ch02_dagger",
    "ch03_f_divergences",
    "ch04_gkd",
    "ch05_reverse_kl_rl",
    "ch06_self_distillation",
    "ch08_big_picture",
}


def skip_or_fail(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (OPD_REQUIRE_BROWSER_TEST is set)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_page():
    if importlib.util.find_spec("playwright") is None:
        skip_or_fail("playwright is not installed (pip install -r requirements.txt)")
    if check_site.find_chromium() is None:
        skip_or_fail("no Chromium: apt-get install chromium")
    with check_site.browser_context() as (context, blocked):
        page = context.new_page()
        errors = check_site.watch(page)
        yield page, errors, blocked


def plotly_js() -> str:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").as_uri()


def write_page(folder: Path, name: str, body: str, head: str = "") -> str:
    path = folder / name
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"
    )
    return path.as_uri()


def tiny_png(folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")  # a test, not a notebook
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(folder / "ok.png")
    plt.close(fig)
    return "ok.png"


def test_a_clean_page_passes(browser_page, tmp_path):
    page, errors, _ = browser_page
    body = f"<p>Fine text, with $5 and a dollar.</p><img src='{tiny_png(tmp_path)}'>"
    report = check_site.check_page(page, write_page(tmp_path, "ok.html", body), errors=errors)
    assert report.problems == []
    assert report.images == 1


@pytest.mark.parametrize(
    "body, expected",
    [
        ("<img src='missing.png'>", "image did not load: missing.png"),
        ("<p>Before $$x^2$$ after</p>", "raw TeX '$$'"),
        ("<p>inline \\(a+b\\) math</p>", "raw TeX '\\\\('"),
        ("<span class='math'>\\(a\\)</span>", "math elements but MathJax did not load"),
        ("<pre>x</pre><div>Traceback (most recent call last):</div>", "'Traceback' on the page"),
        ("<p>Execution failed at cell 3</p>", "'Execution failed'"),
        ("<script>undefined_function()</script>", "JavaScript error"),
        ("<script>console.error('boom')</script>", "JavaScript error: boom"),
    ],
)
def test_the_checker_reports_a_broken_page(browser_page, tmp_path, body, expected):
    page, errors, _ = browser_page
    report = check_site.check_page(page, write_page(tmp_path, "bad.html", body), errors=errors)
    assert any(expected in p for p in report.problems), report.problems


def test_code_blocks_may_show_tex_source(browser_page, tmp_path):
    page, errors, _ = browser_page
    body = "<pre>$$x$$ and \\(y\\)</pre><code>$$z$$</code>"
    report = check_site.check_page(page, write_page(tmp_path, "code.html", body), errors=errors)
    assert report.problems == []


def test_the_checker_reports_a_chapter_without_its_links(browser_page, tmp_path):
    page, errors, _ = browser_page
    body = (
        "<a href='https://colab.research.google.com/github/o/r/blob/main/notebooks/nope.ipynb'>"
        "Colab</a>"
    )
    url = write_page(tmp_path, "ch99.html", body)
    report = check_site.check_page(page, url, repo=ROOT, chapter=True, errors=errors)
    problems = " | ".join(report.problems)
    assert "notebooks/nope.ipynb is not in the repository" in problems
    assert "no download button" in problems
    assert "no left-prev link" in problems and "no right-next link" in problems


def test_the_checker_reports_code_that_scrolls_sideways(browser_page, tmp_path):
    page, errors, _ = browser_page
    style = "<style>div.highlight pre { width: 600px; overflow-x: auto; }</style>"
    long_line = "x = " + " + ".join(["value"] * 40)
    body = f"<div class='highlight'><pre>short = 1\n{long_line}</pre></div>"
    report = check_site.check_page(page, write_page(tmp_path, "w.html", body, style), errors=errors)
    assert any("scrolls sideways: 'x = value + value" in p for p in report.problems)
    narrow = "<div class='highlight'><pre>short = 1</pre></div>"
    url = write_page(tmp_path, "n.html", narrow, style)
    assert check_site.check_page(page, url, errors=errors).problems == []


def test_the_checker_reports_a_promised_figure_that_is_missing(browser_page, tmp_path):
    page, errors, _ = browser_page
    text = "<p>The figure below shows the drift.</p>"
    report = check_site.check_page(page, write_page(tmp_path, "f.html", text), errors=errors)
    assert any("promises a figure ('figure below')" in p for p in report.problems)
    hidden = f"{text}<details><summary>more</summary><img src='{tiny_png(tmp_path)}'></details>"
    report = check_site.check_page(page, write_page(tmp_path, "h.html", hidden), errors=errors)
    assert any("promises a figure" in p for p in report.problems), "a closed dropdown hides it"
    shown = f"{text}<img src='{tiny_png(tmp_path)}' width='300'>"
    report = check_site.check_page(page, write_page(tmp_path, "s.html", shown), errors=errors)
    assert report.problems == [] and report.visible_figures == 1


def test_the_checker_reports_blocked_network(browser_page, tmp_path):
    page, errors, blocked = browser_page
    before = len(blocked)
    body = "<img src='https://example.org/x.png'>"
    check_site.check_page(page, write_page(tmp_path, "net.html", body), errors=errors)
    assert any("example.org" in u for u in blocked[before:])


def figure_page(tmp_path: Path, name: str, frozen: bool) -> str:
    """A page with one interactive figure; ``frozen`` makes every slider step show the same."""
    from opd_lib import interactive

    fig = interactive.dagger_bounds_figure([0.01, 0.05, 0.1], T_max=20)
    if frozen:
        for step in fig.layout.sliders[0].steps:
            step.method = "skip"  # the slider moves, the plot does not
    head = f"<script src='{plotly_js()}'></script>"
    return write_page(tmp_path, name, interactive.figure_html(fig, "demo"), head)


def test_the_checker_moves_the_slider(browser_page, tmp_path):
    page, errors, _ = browser_page
    report = check_site.check_page(page, figure_page(tmp_path, "fig.html", False), errors=errors)
    assert report.figures == 1
    assert report.problems == []
    frozen = check_site.check_page(page, figure_page(tmp_path, "frozen.html", True), errors=errors)
    assert any("did not change" in p for p in frozen.problems), frozen.problems


def test_the_checker_reports_a_figure_without_plotly(browser_page, tmp_path):
    page, errors, _ = browser_page
    from opd_lib import interactive

    fig = interactive.dagger_bounds_figure([0.01, 0.05], T_max=20)
    url = write_page(tmp_path, "nojs.html", interactive.figure_html(fig, "demo"))
    problems = check_site.check_page(page, url, errors=errors).problems
    assert any("was not drawn" in p for p in problems), problems


def grid_page(tmp_path: Path, name: str, defect: str = "") -> str:
    """A page with one figure with two controls (buttons and a slider with play).

    ``defect``: "no-script" drops the script that combines the controls; "dead-button" makes
    the buttons choose nothing; "slow-play" makes the play button take minutes.
    """
    import plotly.graph_objects as go

    from opd_lib import interactive
    from opd_lib.interactive import GRID_JS
    from opd_lib.interactive_grid import Knob, grid_figure

    frames = [
        interactive.Frame(f"{b}{s}", [(go.Scatter(x=[0, 1], y=[b, s]), 1, 1)], [f"{b}/{s}"])
        for b in range(2)
        for s in range(3)
    ]
    knobs = [Knob("b", ["x", "y"], kind="buttons"), Knob("s", ["0", "1", "2"], play=True)]
    dead = defect == "dead-button"
    fig = grid_figure(knobs, frames, lambda b, s: (0 if dead else b) * 3 + s, interactive.Layout())
    if defect == "slow-play":
        fig.layout.meta["opd_grid"]["play"]["ms"] = 600_000
    if defect == "no-script":
        fig.layout.meta = None  # figure_html then attaches no script
    html = interactive.figure_html(fig, "grid")
    assert (GRID_JS.split("{plot_id}")[1][:200] in html) == (defect != "no-script")
    head = f"<script src='{plotly_js()}'></script>"
    return write_page(tmp_path, name, html, head)


def test_the_checker_drives_every_control_and_plays(browser_page, tmp_path):
    page, errors, _ = browser_page
    report = check_site.check_page(page, grid_page(tmp_path, "grid.html"), errors=errors)
    assert report.figures == 1
    assert report.problems == []


@pytest.mark.parametrize(
    "defect, expected",
    [
        ("no-script", "the plot did not change when the slider moved"),
        ("dead-button", "button 'y' did not change it"),
        ("slow-play", "play did not reach the last frame"),
    ],
)
def test_the_checker_reports_a_dead_control(browser_page, tmp_path, monkeypatch, defect, expected):
    page, errors, _ = browser_page
    monkeypatch.setattr(check_site, "PLAY_TIMEOUT_MS", 1500)
    url = grid_page(tmp_path, f"{defect}.html", defect)
    problems = check_site.check_page(page, url, errors=errors).problems
    assert any(expected in p for p in problems), problems


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [Path(f).name for f in files if f.startswith("notebooks/")]


def test_built_book(browser_page):
    """Every page of _build/html, as a reader with no network sees it."""
    if not (SITE / "index.html").is_file():
        skip_or_fail(f"no built book at {SITE}: run `make book` first")
    page, _, blocked = browser_page
    reports, site_problems = check_site.check_site(
        SITE, ROOT, screenshots=SCREENSHOTS, browser=(page.context, blocked)
    )
    problems = [f"{r.path}: {p}" for r in reports for p in r.problems] + site_problems
    assert problems == [], "\n".join(problems)

    checked = {r.path for r in reports}
    chapters = toc_chapters()
    assert chapters, "_toc.yml lists no chapters"
    for chapter in chapters:
        assert f"notebooks/{chapter}.html" in checked
        for width in ("desktop", "phone"):
            assert (SCREENSHOTS / f"{chapter}-{width}.png").is_file()
    figures = {Path(r.path).stem: r.figures for r in reports}
    for chapter in INTERACTIVE_CHAPTERS & set(chapters):
        assert figures[chapter] >= 1, f"{chapter} has no interactive figure"
    assert sum(r.math for r in reports) > 0, "no math anywhere: is the checker looking?"
