"""Bench report: table ranking and formats, and the HTML report rendered in a real headless Chromium.

The browser test needs Chromium (Debian: ``apt-get install -y chromium``);
set ``CAUSALFUSE_CHROMIUM`` to use another binary. It is skipped, saying so,
where none is installed.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causalfuse.bench.report import write_report
from causalfuse.bench.results import Cell, _rank, load_run, summarise
from causalfuse.bench.tables import latex_tables, markdown_tables
from causalfuse.bench.runner import BenchConfig, MethodSpec, parse_method_spec, run_bench

METHODS = ("average", "max-abs", "gff")


def tiny_bench(root: Path) -> Path:
    """2 synthetic pairs, classical methods only, 2 metrics."""
    data = root / "pairs"
    (data / "ir").mkdir(parents=True)
    (data / "vi").mkdir()
    y, x = np.mgrid[0:48, 0:64]
    rng = np.random.default_rng(1)
    for i in range(2):
        ir = np.clip(50 + 180 * (((x - 20 - 10 * i) ** 2 + (y - 24) ** 2) < 60) + rng.normal(0, 6, x.shape), 0, 255)
        vi = np.clip(128 + 70 * np.sin(x / 4.0 + i) * np.cos(y / 6.0) + rng.normal(0, 6, x.shape), 0, 255)
        Image.fromarray(ir.astype(np.uint8)).save(data / "ir" / f"p{i}.png")
        Image.fromarray(vi.astype(np.uint8)).save(data / "vi" / f"p{i}.png")
    cfg = BenchConfig(
        methods=[parse_method_spec(m) for m in METHODS], datasets={"tiny": str(data)}, metrics=["MI", "SSIM"], zoom=(0.3, 0.3, 0.3, 0.3)
    )
    out = root / "bench"
    run_bench(cfg, out, progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return tiny_bench(tmp_path_factory.mktemp("bench"))


def test_rank_follows_direction_and_ties():
    cells = [Cell(0.5, 0, 1), Cell(0.7, 0, 1), Cell(0.6, 0, 1), Cell(0.7, 0, 1), None, Cell(float("nan"), 0, 0)]
    _rank(cells, higher_is_better=True)
    assert [c.rank if c else None for c in cells] == [None, 0, 1, 0, None, None]
    _rank(cells, higher_is_better=False)
    assert [c.rank if c else None for c in cells] == [0, None, 1, None, None, None]


def test_tables_mark_best_and_second(bench):
    run = load_run(bench)
    cells = summarise(run)
    md = markdown_tables(run, cells)
    tex = latex_tables(run, cells)
    for metric in ("MI", "SSIM"):
        means = {m: cells[("tiny", metric, m)].mean for m in METHODS}
        order = sorted(means, key=means.get, reverse=True)  # both higher-is-better
        best, second = f"{means[order[0]]:.4f}", f"{means[order[1]]:.4f}"
        assert f"**{best}**" in md and f"<u>{second}</u>" in md
        assert rf"\textbf{{{best}}}" in tex and rf"\underline{{{second}}}" in tex
    assert "| Datasets | Metrics | average | max-abs | gff |" in md
    assert "| Datasets | Method | MI ↑ | SSIM ↑ | images |" in md
    assert r"\begin{tabular}{llrrr}" in tex and r"MI $\uparrow$" in tex
    # rows: datasets x metrics, then the image counts
    assert re.search(r"\| tiny \| MI ↑ \|.*\n\|  \| SSIM ↑ \|.*\n\|  \| images \| 2 \| 2 \| 2 \|", md)


def test_report_is_self_contained(bench):
    page = (bench / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    assert page.count("<img") == 2 + 0  # grid + bars for one dataset (no scene data in this run)


def _chromium() -> str | None:
    for candidate in (os.environ.get("CAUSALFUSE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


_PROBE = """
<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    images: imgs.length,
    decoded: imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
    widths: imgs.map(i => i.naturalWidth),
    shown: imgs.map(i => i.getBoundingClientRect().width),
    resultCells: Array.from(document.querySelectorAll('table.results td')).map(td => td.textContent),
    bold: Array.from(document.querySelectorAll('table.results strong')).map(e => e.textContent),
    underlined: Array.from(document.querySelectorAll('table.results u')).map(e => e.textContent),
    tables: document.querySelectorAll('table').length,
  });
  document.body.appendChild(probe);
});
</script>
"""


def _browser_args(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1800",
        "--virtual-time-budget=10000",
    ]


def test_report_renders_in_headless_chromium(bench, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium chromium-driver; or set CAUSALFUSE_CHROMIUM)")
    page = (bench / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE + "</body>"))
    done = subprocess.run(
        [browser, *_browser_args(tmp_path / "profile"), "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no probe output; chromium exit {done.returncode}, stderr: {done.stderr[-2000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["images"] == 2 and probe["decoded"] == 2, probe
    assert all(w > 100 for w in probe["widths"]) and all(w > 100 for w in probe["shown"]), probe
    # the results table: 2 metrics + the image-count row, each with dataset, metric and 3 methods
    cells = summarise(load_run(bench))
    expected = [f"{cells[('tiny', m, k)].mean:.4f}" for m in ("MI", "SSIM") for k in METHODS]
    assert [c for c in probe["resultCells"] if re.fullmatch(r"\d+\.\d{4}", c)] == expected
    assert len(probe["bold"]) >= 2 and len(probe["underlined"]) >= 2
    assert probe["tables"] >= 3  # results, ablation form, timing

    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [browser, *_browser_args(tmp_path / "profile2"), f"--screenshot={shot}", (bench / "report.html").as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert shot.is_file(), f"no screenshot; chromium exit {done.returncode}, stderr: {done.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 1000 and pixels.std() > 10, "the screenshot is blank"
    assert (pixels < 100).mean() > 0.005  # text and figures, not an empty page


def test_report_command_rebuilds_from_csvs_only(bench, tmp_path):
    # Copy the CSVs and config only (no fused images): tables still come out; figures show "missing".
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "results.csv", "methods.csv", "pairs.csv", "errors.csv", "missing.csv"):
        shutil.copy(bench / name, copy / name)
    write_report(copy)
    assert (copy / "tables.md").read_text() == (bench / "tables.md").read_text()
    assert (copy / "report" / "grid_tiny.png").is_file()


def test_rank_leaves_out_means_over_fewer_images():
    cells = [Cell(0.5, 0, 3), Cell(0.9, 0, 2, comparable=False), Cell(0.6, 0, 3)]
    _rank(cells, higher_is_better=True)
    assert [c.rank for c in cells] == [1, None, 0]


def test_a_method_lacking_an_image_or_with_nan_is_marked_and_not_ranked(tmp_path):
    data = tmp_path / "pairs"
    (data / "ir").mkdir(parents=True)
    (data / "vi").mkdir()
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:48, 0:64]
    for i, (name, contrast) in enumerate([("a1", 1.0), ("b2", 1.0), ("c3", 0.1)]):  # c3: flat, a low MI for everyone
        blob = ((x - 20 - 5 * i) ** 2 + (y - 24) ** 2) < 60
        ir = np.clip(50 + contrast * (180 * blob + rng.normal(0, 6, x.shape)), 0, 255)
        vi = np.clip(128 + contrast * (70 * np.sin(x / 4.0 + i) * np.cos(y / 6.0) + rng.normal(0, 6, x.shape)), 0, 255)
        Image.fromarray(ir.astype(np.uint8)).save(data / "ir" / f"{name}.png")
        Image.fromarray(vi.astype(np.uint8)).save(data / "vi" / f"{name}.png")
    # "blackish" has a black a1 (CC undefined: NaN); "theirs" is max-abs without the hard image c3.
    blackish, theirs = tmp_path / "blackish", tmp_path / "theirs"
    blackish.mkdir()
    theirs.mkdir()
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(blackish / "a1.png")
    for name in ["b2", "c3"]:
        shutil.copy(data / "vi" / f"{name}.png", blackish / f"{name}.png")
    cfg = BenchConfig(methods=[parse_method_spec(m) for m in ("average", "max-abs")], datasets={"d": str(data)}, metrics=["MI", "CC"])
    cfg.methods.append(MethodSpec("blackish", external=str(blackish)))
    out = tmp_path / "bench"
    run_bench(cfg, out, progress=False, report=False, log=lambda m: None)
    for name in ["a1", "b2"]:
        shutil.copy(out / "fused" / "d" / "max-abs" / f"{name}.png", theirs / f"{name}.png")
    cfg.methods.append(MethodSpec("theirs", external=str(theirs)))
    run_bench(cfg, out, progress=False, log=lambda m: None)

    cells = summarise(load_run(out))
    mi = {m: cells[("d", "MI", m)] for m in ("average", "max-abs", "theirs", "blackish")}
    assert (mi["theirs"].n, mi["theirs"].nan, mi["theirs"].comparable, mi["theirs"].rank) == (2, 0, False, None)
    rows = {(r["image"], r["method"], r["metric"]): float(r["value"]) for r in csv.DictReader(open(out / "results.csv"))}
    assert mi["theirs"].mean == pytest.approx((rows[("a1", "max-abs", "MI")] + rows[("b2", "max-abs", "MI")]) / 2, rel=1e-12)
    assert mi["theirs"].mean > max(c.mean for m, c in mi.items() if m != "theirs")  # it would have ranked first
    best = max(("average", "max-abs", "blackish"), key=lambda m: mi[m].mean)
    assert mi[best].rank == 0 and mi["blackish"].comparable and mi["blackish"].n == 3  # MI of a black image is 0, not NaN
    cc = cells[("d", "CC", "blackish")]
    assert (cc.n, cc.nan, cc.comparable, cc.rank) == (2, 1, False, None)

    md = (out / "tables.md").read_text()
    assert f"| {mi['theirs'].mean:.4f} (n=2) † |" in md and f"**{mi['theirs'].mean:.4f}" not in md
    assert f"**{mi[best].mean:.4f}**" in md
    assert f"{cc.mean:.4f} (n=2) †" in md
    assert "theirs on d: no score for 1 of 3 images (1 missing)." in md
    assert "where one NaN makes the mean NaN: blackish on d, CC: NaN in 1 of 3." in md
    tex = (out / "tables.tex").read_text()
    assert rf"{mi['theirs'].mean:.4f} (n=2)$^\dagger$" in tex and rf"\textbf{{{mi['theirs'].mean:.4f}" not in tex
    assert tex.count("blackish on d, CC: NaN in 1 of 3") == 2  # under both tables
    page = (out / "report.html").read_text()
    assert "<p class=note>theirs on d: no score for 1 of 3 images (1 missing).</p>" in page
    assert f"<td class=\"num\">{mi['theirs'].mean:.4f} (n=2) †</td>" in page

    summary = {(r["metric"], r["method"]): r for r in csv.DictReader(open(out / "summary.csv"))}
    assert {k: summary[("MI", "theirs")][k] for k in ("n", "nan", "images", "comparable", "rank")} == {
        "n": "2", "nan": "0", "images": "3", "comparable": "0", "rank": ""}  # fmt: skip
    assert {k: summary[("CC", "blackish")][k] for k in ("n", "nan", "comparable")} == {"n": "2", "nan": "1", "comparable": "0"}
    assert summary[("MI", best)]["rank"] == "1" and float(summary[("MI", best)]["mean"]) == mi[best].mean
