"""Width-3 convolutions of channels-last (B, L, C) tensors by Winograd's minimal filtering F(4, 3).

A convolution of width 3 (``padding=1``, stride 1, as ``Conv1d`` computes it, i.e. a correlation)
gives each output ``y[l] = b + sum_k W[:, :, k] x[l + k - 1]``. Winograd's F(m, r) computes m
outputs of an r-tap filter with m + r - 1 multiplications instead of m r (Winograd 1980; Lavin &
Gray 2016, "Fast algorithms for convolutional neural networks"). Here, for tiles of m = 4
outputs, with the 6 input rows under a tile ``d`` (B, T, 6, C_in) (T = L / 4 tiles):

    V = Bᵀ d        (6 rows per tile, cheap additions)
    U = G W         (6 matrices C_in x C_out, from the weight, once per call)
    M_j = V_j U_j   (six matrix products (B T, C_in) x (C_in, C_out))
    y = Aᵀ M        (4 outputs per tile, cheap additions)

The matrix products do 6 / 12 = half the multiply-adds of the direct convolution, and they are
large matrix products, which run near a CPU's peak; the transforms are batched products with
the small matrices. The backward pass (:class:`_WinogradConv3`) runs the transposed maps, so
it too does half the direct multiply-adds: dM = A dy, dV_j = dM_j U_jᵀ, dx = B dV, dU_j = V_jᵀ dM_j,
dW = Gᵀ dU; it computes V again from the saved x rather than keeping it (1.5x x's size).

The interpolation points are 0, ±1, ±2 and ∞ (Lavin & Gray's F(4, 3)): Bᵀ and Aᵀ have small
integer entries and only G carries fractions, so in float32 the result is the direct
convolution's to ~1e-6 relative (``tests/test_models.py`` checks against ``F.conv1d``).

On the CPU the transient products (V, M and, backward, dM, dV) are written into two reusable
buffers (:func:`lcgen.models.layers.scratch`), and the output and the input's gradient into
pooled ones (:func:`lcgen.models.layers.pooled`), not into fresh memory.
"""

from __future__ import annotations

import torch

from lcgen.models.layers import pooled, scratch

TILE = 4  # outputs per tile (m); 6 = m + 2 inputs per tile

# Rows: the 6 transformed components; columns: the 6 input rows under a tile.
BT = torch.tensor([[4, 0, -5, 0, 1, 0],
                   [0, -4, -4, 1, 1, 0],
                   [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0],
                   [0, 2, -1, -2, 1, 0],
                   [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
G = torch.tensor([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], dtype=torch.float64)
AT = torch.tensor([[1, 1, 1, 1, 1, 0],
                   [0, 1, -1, 2, -2, 0],
                   [0, 1, 1, 4, 4, 0],
                   [0, 1, -1, 8, -8, 1]], dtype=torch.float64)
_BT_MID = BT[:, 1:5]  # on the tile's own 4 rows


def _input_transform(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, L, C) -> V = Bᵀ d (B, T, 6, C): the 6 rows d of x (zero beyond the ends) under each
    tile of 4 outputs, d = (x[4t - 1], x[4t .. 4t + 3], x[4t + 4]). Bᵀ's middle four columns act
    on the tile's own 4 rows as one batched matrix product; its first and last columns have one
    nonzero entry each (4 and 1), for the rows borrowed from the neighbouring tiles. ``out``: a
    (B, T, 6, C) tensor to write V into."""
    B, L, C = x.shape
    rows = x.view(B, L // TILE, TILE, C)
    v = torch.matmul(_BT_MID.to(x), rows, out=out)  # (B, T, 6, C)
    v[:, 1:, 0].add_(rows[:, :-1, 3], alpha=4)  # 4 x[4t - 1]
    v[:, :-1, 5].add_(rows[:, 1:, 0])  # x[4t + 4]
    return v


def _input_transform_t(dv: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_input_transform`: dV (B, T, 6, C) -> dx (B, 4 T, C)."""
    B, T, _, C = dv.shape
    dx = torch.matmul(_BT_MID.to(dv).t(), dv, out=pooled((B, T, TILE, C), dv))  # (B, T, 4, C)
    dx[:, :-1, 3].add_(dv[:, 1:, 0], alpha=4)
    dx[:, 1:, 0].add_(dv[:, :-1, 5])
    return dx.view(B, TILE * T, C)


class _WinogradConv3(torch.autograd.Function):
    """y = Aᵀ [(G W) ⊙ (Bᵀ d)] + b as six matrix products, and its transposed maps backward.

    The input may come in parts along the channels (``xs``, x = their concatenation): each part
    is transformed apart and its products are summed into the same M, so a concatenation (the
    UNet decoder's skip) is never written, and backward gives each part its own gradient."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bias: torch.Tensor | None, *xs: torch.Tensor) -> torch.Tensor:
        B, L, _ = xs[0].shape
        T = L // TILE
        u = torch.einsum("jk,oik->jio", G.to(weight), weight)  # (6, C_in, C_out)
        c_out = weight.shape[0]
        m = scratch(1, (6, B * T, c_out), weight)
        for i, (x, u_part) in enumerate(zip(xs, u.split([x.shape[2] for x in xs], dim=1))):
            v = _input_transform(x, scratch(0, (B, T, 6, x.shape[2]), x)).view(B * T, 6, -1).transpose(0, 1)
            m = torch.bmm(v, u_part, out=m) if i == 0 else m.baddbmm_(v, u_part)  # (6, B T, C_out)
            del v  # temporaries go as soon as they are used: the step's peak memory is made of them
        at = AT.to(xs[0]).expand(B * T, TILE, 6)
        m = m.transpose(0, 1)  # (B T, 6, C_out), strided
        y = pooled((B * T, TILE, c_out), m)
        y = torch.bmm(at, m, out=y) if bias is None else torch.baddbmm(bias, at, m, out=y)  # (B T, 4, C_out)
        ctx.save_for_backward(u, *xs)  # not V: 1.5x x's size; computing it again costs ~2 % of the backward
        ctx.has_bias = bias is not None
        return y.view(B, L, -1)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        u, *xs = ctx.saved_tensors
        B, L, _ = xs[0].shape
        T = L // TILE
        db = dy.sum((0, 1)) if ctx.has_bias else None
        c_out = dy.shape[2]
        dm = torch.matmul(AT.to(dy).t(), dy.reshape(B * T, TILE, c_out),
                          out=scratch(1, (B * T, 6, c_out), dy)).transpose(0, 1)  # (6, B T, C_out), strided
        del dy
        dxs, dus = [], []
        for x, u_part in zip(xs, u.split([x.shape[2] for x in xs], dim=1)):
            c_part = x.shape[2]
            dv = torch.bmm(dm, u_part.transpose(1, 2), out=scratch(0, (6, B * T, c_part), x))  # (6, B T, C_part)
            dxs.append(_input_transform_t(dv.view(6, B, T, c_part).permute(1, 2, 0, 3)))
            del dv
            v = _input_transform(x, scratch(0, (B, T, 6, c_part), x)).view(B * T, 6, c_part).transpose(0, 1)
            dus.append(torch.bmm(v.transpose(1, 2), dm))  # (6, C_part, C_out)
            del v
        dw = torch.einsum("jk,jio->oik", G.to(dm), torch.cat(dus, 1))
        return dw, db, *dxs


def winograd_conv3(x: torch.Tensor | list[torch.Tensor], weight: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Width-3 convolution (padding 1) of a channels-last x (B, L, C_in), L a multiple of 4, with a
    ``Conv1d`` weight (C_out, C_in, 3) and bias (C_out) -> (B, L, C_out), by Winograd F(4, 3).

    x may be a list of parts (B, L, C_i) whose channels, concatenated, are the C_in: the result is
    that of the concatenation, which is never made."""
    xs = [x] if isinstance(x, torch.Tensor) else list(x)
    return _WinogradConv3.apply(weight, bias, *(p.contiguous() for p in xs))
