"""Open every page of the built book in headless Chromium, with the network blocked, and report
what a reader would see go wrong.

Per page: JavaScript errors (console errors and uncaught exceptions), requests that tried to leave
the machine, "Traceback" / "Execution failed" text, images that did not load (natural width 0),
raw TeX left in the visible text (``$$``, ``\\(``, ``\\[``), math elements MathJax did not typeset,
interactive figures (``div.opd-interactive``) that are not drawn, that do not change when any of
their sliders or buttons is moved, or whose play button does not reach its last frame. Chapter
pages (``notebooks/ch*.html``) must also have a Colab link to a ``.ipynb`` that exists in the
repository, a download button whose files exist in the build, and previous/next
links; their screenshots at desktop and phone widths go to ``screenshots``. The site must also
answer a search. Layout: no code block may scroll sideways at the page's (desktop) width, and a
page whose prose promises a figure ("the figure below", "the left panel") must show one.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python; test tools cannot
download browsers here. Pages are opened as ``file://`` URLs, as a reader who double-clicks
``index.html`` would, and every request to anything but a local file is aborted and reported.

Usage: python tools/check_site.py [_build/html] [--screenshots _build/screenshots]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SKIPPED_DIRS = {"_static", "_sources", "_images", "_downloads"}
DESKTOP, PHONE = (1280, 900), (390, 844)
BAD_TEXT = ("Traceback", "Execution failed")
RAW_TEX = ("$$", "\\(", "\\[")
PLAY_TIMEOUT_MS = 20_000  # how long a play button may take to reach its last frame
REDIRECT = re.compile(r'http-equiv="refresh"[^>]*url=([^"#?]+)', re.IGNORECASE)
# Prose that promises the reader a figure: the page must then show at least one.
PROMISE = re.compile(
    r"\b(?:figures?|plots?|panels?) (?:below|above)\b|\b(?:left|right|middle) panel\b",
    re.IGNORECASE,
)

# Code blocks (not outputs) wider than their box, with their longest line; and the figures a
# reader can see: loaded images at least 100 px wide and drawn Plotly figures, outside closed
# dropdowns and hidden cells.
LAYOUT_JS = """() => {
  const shown = el => {
    const r = el.getBoundingClientRect();
    const seen = el.checkVisibility ? el.checkVisibility({visibilityProperty: true})
                                    : el.offsetParent !== null;
    return seen && r.width >= 100 && r.height >= 10;
  };
  const wide = Array.from(document.querySelectorAll('div.highlight pre'))
    .filter(p => !p.closest('.cell_output') && shown(p) && p.scrollWidth > p.clientWidth + 1)
    .map(p => p.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), ''));
  const images = Array.from(document.images).filter(i => i.naturalWidth > 0 && shown(i));
  const plots = Array.from(document.querySelectorAll('.opd-interactive .js-plotly-plot'))
    .filter(shown);
  return {wide: wide.map(l => l.trim().slice(0, 60)), figures: images.length + plots.length};
}"""

# Text of the page outside code, scripts and typeset math, one string per text node.
VISIBLE_TEXT_JS = """() => {
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'NOSCRIPT', 'TEXTAREA', 'MJX-CONTAINER',
                        'MJX-ASSISTIVE-MML', 'TEMPLATE', 'SVG']);
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    let el = node.parentElement, hidden = false;
    while (el) {
      if (skip.has(el.tagName.toUpperCase())) { hidden = true; break; }
      el = el.parentElement;
    }
    if (!hidden && node.textContent.trim()) out.push(node.textContent);
  }
  return out;
}"""

MATH_JS = """async () => {
  const maths = Array.from(document.querySelectorAll('.math'));
  const ready = window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (ready) { await MathJax.startup.promise; }
  const untypeset = maths.filter(m => !m.querySelector('mjx-container'))
                         .map(m => m.textContent.trim().slice(0, 60));
  return {count: maths.length, mathjax: !!ready, untypeset: untypeset,
          containers: document.querySelectorAll('mjx-container').length};
}"""

IMAGES_JS = """async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 5000); })));
  return imgs.filter(i => i.naturalWidth === 0).map(i => i.getAttribute('src'));
}"""

FIGURE_STATE_JS = """(el) => {
  const gd = el.querySelector('.js-plotly-plot');
  if (!gd || !gd._fullLayout) return null;
  const layer = gd.querySelector('.cartesianlayer');
  const titles = Array.from(gd.querySelectorAll('.annotation-text')).map(t => t.textContent);
  const sliders = (gd._fullLayout.sliders || []).map(s => ({active: s.active,
                                                             steps: s.steps.length}));
  const menus = (gd._fullLayout.updatemenus || []).map(m => ({active: m.active,
                                                             buttons: m.buttons.length}));
  const grid = gd.layout.meta && gd.layout.meta.opd_grid;
  const play = grid && grid.play ? {menu: grid.play.menu,
                                    slider: grid.knobs[grid.play.knob].index} : null;
  return {svg: (layer ? layer.innerHTML : '') + titles.join('|'), sliders: sliders,
          menus: menus, play: play};
}"""


@dataclass
class PageReport:
    """What was found on one page: ``problems`` is empty when it is fine."""

    path: str
    problems: list[str] = field(default_factory=list)
    figures: int = 0
    math: int = 0
    images: int = 0
    visible_figures: int = 0


def find_chromium() -> str | None:
    """The Chromium binary to drive (``$CHROMIUM`` first), or None if there is none."""
    candidates = [os.environ.get("CHROMIUM", "")] + list(CHROMIUM_CANDIDATES)
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


@contextmanager
def browser_context(width: int = DESKTOP[0], height: int = DESKTOP[1]) -> Iterator:
    """A Playwright browser context on Debian's Chromium whose only reachable URLs are files.

    Yields ``(context, blocked)``: ``blocked`` collects the URLs of requests that were aborted.
    """
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found: apt-get install chromium (or set $CHROMIUM)")
    blocked: list[str] = []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.route("**/*", route)
            yield context, blocked
        finally:
            browser.close()


def _local_target(page_url: str, href: str) -> Path | None:
    """The file a relative or file:// link on ``page_url`` points at (None for other schemes)."""
    from urllib.parse import urljoin

    full = urlparse(urljoin(page_url, href))
    if full.scheme != "file":
        return None
    return Path(unquote(full.path))


def _click_rail(page, rail, right: bool) -> None:
    rail.scroll_into_view_if_needed()
    box = rail.bounding_box()
    x = box["x"] + (box["width"] - 2 if right else 2)
    page.mouse.click(x, box["y"] + box["height"] / 2)
    page.wait_for_timeout(300)


def _check_figure(page, element, index: int) -> list[str]:
    """Every control of the figure changes the plot: each slider moved to its far end, each
    button of each menu that is not already chosen (then the first choice restored), and a
    play button runs its slider from the first position to the last."""
    state = element.evaluate(FIGURE_STATE_JS)
    name = element.get_attribute("data-figure") or f"#{index}"
    if state is None:
        return [f"interactive figure {name} was not drawn (is plotly.js served?)"]
    sliders, menus, play = state["sliders"], state["menus"], state["play"]
    if not any(s["steps"] >= 2 for s in sliders):
        return [f"interactive figure {name} has no slider with two or more steps"]
    rails = element.query_selector_all(".slider-group .slider-rail-rect")
    if len(rails) != len(sliders):
        return [f"interactive figure {name}: no slider rail on the page"]
    problems = []
    for i, (rail, slider) in enumerate(zip(rails, sliders, strict=True)):
        which = "the slider" if len(sliders) == 1 else f"slider {i + 1}"
        box = rail.bounding_box()
        if box is None or box["width"] <= 0:
            problems.append(f"interactive figure {name}: {which} is not visible")
            continue
        before = element.evaluate(FIGURE_STATE_JS)
        # Click at the far end from the current position, as a reader dragging it would.
        _click_rail(page, rail, slider["active"] < slider["steps"] / 2)
        after = element.evaluate(FIGURE_STATE_JS)
        if after["sliders"][i]["active"] == before["sliders"][i]["active"]:
            problems.append(f"interactive figure {name}: moving {which} did not change its value")
        if after["svg"] == before["svg"]:
            problems.append(
                f"interactive figure {name}: the plot did not change when {which} moved"
            )
    groups = element.query_selector_all(".updatemenu-header-group")
    for m, (group, menu) in enumerate(zip(groups, menus, strict=False)):
        if play is not None and m == play["menu"]:
            continue
        buttons = group.query_selector_all(".updatemenu-button")
        chosen = menu["active"]
        for b, button in enumerate(buttons):
            if b == chosen:
                continue
            before = element.evaluate(FIGURE_STATE_JS)["svg"]
            button.click()
            page.wait_for_timeout(300)
            if element.evaluate(FIGURE_STATE_JS)["svg"] == before:
                label = (button.text_content() or "").strip()
                problems.append(f"interactive figure {name}: button {label!r} did not change it")
        if 0 <= chosen < len(buttons) and len(buttons) > 1:
            buttons[chosen].click()
            page.wait_for_timeout(300)
    if play is not None:
        problems += _check_play(page, element, name, rails[play["slider"]], play, groups)
    return problems


def _check_play(page, element, name: str, rail, play: dict, groups) -> list[str]:
    """Go to the first position, press play, and wait for the last frame."""
    _click_rail(page, rail, right=False)
    start = element.evaluate(FIGURE_STATE_JS)
    slider = start["sliders"][play["slider"]]
    if slider["active"] != 0:
        return [f"interactive figure {name}: could not rewind the played slider"]
    groups[play["menu"]].query_selector(".updatemenu-button").click()
    for _ in range(PLAY_TIMEOUT_MS // 100):
        page.wait_for_timeout(100)
        now = element.evaluate(FIGURE_STATE_JS)
        if now["sliders"][play["slider"]]["active"] == slider["steps"] - 1:
            break
    else:
        return [f"interactive figure {name}: play did not reach the last frame"]
    page.wait_for_timeout(300)
    if element.evaluate(FIGURE_STATE_JS)["svg"] == start["svg"]:
        return [f"interactive figure {name}: the plot did not change while playing"]
    return []


def check_page(
    page, url: str, repo: Path | None = ROOT, chapter: bool = False, errors: list | None = None
) -> PageReport:
    """Load ``url`` in ``page`` and return what is wrong with it.

    ``errors`` collects console errors and uncaught exceptions (attach :func:`watch` to the page
    first); ``chapter`` turns on the chapter-only checks (Colab, download, previous/next), which
    look for the Colab notebook under ``repo``.
    """
    report = PageReport(path=url)
    problems = report.problems
    start = len(errors) if errors is not None else 0
    page.goto(url, wait_until="load")

    maths = page.evaluate(MATH_JS)
    report.math = maths["count"]
    if maths["count"] and not maths["mathjax"]:
        problems.append(f"{maths['count']} math elements but MathJax did not load")
    elif maths["untypeset"]:
        problems.append(f"math not typeset: {maths['untypeset'][:3]}")

    broken = page.evaluate(IMAGES_JS)
    report.images = page.evaluate("() => document.images.length")
    problems += [f"image did not load: {src}" for src in broken]

    visible = page.evaluate(VISIBLE_TEXT_JS)
    for needle in BAD_TEXT:
        hits = [t.strip()[:80] for t in visible if needle in t]
        if hits:
            problems.append(f"{needle!r} on the page: {hits[0]!r}")
    for needle in RAW_TEX:
        hits = [t.strip()[:80] for t in visible if needle in t]
        if hits:
            problems.append(f"raw TeX {needle!r} left in the text: {hits[0]!r}")

    figures = page.query_selector_all(".opd-interactive")
    report.figures = len(figures)
    for i, element in enumerate(figures):
        problems += _check_figure(page, element, i)

    problems += _check_layout(page, report, visible)
    if chapter:
        problems += _check_chapter_links(page, url, repo)
    if errors is not None:
        problems += [f"JavaScript error: {e}" for e in errors[start:]]
    return report


def _check_layout(page, report: PageReport, visible_text: list[str]) -> list[str]:
    """Code that scrolls sideways at the page's width, and a promised figure that is missing."""
    layout = page.evaluate(LAYOUT_JS)
    report.visible_figures = layout["figures"]
    problems = [f"code block scrolls sideways: {line!r}" for line in layout["wide"]]
    promise = next((m[0] for t in visible_text if (m := PROMISE.search(t))), None)
    if promise and not layout["figures"]:
        problems.append(f"the text promises a figure ({promise!r}) but none is visible")
    return problems


def _check_chapter_links(page, url: str, repo: Path | None) -> list[str]:
    problems = []
    colab = page.query_selector_all('a[href*="colab.research.google.com"]')
    if not colab:
        problems.append("no Colab link")
    for link in colab:
        href = link.get_attribute("href") or ""
        match = re.search(r"/blob/[^/]+/(.+\.ipynb)$", href)
        if not match:
            problems.append(f"Colab link does not point at a .ipynb: {href}")
        elif repo is not None and not (repo / match[1]).is_file():
            problems.append(f"Colab link target {match[1]} is not in the repository")
    downloads = page.query_selector_all(".dropdown-download-buttons a[href]")
    if not downloads:
        problems.append("no download button")
    for link in downloads:
        target = _local_target(url, link.get_attribute("href") or "")
        if target is not None and not target.is_file():
            problems.append(f"download link target missing: {link.get_attribute('href')}")
    for side in ("left-prev", "right-next"):
        link = page.query_selector(f".prev-next-area a.{side}")
        target = _local_target(url, link.get_attribute("href") or "") if link else None
        if link is None:
            problems.append(f"no {side} link")
        elif target is not None and not target.is_file():
            problems.append(f"{side} link target missing: {link.get_attribute('href')}")
    return problems


def watch(page) -> list[str]:
    """Collect the page's console errors and uncaught exceptions into a list (returned)."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def pages_of(site: Path) -> list[Path]:
    """Every HTML page of the build, outside the theme's and Sphinx's asset folders."""
    return sorted(
        p for p in site.rglob("*.html") if not SKIPPED_DIRS & set(p.relative_to(site).parts[:-1])
    )


def is_chapter(site: Path, page: Path) -> bool:
    rel = page.relative_to(site)
    return rel.parts[0] == "notebooks" and re.match(r"ch\d\d_", rel.name) is not None


def check_search(page, site: Path, query: str = "distillation") -> list[str]:
    """The search page finds ``query`` (Sphinx's client-side search, offline)."""
    page.goto((site / "search.html").as_uri() + f"?q={query}", wait_until="load")
    try:
        page.wait_for_selector("ul.search li", timeout=15_000)
    except Exception:
        return [f"search for {query!r} returned no results"]
    return []


def screenshot(page, out_dir: Path, stem: str) -> list[Path]:
    """Full-page screenshots of the loaded page at desktop and phone widths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for label, (w, h) in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(400)  # let the theme and the plots re-lay themselves out
        path = out_dir / f"{stem}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        saved.append(path)
    page.set_viewport_size({"width": DESKTOP[0], "height": DESKTOP[1]})
    return saved


def check_site(
    site: Path, repo: Path = ROOT, screenshots: Path | None = None, browser=None
) -> tuple[list[PageReport], list[str]]:
    """Check every page of ``site``; returns the page reports and the site-level problems.

    ``browser`` is a ``(context, blocked)`` pair from :func:`browser_context` to reuse (Playwright
    allows one sync session per thread); without it a browser is started and closed here.
    """
    if browser is None:
        with browser_context() as opened:
            return check_site(site, repo, screenshots, opened)
    context, blocked = browser
    site = site.resolve()
    reports, site_problems = [], []
    page = context.new_page()
    errors = watch(page)
    for path in pages_of(site):
        redirect = REDIRECT.search(path.read_text(errors="replace"))
        if redirect:  # index.html: a meta refresh to the first page, checked on its own
            target = path.parent / redirect[1]
            problems = [] if target.is_file() else [f"redirect target missing: {redirect[1]}"]
            reports.append(PageReport(str(path.relative_to(site)), problems))
            continue
        n_blocked = len(blocked)
        chapter = is_chapter(site, path)
        report = check_page(page, path.as_uri(), repo, chapter=chapter, errors=errors)
        report.path = str(path.relative_to(site))
        report.problems += [f"network request blocked: {u}" for u in blocked[n_blocked:]]
        if chapter and screenshots is not None:
            screenshot(page, screenshots, path.stem)
        reports.append(report)
    n_blocked = len(blocked)
    site_problems += check_search(page, site)
    site_problems += [f"network request blocked: {u}" for u in blocked[n_blocked:]]
    page.close()
    return reports, site_problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default=str(ROOT / "_build" / "html"), type=Path)
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"no built book at {args.site}: run `make book` first", file=sys.stderr)
        return 2
    if args.screenshots.exists():
        shutil.rmtree(args.screenshots)
    reports, site_problems = check_site(args.site, screenshots=args.screenshots)
    bad = 0
    for r in reports:
        status = "ok " if not r.problems else "BAD"
        print(f"{status} {r.path}  (math {r.math}, images {r.images}, figures {r.figures})")
        for problem in r.problems:
            print(f"      {problem}")
        bad += bool(r.problems)
    for problem in site_problems:
        print(f"BAD site: {problem}")
    print(f"{len(reports)} pages, {bad} with problems; screenshots in {args.screenshots}")
    return 1 if bad or site_problems else 0


if __name__ == "__main__":
    sys.exit(main())
