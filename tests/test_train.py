"""The shared trainer: loss, exact resume, interruption, non-finite stop, configs, CLI end to end."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import lcgen.train.trainer as train
from lcgen.cli import app
from lcgen.config import config_to_dict
from lcgen.train.data import load_split
from lcgen.errors import LcgenError
from lcgen.models import MODELS
from lcgen.train.trainer import (HISTORY_COLUMNS, TrainConfig, fit, load_checkpoint, load_run, masked_mse, mse_sums,
                         resolve_train_config)
from tests.conftest import ROOT
from tests.test_data import write_spectra, write_timeseries

SPECTRA_LENGTH = 1024


@pytest.fixture(scope="module")
def spectra_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "spectra.h5"
    write_spectra(path, n=48, length=SPECTRA_LENGTH, failed=(5,))
    return path


@pytest.fixture(scope="module")
def timeseries_file(tmp_path_factory):
    return write_timeseries(tmp_path_factory.mktemp("ts"), n_curves=6, length=64, n_range=(60, 200))


def mlp_config(spectra_file, runs_dir, **changes):
    base = TrainConfig(model_name="mlp", preset="tiny", data=str(spectra_file), epochs=2, batch_size=8,
                       lr=3e-3, runs_dir=str(runs_dir), device="cpu")
    return dataclasses.replace(base, **changes)


def weights(run_dir, which="last"):
    return load_checkpoint(run_dir / f"{which}.pt")["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------------------------
# Loss


def test_masked_mse_matches_a_hand_computation():
    values = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.5, -1.0, 0.0, 0.0]])
    pred = torch.tensor([[2.0, 2.0, 0.0, 9.0], [0.0, 1.0, 7.0, -5.0]])
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    hidden = torch.tensor([[True, False, True, False], [False, True, False, False]])
    batch = {"values": values, "valid": valid, "hidden": hidden}
    total, masked, unmasked = masked_mse(pred, batch, unmasked_weight=0.25)
    # hidden real: (2-1)², (0-3)², (1-(-1))² → 1 + 9 + 4 over 3; visible real: (2-2)², (0-0.5)² over 2
    assert masked.item() == pytest.approx(14 / 3, rel=1e-7)
    assert unmasked.item() == pytest.approx(0.25 / 2, rel=1e-7)
    assert total.item() == pytest.approx(14 / 3 + 0.25 * 0.125, rel=1e-7)
    # (B, L, 1) predictions, as the transformer returns them, give the same numbers
    assert masked_mse(pred[..., None], batch, 0.25)[0].item() == pytest.approx(total.item(), rel=1e-7)


def test_mse_tail_counts_large_errors_linearly_by_hand():
    values = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    pred = torch.tensor([[1.0, -10.0, 3.0, 50.0]], requires_grad=True)
    batch = {"values": values, "valid": torch.tensor([[True, True, True, False]]),
             "hidden": torch.tensor([[True, True, False, False]])}
    sums = mse_sums(pred, batch, tail=2.0)
    # hidden: 1² (inside the tail) and 2·2·10 − 2² = 36 (a flare of 10 pulls as one of 2); visible:
    # 2·2·3 − 4 = 8; padding (50) never counts
    np.testing.assert_allclose(sums.detach().numpy(), [37.0, 2, 8.0, 1], rtol=1e-6)
    sums[0].backward()
    np.testing.assert_allclose(pred.grad.numpy(), [[2.0, -4.0, 0.0, 0.0]], rtol=1e-6)  # slope capped at 2·tail
    assert mse_sums(pred, batch)[0].item() == pytest.approx(101.0)  # tail 0: plain squared errors


def test_padding_never_counts_in_loss_or_gradient():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 16, generator=g)
    valid = torch.rand(4, 16, generator=g) > 0.3
    hidden = valid & (torch.rand(4, 16, generator=g) > 0.5)
    values = torch.where(valid, values, torch.tensor(float("nan")))  # garbage at padding
    pred = torch.randn(4, 16, generator=g).requires_grad_()
    batch = {"values": values, "valid": valid, "hidden": hidden}
    total, masked, unmasked = masked_mse(pred, batch, 0.5)
    assert torch.isfinite(total)
    total.backward()
    assert (pred.grad[~valid] == 0).all() and (pred.grad[valid] != 0).any()
    with torch.no_grad():
        other = torch.where(valid, pred, torch.tensor(1e30))
    assert masked_mse(other, batch, 0.5)[0].item() == total.item()
    # reference: pooled over positions with plain Python loops
    sse = {True: 0.0, False: 0.0}
    n = {True: 0, False: 0}
    for i in range(4):
        for j in range(16):
            if valid[i, j]:
                sse[bool(hidden[i, j])] += (pred[i, j].item() - values[i, j].item()) ** 2
                n[bool(hidden[i, j])] += 1
    assert masked.item() == pytest.approx(sse[True] / n[True], rel=1e-5)
    assert unmasked.item() == pytest.approx(sse[False] / n[False], rel=1e-5)


# --------------------------------------------------------------------------------------------
# Runs, checkpoints, resume


def test_run_directory_and_self_describing_checkpoints(spectra_file, tmp_path):
    result = fit(mlp_config(spectra_file, tmp_path), name="a")
    run = tmp_path / "mlp" / "a"
    assert result["run_dir"] == run and result["status"] == "finished" and result["epoch"] == 2
    for f in ("config.yaml", "split.npz", "history.csv", "best.pt", "last.pt"):
        assert (run / f).is_file(), f
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == HISTORY_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    assert all(np.isfinite(float(r[c])) for r in rows for c in HISTORY_COLUMNS)
    ckpt = torch.load(run / "last.pt", weights_only=True)  # plain tensors and values only
    assert ckpt["model_name"] == "mlp" and ckpt["preset"] == "tiny" and ckpt["epoch"] == 2
    assert ckpt["train_config"] == config_to_dict(result_cfg := train.complete_config(mlp_config(spectra_file, tmp_path)))
    assert {"optimizer", "scheduler", "rng", "best_val", "lcgen_version", "model_config"} <= set(ckpt)
    # the model is rebuilt from the checkpoint alone and predicts as the trained one did
    model, cfg = load_run(run, which="last")
    assert cfg == result_cfg and not model.training
    fresh = MODELS["mlp"].cls(MODELS["mlp"].config_cls(**ckpt["model_config"]))
    fresh.load_state_dict(ckpt["state_dict"])
    fresh.eval()
    g = torch.Generator().manual_seed(1)
    batch = {"values": torch.randn(3, SPECTRA_LENGTH, generator=g), "valid": torch.ones(3, SPECTRA_LENGTH, dtype=torch.bool),
             "index": torch.arange(3)}
    batch["hidden"] = torch.rand(3, SPECTRA_LENGTH, generator=g) > 0.5
    with torch.no_grad():
        torch.testing.assert_close(model.forward_batch(batch)["reconstructed"],
                                   fresh.forward_batch(batch)["reconstructed"], rtol=0, atol=0)
    # the split is stored for evaluate: disjoint, failed row 5 left out, nothing else lost
    split = load_split(run)
    rows = np.concatenate([split[k] for k in ("train", "val", "test")])
    assert len(rows) == len(set(rows)) == 47 and 5 not in rows and len(split["test"]) > 0


KEPT_MEMORY = """
import resource, sys
from pathlib import Path
import numpy as np
def faults_of_a_round():  # minor page faults of 2 blocks of 48 MiB held at once, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [np.ones(6 * 2 ** 20) for _ in range(2)]
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
if sys.argv[1] == "trained":
    from lcgen.train.trainer import TrainConfig, fit
    from tests.test_data import write_spectra
    write_spectra(Path(sys.argv[2]) / "s.h5", n=24, length=64)
    fit(TrainConfig(model_name="mlp", preset="tiny", data=sys.argv[2] + "/s.h5", epochs=1, batch_size=8,
                    runs_dir=sys.argv[2], device="cpu"), name="kept")
faults_of_a_round()
print(faults_of_a_round())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: elsewhere nothing is kept")
def test_training_on_the_cpu_keeps_freed_memory(tmp_path):
    # a step's large activations (>= 32 MiB: glibc maps them apart) are freed and made again
    # every step; unmapped, they fault in again (1.3 of 5.9 CPU-s of a default UNet step)
    faults = {}
    for case in ("trained", "fresh"):
        out = subprocess.run([sys.executable, "-c", KEPT_MEMORY, case, str(tmp_path)], capture_output=True, text=True,
                             check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        faults[case] = int(out.stdout.split()[-1])
    assert faults["trained"] < 50 < 500 < faults["fresh"]  # 0 against ~1,000 (huge pages where the kernel gives them)


def test_resume_continues_exactly(spectra_file, tmp_path):
    whole = fit(mlp_config(spectra_file, tmp_path), name="whole")
    first = fit(mlp_config(spectra_file, tmp_path), name="split", stop_after=1)
    assert first["status"] == "stopped" and load_checkpoint(first["run_dir"] / "last.pt")["epoch"] == 1
    second = fit(resume=first["run_dir"])
    assert second["status"] == "finished"
    assert_same_weights(weights(whole["run_dir"]), weights(second["run_dir"]))
    a, b = load_checkpoint(whole["run_dir"] / "last.pt"), load_checkpoint(second["run_dir"] / "last.pt")
    assert a["scheduler"] == b["scheduler"]
    for key in ("train_loss", "train_masked", "val_loss", "val_unmasked", "lr"):
        assert [r[key] for r in whole["history"]] == [r[key] for r in second["history"]]
    # a finished run has nothing left to do
    assert fit(resume=second["run_dir"])["status"] == "finished"


def test_transformer_with_time_options_resumes_exactly(timeseries_file, tmp_path, monkeypatch):
    """The transformer's time options (gap features, cadence rotary encodings, no day encoding)
    with loss nll, interp_residual and gap augmentation: stopped after an epoch and resumed =
    trained at once; the gaps are cut into the training windows only, from the run's seed."""
    model = {"interp_residual": True, "time_gaps": True, "cadence_rope": True, "day_encoding": False}
    cfg = TrainConfig(model_name="transformer", preset="tiny", data=str(timeseries_file), epochs=2,
                      batch_size=8, lr=3e-3, runs_dir=str(tmp_path), device="cpu", loss="nll", model=model,
                      gap_augment=0.5, gap_points=8)
    real_close, seen = train.close_gap, []

    def recording_close(batch, u, **kwargs):
        out = real_close(batch, u, **kwargs)
        seen.append((batch["valid"].sum(1) - out["valid"].sum(1)).tolist())
        return out

    monkeypatch.setattr(train, "close_gap", recording_close)
    whole = fit(cfg, name="whole")
    n_steps = len(seen)  # one call per training step, none in validation
    assert n_steps == 2 * -(-len(load_split(whole["run_dir"])["train"]) // 8)
    cuts = [k for step in seen for k in step]
    assert 0.3 < np.mean([k > 0 for k in cuts]) < 0.7 and max(cuts) <= 8  # about half the windows, <= 8 points
    first = fit(cfg, name="split", stop_after=1)
    second = fit(resume=first["run_dir"])
    assert second["status"] == "finished"
    assert [k for step in seen[n_steps:] for k in step] == cuts  # the same cuts after the resume
    assert_same_weights(weights(whole["run_dir"]), weights(second["run_dir"]))
    assert [r["val_loss"] for r in whole["history"]] == [r["val_loss"] for r in second["history"]]


def test_gap_drop_scatters_losses_in_the_augmented_windows(timeseries_file, tmp_path, monkeypatch):
    """gap_drop: every window (gap_augment=1) loses its one-point run and, at a rate ~ U(0, 0.5),
    scattered interior points: a quarter of them on average."""
    cfg = TrainConfig(model_name="transformer", preset="tiny", data=str(timeseries_file), epochs=1, batch_size=8,
                      lr=3e-3, runs_dir=str(tmp_path), device="cpu", gap_augment=1.0, gap_points=1, gap_drop=0.5)
    real_close, seen = train.close_gap, []

    def recording_close(batch, u, **kwargs):
        out = real_close(batch, u, **kwargs)
        n = batch["valid"].sum(1)
        seen.append(((n - out["valid"].sum(1) - 1) / (n - 3)).tolist())  # share of the n - 3 others lost
        return out

    monkeypatch.setattr(train, "close_gap", recording_close)
    whole = fit(cfg, name="whole")
    shares = [x for step in seen for x in step]
    assert 0.15 < np.mean(shares) < 0.35 and min(shares) >= 0 and max(shares) < 0.6
    assert whole["status"] == "finished" and np.isfinite(whole["history"][-1]["val_loss"])


def test_ctrl_c_mid_epoch_saves_last_and_resume_matches(spectra_file, tmp_path, monkeypatch):
    whole = fit(mlp_config(spectra_file, tmp_path), name="whole")
    real_mask, calls = train._Loop._train_mask, []

    def interrupting_mask(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C during the third training step of epoch 1
            os.kill(os.getpid(), signal.SIGINT)
        return real_mask(*args, **kwargs)

    monkeypatch.setattr(train._Loop, "_train_mask", interrupting_mask)
    stopped = fit(mlp_config(spectra_file, tmp_path), name="cut")
    monkeypatch.setattr(train._Loop, "_train_mask", real_mask)
    assert stopped["status"] == "interrupted"
    ckpt = load_checkpoint(stopped["run_dir"] / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["progress"]["step"] == 3  # the step in flight was finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = fit(resume=stopped["run_dir"])
    assert resumed["status"] == "finished"
    assert_same_weights(weights(whole["run_dir"]), weights(resumed["run_dir"]))
    assert [r["train_loss"] for r in whole["history"]] == [r["train_loss"] for r in resumed["history"]]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(spectra_file, tmp_path, monkeypatch):
    clean = fit(mlp_config(spectra_file, tmp_path), name="clean", stop_after=1)
    real_build = train.build_model
    steps = -(-len(load_split(clean["run_dir"])["train"]) // 8)

    def poisoned_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward, count = model.forward_batch, [0]

        def forward_batch(batch):
            out = forward(batch)
            if model.training:
                count[0] += 1
                if count[0] == steps + 2:  # epoch 2, step 2
                    out = {**out, "reconstructed": out["reconstructed"] * float("nan")}
            return out

        model.forward_batch = forward_batch
        return model

    monkeypatch.setattr(train, "build_model", poisoned_build)
    with pytest.raises(LcgenError) as err:
        fit(mlp_config(spectra_file, tmp_path), name="nan")
    run = tmp_path / "mlp" / "nan"
    assert "non-finite loss (nan) at epoch 2, step 2" in str(err.value)
    assert f"last good checkpoint {run / 'last.pt'} (after epoch 1) is kept" in str(err.value)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert_same_weights(weights(run), weights(clean["run_dir"]))
    with open(run / "history.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 1


# --------------------------------------------------------------------------------------------
# Configuration


def test_config_precedence_and_per_model_defaults(tmp_path):
    cfg = resolve_train_config("transformer")
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (50, 32, 1e-4)
    assert cfg.data == "data/mock_lightcurves/timeseries.h5"
    cfg = resolve_train_config("unet")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.data) == (50, 128, 1e-3, "data/mock_lightcurves/preprocessed.h5")
    assert resolve_train_config("mlp").batch_size == 128
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_name": "mlp", "epochs": 7, "lr": "3e-4", "batch_size": 16,
                                    "mask": {"max_block": 16}, "model": {"dropout": 0.2}}))
    cfg = resolve_train_config(None, config_file=path, flags={"epochs": 9, "batch_size": None},
                               sets=["batch_size=4", "model.latent_dim=8"])
    assert (cfg.model_name, cfg.epochs, cfg.lr, cfg.batch_size) == ("mlp", 9, 3e-4, 4)
    assert cfg.mask.max_block == 16 and cfg.mask.min_block == 1
    assert cfg.model == {"dropout": 0.2, "latent_dim": 8}  # --set adds to the YAML's model section
    assert resolve_train_config("unet", config_file=path).model_name == "unet"  # MODEL beats the file
    # One of two linked model settings is enough: the other follows it (mlp input_dim = 2 L).
    assert resolve_train_config("mlp", sets=["model.input_length=256"]).model == {"input_length": 256}
    assert resolve_train_config("mlp", sets=["model.input_dim=512"]).model == {"input_dim": 512}


def test_renamed_setting_log_every_still_reads(tmp_path):
    """log_every (steps between host reads of the loss) is now loss_read_every: a user's YAML or
    --set with the old name works and warns; saved run configs with it load silently."""
    from lcgen.config import config_from_dict

    path = tmp_path / "old.yaml"
    path.write_text("model_name: mlp\nlog_every: 4\n")
    for kwargs in ({"config_file": path}, {"sets": ["log_every=4"]}):
        with pytest.warns(FutureWarning, match="setting 'log_every' is now called 'loss_read_every'"):
            assert resolve_train_config("mlp", **kwargs).loss_read_every == 4
    saved = config_to_dict(resolve_train_config("mlp"))
    saved["log_every"] = saved.pop("loss_read_every") + 3  # as main's runs wrote it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert config_from_dict(TrainConfig, saved).loss_read_every == 3
    with pytest.raises(LcgenError, match="'log_every' and 'loss_read_every' are the same setting"):
        resolve_train_config("mlp", sets=["log_every=4", "loss_read_every=2"])


@pytest.mark.parametrize("model", list(MODELS))
def test_shipped_configs_hold_each_models_defaults(model):
    path = ROOT / "configs" / f"{model}.yaml"
    assert resolve_train_config(None, config_file=path) == resolve_train_config(model)
    # the commented-out model settings are real settings of that model, at their default values
    lines = [line.strip()[2:] for line in path.read_text().splitlines() if line.startswith("  # ")]
    overrides = yaml.safe_load("\n".join(lines))
    cfg = resolve_train_config(None, config_file=path, sets=[f"model.{k}={json.dumps(v)}" for k, v in overrides.items()])
    defaults = MODELS[model].config_cls()
    assert cfg.model and all(getattr(defaults, k) == v for k, v in cfg.model.items()), cfg.model


@pytest.mark.parametrize("name, hint", [("gpt2", ""), ("mpl", " (did you mean 'mlp'?)")])
def test_unknown_model_lists_the_registry(name, hint):
    with pytest.raises(LcgenError, match=f"unknown model '{name}'") as err:
        resolve_train_config(name)
    assert hint in str(err.value) and "; registered models: " in str(err.value)
    assert all(m in str(err.value) for m in MODELS)


def test_bad_settings_fail_clearly():
    with pytest.raises(LcgenError, match="has no preset 'huge'; choose one of"):
        resolve_train_config("mlp", flags={"preset": "huge"})
    with pytest.raises(LcgenError, match=r"unknown setting 'model\.dropuot'; did you mean '(model\.)?dropout'"):
        resolve_train_config("mlp", sets=["model.dropuot=0.1"])
    with pytest.raises(LcgenError, match="unknown setting 'epoch'; did you mean 'epochs'"):
        resolve_train_config("mlp", sets=["epoch=3"])
    with pytest.raises(LcgenError, match="'lr' = -1.0 must be > 0"):
        resolve_train_config("mlp", flags={"lr": -1.0})
    with pytest.raises(LcgenError, match="device 'gpu' is not one of auto, cpu, cuda, cuda:N"):
        resolve_train_config("mlp", flags={"device": "gpu"})
    with pytest.raises(LcgenError, match=r"'gap_augment' = 1.5 must be in \[0, 1\]"):
        resolve_train_config("transformer", sets=["gap_augment=1.5"])
    with pytest.raises(LcgenError, match="gap_augment = 0.5: gaps are cut out of time series, and unet trains on"):
        resolve_train_config("unet", sets=["gap_augment=0.5"])
    with pytest.raises(LcgenError, match=r"'gap_drop' = 1.0 must be in \[0, 1\)"):
        resolve_train_config("transformer", sets=["gap_augment=0.5", "gap_drop=1.0"])
    with pytest.raises(LcgenError, match="gap_drop = 0.2 drops points in gap_augment's windows, and gap_augment is 0"):
        resolve_train_config("transformer", sets=["gap_drop=0.2"])


# --------------------------------------------------------------------------------------------
# The command, end to end


def test_lcgen_train_each_model_for_one_epoch(spectra_file, timeseries_file, tmp_path):
    """Each model trains one epoch through the command: the transformer in a real subprocess
    (``python -m lcgen``), the spectra models meanwhile in this process (CliRunner, the same
    command function), so the suite pays one interpreter and torch start-up, not three."""
    runs = tmp_path / "runs"
    jobs = {model: ["train", model, "--data", str(data), "--epochs", "1", "--batch-size", "8", "--preset", "tiny",
                    "--name", "e2e", "--device", "cpu", "--set", f"runs_dir={runs}", "--channel", "acf"]
            for model, data in (("transformer", timeseries_file), ("unet", spectra_file), ("mlp", spectra_file))}
    env = {**os.environ, "CI": "true", "COLUMNS": "120"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "lcgen", *jobs["transformer"]], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs = {}
    for model in ("unet", "mlp"):
        result = CliRunner().invoke(app, jobs[model])
        assert result.exit_code == 0, result.output
        outputs[model] = result.output
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    outputs["transformer"] = out
    for model, out in outputs.items():
        data = jobs[model][3]
        for line in ("Using device: cpu", f"Loading data from {data}", "Dataset statistics:", "Dataset split:",
                     "Model parameters:", "Starting training for 1 epochs...", "Dynamic masking: block size [1, 32], "
                     "mask ratio [10%, 70%]", "Epoch 1/1", "  Train - Loss: ", "  Val   - Loss: ",
                     f"  Saved best model to {runs / model / 'e2e' / 'best.pt'}"):
            assert line in out, (model, line, out)
        assert "| Masked: " in out and "| Unmasked: " in out
        for f in ("config.yaml", "history.csv", "best.pt", "last.pt", "split.npz"):
            assert (runs / model / "e2e" / f).is_file()
    # the run's config.yaml is a valid --config: the same settings train again under a new name
    saved = runs / "mlp" / "e2e" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["channel"] == "acf"
    result = CliRunner().invoke(app, ["train", "--config", str(saved), "--name", "again"])
    assert result.exit_code == 0, result.output
    assert (runs / "mlp" / "again" / "config.yaml").read_text() == saved.read_text()
    assert_same_weights(weights(runs / "mlp" / "e2e"), weights(runs / "mlp" / "again"))
    # --resume through the command: a finished run has nothing left to do
    result = CliRunner().invoke(app, ["train", "--resume", str(runs / "mlp" / "e2e"), "--device", "cpu"])
    assert result.exit_code == 0 and "has finished all 1 epochs; nothing to do" in result.output
    # rerunning into an existing run points at --resume
    result = CliRunner().invoke(app, ["train", "--config", str(saved), "--name", "again"])
    assert isinstance(result.exception, LcgenError)
    assert "already holds a run; continue it with --resume" in str(result.exception)


def test_train_seed_threads_and_progress_lines(spectra_file, tmp_path):
    """--seed is the run's seed; --threads sets torch's threads (and is saved); without a
    progress bar (output not a terminal) a line comes every line_every_s seconds within an epoch."""
    import io
    import re

    from rich.console import Console

    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, [
            "train", "mlp", "--data", str(spectra_file), "--epochs", "1", "--batch-size", "8", "--preset", "tiny",
            "--name", "seeded", "--device", "cpu", "--lr", "3e-3", "--seed", "3", "--threads", "1",
            "--set", f"runs_dir={tmp_path}"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    saved = yaml.safe_load((tmp_path / "mlp" / "seeded" / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["threads"] == 1
    console = Console(file=io.StringIO(), width=200, record=True)
    same = fit(mlp_config(spectra_file, tmp_path, epochs=1, seed=3, threads=1), name="same", console=console,
               line_every_s=0)
    torch.set_num_threads(before)
    assert_same_weights(weights(tmp_path / "mlp" / "seeded"), weights(same["run_dir"]))
    steps = train.n_batches(len(load_split(same["run_dir"])["train"]), 8)
    lines = re.findall(r"^  Epoch 1/1 step (\d+)/(\d+): loss [0-9.]+, [0-9.,]+ samples/s$", console.export_text(),
                       flags=re.MULTILINE)
    assert lines == [(str(i), str(steps)) for i in range(1, steps + 1)]
    # the default: no line within so short an epoch
    quiet = Console(file=io.StringIO(), width=200, record=True)
    fit(mlp_config(spectra_file, tmp_path, epochs=1), name="quiet", console=quiet)
    assert " step 1/" not in quiet.export_text()


def test_compile_switch_trains_the_compiled_model(spectra_file, tmp_path, monkeypatch):
    """compile=True trains through torch.compile (here with the 'eager' backend: dynamo traces
    the model and the loop as with inductor, without minutes of code generation) and matches
    the uncompiled run; the checkpoint keeps the plain parameter names."""
    calls = []
    plain_compile = torch.compile

    def eager_backend(module, *args, **kwargs):
        calls.append(type(module.model).__name__)  # the trainer's batch forward around the model
        return plain_compile(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_backend)
    compiled = fit(mlp_config(spectra_file, tmp_path, epochs=1, compile=True), name="compiled")
    plain = fit(mlp_config(spectra_file, tmp_path, epochs=1), name="plain")
    assert calls == ["MLPAutoencoder"]  # once: training and validation share the compiled forward
    a, b = weights(compiled["run_dir"]), weights(plain["run_dir"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)


def test_lcgen_train_help_and_errors(tmp_path, monkeypatch, timeseries_file):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert f"Model to train: {', '.join(MODELS)}" in result.output
    assert "Epochs. [default: 50]" in result.output  # the brackets survive Rich markup
    for args, message in (
            (["train", "gpt2"], f"unknown model 'gpt2'; registered models: {', '.join(MODELS)}"),
            (["train", "transformer"], "data/mock_lightcurves/timeseries.h5 does not exist"),  # the default file
            (["train", "mlp"], "data/mock_lightcurves/preprocessed.h5 does not exist"),
            (["train", "mlp", "--data", str(timeseries_file)], "is an lcgen 'timeseries' file; expected a 'spectra' file"),
            (["train", "mlp", "--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
            (["train", "--resume", "nowhere", "--epochs", "3"], "drop --epochs"),
            (["train", "--resume", "nowhere"], "nowhere holds no last.pt to resume from")):
        result = runner.invoke(app, args)
        assert isinstance(result.exception, LcgenError), (args, result.output)
        assert message in str(result.exception)
    assert not (tmp_path / "runs").exists()  # failed starts leave no run directory


def test_training_masks_in_days_follow_the_time_axis(timeseries_file, spectra_file, tmp_path):
    """mask.min_days/max_days: a time-series run trains and validates on blocks in days (finite
    losses) and records them in config.yaml; spectra runs, which have no times, are refused."""
    from lcgen.masking import MaskConfig

    mask = MaskConfig(min_days=0.5, max_days=4.0)
    cfg = TrainConfig(model_name="transformer", preset="tiny", data=str(timeseries_file), epochs=1,
                      batch_size=8, lr=3e-3, runs_dir=str(tmp_path), device="cpu", mask=mask)
    result = fit(cfg, name="days")
    saved = yaml.safe_load((result["run_dir"] / "config.yaml").read_text())
    assert saved["mask"]["min_days"] == 0.5 and saved["mask"]["max_days"] == 4.0
    rows = list(csv.DictReader(open(result["run_dir"] / "history.csv")))
    assert np.isfinite(float(rows[0]["val_masked"]))
    with pytest.raises(LcgenError, match="blocks in days need time series"):
        fit(mlp_config(spectra_file, tmp_path, mask=mask), name="spectra_days")
