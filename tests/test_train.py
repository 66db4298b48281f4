"""causalfuse train: configuration, exact resume, refusals, checkpoints, torchrun.

All runs use a tiny synthetic dataset, 16 x 16 crops, batch 2 and a few
steps; the encoders are the real 256-channel LRR encoders (randomly
initialised unless a test needs LRRNet's file).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from causalfuse.checkpoint import load_model, read_metadata
from causalfuse.cli import main as cli_main
from causalfuse.dictionary.io import ConfounderDictionary, save_dictionaries
from causalfuse.errors import CausalFuseError
from causalfuse.models.net import CausalFusionNet, NetConfig
from causalfuse.train import TrainConfig, train
from causalfuse.train.config import apply_overrides, config_differences, load_config_file
from causalfuse.train.loop import batch_indices
from causalfuse.train.state import export_model, load_state, save_state

SMALL_NET = {"dict_size": 3, "dict_dim": 4, "d_k": 8, "d_f": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for m in ("ir", "vi"):
        (root / "data" / m).mkdir(parents=True)
    for i in range(5):
        base = rng.random((24, 28))
        Image.fromarray((base * 255).astype(np.uint8)).save(root / "data" / "ir" / f"p{i}.png")
        vi = np.clip(1 - base + 0.2 * rng.random((24, 28)), 0, 1)
        Image.fromarray((vi * 255).astype(np.uint8)).save(root / "data" / "vi" / f"p{i}.png")
    for n, name in ((3, "dict.safetensors"), (4, "dict4.safetensors")):
        dicts = []
        for m in ("ir", "vi"):
            dicts.append(
                ConfounderDictionary(
                    prototypes=rng.standard_normal((n, 4)),
                    frequencies=np.full(n, 1.0 / n),
                    counts=np.ones(n),
                    pca_mean=np.zeros(6),
                    pca_components=np.eye(4, 6),
                    modality=m,
                    provenance={"test": True},
                )
            )
        save_dictionaries(root / name, *dicts)
    return {"root": root, "data": root / "data", "dict": root / "dict.safetensors", "dict4": root / "dict4.safetensors"}


def _cfg(tiny, out, **kw) -> TrainConfig:
    base = dict(
        data=[str(tiny["data"])],
        dictionary=str(tiny["dict"]),
        output=str(out),
        crop=16,
        batch=2,
        steps=4,
        checkpoint_every=1,
        progress=False,
        threads=2,
        net=NetConfig(**SMALL_NET),
    )
    base.update(kw)
    return TrainConfig(**base)


def _log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- configuration -----------------------------------------------------------


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('crop = 64\nlr = 0.001\n[net]\nuse_baffm = false\n[loss]\ngradient = 5\n')
    data = apply_overrides(load_config_file(f), ["batch=4", "net.d_k=16", "loss.ssim=0.25", "head_lr=none", "data=[\"a\",\"b\"]"])
    cfg = TrainConfig.from_dict(data)
    assert (cfg.crop, cfg.lr, cfg.batch) == (64, 0.001, 4)
    assert cfg.net.use_baffm is False and cfg.net.d_k == 16
    assert (cfg.loss.gradient, cfg.loss.ssim, cfg.loss.intensity) == (5.0, 0.25, 1.0)
    assert cfg.data == ["a", "b"] and cfg.head_lr is None
    # the JSON round trip gives the same configuration
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(CausalFuseError, match="unknown configuration key"):
        apply_overrides({}, ["cropp=3"])
    with pytest.raises(CausalFuseError, match="expected an integer"):
        apply_overrides({}, ["batch=many"])
    with pytest.raises(CausalFuseError, match="unknown training configuration keys: bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(CausalFuseError, match="key=value"):
        apply_overrides({}, ["batch"])


def test_config_differences_ignore_budget_fields():
    a = TrainConfig(data=["x"]).to_dict()
    b = TrainConfig(data=["x"], steps=99, max_minutes=3.0, lr=2e-4).to_dict()
    b["net"]["d_k"] = 64
    assert config_differences(a, b) == ["lr: 0.0001 -> 0.0002", "net.d_k: 32 -> 64"]


def test_paper_recipe_is_the_default():
    cfg = TrainConfig()
    assert (cfg.crop, cfg.batch, cfg.lr, cfg.head_lr, cfg.flips) == (256, 6, 1e-4, None, True)
    assert cfg.net.use_baffm and cfg.net.dict_size == 25


def test_batches_are_a_function_of_the_step():
    n = 5
    seen = [i for s in range(5) for _, i in batch_indices(s, 2, n, seed=0)]
    assert sorted(seen) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # two epochs, each a permutation
    assert batch_indices(3, 2, n, seed=0) == batch_indices(3, 2, n, seed=0)
    assert batch_indices(2, 2, n, seed=0)[1][0] == 1  # the 6th sample opens epoch 1
    assert batch_indices(0, 4, n, seed=0) != batch_indices(0, 4, n, seed=1)


# -- training and resume -----------------------------------------------------


def test_resume_reproduces_an_uninterrupted_run(tiny, tmp_path, device):
    # the resume falls inside the head-only warm start and crosses into full training
    straight = train(_cfg(tiny, tmp_path / "a", head_only_steps=3, device=str(device)))
    assert straight.stopped == "done" and straight.step == 4 and len(straight.losses) == 4

    first = train(_cfg(tiny, tmp_path / "b", head_only_steps=3, device=str(device)), stop_after=2)  # "interrupted" after 2 steps
    assert first.step == 2 and not (tmp_path / "b" / "model.safetensors").exists()
    # a later row in the log (e.g. written after the checkpoint) must not survive the resume
    with open(tmp_path / "b" / "log.csv", "a") as f:
        f.write("3,9,9,9,9,9,9,9\n")
    second = train(_cfg(tiny, tmp_path / "b", head_only_steps=3, device=str(device)), resume=True)
    assert second.step == 4
    assert np.allclose(first.losses + second.losses, straight.losses, rtol=0, atol=1e-6)

    rows_a, rows_b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [r["step"] for r in rows_b] == ["1", "2", "3", "4"]
    for ra, rb in zip(rows_a, rows_b):
        for k in ("loss", "intensity", "gradient", "ssim"):
            assert abs(float(ra[k]) - float(rb[k])) <= 1e-6

    wa = load_file(str(tmp_path / "a" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6

    # the final model checkpoint: loadable, dictionaries inside, budget and config recorded
    net = load_model(tmp_path / "a" / "model.safetensors")
    assert net.config.dict_size == 3
    meta = read_metadata(tmp_path / "a" / "model.safetensors")
    budget = meta["info"]["budget"]
    assert (budget["steps"], budget["crop"], budget["batch"]) == (4, 16, 2)
    assert len(budget["data_hash"]) == 64
    assert meta["info"]["train_config"]["lr"] == 1e-4
    # config.json beside it equals the configuration in the training state
    state = load_state(tmp_path / "a" / "last.safetensors")
    assert state.step == 4
    assert state.config == TrainConfig.from_dict(json.loads((tmp_path / "a" / "config.json").read_text())).to_dict()
    assert "baffm.ir.dictionary" in state.model
    assert "0.exp_avg" in {f"{i}.{k}" for i, s in state.optimizer["state"].items() for k in s}
    # a training state exports to the same model checkpoint
    export_model(tmp_path / "a" / "last.safetensors", tmp_path / "exported.safetensors")
    we = load_file(str(tmp_path / "exported.safetensors"))
    assert all(torch.equal(we[k], wa[k]) for k in wa)
    assert read_metadata(tmp_path / "exported.safetensors")["info"]["budget"]["steps"] == 4


def test_head_lr_and_budget_stop(tiny, tmp_path, device):
    res = train(_cfg(tiny, tmp_path / "r", head_lr=1e-3, steps=50, max_minutes=1e-4, device=str(device)))
    assert res.stopped == "budget" and res.step == 1
    rows = _log(tmp_path / "r")
    assert (float(rows[0]["lr"]), float(rows[0]["head_lr"])) == (1e-4, 1e-3)
    assert read_metadata(tmp_path / "r" / "model.safetensors")["info"]["budget"]["stopped"] == "budget"


# -- refusals ----------------------------------------------------------------


def test_resume_refusals(tiny, tmp_path):
    run = tmp_path / "r"
    train(_cfg(tiny, run, steps=1))
    with pytest.raises(CausalFuseError, match="already holds a training run"):
        train(_cfg(tiny, run, steps=2))
    with pytest.raises(CausalFuseError, match=r"another configuration: lr: 0.0001 -> 0.001"):
        train(_cfg(tiny, run, steps=2, lr=1e-3), resume=True)
    with pytest.raises(CausalFuseError, match="no training-state checkpoint"):
        train(_cfg(tiny, tmp_path / "empty", steps=2), resume=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "last.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CausalFuseError, match="not a readable safetensors"):
        train(_cfg(tiny, tmp_path / "junk", steps=2), resume=True)


def test_dictionary_of_another_size_refused(tiny, tmp_path):
    with pytest.raises(CausalFuseError, match=r"N=4 prototypes of dimension d=4, but the configuration asks for N=3"):
        train(_cfg(tiny, tmp_path / "r", dictionary=str(tiny["dict4"])))
    with pytest.raises(CausalFuseError, match="needs a confounder dictionary"):
        train(_cfg(tiny, tmp_path / "r2", dictionary=None))


def test_bad_lrrnet_file_refused(tiny, tmp_path):
    bad = tmp_path / "lrrnet.model"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CausalFuseError, match="lrrnet.model"):
        train(_cfg(tiny, tmp_path / "r", lrrnet_weights=str(bad)))
    assert not (tmp_path / "r").exists()


def test_no_pairs_refused(tmp_path, tiny):
    (tmp_path / "empty" / "ir").mkdir(parents=True)
    (tmp_path / "empty" / "vi").mkdir(parents=True)
    with pytest.raises(CausalFuseError):
        train(_cfg(tiny, tmp_path / "r", data=[str(tmp_path / "empty")]))
    assert not (tmp_path / "r").exists(), "a failed run leaves no empty run folder"
    (tmp_path / "mine").mkdir()
    with pytest.raises(CausalFuseError):
        train(_cfg(tiny, tmp_path / "mine", data=[str(tmp_path / "empty")]))
    assert (tmp_path / "mine").is_dir(), "a folder the user made is left alone"


def test_interrupted_checkpoint_write_keeps_the_previous_file(tiny, tmp_path, monkeypatch):
    import causalfuse.train.state as state_mod

    from causalfuse.models.net import CausalFusionNet

    net = CausalFusionNet(NetConfig(**SMALL_NET))
    opt = torch.optim.Adam(net.parameters())
    path = tmp_path / "last.safetensors"
    save_state(path, net=net, optimizer=opt, step=1, elapsed=1.0, config={"a": 1})
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_state(path, net=net, optimizer=opt, step=2, elapsed=2.0, config={"a": 1})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary left over
    assert load_state(path).step == 1


def test_cli_train_and_errors(tiny, tmp_path, capsys):
    args = ["train", "--data", str(tiny["data"]), "--dictionary", str(tiny["dict"]), "-o", str(tmp_path / "run"),
            "--steps", "1", "--crop", "16", "--batch", "2", "--no-progress", "--no-baffm",
            "--set", "net.dict_size=3", "--set", "net.dict_dim=4", "--set", "net.d_k=8", "--set", "net.d_f=8"]
    assert cli_main(args) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["net"]["use_baffm"] is False and cfg["crop"] == 16
    assert cli_main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert cli_main(args + ["--resume", "--steps", "2", "--lr", "0.001"]) == 2
    assert "another configuration: lr: 0.0001 -> 0.001" in capsys.readouterr().err
    # a decay from the step the run has reached on: resumable, recorded, and the last rate logged is the decayed one
    assert cli_main(args + ["--resume", "--steps", "3", "--lr-decay", "1", "3", "--lr-final", "0.25"]) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["lr_decay_start"], cfg["lr_decay_end"], cfg["lr_final"]) == (1, 3, 0.25)
    assert float(_log(tmp_path / "run")[-1]["lr"]) == pytest.approx(1e-4 * 0.625)
    assert cli_main(args + ["--resume", "--steps", "4", "--lr-decay", "5", "3"]) == 2
    assert "must start before it ends" in capsys.readouterr().err


# -- torchrun ----------------------------------------------------------------


def test_torchrun_two_processes_match_one(tiny, tmp_path):
    """Two gloo processes on halves of each batch end where one process on the whole batch does."""
    common = ["--data", str(tiny["data"]), "--dictionary", str(tiny["dict"]), "--steps", "3", "--crop", "16",
              "--batch", "2", "--threads", "1", "--no-progress",
              "--set", "net.dict_size=3", "--set", "net.dict_dim=4", "--set", "net.d_k=8", "--set", "net.d_f=8"]
    env = dict(os.environ, CAUSALFUSE_COMPILE="0", OMP_NUM_THREADS="1")
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "causalfuse.cli", "train", *common, "-o", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "causalfuse.cli", "train", *common, "-o", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    la, lb = _log(tmp_path / "ddp"), _log(tmp_path / "one")
    assert [abs(float(x["loss"]) - float(y["loss"])) <= 1e-5 for x, y in zip(la, lb)] == [True] * 3
    assert read_metadata(tmp_path / "ddp" / "model.safetensors")["info"]["budget"]["processes"] == 2


def test_sigterm_saves_a_checkpoint_and_exits(tiny, tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "causalfuse.cli", "train", "--data", str(tiny["data"]), "--dictionary", str(tiny["dict"]),
           "-o", str(run), "--steps", "1000", "--crop", "16", "--batch", "2", "--threads", "1", "--no-progress",
           "--checkpoint-every", "1000",
           "--set", "net.dict_size=3", "--set", "net.dict_dim=4", "--set", "net.d_k=8", "--set", "net.d_f=8"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, CAUSALFUSE_COMPILE="0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((run / "log.csv").exists() and len(_log(run)) >= 1):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no training step within 120 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "--resume" in out
    state = load_state(run / "last.safetensors")
    assert 1 <= state.step < 1000
    assert not (run / "model.safetensors").exists()


def test_bf16_autocast_option_runs(tiny, tmp_path, device):
    res = train(_cfg(tiny, tmp_path / "r", steps=2, amp="bf16", device=str(device)))
    assert res.step == 2 and all(np.isfinite(res.losses))
    # the saved weights stay float32
    assert {v.dtype for v in load_file(str(tmp_path / "r" / "model.safetensors")).values()} == {torch.float32}


def test_gpu_out_of_memory_says_what_to_lower(tiny, tmp_path, monkeypatch):
    def oom(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(CausalFusionNet, "forward_head", oom)
    with pytest.raises(CausalFuseError, match=r"out of GPU memory .* batch 2 of 16 x 16 crops: lower --batch or --crop"):
        train(_cfg(tiny, tmp_path / "r", steps=2))


def test_runs_saved_before_newer_options_resume(tiny, tmp_path):
    """A state whose configuration predates gamma_aug, the head_init options, init, the learning-rate decay,
    loss.intensity_target and net.reconstruction_kernel resumes with their old values."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    run = tmp_path / "r"
    train(_cfg(tiny, run), stop_after=2)
    state = run / "last.safetensors"
    with safe_open(str(state), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    del config["gamma_aug"], config["loss"]["intensity_target"], config["net"]["reconstruction_kernel"]
    for key in ("head_init", "head_init_crops", "head_init_pixels", "head_init_ridge", "init", "lr_decay_start", "lr_decay_end", "lr_final"):
        del config[key]
    meta["config"] = json.dumps(config)
    save_file(tensors, str(state), metadata=meta)
    assert train(_cfg(tiny, run), resume=True).step == 4
    train(_cfg(tiny, tmp_path / "g", gamma_aug=0.5), stop_after=1)
    with pytest.raises(CausalFuseError, match=r"gamma_aug: 0.5 -> 0.0"):
        train(_cfg(tiny, tmp_path / "g"), resume=True)


# -- learning-rate schedule ----------------------------------------------------


def test_lr_factor_shape():
    from causalfuse.train.config import lr_factor

    # constant without a decay; a half cosine from 1 to `final` between the steps; flat after
    assert all(lr_factor(s, None, None, 0.0) == 1.0 for s in (0, 10, 10**6))
    assert [lr_factor(s, 10, 20, 0.1) for s in (0, 9, 10, 20, 30)] == [1.0, 1.0, 1.0, 0.1, 0.1]
    assert lr_factor(15, 10, 20, 0.0) == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(15, 10, 20, 0.2) == pytest.approx(0.6, abs=1e-12)
    assert lr_factor(12, 10, 20, 0.0) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.2)), abs=1e-12)
    values = [lr_factor(s, 10, 20, 0.0) for s in range(10, 21)]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"lr_decay_start": 5}, "go together"),
        ({"lr_decay_end": 5}, "go together"),
        ({"lr_decay_start": 5, "lr_decay_end": 5}, "must start before it ends"),
        ({"lr_decay_start": -1, "lr_decay_end": 5}, "must start before it ends"),
        ({"lr_final": 1.5}, "factor from 0 to 1"),
    ],
)
def test_bad_schedule_refused(tiny, tmp_path, kw, message):
    with pytest.raises(CausalFuseError, match=message):
        _cfg(tiny, tmp_path / "r", **kw).validate()


def test_decay_rates_logged_and_resume_exact(tiny, tmp_path):
    kw = dict(steps=6, head_lr=1e-3, lr_decay_start=2, lr_decay_end=6, lr_final=0.1)
    straight = train(_cfg(tiny, tmp_path / "a", **kw))
    rows = _log(tmp_path / "a")
    from causalfuse.train.config import lr_factor

    # the rate in row k is the one step k was taken with: the factor after k - 1 completed steps
    for row in rows:
        f = lr_factor(int(row["step"]) - 1, 2, 6, 0.1)
        assert float(row["lr"]) == pytest.approx(1e-4 * f, rel=1e-5)
        assert float(row["head_lr"]) == pytest.approx(1e-3 * f, rel=1e-5)
    assert float(rows[1]["lr"]) == pytest.approx(1e-4) and float(rows[-1]["lr"]) < 3e-5

    train(_cfg(tiny, tmp_path / "b", **kw), stop_after=3)
    resumed = train(_cfg(tiny, tmp_path / "b", **kw), resume=True)
    wa = load_file(str(tmp_path / "a" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6
    assert np.allclose(resumed.losses, straight.losses[3:], rtol=0, atol=1e-6)


def test_decay_added_on_resume_only_after_the_steps_taken(tiny, tmp_path):
    # a run of constant rates stopped after 3 steps may go on with a decay from step 3 on
    # (the branch equals a run that had the schedule from the start), not one from step 1
    # (whose factor is still 1 for the first step after it: the first changed rate is step 3's)
    kw = dict(steps=6, lr_decay_start=3, lr_decay_end=6)
    straight = train(_cfg(tiny, tmp_path / "a", **kw))
    train(_cfg(tiny, tmp_path / "b", steps=3))
    with pytest.raises(CausalFuseError, match=r"changes the rate of step 3, which was already taken"):
        train(_cfg(tiny, tmp_path / "b", steps=6, lr_decay_start=1, lr_decay_end=6), resume=True)
    branched = train(_cfg(tiny, tmp_path / "b", **kw), resume=True)
    assert np.allclose(branched.losses, straight.losses[3:], rtol=0, atol=1e-6)
    # and a decayed run cannot silently go back to constant rates over its decayed steps
    with pytest.raises(CausalFuseError, match="learning-rate schedule"):
        train(_cfg(tiny, tmp_path / "b", steps=8), resume=True)


# -- starting from a trained model (--init) --------------------------------------


def test_init_starts_from_a_trained_model(tiny, tmp_path):
    from causalfuse.integrity import file_sha256

    train(_cfg(tiny, tmp_path / "a", steps=3))
    start = tmp_path / "a" / "model.safetensors"
    # a rate of 1e-30 leaves every weight where the checkpoint put it: what the run started from
    res = train(_cfg(tiny, tmp_path / "b", steps=1, dictionary=None, init=str(start), lr=1e-30))
    assert res.step == 1
    wa, wb = load_file(str(start)), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(wa) == set(wb)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-12  # dictionaries included
    info = read_metadata(tmp_path / "b" / "model.safetensors")["info"]
    assert info["init_sha256"] == file_sha256(start) and info["train_config"]["init"] == str(start)
    # the starting model's record goes with it: its budget and recipe, and (none here) its own start
    assert info["init_info"] == read_metadata(start)["info"]
    assert info["init_info"]["budget"]["steps"] == 3 and info["init_info"]["init_info"] is None
    # from the same start at the same rate, a run trained further differs from a fresh one
    fresh = train(_cfg(tiny, tmp_path / "c", steps=1))
    tuned = train(_cfg(tiny, tmp_path / "d", steps=1, init=str(start)))
    assert tuned.losses[0] != pytest.approx(fresh.losses[0], abs=1e-6)
    # a dictionary given with --init replaces the checkpoint's; every other weight is the checkpoint's
    rng = np.random.default_rng(7)
    dicts = [
        ConfounderDictionary(prototypes=rng.standard_normal((3, 4)), frequencies=np.full(3, 1 / 3), counts=np.ones(3),
                             pca_mean=np.zeros(6), pca_components=np.eye(4, 6), modality=m, provenance={"test": True})
        for m in ("ir", "vi")
    ]
    save_dictionaries(tmp_path / "other.safetensors", *dicts)
    train(_cfg(tiny, tmp_path / "e", steps=1, init=str(start), lr=1e-30, dictionary=str(tmp_path / "other.safetensors")))
    we = load_file(str(tmp_path / "e" / "model.safetensors"))
    reference = CausalFusionNet(NetConfig(**SMALL_NET))
    reference.load_dictionary_file(tmp_path / "other.safetensors")
    for key in ("baffm.ir.dictionary", "baffm.vi.dictionary"):
        assert torch.equal(we[key], reference.state_dict()[key]) and not torch.equal(we[key], wa[key])
    assert max(float((wa[k] - we[k]).abs().max()) for k in wa if "dictionary" not in k) <= 1e-12


def test_init_refusals(tiny, tmp_path):
    train(_cfg(tiny, tmp_path / "a", steps=1))
    start = str(tmp_path / "a" / "model.safetensors")
    train(_cfg(tiny, tmp_path / "n", steps=1, dictionary=None, net=NetConfig(**SMALL_NET, use_baffm=False)))
    with pytest.raises(CausalFuseError, match="--init .* or --lrrnet-weights .*, not both"):
        _cfg(tiny, tmp_path / "r", init=start, lrrnet_weights="x.model").validate()
    with pytest.raises(CausalFuseError, match=r"--init nowhere.safetensors: no such model checkpoint"):
        train(_cfg(tiny, tmp_path / "r", init="nowhere.safetensors"))
    with pytest.raises(CausalFuseError, match=r"network is not the configured one: net.d_k=8 \(configured: 16\)"):
        train(_cfg(tiny, tmp_path / "r", init=start, net=NetConfig(**{**SMALL_NET, "d_k": 16})))
    with pytest.raises(CausalFuseError, match=r"net.use_baffm=False \(configured: True\) \(train it with --no-baffm\)"):
        train(_cfg(tiny, tmp_path / "r", init=str(tmp_path / "n" / "model.safetensors")))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CausalFuseError, match="junk.safetensors"):
        train(_cfg(tiny, tmp_path / "r", init=str(tmp_path / "junk.safetensors")))
    assert not (tmp_path / "r").exists()


def test_init_widens_a_narrower_reconstruction_conv(tiny, tmp_path):
    """--init from a 3x3 model into net.reconstruction_kernel=5: the kernel at the centre, the same first loss."""
    train(_cfg(tiny, tmp_path / "a", steps=2))
    start = str(tmp_path / "a" / "model.safetensors")
    same = train(_cfg(tiny, tmp_path / "s", steps=1, dictionary=None, init=start, lr=1e-30))
    wide = train(_cfg(tiny, tmp_path / "w", steps=1, dictionary=None, init=start, lr=1e-30,
                      net=NetConfig(**SMALL_NET, reconstruction_kernel=5)))
    assert wide.losses[0] == pytest.approx(same.losses[0], rel=1e-5)
    w = load_file(str(tmp_path / "w" / "model.safetensors"))["reconstruction.conv.weight"]
    narrow = load_file(start)["reconstruction.conv.weight"]
    assert w.shape[-2:] == (5, 5) and float(w[..., 1:4, 1:4].sub(narrow).abs().max()) < 1e-6
    with pytest.raises(CausalFuseError, match=r"net.reconstruction_kernel=5 \(configured: 3\)"):  # never narrowed
        train(_cfg(tiny, tmp_path / "n", init=str(tmp_path / "w" / "model.safetensors"), dictionary=None))


def test_init_from_the_bundled_weights(tiny, tmp_path):
    from causalfuse.models.methods import bundled_weights

    res = train(_cfg(tiny, tmp_path / "b", steps=1, dictionary=None, init="causalfuse", lr=1e-30, net=NetConfig()))
    assert res.step == 1
    bundled = load_file(str(bundled_weights("causalfuse")))
    tuned = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert max(float((bundled[k] - tuned[k]).abs().max()) for k in bundled) <= 1e-12
