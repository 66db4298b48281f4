"""`causalfuse bench`: caching, resuming, failures, missing images, configuration checks, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causalfuse.bench import runner
from causalfuse.bench.results import image_counts, load_run, summarise
from causalfuse.bench.runner import BenchConfig, MethodSpec, parse_method_spec, read_csv, run_bench
from causalfuse.cli import main
from causalfuse.errors import CausalFuseError
from causalfuse.models import registry

METRICS = ["MI", "SSIM"]


def make_dataset(root: Path, names=("a1", "b2"), size=(24, 32), colour=False, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    for i, name in enumerate(names):
        ir = np.clip(60 + 120 * ((x - 8 - i) ** 2 + (y - 12) ** 2 < 30) + rng.normal(0, 8, size), 0, 255).astype(np.uint8)
        vi = np.clip(120 + 60 * np.sin(x / 3 + i) * np.cos(y / 4) + rng.normal(0, 8, size), 0, 255).astype(np.uint8)
        if colour:
            vi = np.stack([vi, np.roll(vi, 1, 1), 255 - vi], axis=-1)
        Image.fromarray(ir).save(root / "ir" / f"{name}.png")
        Image.fromarray(vi).save(root / "vi" / f"{name}.png")
    return root


def config(data: dict[str, Path], methods=("average", "max-abs"), **kw) -> BenchConfig:
    return BenchConfig(
        methods=[parse_method_spec(m) for m in methods],
        datasets={k: str(v) for k, v in data.items()},
        metrics=list(kw.pop("metrics", METRICS)),
        **kw,
    )


class _Failing:
    """A test method that fails on the pair whose infrared top-left pixel is ``bad_pixel``."""

    bad_pixel = -1.0

    def __call__(self, ir, vi):
        if abs(float(ir[0, 0]) - _Failing.bad_pixel) < 1e-6:
            raise RuntimeError("deliberate failure")
        return (ir + vi) / 2


@pytest.fixture
def failing_method(monkeypatch):
    # Registered for this test only, so other tests see the real list of methods.
    info = registry.MethodInfo("test-fails-on-b2", _Failing, "test helper", kind="classical")
    monkeypatch.setitem(registry._METHODS, "test-fails-on-b2", info)
    yield _Failing
    _Failing.bad_pixel = -1.0


@pytest.fixture
def ds(tmp_path):
    return make_dataset(tmp_path / "set1")


def quiet(msgs):
    return lambda m: msgs.append(m)


def test_run_writes_tidy_csv_cache_and_report(tmp_path, ds):
    out = tmp_path / "out"
    msgs: list[str] = []
    summary = run_bench(config({"set1": ds}), out, progress=False, log=quiet(msgs))
    assert summary.fused == 4 and summary.reused == 0 and summary.scored == 4 and not summary.errors
    rows = read_csv(out / "results.csv", runner.RESULT_FIELDS)
    assert len(rows) == 2 * 2 * 2
    assert {(r["dataset"], r["image"], r["method"], r["metric"]) for r in rows} == {
        ("set1", i, m, k) for i in ("a1", "b2") for m in ("average", "max-abs") for k in METRICS
    }
    for m in ("average", "max-abs"):
        for i in ("a1", "b2"):
            assert (out / "fused" / "set1" / m / f"{i}.png").is_file()
    # the cached average image is the rounded pixel mean of the sources
    ir = np.asarray(Image.open(ds / "ir" / "a1.png"), dtype=np.float64)
    vi = np.asarray(Image.open(ds / "vi" / "a1.png"), dtype=np.float64)
    fused = np.asarray(Image.open(out / "fused" / "set1" / "average" / "a1.png"), dtype=np.float64)
    assert np.abs(fused - (ir + vi) / 2).max() <= 0.51
    methods = {r["method"]: r for r in read_csv(out / "methods.csv", runner.METHOD_FIELDS)}
    assert methods["average"]["kind"] == "classical" and int(methods["average"]["images_timed"]) == 2
    assert float(methods["average"]["ms_per_image"]) >= 0 and methods["average"]["parameters"] == ""
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["metrics"] == METRICS and [m["label"] for m in cfg["methods"]] == ["average", "max-abs"]
    for name in ("report.html", "tables.md", "tables.tex", "report/grid_set1.png", "report/bars_set1.png"):
        assert (out / name).is_file(), name


def test_resume_reuses_images_and_rows(tmp_path, ds):
    out = tmp_path / "out"
    run_bench(config({"set1": ds}), out, progress=False, report=False, log=lambda m: None)
    rows_before = (out / "results.csv").read_text().splitlines()
    # an interrupted run: one fused image lost, results.csv cut in the middle of a line
    (out / "fused" / "set1" / "max-abs" / "b2.png").unlink()
    cut = "\n".join(rows_before[:-3]) + "\n" + rows_before[-3][: len(rows_before[-3]) // 2]
    (out / "results.csv").write_text(cut)
    summary = run_bench(config({"set1": ds}), out, progress=False, report=False, log=lambda m: None)
    assert summary.fused == 1 and summary.reused == 3
    assert summary.scored == 2  # the images whose rows were lost
    rows_after = (out / "results.csv").read_text().splitlines()
    assert sorted(rows_after) == sorted(rows_before)
    # a complete run again: nothing to do
    summary = run_bench(config({"set1": ds}), out, progress=False, report=False, log=lambda m: None)
    assert summary.fused == 0 and summary.scored == 0


def test_adding_a_method_keeps_the_others(tmp_path, ds):
    out = tmp_path / "out"
    run_bench(config({"set1": ds}), out, progress=False, report=False, log=lambda m: None)
    summary = run_bench(config({"set1": ds}, methods=("average", "max-abs", "dwt")), out, progress=False, report=False, log=lambda m: None)
    assert summary.fused == 2 and summary.reused == 4 and summary.scored == 2
    # an interrupted run: the report counts the images not scored yet
    lines = (out / "results.csv").read_text().splitlines()
    (out / "results.csv").write_text("\n".join(line for line in lines if not line.startswith("set1,b2,dwt,")) + "\n")
    assert image_counts(load_run(out))[("set1", "dwt")] == (1, 2, 0, 0, 1)


def test_another_configuration_is_refused_unless_overwrite(tmp_path, ds):
    out = tmp_path / "out"
    run_bench(config({"set1": ds}), out, progress=False, report=False, log=lambda m: None)
    with pytest.raises(CausalFuseError, match="another benchmark configuration.*colour gray vs vifb.*--overwrite"):
        run_bench(config({"set1": ds}, colour="vifb"), out, progress=False, report=False, log=lambda m: None)
    other = make_dataset(tmp_path / "set2", seed=3)
    with pytest.raises(CausalFuseError, match="dataset set1 was"):
        run_bench(config({"set1": other}), out, progress=False, report=False, log=lambda m: None)
    summary = run_bench(config({"set1": ds}, colour="vifb"), out, overwrite=True, progress=False, report=False, log=lambda m: None)
    assert summary.fused == 4 and summary.reused == 0
    assert json.loads((out / "config.json").read_text())["colour"] == "vifb"


def test_a_checkpoint_replaced_at_the_same_path_is_another_method(tmp_path, ds):
    from causalfuse.checkpoint import save_model
    from causalfuse.integrity import file_sha256
    from tests.test_net import small_net

    ckpt = save_model(tmp_path / "net.safetensors", small_net(seed=0))
    out = tmp_path / "out"
    quiet_log = lambda m: None  # noqa: E731
    run_bench(config({"set1": ds}, methods=(f"causalfuse@{ckpt}",), device="cpu"), out, progress=False, report=False, log=quiet_log)
    assert json.loads((out / "config.json").read_text())["methods"][0]["weights_sha256"] == file_sha256(ckpt)
    summary = run_bench(config({"set1": ds}, methods=(f"causalfuse@{ckpt}",), device="cpu"), out, progress=False, report=False, log=quiet_log)
    assert summary.reused == 2, "the same file: its results are reused"
    save_model(ckpt, small_net(seed=7))  # new weights, same path
    with pytest.raises(CausalFuseError, match=r"method causalfuse@net was causalfuse with .*net\.safetensors \(content sha256 .*\), now .*--overwrite"):
        run_bench(config({"set1": ds}, methods=(f"causalfuse@{ckpt}",), device="cpu"), out, progress=False, report=False, log=quiet_log)
    assert parse_method_spec("causalfuse").weights_sha256 is not None, "the bundled weights are identified by content too"


def test_a_failing_image_is_reported_and_the_rest_continue(tmp_path, ds, failing_method):
    out = tmp_path / "out"
    failing_method.bad_pixel = float(np.asarray(Image.open(ds / "ir" / "b2.png"))[0, 0]) / 255.0
    msgs: list[str] = []
    summary = run_bench(config({"set1": ds}, methods=("average", "test-fails-on-b2")), out, progress=False, log=quiet(msgs))
    assert [(e["image"], e["method"], e["stage"]) for e in summary.errors] == [("b2", "test-fails-on-b2", "fuse")]
    assert "deliberate failure" in read_csv(out / "errors.csv", runner.ERROR_FIELDS)[0]["message"]
    assert any("1 failures" in m for m in msgs) and any("deliberate failure" in m for m in msgs)
    run = load_run(out)
    assert image_counts(run)[("set1", "test-fails-on-b2")] == (1, 2, 0, 1, 0)
    assert "1 (1 failed)" in (out / "tables.md").read_text()
    # the failed image is tried again on the next run
    failing_method.bad_pixel = -1.0
    summary = run_bench(config({"set1": ds}, methods=("average", "test-fails-on-b2")), out, progress=False, report=False, log=lambda m: None)
    assert summary.fused == 1 and not summary.errors and read_csv(out / "errors.csv", runner.ERROR_FIELDS) == []


def test_external_folder_missing_images_are_listed(tmp_path, ds):
    ext = tmp_path / "theirs"
    ext.mkdir()
    Image.open(ds / "vi" / "a1.png").save(ext / "a1.png")  # b2 is missing
    cfg = config({"set1": ds})
    cfg.methods.append(MethodSpec(label="theirs", external=str(ext)))
    out = tmp_path / "out"
    msgs: list[str] = []
    summary = run_bench(cfg, out, progress=False, log=quiet(msgs))
    assert summary.missing == [{"dataset": "set1", "image": "b2", "method": "theirs"}]
    assert any("lacks 1 of 2 set1 images: b2" in m for m in msgs)
    run = load_run(out)
    cells = summarise(run)
    assert cells[("set1", "MI", "theirs")].n == 1 and cells[("set1", "MI", "average")].n == 2
    assert "1 (1 missing)" in (out / "tables.md").read_text()
    assert "Missing images" in (out / "report.html").read_text()


def test_colour_visible_gives_colour_fused_images(tmp_path):
    ds = make_dataset(tmp_path / "col", colour=True)
    out = tmp_path / "out"
    run_bench(config({"col": ds}, methods=("gff",)), out, progress=False, report=False, log=lambda m: None)
    fused = np.asarray(Image.open(out / "fused" / "col" / "gff" / "a1.png"))
    assert fused.shape == (24, 32, 3)


def test_parse_method_spec(tmp_path):
    ckpt = tmp_path / "n20.safetensors"
    ckpt.write_bytes(b"x")
    assert parse_method_spec("gff") == MethodSpec("gff", "gff")
    spec = parse_method_spec(f"causalfuse@{ckpt}")
    assert spec.label == "causalfuse@n20" and spec.method == "causalfuse" and spec.weights == str(ckpt.resolve())
    assert parse_method_spec(f"N20=causalfuse@{ckpt}").label == "N20"
    assert parse_method_spec("lrrnet", lrrnet_weights=str(ckpt)).weights == str(ckpt.resolve())
    with pytest.raises(CausalFuseError, match="unknown fusion method 'nope'; known methods: .*average"):
        parse_method_spec("nope")
    with pytest.raises(CausalFuseError, match="does not exist"):
        parse_method_spec(f"causalfuse@{tmp_path / 'absent.safetensors'}")
    with pytest.raises(CausalFuseError, match="needs a weights file.*--lrrnet-weights"):
        parse_method_spec("lrrnet")
    with pytest.raises(CausalFuseError, match="classical method and takes no checkpoint"):
        parse_method_spec(f"gff@{ckpt}")
    with pytest.raises(CausalFuseError, match="not usable"):
        parse_method_spec("a b=gff")


def test_bad_input(tmp_path, ds):
    with pytest.raises(CausalFuseError, match="unknown metric 'NOPE'; available: .*SSIM"):
        run_bench(config({"set1": ds}, metrics=["MI", "NOPE"]), tmp_path / "o1", progress=False, log=lambda m: None)
    empty = tmp_path / "empty"
    (empty / "ir").mkdir(parents=True)
    (empty / "vi").mkdir()
    with pytest.raises(CausalFuseError, match="no images found"):
        run_bench(config({"empty": empty}), tmp_path / "o2", progress=False, log=lambda m: None)
    (tmp_path / "plain").mkdir()
    with pytest.raises(CausalFuseError, match="plain: no infrared-visible pairs found"):
        runner.dataset_roots([str(tmp_path / "plain")])
    with pytest.raises(CausalFuseError, match="given twice"):
        run_bench(config({"set1": ds}, methods=("gff", "gff")), tmp_path / "o3", progress=False, log=lambda m: None)


def test_dataset_roots_expand_a_folder_of_datasets(tmp_path):
    make_dataset(tmp_path / "val" / "TNO", names=("1",))
    make_dataset(tmp_path / "val" / "Road", names=("1", "2"))
    (tmp_path / "val" / "notes").mkdir()
    roots = runner.dataset_roots([str(tmp_path / "val")])
    assert list(roots) == ["Road", "TNO"]
    assert runner.dataset_roots([f"v={tmp_path / 'val'}"]).keys() == {"v-Road", "v-TNO"}
    assert list(runner.dataset_roots([f"mine={tmp_path / 'val' / 'TNO'}"])) == ["mine"]
    assert {k: len(v) for k, v in runner.resolve_datasets(roots).items()} == {"Road": 2, "TNO": 1}


def test_cli_run_report_and_errors(tmp_path, ds, capsys):
    out = tmp_path / "out"
    args = ["bench", "--methods", "average,laplacian-pyramid", "--data", f"set1={ds}", "--metrics", "MI,SSIM", "-o", str(out), "--no-scenes", "--no-progress", "--zoom", "0.25,0.25,0.3,0.3"]
    assert main(args) == 0
    assert (out / "report.html").is_file()
    (out / "report.html").unlink()
    assert main(["bench", "report", str(out)]) == 0
    assert (out / "report.html").is_file()
    capsys.readouterr()
    assert main([*args[:2], "average,bogus", *args[3:]]) == 2
    assert "unknown fusion method 'bogus'; known methods:" in capsys.readouterr().err
    assert main([*args, "--colour", "vifb"]) == 2
    assert "another benchmark configuration" in capsys.readouterr().err
    assert main(["bench", "--methods", "average", "--data", str(tmp_path / "nowhere"), "-o", str(out), "--no-scenes"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["bench", "report", str(tmp_path)]) == 2
    assert "not a bench output folder" in capsys.readouterr().err
    assert main(["bench", "list"]) == 0
    listing = capsys.readouterr().out
    assert "gff" in listing and "classical" in listing and "SSIM" in listing


def test_scoring_in_parallel_gives_the_same_rows(tmp_path, ds):
    run_bench(config({"set1": ds}), tmp_path / "serial", progress=False, report=False, log=lambda m: None)
    run_bench(config({"set1": ds}, jobs=2), tmp_path / "parallel", progress=False, report=False, log=lambda m: None)
    serial = sorted((tmp_path / "serial" / "results.csv").read_text().splitlines())
    parallel = sorted((tmp_path / "parallel" / "results.csv").read_text().splitlines())
    assert serial == parallel
