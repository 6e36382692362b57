"""The documentation: the site (mkdocs.yml, docs/) builds in strict mode, so a broken link,
anchor or API reference fails; the README's links land on files and anchors that exist;
the API reference names every module of sslkit; the README stays a short front door.

The site's pages' commands are run by tests/test_readme.py."""

import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sslkit.losses

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", site)
    assert done.returncode == 0, done.stderr[-3000:]
    return site


def html_ids(page: Path) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', page.read_text()))


def test_the_site_shows_the_figures_and_the_api(site):
    """Every image a page shows is in the site (the figures come from scripts/figures/), and
    the API pages hold the docstrings of the code."""
    pages = list(site.glob("**/index.html"))
    images = {(page.parent / src).resolve() for page in pages
              for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', page.read_text()) if "://" not in src}
    assert (site / "figures" / "stepwise_digits.png").resolve() in images
    assert images and all(image.is_file() for image in images), [str(i) for i in images if not i.is_file()]
    losses = (site / "api" / "losses" / "index.html").read_text()
    assert "BarlowTwinsLoss" in losses and sslkit.losses.BarlowTwinsLoss.__doc__.split()[0] in losses


def test_a_broken_anchor_or_reference_fails_the_build(tmp_path):
    """Strict mode with mkdocs' anchor validation: a link to a missing heading, and an API
    page naming a module that does not exist, each stop the build of a copy of the site."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", symlinks=True)
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    for name in ("sslkit", "scripts"):  # the API's source and the figures' folder, as the copy names them
        (tmp_path / name).symlink_to(ROOT / name)
    for page, broken, named in (("spectra.md", "[C](concepts.md#no-such-heading)", "#no-such-heading"),
                                ("api/losses.md", "::: sslkit.no_such_module", "sslkit.no_such_module")):
        original = (ROOT / "docs" / page).read_text()
        (tmp_path / "docs" / page).write_text(f"{original}\n\n{broken}\n")
        done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
        assert done.returncode != 0 and named in done.stderr, f"{page} with {broken}:\n{done.stderr[-2000:]}"
        (tmp_path / "docs" / page).write_text(original)


def readme_links() -> list[str]:
    """The targets of the README's Markdown links and images that are not web addresses."""
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", README.read_text()) if "://" not in t]


@pytest.mark.parametrize("target", readme_links())
def test_every_readme_link_lands(target, site):
    """A file of the repository; an anchor into a docs page is a heading of the built page."""
    path, _, anchor = target.partition("#")
    assert (ROOT / path).is_file(), f"{target}: no such file"
    if anchor:
        page = Path(path).relative_to("docs").with_suffix("")
        html = site / (page.parent if page.name == "index" else page) / "index.html"
        assert anchor in html_ids(html), f"{target}: no such heading"


def test_the_api_reference_names_every_module():
    """Every module and package of sslkit is on an API page (a new one gets its `::: name`)."""
    named = {m for page in (ROOT / "docs" / "api").glob("*.md")
             for m in re.findall(r"^::: (\S+)", page.read_text(), re.M)}
    modules = {m.name for m in pkgutil.walk_packages(sslkit.__path__, "sslkit.")}
    assert modules <= named, sorted(modules - named)


def test_the_readme_is_a_front_door():
    """At most 250 lines; the two commands, the way onto PATH, the figure and a first
    experiment come first (within 60 lines: a screen and a half)."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    first = "\n".join(lines[:60])
    for expected in ("make train", "make test", "source .venv/bin/activate", "scripts/figures/stepwise_digits.png",
                     "## Your first experiment", "sslkit-report"):
        assert expected in first, expected
