"""docs/benchmarks.md and `make bench` agree: every scripts/bench_*.py has a table on the
page, and the figure column quotes the `name: value` line the script prints last."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
HEADER = "| what it measures | figure | device | command | commit | date |"


def printed_keys(script: Path) -> set[str]:
    """The names of the `name: value` lines a benchmark prints (`print(f"name: {...}")`)."""
    return set(re.findall(r'print\(f"([a-z_]+): \{', script.read_text()))


def benchmark_rows() -> list[tuple[str, str]]:
    """(script, figure) for every row of the page's benchmark tables whose command runs a
    scripts/bench_*.py; a command "the same…" runs the row above's script."""
    rows, script, in_table = [], None, False
    for line in PAGE.read_text().splitlines():
        if line == HEADER:
            in_table, script = True, None
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        named = re.search(r"scripts/(bench_\w+\.py)", cells[3])
        script = named.group(1) if named else (script if cells[3].startswith("the same") else None)
        if script:
            rows.append((script, cells[1]))
    return rows


def test_the_page_is_short():
    assert len(PAGE.read_text().splitlines()) <= 400


def test_every_benchmark_figure_is_the_line_its_script_prints():
    rows = benchmark_rows()
    scripts = sorted(p.name for p in (ROOT / "scripts").glob("bench_*.py"))
    assert sorted({s for s, _ in rows}) == scripts  # every benchmark has rows on the page
    for script in scripts:
        keys = printed_keys(ROOT / "scripts" / script)
        quoted = [m for s, figure in rows if s == script for m in re.findall(r"`([a-z_]+): [-0-9.e+]+`", figure)]
        assert quoted, f"no figure of {script} quotes its last line ({sorted(keys)})"
        assert set(quoted) <= keys, (script, set(quoted) - keys)
