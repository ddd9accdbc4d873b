"""Embeddings and probes: pooling over real positions only, the embeddings file, probes that find
a planted signal and only chance in noise, hand-crafted features, and the CLI chain end to end."""

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from lcgen.embed import curve_means, embed, pool, pooled_latent, read_embeddings, write_embeddings
from lcgen.embed.extract import pool_parts
from lcgen.embed.features import FEATURES, window_features
from lcgen.embed.probe import (KNN_KS, LOGISTIC_CS, RIDGE_ALPHAS, classify, probe_arrays, regress, split_groups,
                               target_values)
from lcgen.errors import LcgenError
from lcgen.models import MODELS, create_model
from tests.conftest import run_cli
from tests.test_evaluate import ts_run  # noqa: F401  (the fixture)


# --------------------------------------------------------------------------------------------
# Pooling and the model latents


@pytest.mark.parametrize("how", ["mean", "max", "meanmax", "std", "spectrum", "mean+max+std", "mean+max+spectrum"])
def test_pooling_ignores_padding_exactly(how):
    from lcgen.embed.extract import SPECTRUM_HARMONICS

    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, 12, 5, generator=g)
    valid = torch.zeros(4, 12, dtype=torch.bool)
    for i, n in enumerate([12, 7, 3, 1]):
        valid[i, :n] = True
    junk = torch.where(valid[..., None], h, torch.tensor(1e30))  # padding holds anything
    junk[1, 9, 0] = torch.nan
    pooled = pool(junk, valid, how)
    for i, n in enumerate([12, 7, 3, 1]):
        alone = pool(h[i:i + 1, :n], torch.ones(1, n, dtype=torch.bool), how)  # unpadded
        assert torch.equal(pooled[i], alone[0])
        rows = h[i, :n].double()
        x = (rows - rows.mean(0)).numpy()
        harmonics = np.array([np.abs(np.exp(-2j * np.pi * k * np.arange(n) / n) @ x) / n  # the DFT's k-th
                              for k in range(1, SPECTRUM_HARMONICS + 1)])  # amplitude: (K, D)
        expect = {"mean": rows.mean(0), "max": rows.amax(0), "std": rows.std(0, correction=0),
                  "spectrum": torch.from_numpy(harmonics.reshape(-1))}
        parts = ["mean", "max"] if how == "meanmax" else how.split("+")
        torch.testing.assert_close(pooled[i], torch.cat([expect[p] for p in parts]).float(), rtol=1e-6, atol=1e-6)
    # a row with no real position pools to zeros, not NaN
    width = sum({"spectrum": SPECTRUM_HARMONICS}.get(p, 1) for p in pool_parts(how)) * 5
    assert torch.equal(pool(h[:1], torch.zeros(1, 12, dtype=torch.bool), how), torch.zeros(1, width))


def test_spectrum_pooling_is_translation_invariant_and_finds_the_period():
    # a latent sequence oscillating with 3 cycles per window: its 3rd harmonic carries it; a
    # circular shift along the window (another phase) leaves every amplitude unchanged
    n = 48
    m = torch.arange(n, dtype=torch.float64)
    h = torch.stack([torch.cos(2 * torch.pi * 3 * m / n), torch.ones(n)], -1)[None].float()  # (1, n, 2)
    valid = torch.ones(1, n, dtype=torch.bool)
    spec = pool(h, valid, "spectrum").view(4, 2)  # (harmonic, channel)
    torch.testing.assert_close(spec[:, 0], torch.tensor([0.0, 0.0, 0.5, 0.0]), rtol=0, atol=1e-6)
    assert torch.equal(spec[:, 1], torch.zeros(4))  # a constant channel has no harmonics
    torch.testing.assert_close(pool(torch.roll(h, 7, 1), valid, "spectrum"), spec.view(1, 8), rtol=0, atol=1e-6)
    with pytest.raises(LcgenError, match="unknown pooling 'mean\\+median'"):
        pool(h, valid, "mean+median")


def test_flat_pooling_keeps_every_vector_in_order_and_refuses_padding():
    h = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))  # 3 latent vectors of 4
    valid = torch.ones(2, 3, dtype=torch.bool)
    flat = pool(h, valid, "flat")
    assert flat.shape == (2, 12) and torch.equal(flat[1, 4:8], h[1, 1])  # vector 1 is the second block
    torch.testing.assert_close(pool(h, valid, "mean+flat"), torch.cat([h.mean(1), flat], 1), rtol=0, atol=1e-6)
    valid[0, 2] = False
    with pytest.raises(LcgenError, match="pooling 'flat' needs a latent whose positions are all real"):
        pool(h, valid, "flat")


def _ts_batch(B=3, L=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[0, 40:] = False
    valid[1, 51:] = False
    return {"values": torch.randn(B, L, generator=g), "valid": valid,
            "time": torch.cumsum(0.1 + torch.rand(B, L, generator=g), 1)}


def test_transformer_latents_do_not_see_padding():
    torch.manual_seed(0)
    model = create_model("transformer", "tiny", input_length=64).eval()
    batch = _ts_batch()
    junk = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["valid"]
    junk["values"][pad] = 1e6
    junk["time"][pad] = -5e4
    longer = {k: torch.cat([v, v[:, :32]], 1) for k, v in junk.items()}  # 32 more padded positions
    longer["valid"][:, 64:] = False
    with torch.no_grad():
        ref = pooled_latent(model, batch, "all")
        # same length, other values at the padding: bit for bit the same vector at every level
        assert torch.equal(pooled_latent(model, junk, "all"), ref)
        assert torch.equal(pooled_latent(model, longer, "all"), ref)
        # the first row without any padding (length 40): the same up to float32 rounding of the
        # attention sums over a different number of (masked) keys
        alone = pooled_latent(model, {k: v[:1, :40] for k, v in batch.items()}, "all")
        torch.testing.assert_close(alone[0], ref[0], rtol=0, atol=1e-5)
        levels = model.latents(batch)
    assert list(levels) == ["level0", "level1", "bottleneck"]
    for h, valid in levels.values():
        assert h.shape[:2] == valid.shape and not h[~valid].any()  # zero where not real


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_has_latents_and_its_default_level(name):
    torch.manual_seed(0)
    paired = MODELS[name].data == "paired"
    model = create_model(name, "tiny", input_length=64, **({"freq_length": 32, "lag_length": 32} if paired else {})).eval()
    batch = _ts_batch()
    if paired:  # each window's spectra beside it
        g = torch.Generator().manual_seed(1)
        for c in ("psd", "acf", "fstat"):
            batch.update({c: torch.randn(3, 32, generator=g), f"{c}_valid": torch.arange(32) < 24})
            batch[f"{c}_valid"] = batch[f"{c}_valid"].expand(3, 32).clone()
    with torch.no_grad():
        levels = model.latents(batch)
        assert MODELS[name].latent in levels
        for h, valid in levels.values():
            assert h.dim() == 3 and h.shape[0] == 3 and valid.shape == h.shape[:2] and valid.dtype == torch.bool
            assert valid.any(1).all()
        vec = pooled_latent(model, batch, MODELS[name].latent)
        assert vec.shape == (3, levels[MODELS[name].latent][0].shape[-1]) and vec.dtype == torch.float32
        # the default latent of the transformer and unet is their forward pass's `encoded`
        if name in ("transformer", "unet"):
            batch["hidden"] = torch.zeros_like(batch["valid"])
            encoded = model.forward_batch(batch)["encoded"]
            h = levels["bottleneck"][0]
            torch.testing.assert_close(h, encoded if name == "transformer" else encoded.transpose(1, 2))
    with pytest.raises(LcgenError, match="no latent level 'nope'"):
        pooled_latent(model, batch, "nope")


def test_curve_rows_are_the_mean_of_their_windows():
    rng = np.random.default_rng(1)
    window = rng.standard_normal((9, 3)).astype(np.float32)
    source = np.array([7, 7, 2, 5, 5, 5, 2, 9, 7])
    curve, curve_source, index = curve_means(window, source)
    np.testing.assert_array_equal(curve_source, [2, 5, 7, 9])
    np.testing.assert_array_equal(curve_source[index], source)
    for k, s in enumerate(curve_source):
        np.testing.assert_allclose(curve[k], window[source == s].mean(0), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Embedding a trained run


# ts_run: a tiny transformer trained one epoch on 30 mock curves (64-point windows)


def test_embed_is_deterministic_and_round_trips(ts_run, tmp_path):
    from lcgen.embed import EmbedConfig

    a = embed(ts_run, cfg=EmbedConfig(batch_size=7, level="bottleneck", pooling="mean"))
    np.testing.assert_array_equal(embed(ts_run, cfg=EmbedConfig(batch_size=7, level="bottleneck",
                                                                pooling="mean")).window, a.window)
    # other batch sizes run other matmul kernels: the same vectors to float32 rounding
    b = embed(ts_run, cfg=EmbedConfig(batch_size=64, level="bottleneck", pooling="mean"))
    np.testing.assert_allclose(b.window, a.window, rtol=1e-5, atol=1e-6)
    with h5py.File(a.attrs["input"], "r") as f:
        n_rows = f["flux"].shape[0]
        np.testing.assert_array_equal(a.source, f["source"][:])
        np.testing.assert_array_equal(a.start, f["start"][:])
        np.testing.assert_array_equal(a.meta["lc_type"], f["meta/lc_type"].asstr()[:])
    assert a.window.shape == (n_rows, 32) and a.window.dtype == np.float32  # tiny: widths [16, 32]
    assert np.isfinite(a.window).all() and a.curve.shape == (30, 32)
    for k, s in enumerate(a.curve_source):
        np.testing.assert_allclose(a.curve[k], a.window[a.source == s].mean(0), rtol=1e-6, atol=1e-7)
        assert a.curve_meta["lc_type"][k] == a.meta["lc_type"][a.source == s][0]
    path = write_embeddings(tmp_path / "e.h5", a)
    back = read_embeddings(path)
    for key in ("window", "curve", "row", "source", "start", "curve_index", "curve_source"):
        np.testing.assert_array_equal(getattr(back, key), getattr(a, key))
    np.testing.assert_array_equal(back.curve_meta["period"], a.curve_meta["period"])
    assert back.attrs["format"] == "embeddings" and back.attrs["run_dir"] == str(ts_run.resolve())
    assert back.attrs["level"] == "bottleneck" and back.attrs["pooling"] == "mean"
    assert "model_name: transformer" in back.attrs["run_config"]
    # probing windows: split by curve, so a curve's windows are all train or all test
    from lcgen.embed.probe import ProbeConfig, probe_file

    report = probe_file(path, ProbeConfig(rows="window", baselines=False, few_shot=[2], repeats=1,
                                          targets=["lc_type", "log10(snr)"]))
    assert (tmp_path / "probe-e.json").is_file() and report["split"]["n_curves"] == 30
    assert report["split"]["n_train_rows"] + report["split"]["n_test_rows"] == n_rows
    assert report["representations"]["learned"]["targets"]["log10(snr)"]["n_test"] == report["split"]["n_test_rows"]
    # the random-weight control: same shapes, other vectors, reproducible by its seed
    r1 = embed(ts_run, cfg=EmbedConfig(weights="random", seed=4, level="bottleneck", pooling="mean"))
    r2 = embed(ts_run, cfg=EmbedConfig(weights="random", seed=4, level="bottleneck", pooling="mean"))
    np.testing.assert_array_equal(r1.window, r2.window)
    assert r1.window.shape == a.window.shape and not np.allclose(r1.window, a.window)


def test_embed_errors_name_the_fix(ts_run):
    raw = ts_run.parents[2] / "raw.h5"
    with pytest.raises(LcgenError, match=r"'raw' file.*lcgen convert"):
        embed(ts_run, raw)
    from lcgen.embed import EmbedConfig

    with pytest.raises(LcgenError, match="no latent level 'middle'"):
        embed(ts_run, cfg=EmbedConfig(level="middle"))


# --------------------------------------------------------------------------------------------
# Probes


def _classes(n, k, rng):
    return np.repeat(np.array([f"c{i}" for i in range(k)]), n // k)[rng.permutation(n)]


def test_split_keeps_each_curve_on_one_side():
    groups = np.repeat(np.arange(50), 3)
    train, test = split_groups(groups, 0.3, seed=2)
    assert not (train & test).any() and (train | test).all()
    assert not set(groups[train]) & set(groups[test]) and len(set(groups[test])) == 15


def test_cross_validation_folds_keep_each_curve_in_one_fold():
    from lcgen.embed.probe import _folds

    groups = np.repeat(np.arange(40), 3)  # 3 windows per curve
    y = np.repeat(np.array(["a", "b"] * 20), 3)
    for folds in (_folds(groups), _folds(groups, y)):
        assert len(folds) == 5
        held = np.concatenate([test for _, test in folds])
        assert np.array_equal(np.sort(held), np.arange(120))  # every row held out exactly once
        for train, test in folds:
            assert not set(groups[train]) & set(groups[test])
    for _, test in _folds(groups, y):  # stratified: both classes in every fold
        assert set(y[test]) == {"a", "b"}
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(_folds(groups, y), _folds(groups, y)))  # fixed
    assert len(_folds(np.repeat(np.arange(3), 2))) == 3  # fewer curves than folds: one fold each


def test_probes_recover_a_planted_signal():
    rng = np.random.default_rng(0)
    n, k = 1200, 4
    y = _classes(n, k, rng)
    z = rng.standard_normal(n)
    X = rng.standard_normal((n, 10))
    X[:, :k] += 4.0 * (y[:, None] == np.array([f"c{i}" for i in range(k)]))  # class means apart
    X[:, 5] = z + 0.05 * rng.standard_normal(n)
    meta = {"kind": y, "z": z, "scale": 10 ** z}
    groups = np.arange(n)
    train, test = split_groups(groups, 0.3, seed=0)
    out = probe_arrays(X, meta, groups, ["kind", "z", "log10(scale)"], train=train, test=test,
                       few_shot_sizes=[10, 100], repeats=3)
    for probe in ("logistic", "knn"):
        assert out["kind"][probe]["macro_f1"] > 0.95
    assert out["kind"]["few_shot"]["10"]["macro_f1"] > 0.9
    assert out["kind"]["few_shot"]["100"]["repeats"] == 3
    for spec in ("z", "log10(scale)"):  # the log target is the planted z again
        assert out[spec]["ridge"]["r2"] > 0.99 and out[spec]["ridge"]["rmse"] < 0.1
        assert out[spec]["ridge"]["alpha"] in RIDGE_ALPHAS and out[spec]["knn"]["k"] in KNN_KS
        assert out[spec]["knn"]["r2"] > 0.6  # neighbours in 10 dimensions, 9 of them noise
    assert out["kind"]["logistic"]["C"] in LOGISTIC_CS  # the chosen settings are reported


def test_probes_hand_out_the_test_predictions_they_scored():
    # benchmarks/probe_bootstrap.py resamples these; they must be the predictions behind the scores
    from sklearn.metrics import accuracy_score, f1_score, r2_score

    rng = np.random.default_rng(2)
    n = 240
    y = _classes(n, 3, rng)
    z = rng.standard_normal(n)
    X = rng.standard_normal((n, 4))
    X[:, 0] += (y == "c0") + z
    tr, te = split_groups(np.arange(n), 0.3, seed=0)
    preds = {}
    out = classify(X[tr], y[tr], X[te], y[te], predictions=preds)
    assert set(preds) == {"logistic", "knn"}
    for name, pred in preds.items():
        assert out[name]["macro_f1"] == f1_score(y[te], pred, average="macro", zero_division=0)
        assert out[name]["accuracy"] == accuracy_score(y[te], pred)
    preds = {}
    out = regress(X[tr], z[tr], X[te], z[te], predictions=preds)
    assert set(preds) == {"ridge", "knn"}
    for name, pred in preds.items():
        assert out[name]["r2"] == r2_score(z[te], pred)


def test_probes_on_noise_score_chance():
    # 4 balanced classes, 900 test rows: macro-F1 of a chance guesser is 0.25 with a standard
    # deviation of about 0.015 here; the bounds are about 5 sigma
    rng = np.random.default_rng(1)
    n, k = 3000, 4
    y = _classes(n, k, rng)
    meta = {"kind": y, "z": rng.standard_normal(n)}
    X = rng.standard_normal((n, 16))
    groups = np.arange(n)
    train, test = split_groups(groups, 0.3, seed=0)
    out = probe_arrays(X, meta, groups, ["kind", "z"], train=train, test=test, few_shot_sizes=[100], repeats=2)
    assert out["kind"]["chance_macro_f1"] == 0.25
    for probe in ("logistic", "knn"):
        assert abs(out["kind"][probe]["macro_f1"] - 0.25) < 0.075
        assert abs(out["kind"][probe]["accuracy"] - 0.25) < 0.075
    assert abs(out["kind"]["few_shot"]["100"]["macro_f1"] - 0.25) < 0.075
    assert -0.05 < out["z"]["ridge"]["r2"] < 0.01  # no better than the mean of the train targets
    assert out["z"]["knn"]["r2"] < 0.01


def test_targets_and_their_errors():
    meta = {"lc_type": np.array(["a", "b", "a"]), "period": np.array([1.0, np.nan, 100.0])}
    y, usable, kind = target_values(meta, "log10(period)")
    assert kind == "regression" and usable.tolist() == [True, False, True] and y[[0, 2]].tolist() == [0.0, 2.0]
    assert target_values(meta, "lc_type")[2] == "classification"
    with pytest.raises(LcgenError, match="no meta column 'snr'.*lc_type, period"):
        target_values(meta, "snr")
    with pytest.raises(LcgenError, match="not numeric"):
        target_values(meta, "log10(lc_type)")


# --------------------------------------------------------------------------------------------
# Hand-crafted features


def test_window_features_of_a_sinusoid_and_of_white_noise():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 200, 400))
    y = 10 + 2 * np.sin(2 * np.pi * t / 12.5)
    f = dict(zip(FEATURES, window_features(t, y)))
    assert f["amp_5_95"] == pytest.approx((np.percentile(y, 95) - np.percentile(y, 5)) / 2)
    assert f["std"] == pytest.approx(y.std()) and f["amp_5_95"] == pytest.approx(2, rel=0.05)
    assert 10 ** -f["log_peak_freq"] == pytest.approx(12.5, rel=0.03)  # period from the PSD peak
    assert 10 ** f["log_acf_lag"] == pytest.approx(12.5, rel=0.03) and f["acf_peak"] == 1
    assert f["von_neumann"] < 0.2 and f["kurtosis"] == pytest.approx(-1.5, abs=0.1)  # smooth; arcsine law
    noise = dict(zip(FEATURES, window_features(t, rng.standard_normal(t.size))))
    assert noise["von_neumann"] == pytest.approx(2.0, abs=0.3) and abs(noise["skew"]) < 0.3
    assert np.isnan(window_features(t[:5], y[:5])).all()  # too few points
    assert np.isnan(window_features(t, np.ones_like(t))[3:]).all()  # constant: only amplitudes


# --------------------------------------------------------------------------------------------
# The command line, end to end


def test_cli_train_embed_probe_plot(tmp_path):
    from lcgen.features.convert import ConvertConfig, convert
    from lcgen.simulate.mocks import SimulateConfig, generate

    # the data are made in-process (their commands have their own tests); the chain is the CLI's
    generate(SimulateConfig(n_samples=40, output=str(tmp_path / "raw.h5"), seed=2), workers=1)
    convert(ConvertConfig(input=str(tmp_path / "raw.h5"), output=str(tmp_path / "ts.h5"), max_length=32,
                          min_points=16))
    r = run_cli("train", "transformer", "--preset", "tiny", "--epochs", 1, "--batch-size", 64,
                "--data", tmp_path / "ts.h5", "--name", "t", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "transformer" / "t"
    r = run_cli("embed", run, tmp_path / "ts.h5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # default: every level (16 + 32 + 32 channels), mean and max: 160 numbers per curve
    assert "rows/s" in r.stdout and "40 × 160" in r.stdout
    r = run_cli("info", run / "embeddings.h5", cwd=tmp_path)
    assert r.returncode == 0 and "embeddings" in r.stdout and "meanmax" in r.stdout
    r = run_cli("probe", run / "embeddings.h5", "--set", "few_shot=[2]", "--set", "repeats=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((run / "probe.json").read_text())
    assert set(report["representations"]) == {"learned", "handcrafted", "random"}
    assert report["representations"]["handcrafted"]["dim"] == len(FEATURES)
    assert report["representations"]["random"]["dim"] == 160
    for rep in report["representations"].values():
        t = rep["targets"]
        assert set(t) == {"lc_type", "log10(period)", "log10(tau)"}
        assert 0 <= t["lc_type"]["logistic"]["macro_f1"] <= 1 and "2" in t["lc_type"]["few_shot"]
        assert np.isfinite(t["log10(period)"]["ridge"]["rmse"])
    assert report["split"]["n_test_rows"] == 12 and report["split"]["n_curves"] == 40
    assert "lc_type macro-F1 (logistic)" in r.stdout and "computed, cached in" in r.stdout
    # again, other targets: the hand-crafted features come from the cache
    r = run_cli("probe", run / "embeddings.h5", "-t", "sampling", "-t", "log10(snr)", "--set", "few_shot=[2]", "--set", "repeats=1",
                "-o", tmp_path / "p.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"read from {run / 'embeddings-features.npz'}" in r.stdout.replace("\n", "")
    other = json.loads((tmp_path / "p.json").read_text())
    assert other["handcrafted"]["cached"] and list(other["representations"]) == ["learned", "handcrafted", "random"]
    assert set(other["representations"]["learned"]["targets"]) == {"sampling", "log10(snr)"}
    r = run_cli("plot", run / "embeddings.h5", "--map", "pca", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (run / "embeddings_map.png").stat().st_size > 10_000 and "Wrote" in r.stdout


@pytest.mark.parametrize("name", ["unet", "mlp"])
def test_spectral_runs_embed_one_vector_per_analysed_curve(tmp_path, name):
    from lcgen.embed import EmbedConfig
    from lcgen.train.trainer import TrainConfig, fit
    from tests.test_data import write_spectra

    write_spectra(tmp_path / "spectra.h5", n=24, length=64, failed=(3, 10))
    run = fit(TrainConfig(model_name=name, preset="tiny", data=str(tmp_path / "spectra.h5"), epochs=1,
                          batch_size=8, runs_dir=str(tmp_path / "runs"), device="cpu"), name="t")["run_dir"]
    emb = embed(run, cfg=EmbedConfig(level="all" if name == "unet" else None, pooling="mean"))
    kept = [i for i in range(24) if i not in (3, 10)]  # failed rows are not embedded
    np.testing.assert_array_equal(emb.row, kept)
    np.testing.assert_array_equal(emb.curve_source, kept)  # one row per curve: curve = window
    np.testing.assert_array_equal(emb.curve, emb.window)
    np.testing.assert_array_equal(emb.start, 0)
    assert emb.attrs["input_format"] == "spectra" and np.isfinite(emb.window).all()
    assert emb.window.shape[1] == (8 + 16 + 16 if name == "unet" else 8)  # unet tiny: every level
    # probes with the spectral hand-crafted baseline, read off the same rows' spectra
    from lcgen.embed.features import SPECTRAL_FEATURES, spectra_features
    from lcgen.embed.probe import ProbeConfig, probe_file

    emb.meta["kind"] = np.array(["a", "b"] * 12)[emb.row]
    emb.curve_meta["kind"] = emb.meta["kind"]
    path = write_embeddings(tmp_path / "e.h5", emb)
    report = probe_file(path, ProbeConfig(targets=["kind"], few_shot=[2], repeats=1))
    assert report["representations"]["handcrafted"]["dim"] == len(SPECTRAL_FEATURES)
    assert report["handcrafted"]["features"] == list(SPECTRAL_FEATURES) and not report["handcrafted"]["cached"]
    feats = np.load(tmp_path / "e-features.npz")["features"]
    np.testing.assert_array_equal(feats, spectra_features(tmp_path / "spectra.h5", emb.row))
    assert np.isfinite(feats).mean() > 0.5


def test_spectral_features_of_a_peaked_red_spectrum():
    from lcgen.embed.features import SPECTRAL_FEATURES, spectral_features

    freq = np.geomspace(0.01, 10, 200)
    psd = 3.0 * freq ** -2.0
    k = 120
    psd[k] *= 50.0  # a line at freq[k]
    fstat = np.ones_like(freq)
    fstat[k] = 400.0
    valid = np.ones(freq.size, bool)
    valid[:5] = False  # outside the curve's band: never read, whatever it holds
    psd[:5] = fstat[:5] = 1e9
    lag = np.linspace(0, 60, 301)
    acf = np.cos(2 * np.pi * lag / 7.0) * np.exp(-lag / 200)
    f = dict(zip(SPECTRAL_FEATURES, spectral_features(freq, psd, fstat, valid, lag, acf, lag < 40)))
    assert f["log_peak_freq"] == pytest.approx(np.log10(freq[k])) and f["log_fstat_freq"] == f["log_peak_freq"]
    assert f["log_fstat_max"] == pytest.approx(np.log10(400.0))
    assert f["psd_slope"] == pytest.approx(-2.0, abs=0.05)  # the line barely moves the fit
    assert f["log_psd_median"] == pytest.approx(np.log10(np.median(psd[5:])), abs=1e-9)
    assert f["log_peak_power"] == pytest.approx(np.log10(50.0), abs=0.05)  # over the power law
    assert 10 ** f["log_acf_lag"] == pytest.approx(7.0, abs=0.2) and f["acf_peak"] == 1
    assert f["acf_first"] == pytest.approx(acf[1])
    # nothing valid: every feature undefined, not a silent zero
    none = spectral_features(freq, psd, fstat, np.zeros(freq.size, bool), lag, acf, np.zeros(lag.size, bool))
    assert np.isnan(none).all()


def test_handcrafted_features_are_cached_and_recomputed_when_the_input_changes(ts_run, tmp_path, monkeypatch):
    import shutil

    from lcgen.embed import EmbedConfig
    from lcgen.embed import features as feature_module
    from lcgen.embed.probe import handcrafted

    data = tmp_path / "ts.h5"  # a copy: this test rewrites it
    shutil.copy(ts_run.parents[2] / "ts.h5", data)
    emb = embed(ts_run, data, EmbedConfig(level="bottleneck", pooling="mean"))
    cache = tmp_path / "e-features.npz"
    calls = []
    compute = feature_module.timeseries_features
    monkeypatch.setattr(feature_module, "timeseries_features",
                        lambda *a, **k: calls.append(len(a[1])) or compute(*a, **k))
    first, names, cached = handcrafted(emb, cache=cache)
    assert not cached and calls == [emb.row.size] and cache.is_file() and names == FEATURES
    np.testing.assert_array_equal(first, compute(data, emb.row))
    again, _, cached = handcrafted(emb, cache=cache)
    assert cached and calls == [emb.row.size]  # read back, not computed
    np.testing.assert_array_equal(again, first)
    # the input rewritten (same bytes, new modification time): computed again
    with h5py.File(data, "r+") as f:
        f["flux"][0, 0] = f["flux"][0, 0]
    _, _, cached = handcrafted(emb, cache=cache)
    assert not cached and calls == [emb.row.size] * 2
    assert handcrafted(emb, cache=cache)[2]
    # other rows of the same file: computed again
    sub = dataclasses.replace(emb, row=emb.row[:5])
    assert not handcrafted(sub, cache=cache)[2] and calls[-1] == 5
    # a damaged cache is computed again, not an error
    cache.write_bytes(b"not a cache")
    assert not handcrafted(emb, cache=cache)[2]


def test_embedding_maps_pca_umap_and_the_fallback(monkeypatch):
    import sys

    from lcgen.plots import map_2d

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    X = 0.3 * rng.standard_normal((60, 3)) + 3.0 * np.eye(3)[labels]  # 3 clusters apart in 3-D

    def separated(coords):  # each point's nearest other point is of its own cluster
        d = np.linalg.norm(coords[:, None] - coords[None], axis=-1) + np.diag(np.full(60, np.inf))
        return (labels[d.argmin(1)] == labels).mean()

    coords, method = map_2d(X, method="pca")
    assert method.startswith("PCA (") and coords.shape == (60, 2) and separated(coords) == 1.0
    coords, method = map_2d(X, method="umap")  # umap-learn: the `umap` extra, installed with `dev`
    assert method == "UMAP" and coords.shape == (60, 2) and np.isfinite(coords).all()
    assert separated(coords) == 1.0
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    assert map_2d(X)[1].startswith("PCA (")  # auto falls back to PCA
    with pytest.raises(LcgenError, match=r"pip install 'lcgen\[umap\]'"):
        map_2d(X, method="umap")
    with pytest.raises(LcgenError, match="unknown map 'tsne'"):
        map_2d(X, method="tsne")
