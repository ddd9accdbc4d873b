"""Issue 11: the transformer's auxiliary PSD head (``psd_aux_weight``): a self-supervised target
on the pooled latent that needs the window's frequencies. Off by default and then changes
nothing; on, its loss is in history.csv; never part of the embedding."""

import csv
import dataclasses

import numpy as np
import pytest
import torch

from lcgen.embed.extract import pool, pooled_latent
from lcgen.errors import LcgenError
from lcgen.features.convert import ConvertConfig, convert
from lcgen.features.window_spectra import WindowSpectraConfig
from lcgen.masking import fixed_mask
from lcgen.models import create_model
from lcgen.models.transformer import pooled_meanmax
from lcgen.train.data import iter_batches, load_split, open_source
from lcgen.train.trainer import TrainConfig, complete_config, fit, load_checkpoint, load_run, loss_sums
from tests.conftest import run_cli, torch_threads, write_sine_raw

WINDOW, N_FREQ = 64, 32


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same windows twice: with their spectra (paired) and without (plain)."""
    d = tmp_path_factory.mktemp("aux")
    write_sine_raw(d / "raw.h5", n_curves=8, seed=3, n_range=(70, 200))
    convert(ConvertConfig(input=str(d / "raw.h5"), output=str(d / "paired.h5"), max_length=WINDOW, spectra=True,
                          window_spectra=WindowSpectraConfig(n_freq=N_FREQ, n_lags=24)))
    convert(ConvertConfig(input=str(d / "raw.h5"), output=str(d / "plain.h5"), max_length=WINDOW))
    return d


def config(data, runs, **changes):
    base = TrainConfig(model_name="transformer", preset="tiny", data=str(data), epochs=2, batch_size=4, lr=1e-3,
                       runs_dir=str(runs), device="cpu", threads=1)
    return dataclasses.replace(base, **changes)


def state(run_dir, which="last"):
    return load_checkpoint(run_dir / f"{which}.pt")["state_dict"]


def test_weight_zero_changes_nothing(files, tmp_path):
    """psd_aux_weight 0 (the default) on the paired file trains bit for bit as the same windows
    without spectra: no head, no spectra read, no new history columns."""
    plain = fit(config(files / "plain.h5", tmp_path), name="plain")
    off = fit(config(files / "paired.h5", tmp_path, psd_aux_weight=0.0), name="off")
    a, b = state(plain["run_dir"]), state(off["run_dir"])
    assert a.keys() == b.keys() and not any(k.startswith("psd_head") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "data_wait_s")} for r in plain["history"]] \
        == [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "data_wait_s")} for r in off["history"]]
    assert "train_psd_aux" not in off["history"][0]


def test_the_head_is_made_last_so_the_rest_initialises_as_without_it():
    """Same seed, with and without the head: every other parameter is equal (so the random-weight
    control of an aux run is the plain run's)."""
    torch.manual_seed(5)
    plain = create_model("transformer", "tiny")
    torch.manual_seed(5)
    headed = create_model("transformer", "tiny", psd_head=N_FREQ)
    a, b = plain.state_dict(), headed.state_dict()
    assert set(b) - set(a) == {"psd_head.0.weight", "psd_head.0.bias", "psd_head.1.weight", "psd_head.1.bias"}
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_aux_loss_is_the_heads_mse_over_valid_bins_and_in_history(files, tmp_path):
    """history.csv has train_psd_aux and val_psd_aux; val_psd_aux equals the head's MSE over the
    valid PSD bins of the validation windows (recomputed here, with their fixed masks, in
    numpy), val_loss includes weight x that, and an interrupted run resumes bit for bit."""
    cfg = config(files / "paired.h5", tmp_path, psd_aux_weight=0.5)
    whole = fit(cfg, name="whole")
    first = fit(cfg, name="split", stop_after=1)
    second = fit(resume=first["run_dir"])
    a, b = state(whole["run_dir"]), state(second["run_dir"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(whole["run_dir"] / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["train_psd_aux"]) > 0 and float(r["val_psd_aux"]) > 0 for r in rows)
    last = whole["history"][-1]
    assert last["val_loss"] == pytest.approx(last["val_masked"] + 0.1 * last["val_unmasked"] + 0.5 * last["val_psd_aux"],
                                             rel=1e-6)

    model, saved = load_run(whole["run_dir"], which="last")
    assert model.config.psd_head == N_FREQ and saved.psd_aux_weight == 0.5
    errors, count = 0.0, 0
    with open_source(files / "paired.h5", "paired") as source:
        for batch in iter_batches(source, load_split(whole["run_dir"])["val"], 3):
            batch["hidden"] = fixed_mask(batch["valid"], batch["index"], seed=0, time=batch["time"],
                                         **dataclasses.asdict(saved.mask))
            with torch.no_grad():
                pred = model.forward_batch(batch)["psd"].double().numpy()
            ok = batch["psd_valid"].numpy()
            errors += ((pred - batch["psd"].numpy()) ** 2)[ok].sum()
            count += ok.sum()
    assert count > 0 and last["val_psd_aux"] == pytest.approx(errors / count, rel=1e-5)


@pytest.mark.parametrize("hidden", [0, 16])
def test_the_aux_loss_trains_the_encoder_not_the_decoder(files, hidden):
    """The PSD term alone sends gradients to the head (linear, or with a hidden layer) and every
    encoder level, none to the decoder."""
    torch.manual_seed(0)
    model = create_model("transformer", "tiny", psd_head=N_FREQ, psd_head_hidden=hidden)
    assert len(model.psd_head) == (4 if hidden else 2)
    with open_source(files / "paired.h5", "paired") as source:
        batch = next(iter_batches(source, np.arange(6), 6))
    batch["hidden"] = torch.zeros_like(batch["valid"])
    sums = loss_sums(model.forward_batch(batch), batch, TrainConfig(psd_aux_weight=1.0))
    assert sums.shape == (6,) and sums[5] == batch["psd_valid"].sum()
    (sums[4] / sums[5]).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(("psd_head", "embed.")))
    assert all(grads[f"encoder.{i}.blocks.0.qkv.weight"].abs().sum() > 0 for i in range(2))
    decoder = [g for n, g in grads.items() if n.startswith(("decoder", "up", "fuse", "head", "norm_out"))]
    assert len(decoder) > 10 and all(g is None or not g.any() for g in decoder)


def test_the_embedding_excludes_the_head(files):
    """lcgen embed's vectors of a headed model: the same levels, width and values as the model
    without its head; changing the head changes none of them. The head reads exactly embed's
    default pooling (every level, mean and max)."""
    torch.manual_seed(0)
    headed = create_model("transformer", "tiny", psd_head=N_FREQ).eval()
    plain = create_model("transformer", "tiny").eval()
    plain.load_state_dict({k: v for k, v in headed.state_dict().items() if not k.startswith("psd_head")})
    with open_source(files / "paired.h5", "paired") as source:
        batch = {k: torch.as_tensor(v) for k, v in source.read(np.arange(5)).items()}
    with torch.no_grad():
        assert list(headed.latents(batch)) == list(plain.latents(batch))
        before = pooled_latent(headed, batch, "all", "meanmax")
        assert torch.equal(before, pooled_latent(plain, batch, "all", "meanmax"))
        for p in headed.psd_head.parameters():
            p.add_(1.0)
        assert torch.equal(before, pooled_latent(headed, batch, "all", "meanmax"))
        levels = list(headed.latents(batch).values())
        ours = pooled_meanmax(levels)
    assert before.shape[1] == ours.shape[1] == headed.psd_head[0].normalized_shape[0]
    reference = torch.cat([torch.cat([pool(h, v, "mean"), pool(h, v, "max")], -1) for h, v in levels], -1)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_refusals_are_clear(files, tmp_path):
    with pytest.raises(LcgenError, match="psd_aux_weight = 0.5 needs each window's PSD: .*plain.h5 is a time-series "
                                         "file without per-window spectra; make a paired one with `lcgen convert --spectra`"):
        fit(config(files / "plain.h5", tmp_path, psd_aux_weight=0.5), name="no")
    assert not (tmp_path / "transformer" / "no").exists()
    with pytest.raises(LcgenError, match="the auxiliary PSD head is the transformer's; unet has none"):
        complete_config(dataclasses.replace(config(files / "paired.h5", tmp_path, psd_aux_weight=0.5), model_name="unet"))
    with pytest.raises(LcgenError, match="'psd_aux_weight' = -1.0 must be >= 0"):
        complete_config(config(files / "paired.h5", tmp_path, psd_aux_weight=-1.0))
    with pytest.raises(LcgenError, match="psd_head=-1 and psd_head_hidden=0 must be >= 0"):
        create_model("transformer", "tiny", psd_head=-1)
    with pytest.raises(LcgenError, match="the stored PSD is the uncut window's"):
        complete_config(config(files / "paired.h5", tmp_path, psd_aux_weight=0.5, gap_augment=0.5))
    result = run_cli("train", "transformer", "--data", files / "plain.h5", "--preset", "tiny", "--epochs", 1,
                     "--set", f"runs_dir={tmp_path}", "--set", "psd_aux_weight=0.5", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 1 and "needs each window's PSD" in result.stderr and "Traceback" not in result.stderr
