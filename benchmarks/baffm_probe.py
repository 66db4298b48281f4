"""Does BAFFM's back-door term carry information? An inference-only probe of trained checkpoints.

BAFFM (:mod:`causalfuse.models.baffm`) gives each modality's branch the
output ``D = W_h X + g`` with the back-door term
``g(p) = sum_i w_i(p) W_g z_i``, the weights ``w_i(p)`` being the attention of
pixel p over the N fixed prototypes z_i of the confounder dictionary
(normalised by the prior; with the uniform prior of every checkpoint here
they are the softmax lambda itself). The fusion weights, and so the fused
image, see the prototypes only through g. This script measures, on the val
sets, for every checkpoint given and each modality:

1. **attention**: the per-pixel entropy of w divided by log N (1: uniform
   over the prototypes, 0: one prototype), the entropy of the image-averaged
   attention, the prototypes that get more than 1 % of that average, and how
   much the attention moves: the mean total-variation distance of each
   pixel's attention to its image's mean, and of each image's mean to the
   mean over the images of its set;
2. **size of g**: the per-pixel ratio ``||g|| / ||W_h X||`` (mean over
   pixels), and the split of g's mean square into a constant part (the
   squared mean over the images), the part that varies across images and
   the part that varies within an image; if nearly all of it is constant, g
   is a bias;
3. **interventions** (the causal test): the network is run again with g
   replaced by (a) ``set-mean``: its mean over all probed val images, one
   constant vector per modality; ``image-mean``: its mean over each image;
   (b) ``uniform``: the expectation under uniform attention (the plain,
   prior-weighted prototype mean); (c) ``other-dictionary``: the attention
   and values computed on the other modality's prototypes;
   ``shuffled-values``: each prototype's value W_g z_i given to another
   prototype (a fixed derangement; permuting keys and values together would
   change nothing, the expectation being a sum); (d) ``removed``: D = W_h X
   (what ``use_baffm=False`` computes with the same weights). Reported: the
   mean absolute change of the fused luminance in grey levels (0-255), its
   99th percentile, and the change of MI, VIF, Qabf and SSIM against the
   unmodified network.

The fused image is scored as ``benchmarks/recipe_study.py`` and the bench
score it: the fused luminance, recombined with the visible image's colour
where it has one, rounded to 8 bits, against the source files (grey, as the
published tables), so the baseline rows equal the study's numbers on the same
pairs. Whole images run at once (no tiles); the network is local, so this is
what the tiled fusion computes, up to float rounding.

Checkpoints trained without BAFFM (``use_baffm=False``) are scored as
reference rows only. Encoders shared by several checkpoints (the
frozen-encoder runs all keep LRRNet's) run once per image. The set-mean
intervention needs the mean over all images first, so the images are run
twice (encoders included); ``--max-images`` and ``--limit`` bound the cost.
The dictionary file is summarised too: the pairwise cosine similarity of its
prototypes, and for every checkpoint that of the keys and values
(``W_k z_i``, ``W_g z_i``) the attention actually reads.

    python benchmarks/baffm_probe.py -o probe --threads 1 \\
        --model bundled=src/causalfuse/weights/causalfuse.safetensors \\
        --model frozen-300=../study/seeds_b/runs/baffm-s0/model_300.safetensors

Writes ``probe.csv`` (one row per model, set, image, modality, variant and
quantity; ``image`` is ``*`` for set-level rows) and ``probe.md`` (the
tables) in the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from causalfuse.errors import CausalFuseError

METRICS = ("MI", "VIF", "Qabf", "SSIM")
INTERVENTIONS = ("set-mean", "image-mean", "uniform", "other-dictionary", "shuffled-values", "removed")
MODALITIES = ("ir", "vi")
FIELDS = ("model", "dataset", "image", "modality", "variant", "quantity", "value")
ALL_SETS = "all"

#: term(modality, branch, q) -> the back-door term (B, d_f, H, W) to use, q being W_q X (B, d_k, H, W).
Term = Callable[[str, torch.nn.Module, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- the back-door term


def expectation_weights(branch, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The weights of the expectation at every pixel, (B, N, H, W), summing to 1 over N.

    ``softmax(q . k_i / sqrt(d_k) + log P(z_i))`` when the branch normalises
    the expectation, else lambda = ``softmax(q . k_i / sqrt(d_k))`` (the
    prior then multiplies the values, see :func:`prototype_values`).
    """
    logits = torch.einsum("bchw,nc->bnhw", q, keys / math.sqrt(branch.d_k))
    if branch.normalise:
        logits = logits + branch.prior.clamp_min(1e-12).log()[None, :, None, None]
    return logits.softmax(dim=1)


def prototype_values(branch, dictionary: torch.Tensor | None = None) -> torch.Tensor:
    """(N, d_f) values the weights average: W_g z_i, times P(z_i) for the literal (unnormalised) product."""
    z = branch.dictionary if dictionary is None else dictionary
    values = branch.value(z)
    return values if branch.normalise else values * branch.prior[:, None]


def uniform_weights(branch) -> torch.Tensor:
    """(N,) expectation weights under uniform attention lambda_i = 1/N."""
    n = branch.prior.numel()
    if branch.normalise:
        return branch.prior / branch.prior.sum()
    return torch.full((n,), 1.0 / n, dtype=branch.prior.dtype, device=branch.prior.device)


def branch_terms(branch, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_h X, weights, g)`` of one BAFFM branch on codes x: (B, d_f, H, W), (B, N, H, W), (B, d_f, H, W).

    ``W_h X + g`` is what ``ConfounderAttention.forward`` returns.
    """
    qh = branch.proj(x)
    q, wh = qh[:, : branch.d_k], qh[:, branch.d_k :]
    weights = expectation_weights(branch, q, branch.key(branch.dictionary))
    return wh, weights, torch.einsum("bnhw,nf->bfhw", weights, prototype_values(branch))


@contextlib.contextmanager
def backdoor_replaced(net, term: Term) -> Iterator[None]:
    """Within the block, each BAFFM branch of ``net`` returns ``W_h X + term(modality, branch, W_q X)``.

    The branches' ``forward`` and ``mapped`` (the form BAFFM's fusion weights
    use) are shadowed by instance attributes and restored on exit, and the
    compiled head (which reads the branches' projections, not ``mapped``) is
    off meanwhile; the model classes are untouched.
    """
    branches = {m: getattr(net.baffm, m) for m in MODALITIES}
    numba_head = net.numba_head
    net.numba_head = False
    for modality, branch in branches.items():

        def forward(x: torch.Tensor, branch=branch, modality=modality) -> torch.Tensor:
            qh = branch.proj(x)
            return qh[:, branch.d_k :] + term(modality, branch, qh[:, : branch.d_k])

        def mapped(x: torch.Tensor, mapping: torch.Tensor, forward=forward) -> torch.Tensor:
            return torch.einsum("mf,bfhw->bmhw", mapping, forward(x))

        branch.forward = forward
        branch.mapped = mapped
    try:
        yield
    finally:
        net.numba_head = numba_head
        for branch in branches.values():
            del branch.forward
            del branch.mapped


def constant_term(vectors: dict[str, torch.Tensor]) -> Term:
    """g replaced by a fixed (d_f,) vector per modality."""
    return lambda m, branch, q: vectors[m].view(1, -1, 1, 1).to(q).expand(q.shape[0], -1, *q.shape[2:])


def uniform_term(m: str, branch, q: torch.Tensor) -> torch.Tensor:
    return constant_term({m: uniform_weights(branch) @ prototype_values(branch)})(m, branch, q)


def other_dictionary_term(net) -> Term:
    """Attention and values of each branch computed on the other modality's prototypes."""
    other = {"ir": net.baffm.vi.dictionary, "vi": net.baffm.ir.dictionary}

    def term(m: str, branch, q: torch.Tensor) -> torch.Tensor:
        weights = expectation_weights(branch, q, branch.key(other[m]))
        return torch.einsum("bnhw,nf->bfhw", weights, prototype_values(branch, other[m]))

    return term


def derangement(n: int, seed: int = 0) -> torch.Tensor:
    """A fixed permutation of range(n) that moves every index (n >= 2)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        if not bool((perm == torch.arange(n)).any()):
            return perm


def shuffled_values_term(m: str, branch, q: torch.Tensor) -> torch.Tensor:
    """Prototype i attended as before, but returning the value of prototype perm(i)."""
    weights = expectation_weights(branch, q, branch.key(branch.dictionary))
    values = prototype_values(branch)
    return torch.einsum("bnhw,nf->bfhw", weights, values[derangement(len(values))])


def removed_term(m: str, branch, q: torch.Tensor) -> torch.Tensor:
    return q.new_zeros(q.shape[0], branch.d_f, *q.shape[2:])


# ---------------------------------------------------------------- statistics of one image


def attention_stats(weights: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
    """Scalars of one image's attention (1, N, H, W), and its image mean (N,)."""
    w = weights[0].flatten(1).double()  # (N, P)
    n = w.shape[0]
    entropy = -(w * w.clamp_min(1e-30).log()).sum(0) / math.log(n)
    mean = w.mean(1)
    stats = {
        "entropy_pixel": float(entropy.mean()),
        "entropy_of_mean": float(-(mean * mean.clamp_min(1e-30).log()).sum() / math.log(n)),
        "prototypes_over_1pct": float((mean > 0.01).sum()),
        "tv_pixel_to_image": float(0.5 * (w - mean[:, None]).abs().sum(0).mean()),
    }
    return stats, mean.numpy()


def term_stats(wh: torch.Tensor, g: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
    """Scalars of one image's back-door term g against W_h X (both (1, d_f, H, W)), and g's image mean (d_f,)."""
    g2, wh2 = g[0].flatten(1).double(), wh[0].flatten(1).double()
    g_mean, wh_mean = g2.mean(1), wh2.mean(1)
    stats = {
        "norm_ratio": float((g2.norm(dim=0) / wh2.norm(dim=0).clamp_min(1e-12)).mean()),
        "g_energy": float((g2**2).sum(0).mean()),
        "g_within_var": float(((g2 - g_mean[:, None]) ** 2).sum(0).mean()),
        "wh_within_var": float(((wh2 - wh_mean[:, None]) ** 2).sum(0).mean()),
    }
    return stats, g_mean.numpy()


def output_change(out: np.ndarray, base: np.ndarray) -> dict[str, float]:
    diff = np.abs(out.astype(np.float64) - base) * 255.0
    return {"abs_change_grey": float(diff.mean()), "p99_change_grey": float(np.percentile(diff, 99))}


# ---------------------------------------------------------------- models and images


@dataclass
class Probed:
    """One checkpoint and what the probe keeps of it across images."""

    name: str
    net: torch.nn.Module
    encoder_key: str
    rows: list[dict] = field(default_factory=list)
    #: (dataset, modality) -> per-image means of the attention (N,) and of g (d_f,).
    attention_means: dict = field(default_factory=lambda: defaultdict(list))
    term_means: dict = field(default_factory=lambda: defaultdict(list))

    @property
    def has_baffm(self) -> bool:
        return bool(self.net.config.use_baffm)

    def add(self, dataset: str, image: str, modality: str, variant: str, values: dict[str, float]) -> None:
        for quantity, value in values.items():
            self.rows.append({"model": self.name, "dataset": dataset, "image": image, "modality": modality,
                              "variant": variant, "quantity": quantity, "value": repr(float(value))})


def parse_model(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (NAME, PATH), the file checked to exist."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise CausalFuseError(f"--model {text!r}: expected NAME=PATH")
    path = Path(path.strip())
    if not path.is_file():
        raise CausalFuseError(f"--model {text!r}: {path}: no such checkpoint file")
    return name.strip(), path


def encoder_key(net) -> str:
    """A digest of both encoders' tensors: checkpoints with equal keys give equal codes."""
    digest = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        if key.startswith(("encoder_ir.", "encoder_vi.")):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_models(specs: list[str]) -> list[Probed]:
    from causalfuse import load_model

    models = []
    for text in specs:
        name, path = parse_model(text)
        if any(p.name == name for p in models):
            raise CausalFuseError(f"--model {text!r}: the name {name!r} is given twice")
        net = load_model(path)
        models.append(Probed(name, net, encoder_key(net)))
    return models


def val_sets(root: Path, max_images: int, limits: dict[str, int]) -> dict[str, list]:
    from causalfuse.bench.runner import dataset_roots, resolve_datasets

    pairs = resolve_datasets(dataset_roots([str(root)]))
    unknown = sorted(set(limits) - set(pairs))
    if unknown:
        raise CausalFuseError(f"--limit names {', '.join(unknown)}, not a val set in {root} ({', '.join(pairs)})")
    return {name: p[: limits.get(name, max_images) or None] for name, p in pairs.items()}


def parse_limit(text: str) -> tuple[str, int]:
    name, sep, count = text.partition("=")
    if not sep or not count.isdigit():
        raise CausalFuseError(f"--limit {text!r}: expected SET=K")
    return name, int(count)


@dataclass
class Pair:
    """One val pair as the networks and the metrics take it."""

    ir: torch.Tensor  # (1, 1, H, W) luminance in [0, 1]
    vi: torch.Tensor
    cbcr: np.ndarray | None
    ir8: np.ndarray  # the source files as read for scoring
    vi8: np.ndarray


def read_pair(pair) -> Pair:
    from causalfuse.fuse import luminance_pair
    from causalfuse.io import load_image

    ir_y, vi_y, cbcr = luminance_pair(pair.ir, pair.vi)
    ir_t, vi_t = (torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None, None] for y in (ir_y, vi_y))
    return Pair(ir_t, vi_t, cbcr, load_image(pair.ir), load_image(pair.vi))


def score(fused: torch.Tensor, pair: Pair) -> tuple[np.ndarray, dict[str, float]]:
    """The fused luminance (H, W) in [0, 1] and its four metrics, scored as the bench scores."""
    from causalfuse import metrics
    from causalfuse.io import ycbcr_to_rgb

    y = np.clip(np.nan_to_num(fused[0, 0].float().numpy()), 0.0, 1.0)
    image = y if pair.cbcr is None else ycbcr_to_rgb(np.concatenate([y[..., None], pair.cbcr], axis=-1))
    image8 = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    values = metrics.compute(image8, pair.ir8, pair.vi8, metrics=list(METRICS), threads=1)
    return y, {m: float(values[m]) for m in METRICS}


class CodeCache:
    """The encoders' codes of the current image, computed once per distinct pair of encoders."""

    def __init__(self, pair: Pair) -> None:
        self.pair, self.codes = pair, {}

    def get(self, model: Probed) -> tuple[torch.Tensor, torch.Tensor]:
        if model.encoder_key not in self.codes:
            self.codes[model.encoder_key] = model.net.forward_features(self.pair.ir, self.pair.vi)
        return self.codes[model.encoder_key]


# ---------------------------------------------------------------- the two passes


def probe_image(model: Probed, dataset: str, name: str, pair: Pair, codes) -> None:
    """Pass 1 on one image: statistics, the baseline, and every intervention but ``set-mean``."""
    net = model.net
    base = net.forward_head(*codes)
    base_y, base_scores = score(base, pair)
    model.add(dataset, name, "-", "baseline", base_scores)
    if not model.has_baffm:
        return
    image_means = {}
    for modality, x in zip(MODALITIES, codes):
        wh, weights, g = branch_terms(getattr(net.baffm, modality), x)
        a_stats, a_mean = attention_stats(weights)
        t_stats, g_mean = term_stats(wh, g)
        model.add(dataset, name, modality, "baseline", {**a_stats, **t_stats})
        model.attention_means[dataset, modality].append(a_mean)
        model.term_means[dataset, modality].append(g_mean)
        image_means[modality] = torch.from_numpy(g_mean).float()
    terms = {
        "image-mean": constant_term(image_means),
        "uniform": uniform_term,
        "other-dictionary": other_dictionary_term(net),
        "shuffled-values": shuffled_values_term,
        "removed": removed_term,
    }
    for variant, term in terms.items():
        with backdoor_replaced(net, term):
            y, scores = score(net.forward_head(*codes), pair)
        model.add(dataset, name, "-", variant, {**scores, **output_change(y, base_y)})


def set_mean_vectors(model: Probed) -> dict[str, torch.Tensor]:
    """g's mean over every probed image of every set (each image counts once), per modality."""
    return {m: torch.from_numpy(np.mean([v for (_, mm), vs in model.term_means.items() if mm == m for v in vs], axis=0)).float()
            for m in MODALITIES}


def probe_set_mean(model: Probed, dataset: str, name: str, pair: Pair, codes, constants) -> None:
    """Pass 2 on one image: the ``set-mean`` intervention against the baseline."""
    base_y, _ = score(model.net.forward_head(*codes), pair)
    with backdoor_replaced(model.net, constant_term(constants)):
        y, scores = score(model.net.forward_head(*codes), pair)
    model.add(dataset, name, "-", "set-mean", {**scores, **output_change(y, base_y)})


def run(models: list[Probed], sets: dict[str, list], progress: bool) -> None:
    from tqdm.auto import tqdm

    items = [(dataset, pair) for dataset, pairs in sets.items() for pair in pairs]
    baffm_models = [m for m in models if m.has_baffm]
    passes = [("statistics and interventions", models, None)]
    if baffm_models:
        passes.append(("set-mean intervention", baffm_models, "set-mean"))
    with torch.inference_mode():
        for label, todo, kind in passes:
            constants = {m.name: set_mean_vectors(m) for m in todo} if kind else None
            for dataset, pair in tqdm(items, desc=label, unit="pair", disable=not progress, dynamic_ncols=True):
                data = read_pair(pair)
                cache = CodeCache(data)
                for model in todo:
                    if kind:
                        probe_set_mean(model, dataset, pair.name, data, cache.get(model), constants[model.name])
                    else:
                        probe_image(model, dataset, pair.name, data, cache.get(model))


# ---------------------------------------------------------------- set-level rows


def set_rows(model: Probed) -> None:
    """Per-set (and all-set) rows: means over images, and the across-image quantities."""
    by_key = defaultdict(list)
    for r in model.rows:
        by_key[r["dataset"], r["modality"], r["variant"], r["quantity"]].append(float(r["value"]))
    datasets = sorted({r["dataset"] for r in model.rows})
    groups = {d: [d] for d in datasets} | {ALL_SETS: datasets}
    out = []
    for group, members in groups.items():
        keys = {(mod, var, q) for (d, mod, var, q) in by_key if d in members}
        for mod, var, q in sorted(keys):
            values = [v for d in members for v in by_key.get((d, mod, var, q), [])]
            out.append((group, mod, var, {q: float(np.mean(values)), f"{q}_images": float(len(values))}))
        if not model.has_baffm:
            continue
        for mod in MODALITIES:
            a = np.concatenate([model.attention_means[d, mod] for d in members])
            g = np.concatenate([model.term_means[d, mod] for d in members])
            # Relative to the mean over the images of the group (each image counts once).
            energy = float(np.mean([v for d in members for v in by_key[d, mod, "baseline", "g_energy"]]))
            within = float(np.mean([v for d in members for v in by_key[d, mod, "baseline", "g_within_var"]]))
            across = float(((g - g.mean(0)) ** 2).sum(1).mean())
            constant = float((g.mean(0) ** 2).sum())
            set_mean = a.mean(0)
            out.append((group, mod, "baseline", {
                "tv_image_to_set": float(0.5 * np.abs(a - set_mean).sum(1).mean()),
                "entropy_of_set_mean": float(-(set_mean * np.log(np.maximum(set_mean, 1e-30))).sum() / math.log(a.shape[1])),
                "share_constant": constant / energy,
                "share_across_images": across / energy,
                "share_within_image": within / energy,
            }))
    for group, mod, var, values in out:
        model.add(group, "*", mod, var, values)


# ---------------------------------------------------------------- dictionary


def cosine_summary(x: torch.Tensor) -> dict[str, float]:
    """Mean, min and max pairwise cosine similarity of the rows of x, and the rows' spread around their mean."""
    x = x.double()
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    off = cos[~torch.eye(len(x), dtype=torch.bool)]
    mean = x.mean(0)
    return {
        "cos_mean": float(off.mean()),
        "cos_min": float(off.min()),
        "cos_max": float(off.max()),
        "spread_over_mean": float((x - mean).norm(dim=1).mean() / mean.norm().clamp_min(1e-12)),
    }


def dictionary_rows(path: Path | None, models: list[Probed]) -> list[dict]:
    """Rows for the dictionary file's prototypes and, per BAFFM checkpoint, its keys and values."""
    rows = []

    def add(source: str, modality: str, what: str, values: dict[str, float]) -> None:
        for q, v in values.items():
            rows.append({"model": source, "dataset": "-", "image": "-", "modality": modality, "variant": what,
                         "quantity": q, "value": repr(float(v))})

    if path is not None:
        from causalfuse.dictionary.io import load_dictionaries

        for modality, d in zip(MODALITIES, load_dictionaries(path)):
            z = torch.as_tensor(np.asarray(d.prototypes))
            add(f"file:{path.name}", modality, "prototypes", {**cosine_summary(z), "count": len(z), "dim": z.shape[1]})
    with torch.inference_mode():
        for model in models:
            if not model.has_baffm:
                continue
            for modality in MODALITIES:
                branch = getattr(model.net.baffm, modality)
                add(model.name, modality, "prototypes", cosine_summary(branch.dictionary))
                add(model.name, modality, "keys", cosine_summary(branch.key(branch.dictionary)))
                add(model.name, modality, "values", cosine_summary(prototype_values(branch)))
    return rows


# ---------------------------------------------------------------- report


def write_csv(path: Path, rows: list[dict]) -> None:
    from causalfuse.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    return out + ["| " + " | ".join(line) + " |" for line in lines]


def markdown(rows: list[dict], models: list[Probed], sets: dict[str, list]) -> str:
    cell = {(r["model"], r["dataset"], r["image"], r["modality"], r["variant"], r["quantity"]): float(r["value"]) for r in rows}
    groups = [*sets, ALL_SETS]
    f = lambda key, fmt="{:.3f}": fmt.format(cell[key]) if key in cell else "-"  # noqa: E731
    n = lambda m, g, mod, var, q: f((m, g, "*", mod, var, f"{q}_images"), "{:.0f}")  # noqa: E731
    baffm = [m for m in models if m.has_baffm]
    counts = ", ".join(f"{name} {len(p)}" for name, p in sets.items())
    md = ["# BAFFM probe", "", f"Val pairs per set: {counts}. Every number is a mean over the images "
          "(`images` column; each image counts once in the `all` rows).", ""]

    md += ["## Baseline metrics (the unmodified networks)", ""]
    lines = [[m.name, g, n(m.name, g, "-", "baseline", "MI"), *(f((m.name, g, "*", "-", "baseline", q)) for q in METRICS)]
             for m in models for g in groups]
    md += _table(["model", "set", "images", *METRICS], lines) + [""]

    md += ["## Attention over the prototypes", "",
           "Entropies divided by log N (1: uniform, 0: one prototype). `TV pixel` is the mean total-variation "
           "distance of a pixel's attention to its image's mean; `TV image` that of an image's mean to the mean "
           "over the images of the set.", ""]
    lines = []
    for m in baffm:
        for mod in MODALITIES:
            for g in groups:
                k = lambda q: (m.name, g, "*", mod, "baseline", q)  # noqa: E731
                lines.append([m.name, mod, g, n(m.name, g, mod, "baseline", "entropy_pixel"), f(k("entropy_pixel")),
                              f(k("entropy_of_mean")), f(k("entropy_of_set_mean")), f(k("prototypes_over_1pct"), "{:.1f}"),
                              f(k("tv_pixel_to_image")), f(k("tv_image_to_set"))])
    md += _table(["model", "branch", "set", "images", "H pixel", "H image mean", "H set mean", "prototypes > 1 %",
                  "TV pixel", "TV image"], lines) + [""]

    md += ["## Size and variation of the back-door term g", "",
           "`||g|| / ||W_h X||`: per-pixel ratio, mean over pixels. g's mean square split into the constant part "
           "(squared mean over the set's images), the part varying across images and within an image (shares sum "
           "to 1). `std g / std W_h X`: within-image standard deviations.", ""]
    lines = []
    for m in baffm:
        for mod in MODALITIES:
            for g in groups:
                k = lambda q: (m.name, g, "*", mod, "baseline", q)  # noqa: E731
                ratio = (math.sqrt(cell[k("g_within_var")] / cell[k("wh_within_var")])
                         if k("g_within_var") in cell and cell.get(k("wh_within_var"), 0) > 0 else float("nan"))
                lines.append([m.name, mod, g, n(m.name, g, mod, "baseline", "norm_ratio"), f(k("norm_ratio"), "{:.4f}"),
                              f(k("share_constant")), f(k("share_across_images"), "{:.4f}"),
                              f(k("share_within_image"), "{:.4f}"), f"{ratio:.4f}"])
    md += _table(["model", "branch", "set", "images", "‖g‖ / ‖W_h X‖", "constant", "across images", "within image",
                  "std g / std W_h X"], lines) + [""]

    md += ["## Interventions on g", "",
           "Change against the unmodified network: mean |Δ| of the fused luminance and its 99th percentile "
           "(grey levels, 0-255), and Δ of each metric (intervention minus baseline).", ""]
    lines = []
    for m in baffm:
        for g in groups:
            for var in INTERVENTIONS:
                k = lambda q: (m.name, g, "*", "-", var, q)  # noqa: E731
                base = lambda q: (m.name, g, "*", "-", "baseline", q)  # noqa: E731
                deltas = [f"{cell[k(q)] - cell[base(q)]:+.4f}" if k(q) in cell else "-" for q in METRICS]
                lines.append([m.name, g, var, n(m.name, g, "-", var, "MI"), f(k("abs_change_grey"), "{:.2f}"),
                              f(k("p99_change_grey"), "{:.2f}"), *deltas])
    md += _table(["model", "set", "intervention", "images", "mean |Δ| grey", "p99 |Δ| grey",
                  *(f"Δ{q}" for q in METRICS)], lines) + [""]

    md += ["## Prototypes, keys and values", "",
           "Pairwise cosine similarity of the N rows (off-diagonal) and the rows' mean distance to their mean, "
           "relative to the mean's norm. `values` are W_g z_i (the vectors the attention averages); `keys` W_k z_i.", ""]
    lines = [[r_model, mod, what, *(f((r_model, "-", "-", mod, what, q)) for q in ("cos_mean", "cos_min", "cos_max", "spread_over_mean"))]
             for r_model, mod, what in dict.fromkeys((r["model"], r["modality"], r["variant"]) for r in rows if r["dataset"] == "-")]
    md += _table(["source", "branch", "rows", "cos mean", "cos min", "cos max", "spread / ‖mean‖"], lines) + [""]
    return "\n".join(md)


# ---------------------------------------------------------------- command line


def default_dictionary() -> Path:
    from causalfuse.models.methods import bundled_weights

    return bundled_weights("dictionary")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True, help="folder for probe.csv and probe.md (created)")
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help="a checkpoint to probe (repeatable)")
    p.add_argument("--val", default="/work/shared/data/val", help="folder of val sets (<set>/ir, <set>/vi)")
    p.add_argument("--max-images", type=int, default=12, help="the first K pairs of each val set (0: all)")
    p.add_argument("--limit", action="append", default=[], metavar="SET=K", help="a different K for one set (repeatable)")
    p.add_argument("--dictionary", type=Path, default=None, help="dictionary file to summarise (default: the bundled one)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    outdir = Path(args.output)
    try:
        limits = dict(parse_limit(t) for t in args.limit)
        dictionary = args.dictionary or default_dictionary()
        if not dictionary.is_file():
            raise CausalFuseError(f"--dictionary {dictionary}: no such file")
        models = load_models(args.model)
        sets = val_sets(Path(args.val), args.max_images, limits)
        run(models, sets, progress=not args.no_progress)
        rows = dictionary_rows(dictionary, models)
        for model in models:
            set_rows(model)
            rows += model.rows
        from causalfuse.io import atomic_path

        write_csv(outdir / "probe.csv", rows)
        with atomic_path(outdir / "probe.md") as tmp:
            tmp.write_text(markdown(rows, models, sets))
    except CausalFuseError as exc:
        print(f"baffm_probe: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {outdir / 'probe.csv'} and {outdir / 'probe.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
