"""Every registered model at tiny size, the README's Python API, and the transformer's padding."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from lcgen.errors import LcgenError
from lcgen.masking import block_mask
from lcgen.models import MODELS, create_model, list_models

LENGTH = {"timeseries": 96, "spectra": 64, "paired": 96}
PAIRED_LENGTHS = {"freq_length": 64, "lag_length": 48}  # the spectra of the tiny paired batches


def make_batch(kind: str, B: int = 4, L: int | None = None, seed: int = 0) -> dict:
    """A batch as lcgen.data builds it: padded series, or spectra valid over a sub-range."""
    gen = torch.Generator().manual_seed(seed)
    L = L or LENGTH[kind]
    pos = torch.arange(L)
    if kind == "timeseries":
        n_real = torch.tensor([L, L - 5, L // 3, 2])[:B, None]
        valid = pos < n_real
    else:
        lo, hi = torch.tensor([0, 3, 10, 1])[:B, None], torch.tensor([L, L - 7, L // 2, L])[:B, None]
        valid = (pos >= lo) & (pos < hi)
    values = torch.randn(B, L, generator=gen) * valid
    time = torch.cumsum(torch.rand(B, L, generator=gen), 1) * valid
    hidden = block_mask(valid, max_block=8, generator=gen)
    batch = {"values": values, "valid": valid, "hidden": hidden, "time": time, "index": torch.arange(B)}
    if kind == "paired":  # a time series and each channel of its spectra, valid over a sub-range
        for c, n in (("psd", 64), ("acf", 48), ("fstat", 64)):
            spectra = make_batch("spectra", B, n, seed + 1)
            batch.update({c: spectra["values"], f"{c}_valid": spectra["valid"], f"{c}_hidden": spectra["hidden"]})
    return batch


def tiny(name: str, **overrides):
    torch.manual_seed(0)
    length = LENGTH[MODELS[name].data]
    if MODELS[name].data == "paired":
        overrides = {**PAIRED_LENGTHS, **overrides}
    return create_model(name, "tiny", input_length=length, **overrides)


def masked_loss(out: dict, batch: dict) -> torch.Tensor:
    err = (out["reconstructed"] - batch["values"]) ** 2
    loss = err[batch["valid"]].mean()
    for c in ("psd", "acf", "fstat"):  # the multimodal model's other reconstructions
        if f"reconstructed_{c}" in out:
            loss = loss + ((out[f"reconstructed_{c}"] - batch[c]) ** 2)[batch[f"{c}_valid"]].mean()
    return loss


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_and_gradients(name):
    model = tiny(name).train()
    batch = make_batch(MODELS[name].data)
    if MODELS[name].data == "paired":  # the first row's spectra hidden whole: the latent heads read them
        for c in ("psd", "acf", "fstat"):
            batch[f"{c}_hidden"][0] = batch[f"{c}_valid"][0]
    out = model.forward_batch(batch)
    B, L = batch["values"].shape
    assert out["reconstructed"].shape == (B, L)
    assert out["encoded"].shape[0] == B
    loss = masked_loss(out, batch)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("name", list_models())
def test_tiny_preset_is_tiny(name):
    n_params = sum(p.numel() for p in tiny(name).parameters())
    assert 1_000 <= n_params <= 120_000


@pytest.mark.parametrize("name", list_models())
def test_checkpoint_round_trip(name, tmp_path):
    model = tiny(name).eval()
    batch = make_batch(MODELS[name].data)
    path = tmp_path / "ckpt.pt"
    torch.save({"model_config": dataclasses.asdict(model.config),
                "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    spec = MODELS[name]
    rebuilt = spec.cls(spec.config_cls(**ckpt["model_config"]))
    rebuilt.load_state_dict(ckpt["state_dict"])
    rebuilt.eval()
    with torch.no_grad():
        a, b = model.forward_batch(batch), rebuilt.forward_batch(batch)
    assert torch.equal(a["reconstructed"], b["reconstructed"])
    assert torch.equal(a["encoded"], b["encoded"])
    # create_model with the saved config as overrides rebuilds it whatever the preset
    again = create_model(name, "default", **ckpt["model_config"])
    assert dataclasses.asdict(again.config) == ckpt["model_config"]


@pytest.mark.parametrize("name", list_models())
def test_padding_and_hidden_values_change_nothing(name):
    """Values (and times) at padding, and values at hidden positions, never reach an output."""
    model = tiny(name).eval()
    batch = make_batch(MODELS[name].data)
    gen = torch.Generator().manual_seed(1)
    other = dict(batch)
    junk = torch.randn(batch["values"].shape, generator=gen) * 100
    unseen = ~batch["valid"] | batch["hidden"]
    other["values"] = torch.where(unseen, junk, batch["values"])
    other["time"] = torch.where(batch["valid"], batch["time"], junk.abs() * 50)
    for c in ("psd", "acf", "fstat") if MODELS[name].data == "paired" else ():
        unseen = ~batch[f"{c}_valid"] | batch[f"{c}_hidden"]
        other[c] = torch.where(unseen, torch.randn(batch[c].shape, generator=gen) * 100, batch[c])
    with torch.no_grad():
        a, b = model.forward_batch(batch), model.forward_batch(other)
    real = batch["valid"]
    assert torch.allclose(a["reconstructed"][real], b["reconstructed"][real], atol=1e-5, rtol=0)
    assert torch.allclose(a["encoded"], b["encoded"], atol=1e-5, rtol=0)


TIME_OPTIONS = [{}, {"time_attention": True},
                {"interp_residual": True, "time_gaps": True, "cadence_rope": True},
                {"time_gaps": True, "cadence_rope": True, "day_encoding": False}]
TIME_IDS = ["plain", "time_attention", "gaps_cadence_rope", "no_day_encoding"]


@pytest.mark.parametrize("options", TIME_OPTIONS, ids=TIME_IDS)
def test_transformer_padding_invariance_with_junk_inputs(options):
    """forward(x, t, valid): NaN/junk in x and t at padding, any padded length, empty rows."""
    model = tiny("transformer", **options).eval()
    B, L = 3, 50  # 50 is not a multiple of 2**levels: padded inside, cropped back
    valid = torch.arange(L) < torch.tensor([[50], [17], [0]])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, 2, generator=gen) * valid[..., None]
    t = torch.cumsum(torch.rand(B, L, generator=gen), 1)
    x2 = torch.where(valid[..., None], x, torch.nan)
    t2 = torch.where(valid, t, torch.randn(B, L, generator=gen) * 1e4)
    with torch.no_grad():
        a, b = model(x, t, valid), model(x2, t2, valid)
    assert a["reconstructed"].shape == (B, L, 1)
    assert torch.isfinite(b["reconstructed"]).all() and torch.isfinite(b["encoded"]).all()
    assert torch.allclose(a["reconstructed"][valid], b["reconstructed"][valid], atol=1e-5, rtol=0)
    # the same real rows alone, without padding at all, give the same outputs
    with torch.no_grad():
        alone = model(x[:1], t[:1])
    assert torch.allclose(alone["reconstructed"], a["reconstructed"][:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", TIME_OPTIONS, ids=TIME_IDS)
def test_transformer_uses_times_relative_to_the_window(options):
    """Shifting a window's times by a constant (exactly, here) changes nothing."""
    model = tiny("transformer", **options).eval()
    batch = make_batch("timeseries")
    batch["time"] = torch.round(batch["time"] * 64) / 64  # exact in float32 after the shift
    shifted = dict(batch, time=torch.where(batch["valid"], batch["time"] + 1024.0, 0.0))
    stretched = dict(batch, time=batch["time"] * 3)
    with torch.no_grad():
        a = model.forward_batch(batch)["reconstructed"]
        b = model.forward_batch(shifted)["reconstructed"]
        c = model.forward_batch(stretched)["reconstructed"]
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    if options.get("day_encoding", True):
        assert not torch.allclose(a, c, atol=1e-3)  # the times do matter
    else:  # time only in units of the window's median cadence: a stretch changes nothing
        assert torch.allclose(a, c, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", TIME_OPTIONS, ids=TIME_IDS)
def test_a_closed_gap_is_padding_to_the_model(options):
    """gap_augment's closed-up window (lcgen.masking.close_gap) gives, at its real points, what
    the same real points give as a window of their own: the freed positions at the end are plain
    padding, and the gap is in the times alone."""
    from lcgen.masking import close_gap
    model = tiny("transformer", **options).eval()
    batch = make_batch("timeseries", B=3)
    u = torch.tensor([[0.0, 0.5, 0.3], [0.0, 0.9, 0.6], [0.9, 0.0, 0.0]], dtype=torch.float64)
    closed = close_gap(batch, u, fraction=0.5, max_points=16)
    assert (closed["valid"].sum(1) == batch["valid"].sum(1) - torch.tensor([9, 15, 0])).all()
    with torch.no_grad():
        out = model.forward_batch(closed)["reconstructed"]
        for b in range(3):
            keep = closed["valid"][b]
            alone = model.forward_batch({k: v[b:b + 1, keep] for k, v in closed.items() if k != "index"})
            assert torch.allclose(alone["reconstructed"][0], out[b, keep], atol=1e-5, rtol=0)
        # with the times of the real points before the cut, the same values give other outputs
        gapless = {**closed, "time": torch.where(closed["valid"], batch["time"], 0.0)}
        assert not torch.allclose(model.forward_batch(gapless)["reconstructed"][0], out[0], atol=1e-4)


def test_gap_features_against_a_loop():
    """log(step / median step) to the previous and next real point, 0 at the ends and padding."""
    from lcgen.models.transformer import gap_features, median_spacing
    gen = torch.Generator().manual_seed(3)
    t = torch.cumsum(torch.rand(3, 20, generator=gen) + 0.5, 1)
    t[0, 10:] += 7.0  # a gap
    valid = torch.rand(3, 20, generator=gen) < 0.8
    valid[2] = False
    valid[2, 5] = True  # one real point: no neighbours
    got = gap_features(t, valid, median_spacing(t, valid))
    for b in range(3):
        real = torch.nonzero(valid[b])[:, 0].tolist()
        # the cadence: median step between adjacent positions that are both real (lower median)
        steps = [t[b, i + 1] - t[b, i] for i in real if i + 1 in real]
        cadence = float(torch.tensor(steps).median()) if steps else 1.0
        for n, j in enumerate(range(20)):
            want = [0.0, 0.0]
            if j in real:
                k = real.index(j)
                if k > 0:
                    want[0] = math.log((t[b, j] - t[b, real[k - 1]]) / cadence)
                if k + 1 < len(real):
                    want[1] = math.log((t[b, real[k + 1]] - t[b, j]) / cadence)
            assert got[b, j].tolist() == pytest.approx(want, abs=1e-5), (b, j)
    assert got[0, 10, 0] > 2.0  # the gap shows


def test_rope_time_counts_steps_in_cadences_clipped():
    """cadence_rope's time: the sample index on a regular grid; a gap counts ROPE_MAX_STEP."""
    from lcgen.models.transformer import ROPE_MAX_STEP, median_spacing, rope_time
    t = torch.tensor([[0.0, 0.5, 1.0, 1.5, 40.0, 40.5, 41.25, 0.0]])
    valid = torch.tensor([[True] * 7 + [False]])
    got = rope_time(t, valid, median_spacing(t, valid))
    want = [0, 1, 2, 3, 3 + ROPE_MAX_STEP, 4 + ROPE_MAX_STEP, 5.5 + ROPE_MAX_STEP, 5.5 + ROPE_MAX_STEP]
    assert got[0].tolist() == pytest.approx(want)


def test_readme_python_api_block():
    """The original README's block, verbatim (without autograd to keep the test quick)."""
    readme_block = '''
from lcgen.models import TimeSeriesTransformer, TransformerConfig
import torch

# Create hierarchical transformer
config = TransformerConfig(
    input_dim=2,  # flux + mask
    input_length=512,
    encoder_dims=[64, 128, 256, 512],  # Multi-scale hierarchy
    nhead=4,
    num_layers=4,
    num_transformer_blocks=2  # Blocks per resolution
)
model = TimeSeriesTransformer(config)

# Forward pass
x = torch.randn(32, 512, 2)  # [batch, seq_len, channels]
t = torch.randn(32, 512)      # timestamps
output = model(x, t)
reconstructed = output['reconstructed']  # (32, 512, 1)
encoded = output['encoded']              # (32, 32, 512) bottleneck
'''
    scope: dict = {}
    with torch.no_grad():
        exec(readme_block, scope)
    assert scope["reconstructed"].shape == (32, 512, 1)
    assert scope["encoded"].shape == (32, 32, 512)
    assert torch.isfinite(scope["reconstructed"]).all()
    n_params = sum(p.numel() for p in scope["model"].parameters())
    assert 26_000_000 < n_params < 27_500_000  # the README's ~26.8M


def test_readme_unet_and_mlp_configs():
    from lcgen.models import MLPAutoencoder, MLPConfig, UNetAutoencoder, UNetConfig

    unet = UNetAutoencoder(UNetConfig(
        input_length=1024,
        in_channels=2,  # data + mask
        encoder_dims=[64, 128, 256, 512],
        num_layers=4,
        activation='gelu'
    ))
    mlp = MLPAutoencoder(MLPConfig(
        input_dim=2048,  # data + mask concatenated
        encoder_hidden_dims=[512, 256, 128],
        latent_dim=64,
        activation='gelu'
    ))
    with torch.no_grad():
        out = unet(torch.randn(2, 2, 1024))
        assert out["reconstructed"].shape == (2, 1024)
        assert out["encoded"].shape == (2, 512, 64)
        out = mlp(torch.randn(2, 2048))
        assert out["reconstructed"].shape == (2, 1024)
        assert out["encoded"].shape == (2, 64)
    assert sum(p.numel() for p in mlp.parameters()) == 1_923_392


def test_registry():
    assert list_models() == ["transformer", "unet", "mlp", "multimodal"]
    assert {n: s.data for n, s in MODELS.items()} == {
        "transformer": "timeseries", "unet": "spectra", "mlp": "spectra", "multimodal": "paired"}
    for spec in MODELS.values():
        assert {"tiny", "small", "default"} <= set(spec.presets)
    with pytest.raises(LcgenError, match="transformer, unet, mlp, multimodal"):
        create_model("transfomer")
    with pytest.raises(LcgenError, match="did you mean 'transformer'"):
        create_model("transfomer")
    with pytest.raises(LcgenError, match="tiny, small, default"):
        create_model("unet", "huge")
    with pytest.raises(LcgenError, match="did you mean 'encoder_dims'"):
        create_model("unet", "tiny", encoder_dim=[4, 8])
    # options left None keep the preset's values
    model = create_model("unet", "tiny", encoder_dims=None, activation=None)
    assert model.config.encoder_dims == MODELS["unet"].presets["tiny"]["encoder_dims"]
    assert model.config.activation == "gelu"


@pytest.mark.parametrize(
    "name, bad",
    [("transformer", dict(num_layers=3)), ("transformer", dict(nhead=3)),
     ("unet", dict(num_layers=2)), ("unet", dict(activation="swishy")),
     ("mlp", dict(input_dim=2048, input_length=100)), ("mlp", dict(encoder_hidden_dims=[])),
     ("transformer", dict(encoder_dims=[0, 8]))],
)
def test_bad_configs_raise(name, bad):
    with pytest.raises(LcgenError):
        create_model(name, "default", **bad)


def test_mlp_length_mismatch_is_explained():
    model = create_model("mlp", "tiny", input_length=64)
    with pytest.raises(LcgenError, match="input_length=32"):
        model.forward_batch(make_batch("spectra", L=32))


def unet_reference(model, x):
    """The UNet written out in (B, C, L) with torch's plain 1-D operators, for comparison with
    the model's channels-last kernels."""
    import torch.nn.functional as F

    def block(seq, h):
        for m in seq:
            if isinstance(m, torch.nn.Conv1d):
                h = F.conv1d(h, m.weight, m.bias, padding=m.padding)
            elif isinstance(m, torch.nn.LayerNorm):
                h = F.layer_norm(h.transpose(1, 2), m.normalized_shape, m.weight, m.bias, m.eps).transpose(1, 2)
            else:
                h = m(h)
        return h

    h = F.conv1d(x, model.stem.weight, model.stem.bias, padding=3)
    skips = []
    for seq in model.encoder:
        h = block(seq, h)
        skips.append(h)
        h = F.max_pool1d(h, 2)
    h = block(model.bottleneck, h)
    encoded = h
    for i in reversed(range(model.levels)):
        up = F.conv_transpose1d(h, model.up[i].weight, model.up[i].bias, stride=2)
        h = block(model.decoder[i], torch.cat([up, skips[i]], 1))
    return F.conv1d(h, model.head.weight, model.head.bias)[:, 0], encoded


@pytest.mark.parametrize("dims, dtype", [(None, torch.float32), ([8, 128], torch.float32), ([8, 128], torch.float64)])
def test_unet_channels_last_kernels_match_plain_1d_operators(dims, dtype):
    """The tiny UNet (oneDNN's convolutions; from 16 input channels with _SameConv's weight
    gradient) and one whose level 1 is wide enough for the Winograd convolutions, against the
    same model written with plain 1-D operators: values and every gradient, to float32 rounding (1e-5 of each tensor's scale; sums over up to 3 x 256
    terms) and, in float64, to 1e-10."""
    from lcgen.models.unet import WINOGRAD_MIN_CHANNELS, Conv

    model = (tiny("unet") if dims is None else tiny("unet", encoder_dims=dims)).train().to(dtype)
    winograd = [m for m in model.modules() if isinstance(m, Conv) and m.kernel_size == (3,)
                and min(m.in_channels, m.out_channels) >= WINOGRAD_MIN_CHANNELS]
    assert len(winograd) == (0 if dims is None else 5)  # encoder level 1: 1 (8 -> 128 stays), bottleneck 2, decoder 2
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 64, generator=gen, dtype=dtype, requires_grad=True)
    out = model(x)
    ref, encoded = unet_reference(model, x)
    torch.testing.assert_close(out["reconstructed"], ref, rtol=0, atol=tol * ref.abs().max().item())
    torch.testing.assert_close(out["encoded"], encoded, rtol=0, atol=tol * encoded.abs().max().item())
    g = torch.randn(3, 64, generator=gen, dtype=dtype)
    got = torch.autograd.grad(out["reconstructed"], [x, *model.parameters()], g)
    want = torch.autograd.grad(ref, [x, *model.parameters()], g)
    for (name, _), a, b in zip([("x", x), *model.named_parameters()], got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=2 * tol * b.abs().max().item(), msg=name)


@pytest.mark.parametrize("tile", [6, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_winograd_conv3_matches_conv1d(dtype, tile):
    """Winograd F(6, 3) (the UNet's) and F(4, 3) against torch's Conv1d (width 3, padding 1): values
    and the gradients of x, weight and bias, with and without a bias, for lengths that are and are
    not multiples of the tile, one position, one sample and many (the tiles run over the batch's
    B L rows as one sequence, so every seam between samples is corrected, and the last tile is cut
    short). float64: rounding (1e-12 of each tensor's scale; a missed seam is off by the scale).
    float32: 2e-5 of scale, ~10x the worst seen (F(6, 3) 2e-6, F(4, 3) 1.6e-6 here; on a trained
    UNet's activations both stay within ~2e-6, as oneDNN's float32 convolution does)."""
    import torch.nn.functional as F

    from lcgen.models.winograd import winograd_conv3

    gen = torch.Generator().manual_seed(5)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for B, L, c_in, c_out, bias in [(1, 1, 3, 2, True), (3, 1, 3, 2, True), (2, 4, 3, 5, True), (3, 7, 6, 4, False),
                                    (4, 13, 5, 5, True), (2, 64, 40, 24, True), (1, 256, 128, 128, True),
                                    (3, 30, 8, 8, False)]:
        x = torch.randn(B, L, c_in, generator=gen, dtype=dtype, requires_grad=True)
        w = torch.randn(c_out, c_in, 3, generator=gen, dtype=dtype, requires_grad=True)
        b = torch.randn(c_out, generator=gen, dtype=dtype, requires_grad=True) if bias else None
        got = winograd_conv3(x, w, b, tile=tile)
        want = F.conv1d(x.transpose(1, 2), w, b, padding=1).transpose(1, 2)
        assert got.shape == want.shape and got.is_contiguous()
        scale = want.abs().max()
        torch.testing.assert_close(got, want, rtol=0, atol=tol * scale.item())
        g = torch.randn(want.shape, generator=gen, dtype=dtype)
        wrt = [x, w] + ([b] if bias else [])
        for name, a, r in zip("xwb", torch.autograd.grad(got, wrt, g), torch.autograd.grad(want, wrt, g)):
            torch.testing.assert_close(a, r, rtol=0, atol=tol * r.abs().max().item(), msg=name)


def test_winograd_matrices_from_their_points():
    """toom_cook gives Lavin & Gray's F(4, 3) (points 0, ±1, ±2, ∞) up to each component's scale,
    and every F(m, 3) it makes computes the correlation exactly: Aᵀ [(G g) ⊙ (Bᵀ d)] = the 3-tap
    correlation of d, for the unit vectors g and d (in exact rationals through float64)."""
    from fractions import Fraction

    from lcgen.models.winograd import toom_cook, transforms

    bt = transforms(4)[2]
    lavin_bt = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                             [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
    ratio = bt / lavin_bt.where(lavin_bt != 0, torch.ones(()))
    for row, lavin_row, r in zip(bt, lavin_bt, ratio):  # rows equal up to a factor of ±1
        assert ((row == 0) == (lavin_row == 0)).all() and (r[lavin_row != 0].abs() == 1).all()
        assert (r[lavin_row != 0] == r[lavin_row != 0][0]).all()
    for m, points in [(2, [0, 1, -1]), (4, [0, 1, -1, 2, -2]),
                      (6, [0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)])]:
        at, g, bt = toom_cook(m, points)
        for k in range(3):
            for i in range(m + 2):
                y = at @ ((g @ torch.eye(3, dtype=torch.float64)[k]) * (bt @ torch.eye(m + 2, dtype=torch.float64)[i]))
                want = torch.tensor([float(i == j + k) for j in range(m)], dtype=torch.float64)  # y[j] = d[j + k]
                torch.testing.assert_close(y, want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("tile", [6, 4])
def test_winograd_input_transform_is_bt_of_each_tiles_padded_rows(tile):
    """V = Bᵀ d for every tile, d the n rows from m t - 1 to m t + m of x with zero rows beyond its
    ends, for every row count from 1 to 4 tiles + 3 (the inner tiles read x through overlapping
    strided windows, the edge tiles a padded copy: a window one row off, or an edge row not
    zeroed, is off by the scale), with x a view that starts inside its storage; float64 to 1e-13.
    Its transpose (backward's dx) against the same definition."""
    from lcgen.models.winograd import _input_transform, _input_transform_t, _matrices

    t = _matrices(tile, torch.float64)
    n, m = tile + 2, tile
    gen = torch.Generator().manual_seed(7)
    for rows in range(1, 4 * m + 4):
        tiles, C = -(-rows // m), 3
        storage = torch.randn(rows + 2, C, generator=gen, dtype=torch.float64)
        x = storage[1:rows + 1]  # storage offset C
        padded = torch.cat([torch.zeros(1, C, dtype=torch.float64), x, torch.zeros(m * tiles + 1 - rows, C, dtype=torch.float64)])
        d = torch.stack([padded[m * k:m * k + n] for k in range(tiles)])  # (T, n, C)
        want = t.bt @ d
        got = _input_transform(x, t, torch.full((tiles, n, C), float("nan"), dtype=torch.float64))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13 * want.abs().max().item())
        dv = torch.randn(tiles, n, C, generator=gen, dtype=torch.float64)
        dx_padded = torch.zeros_like(padded)
        for k in range(tiles):
            dx_padded[m * k:m * k + n] += t.bt.t() @ dv[k]
        got_t = _input_transform_t(dv, t, torch.empty(rows, C, dtype=torch.float64))
        torch.testing.assert_close(got_t, dx_padded[1:rows + 1], rtol=0, atol=1e-13 * dx_padded.abs().max().item())


def test_winograd_conv3_of_parts_is_that_of_their_concatenation():
    """Input in parts along the channels (the UNet decoder's upsampled input and skip): values and
    each part's gradient, with the weight's and the bias's, against Conv1d of the concatenation."""
    import torch.nn.functional as F

    from lcgen.models.winograd import winograd_conv3

    gen = torch.Generator().manual_seed(6)
    parts = [torch.randn(2, 16, c, generator=gen, dtype=torch.float64, requires_grad=True) for c in (5, 3, 7)]  # 16: 2 tiles + 4
    w = torch.randn(4, 15, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    got = winograd_conv3(parts, w, b)
    want = F.conv1d(torch.cat(parts, -1).transpose(1, 2), w, b, padding=1).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * want.abs().max().item())
    g = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    wrt = [*parts, w, b]
    for a, r in zip(torch.autograd.grad(got, wrt, g), torch.autograd.grad(want, wrt, g)):
        assert a.shape == r.shape
        torch.testing.assert_close(a, r, rtol=0, atol=1e-12 * r.abs().max().item())
    winograd_conv3(torch.randn(3, 32, 15, generator=gen, dtype=torch.float64), w, b)  # reuses the scratch buffers
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * want.abs().max().item())  # an output is its own


def test_unet_same_conv_matches_conv1d():
    """The UNet's oneDNN-path convolution with its weight gradient as one matrix product per tap
    (``unet._SameConv``: widths 1, 3 and 5, padding width // 2, input whole or in parts along the
    channels) against Conv1d of the concatenation: values and the gradients of every part, the
    weight and the bias to float64 rounding (1e-12 of scale; a tap off by one position is off by
    the scale itself), also when the input needs no gradient; the stem's 2 channels stay on
    oneDNN's own backward."""
    import torch.nn.functional as F

    from lcgen.models.unet import SAME_CONV_MIN_CHANNELS, Conv

    gen = torch.Generator().manual_seed(9)
    for k, widths, c_out, length, input_grad in [(3, [16], 5, 12, True), (1, [20], 1, 8, True), (5, [16, 9], 6, 10, True),
                                                 (3, [17], 4, 7, False), (3, [8, 8], 3, 2, True)]:
        conv = Conv(sum(widths), c_out, k, padding=k // 2).double()
        assert conv.in_channels >= SAME_CONV_MIN_CHANNELS
        parts = [torch.randn(3, length, c, generator=gen, dtype=torch.float64, requires_grad=input_grad)
                 for c in widths]
        got = conv(parts if len(parts) > 1 else parts[0])
        assert got.grad_fn is not None and "SameConv" in type(got.grad_fn).__name__ and got.is_contiguous()
        want = F.conv1d(torch.cat(parts, -1).transpose(1, 2), conv.weight, conv.bias, padding=k // 2).transpose(1, 2)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * want.abs().max().item())
        g = torch.randn(want.shape, generator=gen, dtype=torch.float64)
        wrt = [*parts, conv.weight, conv.bias] if input_grad else [conv.weight, conv.bias]
        for a, b in zip(torch.autograd.grad(got, wrt, g), torch.autograd.grad(want, wrt, g)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12 * b.abs().max().item())
    stem = Conv(2, 4, 7, padding=3)
    assert "SameConv" not in type(stem(torch.randn(1, 8, 2, requires_grad=True)).grad_fn).__name__


def test_unet_norm_gelu_equals_layer_norm_then_gelu_exactly():
    """The UNet's fused LayerNorm + GELU (statistics kept, normalised values made again, output in a pooled
    buffer) gives the very numbers of nn.LayerNorm then nn.GELU: values and the gradients of the
    input, gain and bias, bit for bit, in float32 and float64; a second call does not overwrite
    the first one's output while it is alive."""
    from lcgen.models.unet import norm_act

    gen = torch.Generator().manual_seed(8)
    for dtype in (torch.float32, torch.float64):
        norm, act = nn.LayerNorm(24).to(dtype), nn.GELU()
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5, generator=gen)
            norm.bias.normal_(generator=gen)
        y = torch.randn(3, 40, 24, generator=gen, dtype=dtype, requires_grad=True)
        got, want = norm_act(norm, act, y), act(norm(y))
        assert got.grad_fn is not None and "NormGelu" in type(got.grad_fn).__name__
        assert torch.equal(got, want)
        other = norm_act(norm, act, torch.randn(3, 40, 24, generator=gen, dtype=dtype))  # same shape: the pool
        assert torch.equal(got, want) and not torch.equal(other, want)
        g = torch.randn(want.shape, generator=gen, dtype=dtype)
        wrt = [y, norm.weight, norm.bias]
        for a, b in zip(torch.autograd.grad(got, wrt, g), torch.autograd.grad(want, wrt, g)):
            assert torch.equal(a, b)


def test_pooled_buffers_are_reused_only_when_nothing_refers_to_them():
    """``pooled`` hands a buffer out again once no tensor (a view, or a tensor autograd saved for
    backward) refers to its memory, and never while one does; a request takes a free buffer of
    n to 2n elements."""
    from lcgen.models.layers import pooled

    like = torch.empty(0, dtype=torch.float64)
    a = pooled((5, 7), like)
    a_ptr = a.data_ptr()
    b = pooled((7, 5), like)  # a is alive: another buffer
    assert b.data_ptr() != a_ptr
    view = a[1:]
    del a
    assert pooled((35,), like).data_ptr() not in (a_ptr, b.data_ptr())  # the view holds a's memory
    del view
    assert pooled((35,), like).data_ptr() == a_ptr  # now free (and freed again at once)
    w = torch.ones(35, dtype=torch.float64, requires_grad=True)
    c = pooled((35,), like).copy_(torch.arange(35.0))
    c_ptr = c.data_ptr()
    loss = (w * c).sum()  # autograd saves c
    del c
    assert pooled((35,), like).data_ptr() != c_ptr
    loss.backward()
    assert torch.equal(w.grad, torch.arange(35.0, dtype=torch.float64))
    del loss
    assert pooled((35,), like).data_ptr() == c_ptr
    assert pooled((35,), torch.empty(0, dtype=torch.float32)).dtype == torch.float32
    big_ptr = pooled((100,), like).data_ptr()
    assert pooled((60, 1), like).data_ptr() == big_ptr  # a smaller batch takes a free buffer of n to 2n
    assert pooled((40,), like).data_ptr() != big_ptr  # 100 > 2 x 40



def test_pooled_without_the_storage_count_is_a_plain_empty(monkeypatch):
    """Where torch lacks the private storage use count, ``pooled`` keeps nothing: every request is
    a new tensor of the right shape and dtype, even when the last one is free."""
    from lcgen.models import layers

    monkeypatch.setattr(layers, "_only_the_pool", lambda: None)
    like = torch.empty(0, dtype=torch.float64)
    layers.pooled((5, 7), like)  # dropped at once: a pool would hand its memory out again
    b = layers.pooled((5, 7), like)
    assert b.shape == (5, 7) and b.dtype == torch.float64
    kept = layers._POOL.__dict__.get("buffers", {}).get(torch.float64, [])
    assert all(buf.data_ptr() != b.data_ptr() for buf in kept)  # nothing of b's is kept


def test_unet_max_pool_equals_max_pool1d_exactly():
    """The UNet's max over pairs of positions (channels-last, bool winners kept) against
    F.max_pool1d: values and gradient bit for bit, with ties (small integers), float32 and float64."""
    import torch.nn.functional as F

    from lcgen.models.unet import max_pool

    gen = torch.Generator().manual_seed(9)
    for dtype in (torch.float32, torch.float64):
        x = torch.randint(-2, 3, (3, 32, 6), generator=gen).to(dtype).requires_grad_()
        got, want = max_pool(x), F.max_pool1d(x.transpose(1, 2), 2).transpose(1, 2)
        assert torch.equal(got, want)
        g = torch.randn(want.shape, generator=gen, dtype=dtype)
        assert torch.equal(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])
        with torch.no_grad():
            assert torch.equal(max_pool(x), want)


def test_transformer_level_convolutions_match_torch_conv1d():
    """Down and Up (matrix products on (B, L, D)) against torch's Conv1d / ConvTranspose1d on
    (B, D, L), values and gradients, at lengths down to one coarse position."""
    import torch.nn.functional as F

    from lcgen.models.transformer import Down, Up

    torch.manual_seed(0)
    down, up = Down(6, 10), Up(10, 6)
    for L in (2, 4, 18):
        x = torch.randn(3, L, 6, requires_grad=True)
        got = down(x)
        want = F.conv1d(x.transpose(1, 2), down.weight, down.bias, stride=2, padding=1).transpose(1, 2)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        g = torch.randn_like(got)
        for a, b in zip(torch.autograd.grad(got, [x, down.weight, down.bias], g),
                        torch.autograd.grad(want, [x, down.weight, down.bias], g)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        c = torch.randn(3, L // 2, 10, requires_grad=True)
        got = up(c)
        want = F.conv_transpose1d(c.transpose(1, 2), up.weight, up.bias, stride=2, padding=1).transpose(1, 2)
        assert got.shape == (3, L, 6)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        g = torch.randn_like(got)
        for a, b in zip(torch.autograd.grad(got, [c, up.weight, up.bias], g),
                        torch.autograd.grad(want, [c, up.weight, up.bias], g)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_dropout_rate_scale_and_seeding():
    from lcgen.models.layers import Dropout

    drop = Dropout(0.1)
    x = torch.ones(400, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 6554 / 2**16) < 4 * (0.1 * 0.9 / x.numel()) ** 0.5  # p rounded to 2**-16
    assert torch.allclose(y[y != 0], torch.tensor(2**16 / (2**16 - 6554)))  # kept ones scaled: mean kept
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, 2 * y.detach())  # the same mask in the backward pass
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # torch's default generator drives it
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0)(x), x)


def test_time_encoding_matches_direct_formula():
    """pe = [sin(2 pi t / P_k), cos(2 pi t / P_k)], P_k log-spaced over 0.00278 .. 1640 d."""
    import math

    from lcgen.models.transformer import TimeEncoding

    enc = TimeEncoding(8, 0.00278, 1640.0)
    t = torch.tensor([[0.0, 0.5, 17.25, 499.0]])
    periods = torch.logspace(math.log10(0.00278), math.log10(1640.0), 4, dtype=torch.float64)
    frequency = (1 / periods).float().double()  # the model keeps 1/P_k in float32
    angle = 2 * math.pi * t.double()[..., None] * frequency
    expected = torch.cat([angle.sin(), angle.cos()], -1).float()
    assert torch.allclose(enc(t), expected, atol=1e-5)
