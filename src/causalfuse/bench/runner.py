"""The benchmark runner: methods x datasets x metrics -> tidy CSVs.

The files a run writes into its output folder are listed in :mod:`.files`;
the report (:mod:`.report`) is made from those files alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from ..data.paired import Pair, find_pairs, list_images, natural_key, resolve_layout
from ..errors import CausalFuseError
from ..io import atomic_path
from .files import (
    ERROR_FIELDS,
    METHOD_FIELDS,
    MISSING_FIELDS,
    PAIR_FIELDS,
    RESULT_FIELDS,
    TIMING_FIELDS,
    external_folder,
    fused_path,
    read_csv,
    write_csv,
)

__all__ = [
    "BenchConfig",
    "MethodSpec",
    "DEFAULT_METRICS",
    "parse_method_spec",
    "parse_named_folder",
    "dataset_roots",
    "resolve_datasets",
    "run_bench",
    "read_csv",
    "write_csv",
]

DEFAULT_METRICS = ("MI", "VIF", "Qabf", "SSIM")

# Files of a run that --overwrite may delete (never anything else in OUTDIR).
_RUN_FILES = (
    "config.json",
    "results.csv",
    "timing.csv",
    "errors.csv",
    "missing.csv",
    "methods.csv",
    "pairs.csv",
    "scenes.csv",
    "scene_clusters.csv",
)
_RUN_DIRS = ("fused", "report")


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class MethodSpec:
    """One column of the benchmark.

    Attributes:
        label: the name in tables, CSVs and the cache folder.
        method: a registered method name (None for an external folder).
        weights: a checkpoint for the method (None: its default).
        external: a folder of already fused images (``--external``).
        weights_sha256: the SHA-256 of the weights the method runs with (its
            bundled ones when ``weights`` is None; None for methods without
            weights): a checkpoint replaced at the same path is another
            method, whose cached results are not reused.
    """

    label: str
    method: str | None = None
    weights: str | None = None
    external: str | None = None
    weights_sha256: str | None = None

    @property
    def kind(self) -> str:
        if self.external is not None:
            return "external"
        from ..models.registry import get_method

        return get_method(self.method).kind  # type: ignore[arg-type]


_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]*$")


def _check_label(label: str, what: str) -> str:
    if not _LABEL_RE.match(label):
        raise CausalFuseError(
            f"{what} name {label!r} is not usable as a column and folder name; use letters, digits and . _ + - @"
        )
    return label


def parse_method_spec(text: str, *, lrrnet_weights: str | None = None) -> MethodSpec:
    """Parse ``METHOD``, ``METHOD@CHECKPOINT`` or ``LABEL=METHOD[@CHECKPOINT]``.

    Examples: ``gff``; ``causalfuse@runs/n20.safetensors`` (label
    ``causalfuse@n20``); ``N20=causalfuse@runs/n20.safetensors`` (label
    ``N20``). ``lrrnet`` takes its weights from ``lrrnet_weights`` unless a
    checkpoint is given.

    Raises:
        CausalFuseError: unknown method (the message lists the known ones),
            missing checkpoint file, or an unusable label.
    """
    from ..models.registry import get_method

    text = text.strip()
    if not text:
        raise CausalFuseError("empty method name in --methods")
    label = None
    if "=" in text:
        label, text = (part.strip() for part in text.split("=", 1))
    method, _, weights = text.partition("@")
    method = method.strip()
    info = get_method(method)  # unknown names raise, listing the known methods
    weights = weights.strip() or None
    if weights is not None and info.kind == "classical":
        raise CausalFuseError(f"method {text!r}: {method} is a classical method and takes no checkpoint")
    if weights is not None:
        if not Path(weights).is_file():
            raise CausalFuseError(f"method {text!r}: checkpoint {weights} does not exist")
        weights = str(Path(weights).resolve())
        if label is None:
            label = f"{method}@{Path(weights).stem}"
    elif method == "lrrnet" and lrrnet_weights is not None:
        weights = str(Path(lrrnet_weights).resolve())
    if info.needs_weights and weights is None:
        raise CausalFuseError(
            f"method {method!r} needs a weights file: pass {'--lrrnet-weights PATH or ' if method == 'lrrnet' else ''}"
            f"{method}@PATH in --methods"
        )
    from ..integrity import file_sha256
    from ..models.methods import weights_file

    path = weights_file(method, weights)
    digest = file_sha256(path) if path is not None and path.is_file() else None
    return MethodSpec(label=_check_label(label or method, "method"), method=method, weights=weights, weights_sha256=digest)


def parse_named_folder(text: str, what: str) -> tuple[str | None, Path]:
    """``NAME=DIR`` -> (NAME, DIR); a bare ``DIR`` gives (None, DIR)."""
    name, sep, folder = text.partition("=")
    if not sep:
        return None, Path(text)
    if not name.strip() or not folder.strip():
        raise CausalFuseError(f"{what} {text!r}: expected NAME=DIR")
    return _check_label(name.strip(), what), Path(folder.strip())


def dataset_roots(specs: Sequence[str]) -> dict[str, Path]:
    """Dataset name -> folder for every ``--data`` argument.

    ``NAME=DIR`` names a dataset folder (``ir/`` + ``vi/`` or another layout
    of :func:`~causalfuse.data.paired.resolve_layout`). A bare ``DIR`` is named
    after the folder. A folder holding several datasets (e.g. ``data/val``
    with ``TNO21/``, ``RoadScene50/``, ...) gives one dataset per subfolder,
    named after it (prefixed with ``NAME-`` when a name is given).

    Raises:
        CausalFuseError: no such folder, no dataset in it, or two datasets
            with the same name.
    """
    roots: dict[str, Path] = {}

    def add(name: str, root: Path) -> None:
        if name in roots:
            raise CausalFuseError(f"two datasets are named {name!r}; name them with --data NAME=DIR")
        roots[name] = root.resolve()

    for spec in specs:
        name, root = parse_named_folder(spec, "--data")
        if not root.is_dir():
            raise CausalFuseError(f"--data {spec}: {root} is not a folder")
        try:
            resolve_layout(root, split="test")
        except CausalFuseError as layout_error:
            children = [c for c in sorted(root.iterdir(), key=lambda c: natural_key(c.name)) if c.is_dir() and _has_layout(c)]
            if not children:
                raise CausalFuseError(f"--data {spec}: no infrared-visible pairs found ({layout_error})") from None
            for child in children:
                add(f"{name}-{child.name}" if name else _check_label(child.name, "dataset"), child)
            continue
        add(name or _check_label(root.resolve().name, "dataset"), root)
    if not roots:
        raise CausalFuseError("no datasets given: pass --data NAME=DIR")
    return roots


def _has_layout(folder: Path) -> bool:
    try:
        resolve_layout(folder, split="test")
        return True
    except CausalFuseError:
        return False


def resolve_datasets(roots: dict[str, str | os.PathLike]) -> dict[str, list[Pair]]:
    """The pairs of every dataset folder (test split where a layout has one).

    Raises:
        CausalFuseError: a folder without pairs, or with unmatched names (listed).
    """
    out = {}
    for name, root in roots.items():
        ir_dir, vi_dir = resolve_layout(root, split="test")
        try:
            out[name] = find_pairs(ir_dir, vi_dir)
        except CausalFuseError as exc:
            raise CausalFuseError(f"dataset {name} ({root}): {exc}") from None
    return out


@dataclass
class BenchConfig:
    """Everything a run needs; written to ``OUTDIR/config.json``.

    Attributes:
        methods: the columns, in order.
        datasets: dataset name -> folder (as given; pairs are found again on resume).
        metrics: canonical metric names.
        colour: ``gray`` (MATLAB rgb2gray, the published tables) or ``vifb``.
        dictionary: confounder dictionary file for the scene-bias report (None: none).
        device: for learned methods.
        jobs: processes used to score images.
        figure_images: images per dataset in the figure grids.
        zoom: inset box (x, y, w, h as fractions of the image), or None.
    """

    methods: list[MethodSpec]
    datasets: dict[str, str]
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    colour: Literal["gray", "vifb"] = "gray"
    dictionary: str | None = None
    device: str = "auto"
    jobs: int = 1
    figure_images: int = 4
    zoom: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        d = dataclasses.asdict(self)
        d["methods"] = [dataclasses.asdict(m) for m in self.methods]
        d["causalfuse_version"] = __version__
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["methods"] = [MethodSpec(**m) for m in d["methods"]]
        kwargs["datasets"] = {k: str(v) for k, v in d["datasets"].items()}
        if kwargs.get("zoom") is not None:
            kwargs["zoom"] = tuple(kwargs["zoom"])
        return cls(**kwargs)


def load_config(outdir: str | os.PathLike) -> BenchConfig:
    path = Path(outdir) / "config.json"
    if not path.is_file():
        raise CausalFuseError(f"{outdir}: not a bench output folder (no config.json)")
    try:
        return BenchConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CausalFuseError(f"{path}: damaged bench configuration ({exc})") from None


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


# ----------------------------------------------------------------------- the run


@dataclass
class _Job:
    dataset: str
    pair: Pair
    method: MethodSpec
    fused: Path | None  # None: missing (external)


def config_conflicts(old: "BenchConfig", new: "BenchConfig") -> list[str]:
    """Why the results of ``old`` cannot be reused by ``new`` ([] when they can).

    Results are reusable when every dataset and method the two runs share
    means the same thing (same folder; same method, weights or external
    folder) and the colour mode and dictionary are the same. Methods,
    datasets and metrics may be added or left out: their rows are keyed by
    name, so the others stay valid.
    """
    problems = []
    if old.colour != new.colour:
        problems.append(f"colour {old.colour} vs {new.colour}")
    for name in sorted(set(old.datasets) & set(new.datasets)):
        if str(old.datasets[name]) != str(new.datasets[name]):
            problems.append(f"dataset {name} was {old.datasets[name]}, now {new.datasets[name]}")
    old_methods = {m.label: m for m in old.methods}
    for m in new.methods:
        if m.label in old_methods and old_methods[m.label] != m:
            problems.append(f"method {m.label} was {_describe(old_methods[m.label])}, now {_describe(m)}")
    return problems


def _describe(m: MethodSpec) -> str:
    if m.external:
        return f"external folder {m.external}"
    text = m.method + (f" with {m.weights}" if m.weights else "")
    if m.weights_sha256:
        text += f" (content sha256 {m.weights_sha256[:12]}...)"
    elif m.method and m.kind == "learned":
        text += " (content not recorded)"
    return text


def _prepare_outdir(outdir: Path, config: BenchConfig, overwrite: bool, log: Callable[[str], None]) -> None:
    from ..io import check_writable_folder

    config_path = outdir / "config.json"
    check_writable_folder(outdir)  # before any method runs
    stale = False
    if config_path.is_file():
        try:
            old = BenchConfig.from_dict(json.loads(config_path.read_text()))
            problems = config_conflicts(old, config)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            old, problems = None, ["its config.json is unreadable"]
        stale = bool(problems)
        if old is not None and old.dictionary != config.dictionary:
            # Only the scene assignments depend on the dictionary: make them again.
            for name in ("scenes.csv", "scene_clusters.csv"):
                (outdir / name).unlink(missing_ok=True)
        if stale and not overwrite:
            raise CausalFuseError(
                f"{outdir} holds the results of another benchmark configuration ({'; '.join(problems)}); "
                "use another -o folder, or --overwrite to delete those results"
            )
    elif outdir.is_dir() and (outdir / "results.csv").exists():
        stale = True
        if not overwrite:
            raise CausalFuseError(f"{outdir} holds a results.csv without config.json; use another -o folder or --overwrite")
    if stale:
        log(f"--overwrite: deleting the previous results in {outdir}")
        for name in _RUN_FILES:
            (outdir / name).unlink(missing_ok=True)
        for name in _RUN_DIRS:
            shutil.rmtree(outdir / name, ignore_errors=True)
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(config_path) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def _count_parameters(fn: Any) -> int | None:
    n = getattr(fn, "n_parameters", None)
    if n is not None:
        return int(n)
    params = getattr(fn, "parameters", None)
    if callable(params):
        try:
            return int(sum(p.numel() for p in params()))
        except Exception:  # noqa: BLE001 - not a torch module after all
            return None
    return None


def _fuse_one(fn: Callable, pair: Pair) -> tuple[np.ndarray, float]:
    """Fuse one pair the way :mod:`causalfuse.fuse` does; time the method call only."""
    from ..fuse import luminance_pair
    from ..io import ycbcr_to_rgb

    ir_y, vi_y, cbcr = luminance_pair(pair.ir, pair.vi)
    start = time.perf_counter()
    out = np.asarray(fn(ir_y, vi_y), dtype=np.float32)
    ms = (time.perf_counter() - start) * 1000.0
    if out.shape != ir_y.shape:
        raise RuntimeError(f"method returned shape {out.shape} for inputs of shape {ir_y.shape}")
    out = np.clip(np.nan_to_num(out), 0.0, 1.0)
    if cbcr is not None:
        out = ycbcr_to_rgb(np.concatenate([out[..., None], cbcr], axis=-1))
    return out, ms


def score_images(fused: Path, ir: Path, vi: Path, metrics: Sequence[str], colour: str) -> dict[str, float]:
    """Every metric of one fused image, read from the files as stored."""
    from .. import metrics as metrics_module
    from ..io import load_image

    values = metrics_module.compute(load_image(fused), load_image(ir), load_image(vi), metrics=list(metrics), colour=colour)
    return {name: float(values[name]) for name in metrics}


def _score_task(task: tuple) -> tuple[tuple, dict[str, float] | None, str | None]:
    key, fused, ir, vi, metrics, colour = task
    try:
        return key, score_images(fused, ir, vi, metrics, colour), None
    except Exception as exc:  # noqa: BLE001 - reported per image, the run continues
        return key, None, f"{type(exc).__name__}: {exc}"


def _init_worker() -> None:
    # One thread per worker process: the workers are the parallelism.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


class _ResultStore:
    """results.csv in memory, flushed atomically every few seconds and at the end."""

    def __init__(self, path: Path, flush_every: float = 5.0) -> None:
        self.path = path
        self.rows = read_csv(path, RESULT_FIELDS)
        self.done = {(r["dataset"], r["image"], r["method"], r["metric"]) for r in self.rows}
        self.flush_every = flush_every
        self._last = time.monotonic()
        self._dirty = False

    def add(self, dataset: str, image: str, method: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            key = (dataset, image, method, metric)
            if key in self.done:
                continue
            self.done.add(key)
            self.rows.append(dict(zip(RESULT_FIELDS, (*key, _fmt(value)))))
            self._dirty = True
        if time.monotonic() - self._last > self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._dirty or not self.path.exists():
            write_csv(self.path, RESULT_FIELDS, self.rows)
        self._dirty = False
        self._last = time.monotonic()


@dataclass
class BenchSummary:
    """What a run did (also printed)."""

    outdir: Path
    fused: int = 0
    reused: int = 0
    scored: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def run_bench(
    config: BenchConfig,
    outdir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    log: Callable[[str], None] | None = None,
) -> BenchSummary:
    """Run (or resume) a benchmark and write its CSVs and report into ``outdir``.

    Args:
        config: methods, datasets, metrics (see :class:`BenchConfig`).
        outdir: the output folder; one holding another configuration is
            refused unless ``overwrite``.
        progress: show tqdm progress bars.
        report: write the tables, figures and HTML report at the end.
        log: where messages go (default: stderr).

    Returns:
        A :class:`BenchSummary`.

    Raises:
        CausalFuseError: unknown metric, datasets without pairs, an output
            folder of another configuration.
    """
    from tqdm.auto import tqdm

    from ..metrics import get_metric

    log = log or (lambda msg: print(msg, file=sys.stderr))
    start_run = time.perf_counter()
    outdir = Path(outdir)
    config.metrics = [get_metric(m).name for m in config.metrics]  # unknown names raise, listing the known ones
    if not config.methods:
        raise CausalFuseError("no methods given: pass --methods and/or --external")
    labels = [m.label for m in config.methods]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise CausalFuseError(f"method names must be unique, {', '.join(dupes)} given twice (name them LABEL=METHOD)")
    datasets = resolve_datasets(config.datasets)
    _prepare_outdir(outdir, config, overwrite, log)
    summary = BenchSummary(outdir)
    write_csv(
        outdir / "pairs.csv",
        PAIR_FIELDS,
        ({"dataset": d, "image": p.name, "ir": str(Path(p.ir).resolve()), "vi": str(Path(p.vi).resolve())} for d, ps in datasets.items() for p in ps),
    )

    # 1. Fused images, dataset by dataset (so an interrupted run has every method
    #    on the first datasets); each method is created once and kept.
    timing_rows = read_csv(outdir / "timing.csv", TIMING_FIELDS)
    timed = {(r["dataset"], r["image"], r["method"]) for r in timing_rows}
    method_rows: dict[str, dict[str, Any]] = {r["method"]: r for r in read_csv(outdir / "methods.csv", ("method",))}
    jobs: list[_Job] = []
    to_fuse: list[tuple[MethodSpec, str, Pair, Path]] = []
    for spec in config.methods:
        for dataset, pairs in datasets.items():
            if spec.external is not None:
                folder = external_folder(Path(spec.external), dataset, len(datasets))
                files = list_images(folder) if folder is not None else {}
                for pair in pairs:
                    path = files.get(pair.name)
                    if path is None:
                        summary.missing.append({"dataset": dataset, "image": pair.name, "method": spec.label})
                    jobs.append(_Job(dataset, pair, spec, path))
                continue
            for pair in pairs:
                target = fused_path(outdir, dataset, spec.label, pair.name)
                jobs.append(_Job(dataset, pair, spec, target))
                if target.is_file():
                    summary.reused += 1
                else:
                    to_fuse.append((spec, dataset, pair, target))
    if summary.missing:
        by_method: dict[tuple[str, str], list[str]] = {}
        for row in summary.missing:
            by_method.setdefault((row["method"], row["dataset"]), []).append(row["image"])
        for (method, dataset), names in by_method.items():
            shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
            log(f"warning: external {method!r} lacks {len(names)} of {len(datasets[dataset])} {dataset} images: {shown}")

    # 1-2. Dataset by dataset: fuse with every method, then score, so an
    #      interrupted run already has complete tables for the first datasets.
    #      Each method is created once and kept.
    failed: set[tuple[str, str, str]] = set()
    created: dict[str, Callable | None] = {}
    store = _ResultStore(outdir / "results.csv")
    try:
        for dataset in datasets:
            items = [item for item in to_fuse if item[1] == dataset]
            _fuse_items(items, created, config, summary, failed, timing_rows, timed, method_rows, progress, log, dataset)
            write_csv(outdir / "timing.csv", TIMING_FIELDS, timing_rows)
            tasks = []
            for job in jobs:
                key = (job.dataset, job.pair.name, job.method.label)
                if job.dataset != dataset or job.fused is None or key in failed or not job.fused.is_file():
                    continue
                todo = [m for m in config.metrics if (*key, m) not in store.done]
                if todo:
                    tasks.append((key, job.fused, job.pair.ir, job.pair.vi, todo, config.colour))
            if not tasks:
                continue
            bar = tqdm(total=len(tasks), desc=f"scoring {dataset}", unit="img", disable=not progress, dynamic_ncols=True)
            try:
                for key, values, error in _map_tasks(_score_task, tasks, config.jobs):
                    if error is not None:
                        summary.errors.append(_error(key[0], key[1], key[2], "score", error))
                    else:
                        store.add(*key, values)  # type: ignore[arg-type]
                        summary.scored += 1
                    bar.update(1)
            finally:
                bar.close()
    finally:
        store.flush()
        write_csv(outdir / "timing.csv", TIMING_FIELDS, timing_rows)

    # 3. Scene assignments for the scene-bias report.
    if config.dictionary is not None:
        from .scenes import assign_scenes

        assign_scenes(datasets, config.dictionary, outdir, device=config.device, progress=progress)

    # 4. Per-method summary, errors, missing.
    _write_methods(outdir, config, method_rows, timing_rows)
    write_csv(outdir / "errors.csv", ERROR_FIELDS, summary.errors)
    write_csv(outdir / "missing.csv", MISSING_FIELDS, summary.missing)
    summary.seconds = time.perf_counter() - start_run
    _print_summary(summary, log)
    if report:
        from .report import write_report

        write_report(outdir, log=log)
    return summary


def _fuse_items(
    items: list,
    created: dict[str, Callable | None],
    config: BenchConfig,
    summary: BenchSummary,
    failed: set,
    timing_rows: list,
    timed: set,
    method_rows: dict,
    progress: bool,
    log: Callable[[str], None],
    dataset: str,
) -> None:
    """Fuse ``items`` (spec, dataset, pair, target), recording failures and timings."""
    from tqdm.auto import tqdm

    from ..io import write_image
    from ..models.registry import create_method

    if not items:
        return
    bar = tqdm(total=len(items), desc=f"fusing {dataset}", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for spec, dataset, pair, target in items:
            bar.set_postfix_str(f"{spec.label} {pair.name}")
            if spec.label not in created:
                created[spec.label] = None
                try:
                    options: dict[str, Any] = {}
                    if spec.kind != "classical":
                        options = {"weights": spec.weights, "device": config.device}
                    fn = created[spec.label] = create_method(spec.method, **options)  # type: ignore[arg-type]
                    method_rows.setdefault(spec.label, {"method": spec.label})["parameters"] = _count_parameters(fn)
                except Exception as exc:  # noqa: BLE001 - reported, other methods continue
                    summary.errors.append(_error(dataset, "*", spec.label, "load", exc))
                    log(f"error: method {spec.label} could not be created: {exc}")
            fn = created[spec.label]
            if fn is None:
                failed.add((dataset, pair.name, spec.label))
                bar.update(1)
                continue
            try:
                image, ms = _fuse_one(fn, pair)
                write_image(target, image)
                summary.fused += 1
                if (dataset, pair.name, spec.label) not in timed:
                    timing_rows.append({"dataset": dataset, "image": pair.name, "method": spec.label, "ms": f"{ms:.3f}"})
                    timed.add((dataset, pair.name, spec.label))
            except Exception as exc:  # noqa: BLE001 - one failing image must not stop the run
                summary.errors.append(_error(dataset, pair.name, spec.label, "fuse", exc))
                failed.add((dataset, pair.name, spec.label))
            bar.update(1)
    finally:
        bar.close()


def _map_tasks(fn: Callable, tasks: list, jobs: int) -> Iterable:
    if jobs <= 1 or len(tasks) < 2:
        for task in tasks:
            yield fn(task)
        return
    import multiprocessing

    # spawn: a forked child of a process that has run torch can hang on its thread pools.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker) as pool:
        yield from pool.map(fn, tasks, chunksize=max(1, len(tasks) // (8 * jobs)))


def _error(dataset: str, image: str, method: str, stage: str, exc: BaseException | str) -> dict[str, str]:
    message = exc if isinstance(exc, str) else (str(exc) if isinstance(exc, CausalFuseError) else f"{type(exc).__name__}: {exc}")
    return {"dataset": dataset, "image": image, "method": method, "stage": stage, "message": " ".join(str(message).split())}


def _write_methods(outdir: Path, config: BenchConfig, method_rows: dict, timing_rows: list[dict[str, str]]) -> None:
    rows = []
    for spec in config.methods:
        old = method_rows.get(spec.label, {})
        ms = [float(r["ms"]) for r in timing_rows if r["method"] == spec.label]
        median = statistics.median(ms) if ms else None
        rows.append(
            {
                "method": spec.label,
                "kind": spec.kind,
                "source": spec.external or spec.method,
                "weights": spec.weights or "",
                "parameters": "" if old.get("parameters") in (None, "") else int(old["parameters"]),
                "images_timed": len(ms),
                "ms_per_image": "" if median is None else f"{median:.3f}",
                "images_per_s": "" if not ms else f"{len(ms) / (sum(ms) / 1000.0):.3f}" if sum(ms) > 0 else "",
            }
        )
    write_csv(outdir / "methods.csv", METHOD_FIELDS, rows)


def _print_summary(summary: BenchSummary, log: Callable[[str], None]) -> None:
    log(
        f"bench: {summary.fused} images fused, {summary.reused} reused from {summary.outdir / 'fused'}, "
        f"{summary.scored} scored in {summary.seconds:.1f} s"
    )
    if summary.missing:
        log(f"bench: {len(summary.missing)} external images missing (listed in {summary.outdir / 'missing.csv'})")
    if summary.errors:
        log(f"bench: {len(summary.errors)} failures (listed in {summary.outdir / 'errors.csv'}):")
        for row in summary.errors[:10]:
            log(f"  {row['method']} on {row['dataset']}/{row['image']} ({row['stage']}): {row['message'][:200]}")
        if len(summary.errors) > 10:
            log(f"  ... {len(summary.errors) - 10} more")
