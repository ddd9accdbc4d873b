"""Issue 11: the transformer's contrastive objective (``contrastive_weight``): two windows of one
source curve agree on a projection of the pooled latent, the other curves' windows are negatives.
Off by default and then changes nothing; on, batches are pairs of windows of one curve, the loss
is InfoNCE, resume is exact, and the head is never part of the embedding."""

import csv
import dataclasses
import math

import h5py
import numpy as np
import pytest
import torch

from lcgen.embed.extract import pooled_latent
from lcgen.errors import LcgenError
from lcgen.features.convert import ConvertConfig, convert
from lcgen.masking import fixed_mask
from lcgen.models import create_model
from lcgen.train.data import iter_pair_batches, load_split, open_source, pair_curves, pair_plan
from lcgen.train.trainer import TrainConfig, complete_config, contrast_sums, fit, load_checkpoint, load_run, loss_sums
from tests.conftest import run_cli, torch_threads, write_sine_raw

WINDOW = 64


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """20 curves of 3 or 4 windows each (16 train, 2 validation, 2 test curves)."""
    d = tmp_path_factory.mktemp("contrast")
    write_sine_raw(d / "raw.h5", n_curves=20, seed=4, n_range=(130, 260))
    convert(ConvertConfig(input=str(d / "raw.h5"), output=str(d / "ts.h5"), max_length=WINDOW))
    return d / "ts.h5"


def config(data, runs, **changes):
    base = TrainConfig(model_name="transformer", preset="tiny", data=str(data), epochs=2, batch_size=8, lr=1e-3,
                       runs_dir=str(runs), device="cpu", threads=1)
    return dataclasses.replace(base, **changes)


def state(run_dir, which="last"):
    return load_checkpoint(run_dir / f"{which}.pt")["state_dict"]


def test_pair_plan_pairs_two_windows_of_one_curve_and_distinct_curves_per_batch():
    groups = np.repeat(np.arange(12), [1, 2, 3, 4, 5, 2, 2, 3, 1, 4, 2, 6])  # curves 0 and 8: one window
    rows = np.flatnonzero(groups != 11)  # curve 11 is not among the rows
    assert pair_curves(rows, groups) == 9
    plan = pair_plan(rows, groups, 4, 50, seed=3, epoch=2)
    assert plan.shape == (50, 8) and np.isin(plan, rows).all()
    pairs = plan.reshape(50, 4, 2)
    curves = groups[pairs]
    assert (curves[..., 0] == curves[..., 1]).all()  # a pair is one curve's
    assert (pairs[..., 0] != pairs[..., 1]).all()  # two different windows of it
    assert all(np.unique(c).size == 4 for c in curves[..., 0])  # four different curves a batch
    assert not np.isin(curves, [0, 8, 11]).any()
    assert np.unique(plan).size == rows.size - 2  # every window of a curve with two or more is drawn
    np.testing.assert_array_equal(plan, pair_plan(rows, groups, 4, 50, seed=3, epoch=2))  # (seed, epoch) fix it
    assert not np.array_equal(plan, pair_plan(rows, groups, 4, 50, seed=3, epoch=3))
    with pytest.raises(ValueError, match="9 curves have two or more windows, fewer than the 10 a batch needs"):
        pair_plan(rows, groups, 10, 1)


def test_pair_batches_read_the_plans_rows_with_their_curves(data):
    with open_source(data, "timeseries") as source:
        rows = np.arange(source.n_rows)
        plan = pair_plan(rows, source.groups, 3, 5, seed=1)
        batches = list(iter_pair_batches(source, plan, start_batch=1, buffer_rows=12))  # two batches a read
        with h5py.File(data) as f:
            flux = f["flux"][:]
    assert len(batches) == 4
    for k, batch in enumerate(batches, 1):
        np.testing.assert_array_equal(batch["index"].numpy(), plan[k])
        np.testing.assert_array_equal(batch["curve"].numpy(), source.groups[plan[k]])
        valid = batch["valid"].numpy()
        np.testing.assert_array_equal(batch["values"].numpy()[valid], flux[plan[k]][valid])


def test_contrast_sums_on_a_hand_built_batch():
    """Two curves, two windows each, the pairs' projections identical and the curves orthogonal:
    every row's positive has cos 1, its negatives cos 0, so ℓ = log(e^{1/τ} + 2) − 1/τ. Lengths do not
    matter (cosines); a row without another window of its curve does not count."""
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 0.5]])
    tau = 0.5
    expect = math.log(math.exp(1 / tau) + 2) - 1 / tau
    sums = contrast_sums(z, torch.tensor([7, 7, 9, 9]), tau)
    torch.testing.assert_close(sums, torch.tensor([4 * expect, 4.0]))
    sums = contrast_sums(z, torch.tensor([7, 7, 9, 8]), tau)  # rows 2 and 3 have no partner
    torch.testing.assert_close(sums, torch.tensor([2 * expect, 2.0]))
    # unrelated projections: a partner no closer than the others gives log(3) each
    sums = contrast_sums(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), torch.tensor([0, 0, 1, 1]), 1e9)
    torch.testing.assert_close(sums, torch.tensor([4 * math.log(3), 4.0]))


def test_weight_zero_is_bit_for_bit_as_before(data, tmp_path):
    """contrastive_weight 0 (the default; any temperature) trains exactly as lcgen did before the
    option existed: the losses and weights pinned from commit 14512d4 on this data."""
    run = fit(config(data, tmp_path, contrastive_temperature=0.5), name="off")
    assert [(r["train_loss"], r["val_loss"]) for r in run["history"]] == [
        (0.37853044690761384, 0.35987924961452683), (0.33373597507582836, 0.3593539876471684)]
    weights = state(run["run_dir"])
    assert float(sum(v.double().sum() for v in weights.values())) == 285.6549055248413
    assert not any(k.startswith("contrast_head") for k in weights) and "train_contrast" not in run["history"][0]


def test_the_head_is_made_last_and_is_not_in_the_embedding(data):
    torch.manual_seed(5)
    plain = create_model("transformer", "tiny").eval()
    torch.manual_seed(5)
    headed = create_model("transformer", "tiny", contrast_head=16).eval()
    a, b = plain.state_dict(), headed.state_dict()
    assert {k.split(".")[0] for k in set(b) - set(a)} == {"contrast_head"}
    assert all(torch.equal(a[k], b[k]) for k in a)  # the random-weight control is unchanged
    with open_source(data, "timeseries") as source:
        batch = {k: torch.as_tensor(v) for k, v in source.read(np.arange(5)).items()}
    with torch.no_grad():
        assert headed.forward_batch(batch)["contrast"].shape == (5, 16)
        assert list(headed.latents(batch)) == list(plain.latents(batch))
        before = pooled_latent(headed, batch, "all", "meanmax")
        assert torch.equal(before, pooled_latent(plain, batch, "all", "meanmax"))
        for p in headed.contrast_head.parameters():
            p.add_(1.0)
        assert torch.equal(before, pooled_latent(headed, batch, "all", "meanmax"))


def test_the_term_trains_the_encoder_and_head_not_the_decoder(data):
    torch.manual_seed(0)
    model = create_model("transformer", "tiny", contrast_head=16)
    with open_source(data, "timeseries") as source:
        batch = next(iter_pair_batches(source, pair_plan(np.arange(source.n_rows), source.groups, 3, 1)))
    batch["hidden"] = torch.zeros_like(batch["valid"])
    sums = loss_sums(model.forward_batch(batch), batch, TrainConfig(contrastive_weight=1.0))
    assert sums.shape == (6,) and sums[5] == 6
    (sums[4] / sums[5]).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(("contrast_head", "embed.")))
    decoder = [g for n, g in grads.items() if n.startswith(("decoder", "up", "fuse", "head", "norm_out"))]
    assert len(decoder) > 10 and all(g is None or not g.any() for g in decoder)


def test_history_value_and_exact_resume(data, tmp_path):
    """train_contrast/val_contrast in history.csv; val_contrast is InfoNCE over the fixed
    validation pairs with their fixed masks (recomputed here); val_loss includes weight x it; an
    interrupted run resumes bit for bit (the pair plan of an epoch comes from seed and epoch)."""
    cfg = config(data, tmp_path, contrastive_weight=0.5, contrastive_temperature=0.2)
    whole = fit(cfg, name="whole")
    first = fit(cfg, name="split", stop_after=1)
    second = fit(resume=first["run_dir"])
    a, b = state(whole["run_dir"]), state(second["run_dir"])
    assert any(k.startswith("contrast_head") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_contrast"] for r in whole["history"]] == [r["train_contrast"] for r in second["history"]]
    with open(whole["run_dir"] / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["train_contrast"]) > 0 and float(r["val_contrast"]) > 0 for r in rows)
    last = whole["history"][-1]
    assert last["val_loss"] == pytest.approx(last["val_masked"] + 0.1 * last["val_unmasked"] + 0.5 * last["val_contrast"],
                                             rel=1e-6)

    model, saved = load_run(whole["run_dir"], which="last")
    assert model.config.contrast_head == 128 and saved.contrastive_weight == 0.5
    val = load_split(whole["run_dir"])["val"]
    with open_source(data, "timeseries") as source:
        plan = pair_plan(val, source.groups, 2, 1, seed=0)  # 2 validation curves; 7 rows // 8 -> 1 batch
        batch = next(iter_pair_batches(source, plan))
    batch["hidden"] = fixed_mask(batch["valid"], batch["index"], seed=0, time=batch["time"],
                                 **dataclasses.asdict(saved.mask))
    with torch.no_grad():
        z = torch.nn.functional.normalize(model.forward_batch(batch)["contrast"].double(), dim=-1).numpy()
    s = z @ z.T / 0.2
    ell = [np.log(np.exp(np.delete(s[i], i)).sum()) - s[i, i ^ 1] for i in range(4)]
    assert last["val_contrast"] == pytest.approx(np.mean(ell), rel=1e-5)


def test_refusals_are_clear(data, tmp_path):
    with pytest.raises(LcgenError, match="the contrastive head is the transformer's; unet has none"):
        complete_config(dataclasses.replace(config(data, tmp_path, contrastive_weight=0.5), model_name="unet"))
    with pytest.raises(LcgenError, match="'contrastive_weight' = -1.0 must be >= 0"):
        complete_config(config(data, tmp_path, contrastive_weight=-1.0))
    with pytest.raises(LcgenError, match="'contrastive_temperature' = 0.0 must be > 0"):
        complete_config(config(data, tmp_path, contrastive_weight=1.0, contrastive_temperature=0.0))
    for size in (7, 2):
        with pytest.raises(LcgenError, match=f"batch_size = {size}: a batch holds pairs of windows of at least two "
                                             f"curves; use an even batch size >= 4"):
            complete_config(config(data, tmp_path, contrastive_weight=1.0, batch_size=size))
    with pytest.raises(LcgenError, match="batch_size/2 = 20 curves with two windows each, and the training split has "
                                         "16 curves with two or more windows; lower --batch-size"):
        fit(config(data, tmp_path, contrastive_weight=1.0, batch_size=40), name="big")
    assert not (tmp_path / "transformer" / "big").exists()
    plain = fit(config(data, tmp_path, epochs=1), name="plain")
    with pytest.raises(LcgenError, match="the model has no contrastive head .*from --init"):
        fit(config(data, tmp_path, contrastive_weight=1.0, init=str(plain["run_dir"])), name="ft")
    with pytest.raises(LcgenError, match="contrast_head=-1 must be >= 0"):
        create_model("transformer", "tiny", contrast_head=-1)
    result = run_cli("train", "unet", "--data", data, "--preset", "tiny", "--epochs", 1,
                     "--set", f"runs_dir={tmp_path}", "--set", "contrastive_weight=0.5", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 1 and "the contrastive head is the transformer's" in result.stderr
    assert "Traceback" not in result.stderr
