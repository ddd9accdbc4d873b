"""Issue 12: paired data (each window's own spectra), the multimodal model and its shared latent,
modality dropout, training and exact resume, evaluate and embed through the CLI."""

import csv
import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from typer.testing import CliRunner

from lcgen.cli import app
from lcgen.features.convert import ConvertConfig, convert
from lcgen.train.data import PairedSource, iter_batches, open_source
from lcgen.errors import LcgenError
from lcgen.masking import MODALITIES, SEED_STRIDE, drop_modalities, fixed_mask, modality_keys, paired_masks
from lcgen.features.multitaper import autocorrelation, binned_multitaper, resolvable_band
from lcgen.features.preprocess import normalise
from lcgen.train.trainer import TrainConfig, fit, load_checkpoint, load_run, recon_key
from lcgen.features.window_spectra import WindowSpectraConfig
from tests.conftest import run_cli, torch_threads, write_sine_raw

WINDOW, N_FREQ, N_LAGS = 64, 32, 24


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (as `--threads 1`): on a shared 2-core machine a tiny model's steps are
    several times faster so; the previous setting is restored after each test."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "raw.h5"
    write_sine_raw(path, n_curves=8, seed=3, n_range=(70, 200))
    return path


@pytest.fixture(scope="module")
def paired(raw):
    out = raw.parent / "paired.h5"
    convert(ConvertConfig(input=str(raw), output=str(out), max_length=WINDOW, spectra=True,
                          window_spectra=WindowSpectraConfig(n_freq=N_FREQ, n_lags=N_LAGS)))
    return out


# --------------------------------------------------------------------------------------------
# Paired data


def test_each_windows_spectra_are_the_multitaper_of_that_window(raw, paired, tmp_path):
    """Window i's PSD, F and ACF equal lcgen's multitaper of window i's own points, computed here
    directly on the file's shared grids; the time series are those of a plain convert."""
    plain = tmp_path / "plain.h5"
    convert(ConvertConfig(input=str(raw), output=str(plain), max_length=WINDOW))
    with h5py.File(paired) as f, h5py.File(plain) as g:
        for key in g:  # the time-series part is untouched
            if isinstance(g[key], h5py.Dataset):
                np.testing.assert_array_equal(f[key][()], g[key][()], err_msg=key)
        freq, lag, edges = f["frequency"][:], f["lag"][:], f["frequency"].attrs["edges"]
        n = f["flux"].shape[0]
        assert n > 12 and freq.shape == (N_FREQ,) and lag.shape == (N_LAGS,) and not f["spectra_failed"][:].any()
        assert len(set(f["start"][:].tolist())) > 1  # several windows per curve: they differ below
        for i in range(n):
            m = f["mask"][i]
            t, x = f["time"][i][m].astype(np.float64), f["flux"][i][m].astype(np.float64)
            med, (q25, q75) = np.median(x), np.percentile(x, [25, 75])
            x = (x - med) / (q75 - q25)  # the window's own median/IQR scaling (no 5-IQR outliers here)
            spec = binned_multitaper(t, x, freq, edges, nw=4.0, adaptive=True)
            w, f_hi, _ = resolvable_band(t, 4.0)
            band = (freq >= w) & (freq <= f_hi)
            np.testing.assert_array_equal(f["psd_mask"][i], band)
            np.testing.assert_array_equal(f["fstat_mask"][i], band)
            z, mu, sd = normalise(spec.psd, band, float(np.median(spec.psd[band])))
            np.testing.assert_allclose(f["psd"][i], z, rtol=1e-5, atol=1e-5)
            assert f["psd_mean"][i] == pytest.approx(mu, rel=1e-12) and f["psd_std"][i] == pytest.approx(sd, rel=1e-12)
            np.testing.assert_allclose(f["fstat"][i], normalise(spec.fstat, band, 1.0)[0], rtol=1e-5, atol=1e-5)
            reach = lag <= 0.75 * (t[-1] - t[0])
            acf = np.full(lag.size, np.nan)
            acf[reach] = autocorrelation(t, x, lag[reach])
            np.testing.assert_array_equal(f["acf_mask"][i], np.isfinite(acf))
            np.testing.assert_allclose(f["acf"][i], normalise(np.nan_to_num(acf), np.isfinite(acf), 1.0)[0],
                                       rtol=1e-5, atol=1e-5)


def test_windows_that_cannot_be_analysed_get_their_reason_and_the_rest_are_unchanged(raw, paired):
    """analyse_windows (batched) gives each analysable window what analyse_curve gives it alone,
    bit for bit, and a too-short or a constant window, wherever it sits in a batch, its
    preprocess reason, NaN spectra and empty masks."""
    from lcgen.features.preprocess import analyse_curve
    from lcgen.features.window_spectra import analyse_windows, preprocess_settings, window_grids, window_points

    with h5py.File(paired) as f:
        settings = preprocess_settings(WindowSpectraConfig(n_freq=N_FREQ, n_lags=N_LAGS), min_points=16)
        grids = window_grids(f, settings)
        windows = [window_points(f["time"][i], f["flux"][i], f["flux_err"][i], f["mask"][i].astype(bool))
                   for i in range(6)]
    t, y, e = windows[2]
    windows[2] = (t[:5], y[:5], e[:5])
    t, y, e = windows[4]
    windows[4] = (t, np.full_like(y, 3.0), e)
    rows = analyse_windows(windows, grids, settings)
    assert [r["reason"] for r in rows] == ["", "", "only 5 finite points (min_points = 16)", "",
                                           "flux has zero interquartile range (constant curve)", ""]
    for i in (2, 4):
        assert rows[i]["spectra_failed"] and np.isnan(rows[i]["psd"]).all() and np.isnan(rows[i]["acf_scale"])
        assert not rows[i]["psd_mask"].any() and not rows[i]["acf_mask"].any()
    for i in (0, 1, 3, 5):
        alone = analyse_curve(*windows[i], grids, settings)
        assert not rows[i]["spectra_failed"]
        for key in ("psd", "fstat", "acf", "pvalue", "acf_mask", "psd_scale", "acf_mean", "fstat_std"):
            np.testing.assert_array_equal(rows[i][key], alone[key], err_msg=key)
        np.testing.assert_array_equal(rows[i]["psd_mask"], alone["mask"])


def test_a_windows_spectra_are_those_of_its_negative(paired):
    """The PSD, F-statistic and ACF (and their masks) of a window and of the same window with its
    flux negated are equal: the spectra carry no sign, so on data whose law is unchanged by
    s -> -s (the default mock mix) the series decoded from the spectra alone cannot beat the
    mean profile (README, multimodal section; benchmarks/crossmodal_spread.py)."""
    from lcgen.features.window_spectra import analyse_windows, preprocess_settings, window_grids, window_points

    with h5py.File(paired) as f:
        settings = preprocess_settings(WindowSpectraConfig(n_freq=N_FREQ, n_lags=N_LAGS), min_points=16)
        grids = window_grids(f, settings)
        windows = [window_points(f["time"][i], f["flux"][i], f["flux_err"][i], f["mask"][i].astype(bool))
                   for i in range(6)]
    rows = analyse_windows(windows, grids, settings)
    flipped = analyse_windows([(t, -y, e) for t, y, e in windows], grids, settings)
    for row, neg in zip(rows, flipped):
        assert not row["spectra_failed"] and not neg["spectra_failed"]
        for key in ("psd_mask", "acf_mask"):
            np.testing.assert_array_equal(row[key], neg[key], err_msg=key)
        for key in ("psd", "fstat", "acf", "pvalue", "psd_scale", "acf_mean", "fstat_std"):
            np.testing.assert_allclose(row[key], neg[key], rtol=1e-9, atol=1e-12, err_msg=key)
        assert np.ptp(row["psd"][row["psd_mask"]]) > 0.1  # not trivially flat


def test_convert_spectra_reports_progress_over_the_windows(raw, paired, tmp_path):
    """convert --spectra's second bar: told the window count once, then advanced to it."""
    totals, steps = [], []

    def spectra_bar(n):
        totals.append(n)
        return steps.append

    result = convert(ConvertConfig(input=str(raw), output=str(tmp_path / "p.h5"), max_length=WINDOW, spectra=True,
                                   window_spectra=WindowSpectraConfig(n_freq=N_FREQ, n_lags=N_LAGS)),
                     spectra_progress=spectra_bar)
    with h5py.File(paired) as f:
        n = f["flux"].shape[0]
    assert totals == [n] == [result["windows"]] and sum(steps) == n and all(s > 0 for s in steps)


def test_paired_source_reads_every_modality_and_io_checks_the_format(paired, tmp_path):
    with open_source(paired, "paired") as source:
        assert source.lengths == {"freq_length": N_FREQ, "lag_length": N_LAGS}
        batch = next(iter_batches(source, np.arange(5), 5))
        with h5py.File(paired) as f:
            for c in ("psd", "acf", "fstat"):
                assert batch[c].shape == (5, N_LAGS if c == "acf" else N_FREQ)
                np.testing.assert_array_equal(batch[f"{c}_valid"].numpy(), f[f"{c}_mask"][:5])
                np.testing.assert_array_equal(batch[c].numpy(), np.where(f[f"{c}_mask"][:5], f[c][:5], 0))
    plain = tmp_path / "plain.h5"
    convert(ConvertConfig(input=str(paired.parent / "raw.h5"), output=str(plain), max_length=WINDOW))
    with pytest.raises(LcgenError, match="without per-window spectra; make a paired one with `lcgen convert --spectra`"):
        PairedSource(plain)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(paired.read_bytes())
    with h5py.File(broken, "a") as f:
        del f["acf_mask"]
        f["acf_mask"] = np.zeros((3, N_LAGS), bool)
    with pytest.raises(LcgenError, match=r"'acf_mask' has shape \(3, 24\), expected"):
        PairedSource(broken)
    # another file shares a run's grids only when made with them (embed and evaluate refuse others)
    from lcgen.io import check_same_grids

    with h5py.File(paired) as f:
        bounds = {k: float(v) for k, v in dict(freq_min=f["frequency"][0], freq_max=f["frequency"][-1],
                                                 lag_min=f["lag"][1], lag_max=f["lag"][-1]).items()}
    same, other = tmp_path / "same.h5", tmp_path / "other.h5"
    for path, grid in ((same, bounds), (other, {})):
        convert(ConvertConfig(input=str(paired.parent / "raw.h5"), output=str(path), max_length=WINDOW // 2, spectra=True,
                              window_spectra=WindowSpectraConfig(n_freq=N_FREQ, n_lags=N_LAGS, **grid)))
    check_same_grids(same, paired, "the run")
    with pytest.raises(LcgenError, match="has another frequency grid than .*, which the run was trained on"):
        check_same_grids(other, paired, "the run")


# --------------------------------------------------------------------------------------------
# Masks and modality dropout


def test_modality_dropout_hides_exactly_what_it_says(paired):
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 64))
    series = fixed_mask(batch["valid"], batch["index"], seed=4)
    # p = 0: each modality gets its own fixed block mask, nothing is hidden whole
    blocks = paired_masks(batch, series, p_drop=0.0, seed=4)
    assert not blocks["dropped"].any() and torch.equal(blocks["hidden"], series)
    for k, m in enumerate(MODALITIES[1:], start=1):
        _, valid_key, hidden_key = modality_keys(m)
        assert torch.equal(blocks[hidden_key], fixed_mask(batch[valid_key], batch["index"], seed=4 + k * SEED_STRIDE))
    # p = 0.6: a dropped modality is hidden at every real position, the others keep their blocks
    out = paired_masks(batch, series, p_drop=0.6, seed=4)
    dropped = out["dropped"]
    assert dropped.any() and (~dropped).any()
    for j, m in enumerate(MODALITIES):
        _, valid_key, hidden_key = modality_keys(m)
        for i in range(len(batch["index"])):
            expect = batch[valid_key][i] if dropped[i, j] else blocks[hidden_key][i]
            assert torch.equal(out[hidden_key][i], expect), (m, i)
    assert not dropped.all(1).any()  # something always stays visible
    # the same rows in another order get the same masks (fixed by row index)
    perm = torch.randperm(len(batch["index"]), generator=torch.Generator().manual_seed(0))
    again = paired_masks({k: v[perm] for k, v in batch.items()}, series[perm], p_drop=0.6, seed=4)
    assert torch.equal(again["dropped"], dropped[perm])


def test_training_masks_of_a_row_do_not_depend_on_the_process_count(paired):
    """One process's share of a global batch gets the rows' masks the whole batch gets."""
    from lcgen.masking import block_mask

    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 16))
    gen = torch.Generator().manual_seed(0)
    whole = paired_masks(batch, block_mask(batch["valid"], generator=gen), p_drop=0.4, generator=gen)
    gen = torch.Generator().manual_seed(0)
    series = block_mask(batch["valid"], generator=gen)[5:11]
    share = paired_masks({k: v[5:11] for k, v in batch.items()}, series, p_drop=0.4, generator=gen, share=(16, 5, 11))
    for key in whole:
        assert torch.equal(whole[key][5:11], share[key]), key


def test_drop_modalities_scenarios_rates_and_one_left_visible():
    n = 40_000
    u = torch.rand(n, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    present = torch.ones(n, 4, dtype=torch.bool)
    present[: n // 4, 1:] = False  # a quarter of the windows have no spectra
    p = 0.3
    dropped = drop_modalities(u, present, p)
    assert not (dropped & ~present).any() and not (dropped == present).all(1).any()
    full = dropped[n // 4:]
    m = n - n // 4
    # with p: half the time all spectra (series alone visible), half one modality uniformly
    counts = {"none": (~full.any(1)).sum().item(), "spectra": (full == torch.tensor([False, True, True, True])).all(1).sum().item()}
    for j in range(4):
        counts[j] = (full == torch.nn.functional.one_hot(torch.tensor(j), 4).bool()).all(1).sum().item()
    assert sum(counts.values()) == m  # no other pattern occurs
    for key, rate in (("none", 1 - p), ("spectra", p / 2), *((j, p / 8) for j in range(4))):
        assert abs(counts[key] / m - rate) < 5 * (rate * (1 - rate) / m) ** 0.5, (key, counts[key] / m, rate)
    # a window with only its series never loses it, and loses nothing else (nothing else exists)
    assert not dropped[: n // 4].any()
    # the scenario follows from u alone: u0 >= p hides nothing, u1 < 1/2 all spectra, else modality floor(8 (u1 - 1/2))
    rows = torch.tensor([[0.5, 0.1, 0, 0], [0.1, 0.1, 0, 0], [0.1, 0.55, 0, 0], [0.1, 0.99, 0, 0], [0.1, 0.7, 0, 0]],
                        dtype=torch.float64)
    got = drop_modalities(rows, torch.ones(5, 4, dtype=torch.bool), p).int().tolist()
    assert got == [[0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]


def test_a_hidden_modality_changes_no_output_and_visible_ones_cross_over(paired):
    from lcgen.models import create_model

    torch.manual_seed(0)
    model = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS).eval()
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 6))
    hidden = {modality_keys(m)[2]: torch.zeros_like(batch[modality_keys(m)[1]]) for m in MODALITIES}
    hidden["psd_hidden"] = batch["psd_valid"].clone()  # the PSD hidden whole
    other = {**batch, "psd": batch["psd"] + 100 * torch.randn(batch["psd"].shape)}
    changed_acf = {**batch, "acf": batch["acf"] + torch.randn(batch["acf"].shape)}
    with torch.no_grad():
        a = model.forward_batch({**batch, **hidden})
        b = model.forward_batch({**other, **hidden})
        c = model.forward_batch({**changed_acf, **hidden})
    for key in a:
        assert torch.equal(a[key], b[key]), key  # the hidden PSD's values reach nothing
    # the PSD is predicted from what is visible: another ACF changes the PSD reconstruction
    assert not torch.allclose(a["reconstructed_psd"], c["reconstructed_psd"])


# what of a modality's own network may not reach its reconstruction when it is hidden whole: the
# series' encoder; the spectra's whole UNet (read from the latent by their linear heads)
OWN_PARTS = {"series": ("embed", "encoder", "down", "bottleneck"),
             "psd": ("stem", "encoder", "bottleneck", "up", "decoder", "head")}


@pytest.mark.parametrize("m", ["series", "psd"])
def test_a_modality_hidden_whole_is_read_from_the_latent_alone(paired, m):
    """Nothing of a hidden modality's own encoder reaches its reconstruction (not its bottleneck,
    not its skips), and a spectral modality is not decoded by its UNet at all. (The skips of an
    all-hidden input are row-constant features; fed to the decoder they swamped the latent's
    readout at every level: at initialisation the PSD decoded from the series alone varied 140x
    less across rows, its gradient reached the latent 200x weaker, and a trained run decoded one
    PSD, the training mean, for every row. With zero skips the UNet decoder, trained mostly on
    visible PSDs where its skips say everything, still learned to pass nothing up from its
    bottleneck: the same collapse after 3 epochs of the small preset.)"""
    from lcgen.models import create_model

    torch.manual_seed(0)
    model = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS).eval()
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 6))
    _, valid_key, hidden_key = modality_keys(m)
    hidden = {modality_keys(k)[2]: torch.zeros_like(batch[modality_keys(k)[1]]) for k in MODALITIES}
    hidden[hidden_key] = batch[valid_key].clone()
    own = model.series if m == "series" else model.spectra[m]
    key = recon_key(m)
    with torch.no_grad():
        before = model.forward_batch({**batch, **hidden})
        for name, p in own.named_parameters():
            if name.split(".")[0] in OWN_PARTS[m]:
                p.add_(torch.randn(p.shape))  # another network of this modality
        after = model.forward_batch({**batch, **hidden})
        assert torch.equal(before[key], after[key])
        assert torch.equal(before["encoded"], after["encoded"])
        # ... while it is read from the latent: the rows' reconstructions differ
        assert not torch.allclose(before[key][0], before[key][1])
        if m == "psd":  # and the visible PSD still decodes through its UNet
            shown = model.forward_batch({**batch, **hidden, hidden_key: torch.zeros_like(batch[valid_key])})
            assert not torch.equal(shown[key], after[key])


# --------------------------------------------------------------------------------------------
# The shared latent


@pytest.mark.parametrize("series_levels", [1, 3])
def test_shared_latent_is_deterministic_and_padding_invariant(paired, series_levels):
    from lcgen.embed import pooled_latent
    from lcgen.models import create_model

    torch.manual_seed(0)
    model = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS,
                         series_levels=series_levels).eval()
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 8))
    assert (~batch["valid"]).any() and (~batch["psd_valid"]).any()  # padding and invalid bins to test
    junk = dict(batch)
    g = torch.Generator().manual_seed(2)
    for m in MODALITIES:
        values_key, valid_key, _ = modality_keys(m)
        junk[values_key] = torch.where(batch[valid_key], batch[values_key], torch.nan)
    junk["time"] = torch.where(batch["valid"], batch["time"], 1e4 * torch.randn(batch["time"].shape, generator=g))
    with torch.no_grad():
        z, valid = model.latents(batch)["latent"]
        assert z.shape == (8, 4, 32) and valid.all()
        assert torch.equal(model.latents(batch)["latent"][0], z)  # deterministic
        assert torch.equal(model.latents(junk)["latent"][0], z)  # padding and invalid bins reach nothing
        alone = model.latents({k: v[2:3] for k, v in batch.items()})["latent"][0]
        torch.testing.assert_close(alone[0], z[2], rtol=0, atol=1e-5)  # batch companions do not matter
        assert torch.equal(model.forward_batch(batch)["encoded"], z)
        assert pooled_latent(model, batch, "latent", "meanmax").shape == (8, 64)


def test_series_levels_feed_the_upper_series_levels_to_the_fusion_and_change_nothing_else(paired):
    """series_levels = n: the positions of the series encoder's n deepest levels are fusion tokens
    (each level its own Linear and level code, made after every other parameter), so the
    default (1) builds the model before bit for bit, and a larger n only adds parameters."""
    from lcgen.models import create_model

    def build(n):
        torch.manual_seed(0)
        return create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS,
                            series_levels=n).eval()

    one, three = build(1), build(3)
    before, after = one.state_dict(), three.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(set(after) - set(before)) == ["series_level", "series_level_in.0.bias", "series_level_in.0.weight",
                                                "series_level_in.1.bias", "series_level_in.1.weight"]
    assert three.series_level.shape == (2, 32) and [m.in_features for m in three.series_level_in] == [32, 16]
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 4))
    seen = []
    for model in (one, three):
        hook = model.fusion[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
        with torch.no_grad():
            model.latents(batch)
        hook.remove()
    levels = one.series.encode(torch.zeros(1, WINDOW, 2))[0]  # the positions of each series level
    assert seen[1] - seen[0] == levels[-2][0].shape[1] + levels[-3][0].shape[1]
    with pytest.raises(LcgenError, match=r"series_levels=4 must be in \[1, 3\]"):
        build(4)
    with pytest.raises(LcgenError, match=r"series_levels=0 must be in \[1, 3\]"):
        build(0)


def test_the_readouts_are_given_the_windows_time_span(paired):
    """span_readout: every readout query gets a learned code of log1p(last - first real time), so
    the same z reads out differently for windows of another span, and z itself does not see it."""
    from lcgen.models import create_model

    torch.manual_seed(0)
    model = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS).eval()
    assert model.config.span_readout  # every preset has it
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 6))
    t, valid = batch["time"].double().numpy(), batch["valid"].numpy()
    span = np.array([t[i][valid[i]].max() - t[i][valid[i]].min() for i in range(6)])
    assert np.ptp(span) > 1  # windows of different spans to tell apart
    with torch.no_grad():
        code = model.span_code(batch)
        expected = model.span_embed(torch.log1p(torch.from_numpy(span)).float()[:, None])
        torch.testing.assert_close(code, expected, rtol=0, atol=1e-5)
        z, states = model.encode(batch)
        # the same z and skips, every window given the first window's span: every readout moves
        same = {**batch, "time": torch.where(batch["valid"], batch["time"] * float(span[0]) / torch.from_numpy(span)[:, None].float(),
                                             batch["time"])}
        torch.testing.assert_close(model.span_code(same)[1:], code[:1].expand(5, -1), rtol=0, atol=1e-5)
        a, b = model.decode(z, states, batch), model.decode(z, states, same)
        for key in a:
            assert not torch.allclose(a[key][1:], b[key][1:]), key
            assert torch.equal(a[key][0], b[key][0]), key
        with pytest.raises(LcgenError, match="read\\(\\) needs the batch's span_code when"):
            model.read(z, "psd")


def test_embed_span_appends_the_readouts_span_code_and_refuses_models_without_one(paired):
    """``EmbedConfig.span``: each window's vector is the pooled latent, then the span code the
    readouts get (a function of the real times only: padding times do not reach it)."""
    from lcgen.embed import pooled_latent
    from lcgen.models import create_model

    torch.manual_seed(0)
    model = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS).eval()
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 8))
    assert (~batch["valid"]).any()
    g = torch.Generator().manual_seed(3)
    junk = {**batch, "time": torch.where(batch["valid"], batch["time"], 1e4 * torch.randn(batch["time"].shape, generator=g))}
    with torch.no_grad():
        plain = pooled_latent(model, batch, "latent", "meanmax")
        both = pooled_latent(model, batch, "latent", "meanmax", span=True)
        assert both.shape == (8, 64 + 32) and both.dtype == torch.float32
        assert torch.equal(both[:, :64], plain)
        assert torch.equal(both[:, 64:], model.span_code(batch))
        assert torch.equal(pooled_latent(model, junk, "latent", "meanmax", span=True), both)
        assert np.ptp(both[:, 64:].numpy(), 0).max() > 0  # the windows' spans differ, so do their codes
    old = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS,
                       span_readout=False).eval()
    with pytest.raises(LcgenError, match="span: only a multimodal run with span_readout has a span code "
                                         "\\(MultimodalModel without span_readout\\)"):
        pooled_latent(old, batch, "latent", "meanmax", span=True)
    transformer = create_model("transformer", "tiny", input_length=WINDOW).eval()
    with pytest.raises(LcgenError, match="span: only a multimodal run with span_readout has a span code "
                                         "\\(TimeSeriesTransformer\\)"):
        pooled_latent(transformer, batch, "all", "meanmax", span=True)


def test_runs_saved_before_span_readout_load_as_they_were_and_mismatches_refuse(paired):
    """A multimodal run's config saved without ``span_readout`` (before the setting) rebuilds
    the model without it, with the same outputs; weights that do not fit the config refuse."""
    from lcgen.models import MultimodalConfig, create_model
    from lcgen.train.trainer import model_config_dict, model_from_checkpoint

    torch.manual_seed(0)
    old = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS,
                       span_readout=False).eval()
    assert old.span_embed is None and not any(k.startswith("span_embed") for k in old.state_dict())
    saved = {k: v for k, v in model_config_dict(old).items() if k != "span_readout"}
    ckpt = {"model_name": "multimodal", "model_config": saved, "state_dict": old.state_dict()}
    loaded = model_from_checkpoint(ckpt)
    assert loaded.config == MultimodalConfig(**saved) and not loaded.config.span_readout
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 6))
    with torch.no_grad():
        a, b = old.forward_batch(batch), loaded.forward_batch(batch)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    new = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS)
    with pytest.raises(LcgenError, match="the checkpoint's weights do not fit the 'multimodal' model.*span_embed"):
        model_from_checkpoint({**ckpt, "state_dict": new.state_dict()})


# --------------------------------------------------------------------------------------------
# Training, resume, evaluate, embed


def config(paired, runs, **changes):
    base = TrainConfig(model_name="multimodal", preset="tiny", data=str(paired), epochs=2, batch_size=8, lr=3e-3,
                       runs_dir=str(runs), device="cpu", threads=1, modality_weights={"acf": 0.5})
    return dataclasses.replace(base, **changes)


def test_multimodal_trains_and_resumes_exactly(paired, tmp_path):
    whole = fit(config(paired, tmp_path), name="whole")
    first = fit(config(paired, tmp_path), name="split", stop_after=1)
    assert first["status"] == "stopped"
    second = fit(resume=first["run_dir"])
    a, b = (load_checkpoint(r["run_dir"] / "last.pt") for r in (whole, second))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert whole["history"] == [{**r, "seconds": w["seconds"], "samples_per_s": w["samples_per_s"],
                                  "data_wait_s": w["data_wait_s"]} for r, w in zip(second["history"], whole["history"])]
    with open(whole["run_dir"] / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    for m in MODALITIES:
        assert all(float(r[f"train_masked_{m}"]) > 0 and float(r[f"val_masked_{m}"]) > 0 for r in rows)
    # the weighted sum of the modality losses is the logged masked loss
    r = whole["history"][-1]
    weights = {"series": 1.0, "psd": 1.0, "acf": 0.5, "fstat": 1.0}
    assert r["train_masked"] == pytest.approx(sum(w * r[f"train_masked_{m}"] for m, w in weights.items()), rel=1e-9)
    model, cfg = load_run(whole["run_dir"])
    assert cfg.modality_weights == {"acf": 0.5} and model.config.freq_length == N_FREQ


def test_bad_multimodal_settings_fail_clearly(paired, tmp_path):
    from lcgen.train.trainer import complete_config

    with pytest.raises(LcgenError, match="modality_weights has unknown modalities flux; choose from series"):
        complete_config(config(paired, tmp_path, modality_weights={"flux": 1.0}))
    with pytest.raises(LcgenError, match="'modality_dropout' = 1.0 must be in"):
        complete_config(config(paired, tmp_path, modality_dropout=1.0))
    with pytest.raises(LcgenError, match="trains with loss mse only"):
        complete_config(config(paired, tmp_path, loss="nll"))


def test_multimodal_through_the_cli(raw, tmp_path):
    """convert --spectra -> info -> train multimodal -> evaluate -> embed, as a user runs them."""
    data, runs = tmp_path / "paired.h5", tmp_path / "runs"
    result = run_cli("convert", "-i", raw, "-o", data, "--max-length", WINDOW, "--spectra",
                     "--set", f"window_spectra.n_freq={N_FREQ}", "--set", f"window_spectra.n_lags={N_LAGS}")
    assert result.returncode == 0, result.stderr
    result = CliRunner().invoke(app, ["info", str(data), "--no-config"])  # in-process: one start-up less
    assert result.exit_code == 0 and f"paired: each window carries its own PSD, F-statistic ({N_FREQ} frequencies" in result.output
    result = run_cli("train", "multimodal", "--data", data, "--epochs", 1, "--batch-size", 8, "--preset", "tiny",
                     "--name", "e2e", "--device", "cpu", "--threads", 1, "--set", f"runs_dir={runs}")
    assert result.returncode == 0, result.stderr
    run = runs / "multimodal" / "e2e"
    result = run_cli("evaluate", run, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data_kind"] == "paired" and set(metrics["vs_baselines"]) == {"linear", "mean"}
    scen = metrics["modalities"]
    assert set(scen["masked"]) == set(MODALITIES)
    assert set(scen["masked"]["psd"]["vs_baselines"]) == {"linear", "mean", "profile"}
    for m in MODALITIES:
        assert set(scen[f"{m}_from_others"]) == {m}
        assert scen[f"{m}_from_others"][m]["overall"]["model"]["masked_mse"] > 0
    assert set(scen["spectra_from_series"]) == {"psd", "acf", "fstat"}
    result = run_cli("embed", run, "-o", tmp_path / "emb.h5", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "emb.h5") as f:
        assert f["window"].shape[1] == 64 and f.attrs["level"] in ("all", "latent")  # mean+max of the 32-wide latent
        plain = f["window"][:]
    # --span: the same vectors, then the 32-wide span code; the random-weight control follows it
    result = run_cli("embed", run, "-o", tmp_path / "emb_span.h5", "--span", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "then the span code" in result.stdout
    from lcgen.embed import read_embeddings
    from lcgen.embed.probe import ProbeConfig, representations

    emb = read_embeddings(tmp_path / "emb_span.h5")
    assert emb.window.shape[1] == 96 and emb.attrs["span"] and np.array_equal(emb.window[:, :64], plain)
    reps = representations(emb, ProbeConfig(), cache=tmp_path / "features.npz")
    assert reps["random"].shape == emb.curve.shape and not np.array_equal(reps["random"], emb.curve)
    # fill needs a time-series run, and says what this one is
    result = CliRunner().invoke(app, ["fill", str(run), str(raw), "-o", str(tmp_path / "filled.h5")])
    assert result.exit_code == 1 and "is a multimodal run on paired windows (time series with their spectra); fill needs a time-series run" in str(result.exception)


def test_the_series_branch_starts_from_a_transformer_run(paired, tmp_path, monkeypatch):
    """--init runs/transformer/NAME on a multimodal run: the series branch gets that run's weights
    (its encoder then encodes as the transformer does), the rest is initialised as without it;
    a transformer of other settings is refused, naming them."""
    from lcgen.models import MultimodalModel, create_model

    tr = fit(dataclasses.replace(config(paired, tmp_path), model_name="transformer", modality_weights={}, epochs=1),
             name="tr")
    ts, _ = load_run(tr["run_dir"])
    seen, original = [], MultimodalModel.init_series

    def spy(self, config, state_dict):  # the model's weights as training starts
        original(self, config, state_dict)
        seen.append({k: v.clone() for k, v in self.state_dict().items()})

    monkeypatch.setattr(MultimodalModel, "init_series", spy)
    run = fit(config(paired, tmp_path, init=str(tr["run_dir"]), epochs=1), name="mm")
    monkeypatch.undo()
    start = seen[0]
    for key, value in ts.state_dict().items():
        assert torch.equal(start[f"series.{key}"], value), key
    torch.manual_seed(0)  # the rest as a fresh model of the same seed
    fresh = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS)
    for key, value in fresh.state_dict().items():
        if not key.startswith("series."):
            assert torch.equal(start[key], value), key
    assert run["status"] == "finished" and load_run(run["run_dir"])[1].init == str(tr["run_dir"])
    with open_source(paired, "paired") as source:
        batch = next(iter_batches(source, source.usable, 4))
    model = create_model("multimodal", "tiny", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS).eval()
    model.init_series(ts.config, ts.state_dict())
    with torch.no_grad():
        x = batch["values"][..., None]
        x = torch.cat([x, batch["valid"][..., None].float()], -1)
        a, b = model.series.encode(x, batch["time"], batch["valid"]), ts.encode(x, batch["time"], batch["valid"])
    assert torch.equal(a[0][-1][0], b[0][-1][0])
    small = create_model("multimodal", "small", input_length=WINDOW, freq_length=N_FREQ, lag_length=N_LAGS)
    with pytest.raises(LcgenError, match=r"settings differ from the multimodal series branch's: encoder_dims "
                                         r"\[16, 32\] \(the series branch: \[32, 64, 96, 128\]\)"):
        small.init_series(ts.config, ts.state_dict())


# --------------------------------------------------------------------------------------------
# latent_spread_weight: a VICReg-style variance + covariance term on the pooled shared latent


def test_spread_terms_equal_a_hand_computation():
    from lcgen.train.trainer import spread_sums, spread_terms

    x = torch.tensor([[0.0, 0.0], [0.5, 1.0], [1.0, 2.0]])
    # column variances over the 3 rows (divided by 2): 0.25 and 1; their covariance 0.5
    variance, covariance = spread_terms(x)
    assert float(variance) == pytest.approx((1 - (0.25 + 1e-4) ** 0.5 + 0.0) / 2, abs=1e-7)  # sqrt(1 + 1e-4) > 1: hinge 0
    assert float(covariance) == pytest.approx(2 * 0.5 ** 2 / 2, abs=1e-7)
    assert spread_sums(x).tolist() == pytest.approx([float(variance + covariance), 1.0], abs=1e-7)
    assert spread_sums(x[:1]).tolist() == [0.0, 0.0]  # one row: no spread to measure, no count


def test_latent_spread_weight_zero_changes_nothing_and_on_it_trains_and_is_in_history(paired, tmp_path):
    from lcgen.train.trainer import spread_terms

    plain = fit(config(paired, tmp_path), name="plain")
    off = fit(config(paired, tmp_path, latent_spread_weight=0.0), name="off")
    on = fit(config(paired, tmp_path, latent_spread_weight=0.5), name="on")
    a, b, c = (load_checkpoint(r["run_dir"] / "last.pt")["state_dict"] for r in (plain, off, on))
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = ("seconds", "samples_per_s", "data_wait_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in plain["history"]] \
        == [{k: v for k, v in r.items() if k not in drop} for r in off["history"]]
    assert "train_spread" not in off["history"][0]
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the term reaches the weights
    with open(on["run_dir"] / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert all(float(r["train_spread"]) > 0 and float(r["val_spread"]) > 0 for r in rows)
    last = on["history"][-1]
    assert last["val_loss"] == pytest.approx(last["val_masked"] + 0.1 * last["val_unmasked"] + 0.5 * last["val_spread"],
                                             rel=1e-6)
    # val_spread is the term's mean over the validation batches (fixed masks) of the last weights
    terms = [sum(float(t) for t in spread_terms(x)) for _, x in validation_pooled(on["run_dir"], paired) if len(x) > 1]
    assert last["val_spread"] == pytest.approx(np.mean(terms), rel=1e-5)


def validation_pooled(run_dir, paired):
    """[(batch, pooled z)] for each validation batch of a multimodal run, with the fixed
    validation masks the trainer lays and the run's last weights: z's mean and max
    (pooled_meanmax), what the auxiliary terms of the shared latent act on."""
    from lcgen.models.transformer import pooled_meanmax

    model, cfg = load_run(run_dir, which="last")
    rows_val = np.load(run_dir / "split.npz")["val"]
    mask_args = dataclasses.asdict(cfg.mask)
    out = []
    with torch.no_grad():
        for batch in iter_batches(open_source(paired, "paired"), rows_val, cfg.batch_size):
            batch["hidden"] = fixed_mask(batch["valid"], batch["index"], seed=cfg.val_mask_seed, **mask_args)
            batch.update(paired_masks(batch, batch["hidden"], p_drop=cfg.modality_dropout, seed=cfg.val_mask_seed,
                                      **mask_args))
            z = model.forward_batch(batch)["encoded"]
            out.append((batch, pooled_meanmax([(z, torch.ones(z.shape[:2], dtype=torch.bool))])))
    return out


def test_latent_spread_weight_refuses_other_models_and_negative_weights(paired, tmp_path):
    from lcgen.train.trainer import complete_config

    for model in ("transformer", "unet"):
        with pytest.raises(LcgenError, match=f"latent_spread_weight = 0.5: the spread term acts on the multimodal model's "
                                             f"shared latent; {model} has none"):
            complete_config(dataclasses.replace(config(paired, tmp_path, latent_spread_weight=0.5), model_name=model,
                                                modality_weights={}))
    with pytest.raises(LcgenError, match="'latent_spread_weight' = -1.0 must be >= 0"):
        complete_config(config(paired, tmp_path, latent_spread_weight=-1.0))


# --------------------------------------------------------------------------------------------
# latent_distill_weight: the pooled shared latent keeps a trained transformer's neighbours


def test_distill_sums_equal_a_hand_computation():
    from lcgen.train.trainer import distill_sums, relative_distances

    x = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0], [4.0, 0.0]])
    t = torch.tensor([[1.0], [2.0], [4.0], [3.0]])

    def psi(a):  # by hand, float64: standardise columns (variance over n - 1, + 1e-4), distances, / their mean
        a = np.asarray(a, np.float64)
        a = (a - a.mean(0)) / np.sqrt(a.var(0, ddof=1) + 1e-4)
        d = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1) + 1e-4)
        off = ~np.eye(len(a), dtype=bool)
        return np.where(off, d / d[off].mean(), 0.0)

    assert relative_distances(x).numpy() == pytest.approx(psi(x), abs=1e-6)
    expected = ((psi(x) - psi(t)) ** 2).sum() / (4 * 3)
    assert distill_sums(x, t).tolist() == pytest.approx([expected, 1.0], abs=1e-6)
    # the standardising makes each column's offset and scale irrelevant: the teacher's own geometry scores 0
    assert float(distill_sums(x * torch.tensor([3.0, 0.5]) + 7, x)[0]) == pytest.approx(0.0, abs=1e-6)
    assert distill_sums(x[:2], t[:2]).tolist() == [0.0, 0.0]  # two rows: one distance, nothing to compare


@pytest.fixture(scope="module")
def teacher(paired, tmp_path_factory):
    """A tiny transformer run on the paired file's series (rows of length WINDOW)."""
    runs = tmp_path_factory.mktemp("teacher")
    return fit(TrainConfig(model_name="transformer", preset="tiny", data=str(paired), epochs=1, batch_size=8,
                           lr=3e-3, runs_dir=str(runs), device="cpu", threads=1), name="t")["run_dir"]


def test_latent_distill_trains_toward_the_teachers_distances_and_leaves_the_teacher(paired, teacher, tmp_path):
    from lcgen.models.transformer import pooled_meanmax
    from lcgen.train.trainer import distill_sums

    before = (teacher / "best.pt").read_bytes()
    plain = fit(config(paired, tmp_path), name="plain")
    on = fit(config(paired, tmp_path, latent_distill_weight=2.0, latent_distill_from=str(teacher)), name="on")
    a, c = (load_checkpoint(r["run_dir"] / "last.pt")["state_dict"] for r in (plain, on))
    assert a.keys() == c.keys()  # the teacher is not saved with the run
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the term reaches the weights
    assert (teacher / "best.pt").read_bytes() == before
    assert "train_distill" not in plain["history"][0]
    last = on["history"][-1]
    assert all(r["train_distill"] > 0 and r["val_distill"] > 0 for r in on["history"])
    assert last["val_loss"] == pytest.approx(last["val_masked"] + 0.1 * last["val_unmasked"] + 2.0 * last["val_distill"],
                                             rel=1e-6)
    # val_distill is the term's mean over the validation batches: the last weights against the
    # teacher's pooled latent of each whole series (no hidden mask passed: nothing hidden)
    tmodel, _ = load_run(teacher)
    terms = []
    with torch.no_grad():
        for batch, x in validation_pooled(on["run_dir"], paired):
            t = pooled_meanmax(list(tmodel.latents({k: batch[k] for k in ("values", "valid", "time")}).values()))
            if len(x) > 2:
                terms.append(float(distill_sums(x, t)[0]))
    assert terms and last["val_distill"] == pytest.approx(np.mean(terms), rel=1e-5)


def test_latent_distill_resumes_exactly(paired, teacher, tmp_path):
    cfg = config(paired, tmp_path, latent_distill_weight=1.0, latent_distill_from=str(teacher), latent_spread_weight=0.5)
    whole = fit(cfg, name="whole")
    second = fit(resume=fit(cfg, name="split", stop_after=1)["run_dir"])
    a, b = (load_checkpoint(r["run_dir"] / "last.pt")["state_dict"] for r in (whole, second))
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = ("seconds", "samples_per_s", "data_wait_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in whole["history"]] \
        == [{k: v for k, v in r.items() if k not in drop} for r in second["history"]]
    assert {"train_spread", "train_distill"} <= set(whole["history"][0])


def test_latent_distill_refusals(paired, teacher, tmp_path):
    from lcgen.train.trainer import complete_config

    with pytest.raises(LcgenError, match="latent_distill_weight = 1.0: the distillation term acts on the multimodal "
                                         "model's shared latent; transformer has none"):
        complete_config(dataclasses.replace(config(paired, tmp_path, latent_distill_weight=1.0,
                                                   latent_distill_from=str(teacher)),
                                            model_name="transformer", modality_weights={}))
    for weight, source in ((1.0, None), (0.0, str(teacher))):
        with pytest.raises(LcgenError, match="set both .a weight > 0 and the teacher's transformer run directory. or neither"):
            complete_config(config(paired, tmp_path, latent_distill_weight=weight, latent_distill_from=source))
    with pytest.raises(LcgenError, match="'latent_distill_weight' = -1.0 must be >= 0"):
        complete_config(config(paired, tmp_path, latent_distill_weight=-1.0, latent_distill_from=str(teacher)))
    with pytest.raises(LcgenError, match="no best.pt there"):
        fit(config(paired, tmp_path, latent_distill_weight=1.0, latent_distill_from=str(tmp_path / "nowhere")), name="x")
    mm = fit(config(paired, tmp_path, epochs=1), name="mm")["run_dir"]
    with pytest.raises(LcgenError, match="is a 'multimodal' run; the teacher is a transformer run"):
        fit(config(paired, tmp_path, latent_distill_weight=1.0, latent_distill_from=str(mm)), name="y")
