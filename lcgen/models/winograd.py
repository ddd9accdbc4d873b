"""Width-3 convolutions of channels-last (B, L, C) tensors by Winograd's minimal filtering F(m, 3).

A convolution of width 3 (``padding=1``, stride 1, as ``Conv1d`` computes it, i.e. a correlation)
gives each output ``y[l] = b + sum_k W[:, :, k] x[l + k - 1]``. Winograd's F(m, r) computes m
outputs of an r-tap filter with n = m + r - 1 multiplications instead of m r (Winograd 1980; Lavin &
Gray 2016, "Fast algorithms for convolutional neural networks"). Here, for tiles of m outputs,
with the n input rows under a tile ``d`` (T tiles, each (n, C_in)):

    V = Bᵀ d        (n rows per tile, cheap additions)
    U = G W         (n matrices C_in x C_out, from the weight, once per call)
    M_j = V_j U_j   (n matrix products (T, C_in) x (C_in, C_out))
    y = Aᵀ M        (m outputs per tile, cheap additions)

The matrix products do n / (3 m) of the direct convolution's multiply-adds, and they are large
matrix products, which run near a CPU's peak; the transforms are batched products with the
small matrices. The backward pass (:class:`_WinogradConv3`) runs the transposed maps, so it too
does that fraction of the work: dM = A dy, dV_j = dM_j U_jᵀ, dx = B dV, dU_j = V_jᵀ dM_j,
dW = Gᵀ dU; it computes V again from the saved x rather than keeping it. U and dU are held
transposed, (n, C_out, C_in), which the products take as they lie: so each is one matrix product
from or into the weight's own taps, with no permuted copy of a weight-sized tensor.

The default tile is m = 6, F(6, 3): 8 products per 6 outputs, 4/9 of the direct multiply-adds
(F(4, 3): 6 per 4, 1/2). The matrices come from Toom-Cook interpolation at the points 0, ±1, ±2,
±1/2 and ∞ (:func:`toom_cook`; F(4, 3): 0, ±1, ±2, ∞). Larger tiles need more points, further
from 0 and ±1, and the float32 error grows with them: on the inputs a UNet's convolutions see
(``benchmarks/winograd_accuracy.py``: the demo's trained UNet and a fresh default-width one),
F(6, 3)'s RMS error is 1.0-1.3x F(4, 3)'s, 1.7-5.5e-7 of the output's RMS (worst element
0.6-1.6e-6 of the largest), no larger than oneDNN's direct float32 convolution's (2.7-7.8e-7);
float64 stays at rounding.

The tiles run over the batch's positions as one sequence of B L rows, so L need not be a
multiple of m (only the last of all the tiles is cut short). That convolution of the
concatenated samples differs from the samples' own only at the B - 1 seams, where it reads the
neighbouring sample instead of the zero padding: ``y[b, L - 1]`` gained ``W_2 x[b + 1, 0]`` and
``y[b + 1, 0]`` gained ``W_0 x[b, L - 1]``, which are taken off again (two small matrix products,
and likewise in backward for dx and dW).

The input transform reads the tiles whose n rows lie inside x as overlapping windows of x (a
strided view, no copy) in one batched product with the whole Bᵀ. The bias is added to the one
product that Aᵀ passes with weight 1 into every output of its tile (the point 1): T C additions
before the output transform instead of a bias written under all N C outputs; its gradient is
that product's row of dM summed over the tiles (again T C terms, not N C).

On the CPU the transient products (V, M and, backward, dM, dV) are written into two reusable
buffers (:func:`lcgen.models.layers.scratch`), and the output and the input's gradient into
pooled ones (:func:`lcgen.models.layers.pooled`), not into fresh memory.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import NamedTuple

import torch

from lcgen.models.layers import pooled, scratch


def toom_cook(m: int, points: list[Fraction]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aᵀ (m, n), G (n, 3) and Bᵀ (n, n) of Winograd's F(m, 3) (n = m + 2) from n - 1 finite
    interpolation points and ∞, in float64, exact where the entries are binary fractions.

    The linear convolution s = g * h of a 3-tap g and an m-tap h is s = V⁻¹ [(G g) ⊙ (H h)], with
    G, H and V the polynomials' evaluations at the points (∞: the leading coefficient); the
    correlation F(m, 3) is its transpose in h: y = Hᵀ [(G g) ⊙ (V⁻ᵀ d)], so Aᵀ = Hᵀ and Bᵀ = V⁻ᵀ.
    Each row of Bᵀ is scaled to coprime integers and G's row by the inverse (M is unchanged)."""
    n = m + 2
    assert len(points) == n - 1

    def evaluations(k: int) -> list[list[Fraction]]:  # (n, k): polynomial coefficients -> values
        return [[Fraction(p) ** i for i in range(k)] for p in points] + [[Fraction(int(i == k - 1)) for i in range(k)]]

    v = evaluations(n)
    inverse = [[Fraction(int(i == j)) for j in range(n)] for i in range(n)]  # Gauss-Jordan, exact
    for col in range(n):
        pivot = next(r for r in range(col, n) if v[r][col] != 0)
        v[col], v[pivot], inverse[col], inverse[pivot] = v[pivot], v[col], inverse[pivot], inverse[col]
        scale = v[col][col]
        v[col], inverse[col] = [a / scale for a in v[col]], [a / scale for a in inverse[col]]
        for r in range(n):
            if r != col and v[r][col] != 0:
                f = v[r][col]
                v[r] = [a - f * b for a, b in zip(v[r], v[col])]
                inverse[r] = [a - f * b for a, b in zip(inverse[r], inverse[col])]
    bt = [list(row) for row in zip(*inverse)]  # V⁻ᵀ
    g = evaluations(3)
    for j, row in enumerate(bt):  # scale row j of Bᵀ to coprime integers, G's row j by the inverse
        lcm = math.lcm(*(a.denominator for a in row))
        ints = [int(a * lcm) for a in row]
        factor = Fraction(lcm, math.gcd(*ints)) * (1 if next(a for a in ints if a) > 0 else -1)
        bt[j] = [a * factor for a in row]
        g[j] = [a / factor for a in g[j]]
    at = [list(col) for col in zip(*evaluations(m))]

    def tensor(rows):
        return torch.tensor([[float(a) for a in row] for row in rows], dtype=torch.float64)

    return tensor(at), tensor(g), tensor(bt)


_HALF = Fraction(1, 2)
POINTS = {4: [0, 1, -1, 2, -2], 6: [0, 1, -1, 2, -2, _HALF, -_HALF]}  # tile m: its finite points
TILE = 6  # outputs per tile (m) by default


@functools.cache
def transforms(tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Aᵀ, G, Bᵀ) of F(tile, 3) in float64, made at the first use (no lcgen module makes a
    tensor as it is imported: :func:`lcgen.workers.choose_huge_pages`)."""
    return toom_cook(tile, POINTS[tile])


class _Matrices(NamedTuple):
    """One tile's transforms in one dtype, as the functions below use them."""

    at: torch.Tensor  # Aᵀ (m, n)
    at_t: torch.Tensor  # A (n, m), contiguous
    g: torch.Tensor  # G (n, 3)
    bt: torch.Tensor  # Bᵀ (n, n)
    mid_t: torch.Tensor  # Bᵀ's middle m columns (on a tile's own rows), transposed (m, n), contiguous
    before: list[tuple[int, float]]  # Bᵀ's first column (the row before the tile): (row, entry) where nonzero
    after: list[tuple[int, float]]  # its last column (the row after the tile)
    ones: int  # the product (point 1) that Aᵀ adds with weight 1 into every output of its tile


@functools.cache
def _matrices(tile: int, dtype: torch.dtype) -> _Matrices:
    at, g, bt = transforms(tile)
    # G's first and last rows (the points 0 and ∞) touch one tap each, which backward's seam
    # correction of the weight's gradient relies on
    assert (g[0, 1:] == 0).all() and (g[-1, :-1] == 0).all()
    # the bias enters (and its gradient leaves) through the one product that every output of a
    # tile takes with weight 1
    ones = next(j for j in range(at.shape[1]) if (at[:, j] == 1).all())
    return _Matrices(at.to(dtype), at.t().contiguous().to(dtype), g.to(dtype), bt.to(dtype),
                     bt[:, 1:-1].t().contiguous().to(dtype),
                     [(j, bt[j, 0].item()) for j in range(bt.shape[0]) if bt[j, 0] != 0],
                     [(j, bt[j, -1].item()) for j in range(bt.shape[0]) if bt[j, -1] != 0], ones)


def _small_mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """out = a b for the short last tile ((n or m) x at most n rows), as a product and a sum:
    torch runs element-wise work this small on the calling thread, where a BLAS call wakes the
    other threads (on two threads of a busy machine ~5 ms of CPU per call, measured)."""
    torch.sum(a[:, :, None] * b[None], dim=1, out=out)


def _input_transform(x: torch.Tensor, t: _Matrices, out: torch.Tensor) -> torch.Tensor:
    """x (N, C) -> V = Bᵀ d (T, n, C) into ``out``: the n rows d of x (zero beyond the ends) under
    each tile of m outputs, d = (x[m t - 1], x[m t .. m t + m - 1], x[m t + m]). The tiles whose
    n rows all lie inside x (all but the first and the last one or two) read them as overlapping
    windows of x (a strided view, no copy) in one batched matrix product with the whole Bᵀ; the
    others are copied into a small zero-padded block first."""
    N, C = x.shape
    m, n = t.mid_t.shape
    tiles = out.shape[0]
    inner = max(0, min(tiles, (N - 1) // m) - 1)  # tiles 1 .. inner: m t - 1 >= 0 and m t + m <= N - 1
    if inner:
        windows = x.as_strided((inner, n, C), (m * C, C, 1), x.storage_offset() + (m - 1) * C)
        torch.bmm(t.bt.expand(inner, n, n), windows, out=out[1:inner + 1])
    for tile in [0, *range(inner + 1, tiles)]:  # the edges: rows outside x are zero
        d = x.new_zeros(n, C)
        lo, hi = max(0, m * tile - 1), min(N, m * tile + m + 1)
        d[lo - (m * tile - 1):hi - (m * tile - 1)] = x[lo:hi]
        _small_mm(t.bt, d, out[tile])
    return out


def _input_transform_t(dv: torch.Tensor, t: _Matrices, out: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_input_transform`: dV (T, n, C) -> dx (N, C) into ``out``."""
    N, C = out.shape
    (m, n), tiles = t.mid_t.shape, dv.shape[0]
    full, rest = divmod(N, m)
    rows = out[:m * full].view(full, m, C)
    torch.bmm(t.mid_t.expand(full, m, n), dv[:full], out=rows)
    if rest:
        _small_mm(t.mid_t[:rest], dv[full], out[m * full:])
    for j, a in t.before:
        rows[:tiles - 1, m - 1].add_(dv[1:, j], alpha=a)
    after = out[m::m]
    for j, a in t.after:
        after.add_(dv[:after.shape[0], j], alpha=a)
    return out


def _output_transform(mm: torch.Tensor, t: _Matrices, out: torch.Tensor) -> torch.Tensor:
    """M (T, n, C) -> y = Aᵀ M (N, C) into ``out``."""
    N, C = out.shape
    m, n = t.at.shape
    full, rest = divmod(N, m)
    torch.bmm(t.at.expand(full, m, n), mm[:full], out=out[:m * full].view(full, m, C))
    if rest:
        _small_mm(t.at[:rest], mm[full], out[m * full:])
    return out


def _output_transform_t(dy: torch.Tensor, t: _Matrices, out: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_output_transform`: dy (N, C) -> dM = A dy (T, n, C) into ``out``."""
    N, C = dy.shape
    n, m = t.at_t.shape
    full, rest = divmod(N, m)
    torch.bmm(t.at_t.expand(full, n, m), dy[:m * full].view(full, m, C), out=out[:full])
    if rest:
        _small_mm(t.at_t[:, :rest], dy[m * full:], out[full])
    return out


class _WinogradConv3(torch.autograd.Function):
    """y = Aᵀ [(G W) ⊙ (Bᵀ d)] + b as n matrix products, and its transposed maps backward; the
    samples' seams corrected (see the module docstring) by one small matrix product each, written
    into the result in place (each op is a parallel region, which costs most on a busy machine).

    The input may come in parts along the channels (``xs``, x = their concatenation): each part
    is transformed apart and its products are summed into the same M, so a concatenation (the
    UNet decoder's skip) is never written, and backward gives each part its own gradient."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bias: torch.Tensor | None, tile: int, *xs: torch.Tensor) -> torch.Tensor:
        t = _matrices(tile, weight.dtype)
        B, L, _ = xs[0].shape
        N, n, T = B * L, tile + 2, -(-B * L // tile)
        c_out = weight.shape[0]
        taps = weight.permute(2, 0, 1).contiguous()  # (3, C_out, C_in): W_k, for the seams
        ut = torch.mm(t.g, taps.view(3, -1)).view(n, c_out, -1)  # U_jᵀ = (G W)_jᵀ (n, C_out, C_in)
        widths = [x.shape[2] for x in xs]
        m = scratch(1, (n, T, c_out), weight)
        for i, (x, ut_part) in enumerate(zip(xs, ut.split(widths, dim=2))):
            v = _input_transform(x.view(N, -1), t, scratch(0, (T, n, x.shape[2]), x)).transpose(0, 1)
            u_part = ut_part.transpose(1, 2)  # (n, C_part, C_out), a transposed operand (no copy)
            m = torch.bmm(v, u_part, out=m) if i == 0 else m.baddbmm_(v, u_part)  # (n, T, C_out)
            del v  # temporaries go as soon as they are used: the step's peak memory is made of them
        if bias is not None:  # Aᵀ adds product `ones` into every output of its tile with weight 1
            m[t.ones].add_(bias)
        y = _output_transform(m.transpose(0, 1), t, pooled((N, c_out), m)).view(B, L, c_out)
        if B > 1:  # the seams: take off what each sample's ends read from its neighbours
            for x, w in zip(xs, taps.split(widths, dim=2)):
                torch.addmm(y[:-1, L - 1], x[1:, 0], w[2].t(), alpha=-1, out=y[:-1, L - 1])
                torch.addmm(y[1:, 0], x[:-1, L - 1], w[0].t(), alpha=-1, out=y[1:, 0])
        ctx.save_for_backward(taps, ut, *xs)  # not V: computing it again costs ~2 % of the backward
        ctx.has_bias, ctx.tile = bias is not None, tile
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        taps, ut, *xs = ctx.saved_tensors
        t = _matrices(ctx.tile, dy.dtype)
        B, L, c_out = dy.shape
        N, n, T = B * L, ctx.tile + 2, -(-B * L // ctx.tile)
        dy = dy.contiguous()
        dm = _output_transform_t(dy.view(N, c_out), t, scratch(1, (T, n, c_out), dy)).transpose(0, 1)  # (n, T, C_out)
        db = dm[t.ones].sum(0) if ctx.has_bias else None  # as forward added it: dM's row `ones` sums each tile's dy
        widths = [x.shape[2] for x in xs]
        dxs, dws = [], []
        for x, ut_part, w in zip(xs, ut.split(widths, dim=2), taps.split(widths, dim=2)):
            c_part = x.shape[2]
            dv = torch.bmm(dm, ut_part, out=scratch(0, (n, T, c_part), x))  # (n, T, C_part)
            dx = _input_transform_t(dv.transpose(0, 1), t, pooled((N, c_part), dy)).view(B, L, c_part)
            del dv
            v = _input_transform(x.view(N, c_part), t, scratch(0, (T, n, c_part), x)).transpose(0, 1)
            dut = torch.bmm(dm.transpose(1, 2), v)  # dU_jᵀ (n, C_out, C_part)
            del v
            if B > 1:  # the seams, as in forward: dx's, and the weight's through dU (G's first
                # and last rows touch only W_0 and W_2: dW_k = Σ_j G[j, k] dU_jᵀ)
                torch.addmm(dx[:-1, L - 1], dy[1:, 0], w[0], alpha=-1, out=dx[:-1, L - 1])
                torch.addmm(dx[1:, 0], dy[:-1, L - 1], w[2], alpha=-1, out=dx[1:, 0])
                torch.addmm(dut[-1], dy[:-1, L - 1].t(), x[1:, 0], alpha=-1 / t.g[-1, 2].item(), out=dut[-1])
                torch.addmm(dut[0], dy[1:, 0].t(), x[:-1, L - 1], alpha=-1 / t.g[0, 0].item(), out=dut[0])
            dxs.append(dx)
            # dW (C_out, C_part, 3) = Σ_j dU_jᵀ G[j]: one product on dUᵀ's memory as it lies, no permuted copy
            dws.append(torch.mm(dut.view(n, -1).t(), t.g).view(c_out, c_part, 3))
        dw = dws[0] if len(dws) == 1 else torch.cat(dws, 1)
        return dw, db, None, *dxs


def winograd_conv3(x: torch.Tensor | list[torch.Tensor], weight: torch.Tensor,
                   bias: torch.Tensor | None = None, tile: int = TILE) -> torch.Tensor:
    """Width-3 convolution (padding 1) of a channels-last x (B, L, C_in) with a ``Conv1d`` weight
    (C_out, C_in, 3) and bias (C_out) -> (B, L, C_out), by Winograd F(tile, 3) (tile 4 or 6).

    x may be a list of parts (B, L, C_i) whose channels, concatenated, are the C_in: the result is
    that of the concatenation, which is never made."""
    xs = [x] if isinstance(x, torch.Tensor) else list(x)
    return _WinogradConv3.apply(weight, bias, tile, *(p.contiguous() for p in xs))
