"""The compare report: summary.md and an offline report.html with the same numbers as scipy, in a browser."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from scipy import stats

from headstart.errors import ConfigError
from headstart.experiments.report import write_compare_report

STRATEGIES = {  # strategy -> (test_acc per seed, wall time s, trainable params)
    "full": ([0.850, 0.862, 0.841], 300.0, 110_000_000),
    "partial:2": ([0.871, 0.874, 0.858], 120.0, 14_000_000),
    "linear probe": ([0.801, 0.789, 0.812], 20.0, 1_538),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _rows(tmp_path: Path) -> list[dict]:
    """3 strategies x 3 seeds as results.csv would give them (strings), seed 2 of the probe failed."""
    rows = []
    for strategy, (accs, wall, trainable) in STRATEGIES.items():
        for seed, acc in enumerate(accs):
            failed = strategy == "linear probe" and seed == 2
            run = f"{strategy.replace(' ', '_')}-s{seed}"
            run_dir = tmp_path / "runs" / run
            (run_dir / "plots").mkdir(parents=True)
            if not failed:
                (run_dir / "summary.json").write_text("{}")
                if seed == 0:
                    (run_dir / "plots" / "curves.png").write_bytes(PNG_MAGIC)
            rows.append({
                "run": run, "strategy": strategy, "seed": str(seed),
                "status": "failed: RuntimeError: CUDA out of memory" if failed else "done",
                "run_dir": str(run_dir), "wall_time_s": "" if failed else str(wall + seed),
                "train_time_s": str(wall - 5), "trainable_params": str(trainable), "total_params": "110000000",
                "peak_rss_mb": "2150.5", "best_epoch": "3",
                "val_acc": str(acc + 0.01), "test_acc": "" if failed else str(acc),
                "test_f1": None if failed else acc - 0.02, "test_loss": 0.4,
            })
    return rows


@pytest.fixture
def report(tmp_path: Path) -> dict[str, Path]:
    return write_compare_report(_rows(tmp_path), tmp_path / "compare", title="grid <demo>",
                                notes=["splits: data/splits.json (seed 0)", "<script>alert(1)</script>"])


class _Tables(HTMLParser):
    """Rows per table id (thead and tbody separately), img tags and every href/src attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, int]] = {}
        self.imgs: list[dict[str, str]] = []
        self.links: list[str] = []
        self._table: str | None = None
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.links += [a[k] for k in ("href", "src") if k in a]
        if tag == "table":
            self._table = a.get("id", "")
            self.rows[self._table] = {"thead": 0, "tbody": 0}
        elif tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr" and self._table is not None and self._section is not None:
            self.rows[self._table][self._section] += 1
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("thead", "tbody"):
            self._section = None


def _parse(text: str) -> _Tables:
    parser = _Tables()
    parser.feed(text)
    return parser


def _paired_p(strategy: str) -> tuple[float, float]:
    a, b = STRATEGIES[strategy][0], STRATEGIES["full"][0]
    if strategy == "linear probe":
        a, b = a[:2], b[:2]  # its seed 2 failed: only seeds 0 and 1 pair up
    return stats.ttest_rel(a, b).pvalue, stats.wilcoxon(a, b).pvalue


def test_writes_every_file(report: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "compare"
    assert report == {"summary_md": out / "summary.md", "report_html": out / "report.html",
                      "metric_by_strategy": out / "plots" / "metric_by_strategy.png",
                      "cost_vs_quality": out / "plots" / "cost_vs_quality.png"}
    for path in report.values():
        assert path.is_file() and path.stat().st_size > 500
    for name in ("metric_by_strategy", "cost_vs_quality"):
        assert report[name].read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in out.rglob("*.tmp")]  # atomic writes leave no temp file behind


def test_summary_md_tables_and_p_values(report: dict[str, Path]) -> None:
    md = report["summary_md"].read_text(encoding="utf-8")
    assert md.startswith("# grid <demo>\n")
    assert "| strategy | runs | failed | test_acc (mean ± std) | test_f1 (mean ± std) |" in md
    assert "| full | 3 | 0 | 0.8510 ± 0.0105 |" in md
    assert "| linear probe | 2 | 1 | 0.7950 ± 0.0085 |" in md
    assert "## Paired tests against full (same seeds, same splits)" in md
    paired = md.split("## Paired tests against full")[1].split("## Reading")[0]
    for strategy, n_pairs in (("partial:2", 3), ("linear probe", 2)):
        p_t, p_w = _paired_p(strategy)
        line = next(line for line in paired.splitlines() if line.startswith(f"| {strategy} | "))
        assert line.startswith(f"| {strategy} | {n_pairs} | ") and f"| {p_t:.3g} | {p_w:.3g} |" in line, line
    assert "partial:2 is 1.67 points above full" in md  # (0.871+0.874+0.858 - 0.850-0.862-0.841) / 3 x 100
    assert "With only 2 paired seeds the test has almost no power" in md
    assert "[linear_probe-s2](../runs/linear_probe-s2/)" in md and "failed: RuntimeError: CUDA" in md
    assert "(../runs/full-s0/plots/curves.png)" in md and "(../runs/full-s1/plots/curves.png)" not in md


def test_report_html_is_self_contained(report: dict[str, Path], tmp_path: Path) -> None:
    page = report["report_html"].read_text(encoding="utf-8")
    parsed = _parse(page)
    assert not [u for u in parsed.links if re.match(r"\s*(https?:)?//", u, re.IGNORECASE)]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "grid &lt;demo&gt;" in page

    assert len(parsed.imgs) == 2
    for img in parsed.imgs:
        assert img["alt"].strip()
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):], validate=True)[:8] == PNG_MAGIC

    assert parsed.rows["summary"] == {"thead": 1, "tbody": 3}
    assert parsed.rows["paired"] == {"thead": 1, "tbody": 2}
    assert parsed.rows["runs"] == {"thead": 1, "tbody": 9}
    assert page.count("<thead>") == 3
    p_t, p_w = _paired_p("partial:2")
    assert f"<td class=\"num\">{p_t:.3g}</td><td class=\"num\">{p_w:.3g}</td>" in page

    out = tmp_path / "compare"
    run_links = [unquote(u) for u in parsed.links if not u.startswith("data:")]
    assert "../runs/full-s0/" in run_links and "../runs/full-s0/plots/curves.png" in run_links
    assert "../runs/linear_probe-s2/summary.json" not in run_links  # the failed run wrote none
    for link in run_links:
        assert (out / link).exists(), link


def test_strategy_names_are_quoted_in_hrefs(tmp_path: Path) -> None:
    run_dir = tmp_path / "compare" / "runs" / "partial:2 s0"
    run_dir.mkdir(parents=True)
    rows = [{"run": "partial:2 s0", "strategy": "partial:2", "seed": 0, "status": "done", "run_dir": str(run_dir),
             "test_acc": 0.9}]
    page = write_compare_report(rows, tmp_path / "compare")["report_html"].read_text(encoding="utf-8")
    assert 'href="runs/partial%3A2%20s0/"' in page  # not read as a 'partial:' URL scheme


def test_falls_back_to_val_metric_and_says_so(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if not k.startswith("test_")} for row in _rows(tmp_path)]
    files = write_compare_report(rows, tmp_path / "compare", extra_metrics=("test_f1", "test_loss"))
    md = files["summary_md"].read_text(encoding="utf-8")
    assert "No finished run has test_acc (no test split?): the report uses val_acc instead." in md
    assert "| val_acc (mean ± std) |" in md and "test_f1" not in md
    assert "No finished run has test_acc" in files["report_html"].read_text(encoding="utf-8")


def test_baseline_choice(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    md = write_compare_report(rows, tmp_path / "a", baseline="partial:2")["summary_md"].read_text()
    assert "## Paired tests against partial:2 (same seeds, same splits)" in md
    assert "full is 1.67 points below partial:2" in md
    no_full = [r for r in rows if r["strategy"] != "full"]
    md = write_compare_report(no_full, tmp_path / "b")["summary_md"].read_text()
    assert "## Paired tests against partial:2" in md  # no 'full': the first strategy
    with pytest.raises(ConfigError, match=r"baseline 'ful' is not a strategy.*Did you mean 'full'"):
        write_compare_report(rows, tmp_path / "c", baseline="ful")


def test_all_runs_failed_still_reports(tmp_path: Path) -> None:
    rows = [{**row, "status": "failed: boom"} for row in _rows(tmp_path)]
    files = write_compare_report(rows, tmp_path / "compare")
    md = files["summary_md"].read_text(encoding="utf-8")
    assert "No finished run has a value for test_acc" in md
    assert _parse(files["report_html"].read_text(encoding="utf-8")).rows["runs"]["tbody"] == 9


def test_small_and_degenerate_grids(tmp_path: Path) -> None:
    def row(strategy: str, seed: int, acc: float) -> dict:
        return {"run": f"{strategy}-{seed}", "strategy": strategy, "seed": seed, "status": "done", "test_acc": acc}

    # every seed gains exactly 1 point: the t-test's p=0 is flagged; one shared seed cannot be tested
    rows = [row("full", s, 0.80 + s / 100) for s in range(3)] + [row("lora", s, 0.81 + s / 100) for s in range(3)]
    rows.append(row("bitfit", 0, 0.7))
    files = write_compare_report(rows, tmp_path / "a")
    md = files["summary_md"].read_text(encoding="utf-8")
    assert "lora is 1.00 points above full (t-test p=0, Wilcoxon p=0.25, d_z=+inf, 3 seeds)" in md
    assert "p=0 is degenerate" in md
    assert "bitfit is 10.00 points below full" in md and "cannot be tested" in md
    assert "[full-0]" not in md  # no run_dir: the run name is plain text

    files = write_compare_report([row("full", 0, 0.8)], tmp_path / "b")  # nothing to compare against
    parsed = _parse(files["report_html"].read_text(encoding="utf-8"))
    assert parsed.rows["summary"]["tbody"] == 1 and parsed.rows["paired"]["tbody"] == 0


# ----------------------------------------------------------------------------------------------------
# headless browser


def _find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _run(cmd: list[str], log: list[str]) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.append(f"$ {' '.join(cmd)}: {exc}")
        return False
    log.append(f"$ {' '.join(cmd)} -> {res.returncode}\n{(res.stdout + res.stderr)[-1500:]}")
    return res.returncode == 0


@pytest.fixture(scope="session")
def chromium() -> str:
    """A Chromium binary; installed once with apt-get when missing and running as root, else skip."""
    found = _find_browser()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"no Chromium on PATH ({', '.join(BROWSERS)}) and no root apt-get to install one")
    log: list[str] = []
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if not _run(install, log):
        _run(["apt-get", "update"], log)  # stale package lists are the usual cause
        _run(install, log)
    found = _find_browser()
    if found is None:
        pytest.skip("Chromium could not be installed:\n" + "\n".join(log)[-3000:])
    return found


_PROBE = """<script>
window.addEventListener("load", function () {
  var probe = {
    summaryRows: document.querySelectorAll("#summary tbody tr").length,
    pairedRows: document.querySelectorAll("#paired tbody tr").length,
    runsRows: document.querySelectorAll("#runs tbody tr").length,
    collapse: getComputedStyle(document.querySelector("#summary")).borderCollapse,
    images: Array.prototype.map.call(document.images, function (im) {
      return {complete: im.complete, naturalWidth: im.naturalWidth, alt: im.alt};
    })
  };
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});
</script>
"""


def test_report_renders_in_headless_chromium(report: dict[str, Path], tmp_path: Path, chromium: str) -> None:
    page = report["report_html"].read_text(encoding="utf-8")
    check = report["report_html"].with_name("check.html")  # beside report.html: same relative links
    check.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
           "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome-profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: anything fetched from a host would fail
           "--dump-dom", check.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.DOTALL)
    assert match, f"no probe in the dumped DOM (exit {res.returncode}):\n{res.stderr[-2000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["summaryRows"] == len(STRATEGIES)
    assert probe["pairedRows"] == len(STRATEGIES) - 1 and probe["runsRows"] == 9
    assert probe["collapse"] == "collapse"  # the inline CSS applied
    assert len(probe["images"]) == 2
    for image in probe["images"]:
        assert image["complete"] and image["naturalWidth"] > 0 and image["alt"]
