"""Dynamic power-of-two block masking, vectorised over the batch.

"Hidden" means hidden from the model: the masked autoencoder sees the values at visible
positions only and is scored on reconstructing the hidden ones.

Per sample (DESIGN.md §3):

1. the span is the range from its first to its last real (``valid``) position;
2. block size ``s = 2**p`` with ``p`` uniform over the powers of two in ``[min_block, max_block]``
   that leave at least two blocks in the span (a span too short for even ``min_block`` gets the
   largest power of two that does);
3. ratio ``r ~ U(min_ratio, max_ratio)``;
4. the span is cut into ``n = ceil(span / s)`` aligned blocks, and ``c = floor(n * r)`` of them,
   clamped to ``[1, n - 1]``, are chosen without replacement;
5. ``hidden = chosen blocks & valid``: padding and invalid bins are never hidden.

The masks are computed in numpy, vectorised over the rows that share a block size (a Python loop
over the few block sizes, none over samples), in two steps:

* choose: each of a row's first ``N`` blocks (``N`` = the group's largest ``n``) has a random 10-bit
  key; its score ``key * N + block`` orders the blocks by key, ties broken by block index, and
  blocks past the row's span score above every real one. Sorting each row's scores (numpy's
  vectorised int32 sort) gives the ``(c + 1)``-th smallest score, and the blocks scoring below it
  are the chosen ``c``. Breaking ties by index leaves a slight position bias (measured over
  800,000 samples of 32 blocks: the first blocks hidden ~0.1 percentage point more often than the
  last), far below anything training can notice.
* spread: each group's choices are written ``s`` times, one entry per position from the span's
  first position (as 0/1 words of ``min(s, 8)`` bytes times 0x0101...), all rows' entries end to
  end in one buffer; the mask row is the ``L`` entries from (where the row's entries start) -
  ``first``, taken for all rows at once as rows of a sliding window over the buffer, then
  ``& valid``.

Up to commit 8eb40f7 the choice was made in torch with a per-row histogram of the 1024 key values
(``tests/test_masking.py`` keeps that algorithm and checks the two give the same masks bit for
bit, so fixed masks, and every number measured on them, are unchanged). The later speed-ups
(issue 16) keep every mask bit for bit (the tests pin digests of fixed and training masks). At
these sizes a numpy call's fixed cost is most of the time, so the code favours array methods over
the ``np.`` wrappers, same-shape operands over broadcasting, and cached read-only tables.

With ``MaskConfig.max_days > 0`` (time series) the blocks are in days instead
(:func:`lay_day_blocks`): a block length d log-uniform in [min_days, max_days], the span cut into
blocks of d days from its first time, so a block covers the same time at any cadence or gap.

Training masks come from a ``torch.Generator``; validation and test masks (:func:`fixed_mask`)
from a counter-based hash of ``(seed, sample index, counter)``, so a sample gets the same mask
whatever batch it lands in.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from lcgen.errors import LcgenError

KEY_BITS = 10  # random key resolution used to choose blocks (1024 key values)
_N_KEYS = 1 << KEY_BITS
_M32 = 0xFFFFFFFF


@dataclass
class MaskConfig:
    """Settings of the dynamic block masking."""

    min_block: int = 1  # (int) smallest block length; rounded up to a power of two
    max_block: int = 32  # (int) largest block length; rounded down to a power of two
    min_ratio: float = 0.1  # (float) smallest fraction of blocks hidden per sample
    max_ratio: float = 0.7  # (float) largest fraction of blocks hidden per sample
    min_days: float = 0.0  # (float) blocks in days (time series): shortest block, days; used when max_days > 0
    max_days: float = 0.0  # (float) blocks in days: longest block, days (log-uniform between); 0: blocks in points

    def __post_init__(self) -> None:
        check_mask_settings(self.min_block, self.max_block, self.min_ratio, self.max_ratio)
        check_day_settings(self.min_days, self.max_days)


@dataclass(frozen=True)
class MaskDraws:
    """The random numbers behind one batch of masks (all that :func:`lay_blocks` needs)."""

    u_block: torch.Tensor  # (B,) float64 in [0, 1): picks the block size
    u_ratio: torch.Tensor  # (B,) float64 in [0, 1): picks the ratio
    keys: torch.Tensor  # (B, N) int16 in [0, 1024): one key per block, N >= number of blocks


def check_mask_settings(min_block: int, max_block: int, min_ratio: float, max_ratio: float) -> None:
    """Raise LcgenError unless the block and ratio ranges make sense."""
    if not (isinstance(min_block, int) and isinstance(max_block, int)) or min_block < 1:
        raise LcgenError(
            f"mask block sizes must be integers >= 1, got min_block={min_block!r}, "
            f"max_block={max_block!r}; set e.g. min_block=1, max_block=32"
        )
    lo, hi = _power_range(min_block, max_block)
    if lo > hi:
        raise LcgenError(
            f"no power of two lies in [min_block, max_block] = [{min_block}, {max_block}]; "
            "widen the range (e.g. min_block=1, max_block=32)"
        )
    if not (0.0 <= min_ratio <= max_ratio <= 1.0):
        raise LcgenError(
            f"mask ratios must satisfy 0 <= min_ratio <= max_ratio <= 1, got "
            f"min_ratio={min_ratio!r}, max_ratio={max_ratio!r}; set e.g. 0.1 and 0.7"
        )


def check_day_settings(min_days: float, max_days: float) -> None:
    """Raise LcgenError unless [min_days, max_days] is off (max_days 0) or 0 < min <= max."""
    if max_days != 0 and not 0 < min_days <= max_days:
        raise LcgenError(f"mask block lengths in days need 0 < min_days <= max_days (or max_days = 0 for "
                         f"blocks in points), got min_days={min_days!r}, max_days={max_days!r}")


def _power_range(min_block: int, max_block: int) -> tuple[int, int]:
    """Exponents (p_lo, p_hi) of the powers of two in [min_block, max_block]."""
    return (min_block - 1).bit_length(), max_block.bit_length() - 1


def _first_and_span(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First real index (B,) and span (B,) = last - first + 1 of each row of ``valid`` (B, L);
    first 0 and span 0 where nothing is valid.

    first = argmax (the first True; numpy stops at it); last + 1 = max over j of (j + 1) * valid.
    """
    L = valid.shape[1]
    first = valid.argmax(1)
    pos1 = np.arange(1, L + 1, dtype=np.int16 if L < 2**15 else np.int32)  # j + 1
    return first, np.maximum((valid * pos1).max(1, initial=0) - first, 0)


@functools.lru_cache(maxsize=32)
def _exponent_table(length: int, p_lo: int, p_hi: int) -> np.ndarray:
    """(2, length + 1) int64, for each span 0..length: p_top = min(p_hi, floor(log2(span / 2)))
    (the largest block size leaving at least two blocks) and the number of exponents to choose
    from, max(p_top - p_lo + 1, 1). Read-only: shared between calls."""
    span = np.arange(length + 1)
    # floor(log2(x)) for integer x >= 1 is frexp's exponent - 1 (exact in float64).
    p_top = np.minimum(np.frexp(np.maximum(span >> 1, 1).astype(np.float64))[1] - 1, p_hi)
    table = np.stack([p_top, np.maximum(p_top - (p_lo - 1), 1)]).astype(np.int64)
    table.flags.writeable = False
    return table


def _block_exponent(span: np.ndarray, u_block: np.ndarray, p_lo: int, p_hi: int, length: int) -> np.ndarray:
    """p (B,): uniform over [p_lo, p_top], p_top = min(p_hi, floor(log2(span / 2))) so that the
    span holds at least two blocks (p_top itself where p_top < p_lo); spans <= ``length``."""
    p_top, n_choices = _exponent_table(length, p_lo, p_hi)[:, span]
    return np.minimum(p_lo + (u_block * n_choices).astype(np.int64), p_top)


def block_sizes(valid: torch.Tensor, draws: MaskDraws, *, min_block: int = 1,
                max_block: int = 32) -> torch.Tensor:
    """Block size (B,) int64 of each sample's mask, as :func:`lay_blocks` picks it."""
    p_lo, p_hi = _power_range(min_block, max_block)
    _, span = _first_and_span(_numpy(valid))
    return torch.from_numpy(1 << _block_exponent(span, _numpy(draws.u_block), p_lo, p_hi, valid.shape[1]))


@functools.lru_cache(maxsize=32)
def _block_terms(m: int, dtype: type) -> np.ndarray:
    """(m + 1, m): row m - n, column k holds k + m - n, plus 1024 m where k >= n (a block past a
    span of n blocks). Rows of a sliding window over the pattern [0, 1, ..., 2 m - 1] + 1024 m
    from the middle on (a read-only view, shared)."""
    pattern = np.arange(2 * m, dtype=dtype)
    pattern[m:] += _N_KEYS * m
    pattern.flags.writeable = False
    return np.ndarray((m + 1, m), dtype, pattern, strides=(pattern.itemsize, pattern.itemsize))


# 0 or 1 times these sets every byte of a 2-, 4- or 8-byte word to it: 2, 4 or 8 copies
_SPREAD = {1: np.uint16(0x0101), 2: np.uint32(0x01010101), 3: np.uint64(0x0101010101010101)}


def lay_blocks(
    valid: torch.Tensor,
    draws: MaskDraws,
    *,
    min_block: int = 1,
    max_block: int = 32,
    min_ratio: float = 0.1,
    max_ratio: float = 0.7,
) -> torch.Tensor:
    """Turn per-sample random draws into the hidden mask (B, L) bool; see the module docstring.

    Computed with numpy on the CPU (the result is put on ``valid``'s device): at these sizes a
    numpy call costs ~1 µs of overhead against torch's ~4 µs.
    """
    p_lo, p_hi = _power_range(min_block, max_block)
    hidden = _lay_points(_numpy(valid), _numpy(draws.u_block), _numpy(draws.u_ratio), _numpy(draws.keys),
                         p_lo=p_lo, p_hi=p_hi, min_ratio=min_ratio, max_ratio=max_ratio)
    hidden = torch.from_numpy(hidden)
    return hidden if valid.device.type == "cpu" else hidden.to(valid.device)


def _numpy(x: torch.Tensor) -> np.ndarray:
    """The tensor as a numpy array (a view on the CPU, skipping the ~2 µs no-op ``.cpu()``)."""
    return x.numpy() if x.device.type == "cpu" else x.cpu().numpy()


def _lay_points(v: np.ndarray, u_block: np.ndarray, u_ratio: np.ndarray, keys: np.ndarray, *, p_lo: int,
                p_hi: int, min_ratio: float, max_ratio: float) -> np.ndarray:
    """:func:`lay_blocks` on numpy arrays: valid (B, L) bool, the draws (B,), (B,), (B, N) int16;
    returns hidden (B, L) bool. About 60 numpy calls for the batch, most on (B,) arrays, and 15
    per block size (array methods rather than the slower ``np.`` wrappers; same-shape operands
    where it can: a broadcast operand costs the call a few µs)."""
    B, L = v.shape
    if v.size == 0:
        return v.copy()
    first, span = _first_and_span(v)  # (B,), (B,)
    p = _block_exponent(span, u_block, p_lo, p_hi, L)  # (B,) block size 2**p
    n_blocks = ((span - 1) >> p) + 1  # ceil(span / 2**p); 0 for an empty row (-1 >> p = -1)
    count = (n_blocks * (u_ratio * (max_ratio - min_ratio) + min_ratio)).astype(np.int64)
    count = np.maximum(np.minimum(np.maximum(count, 1), n_blocks - 1), 0)

    # Rows grouped by block exponent, the largest first: group g holds rows order[a:b] (a stable
    # sort), each with at most N_g = the group's largest n_blocks blocks, so it works on
    # (rows, N_g) arrays.
    desc = p_hi - p
    order = desc.argsort(kind="stable")
    sizes = np.bincount(desc)
    q_group = sizes.nonzero()[0]
    sizes = sizes[q_group]
    q_group = p_hi - q_group  # the exponents in use, largest first
    ends = sizes.cumsum()
    n_o = n_blocks[order]
    N_group = np.maximum(np.maximum.reduceat(n_o, ends - sizes), 1)
    width = (N_group << q_group).repeat(sizes)  # (B,) entries of each row, in `order`
    own = width.cumsum() - width  # where each row's entries start (from `head`, below)

    # Scores: key * N_g + block index + M - n orders a row's blocks by (key, block) (the last
    # term is the same for the whole row; M = keys per row >= n); blocks past the span get
    # 1024 M more, which puts them above every real block. The index and past terms of a row
    # are one row of `terms`. The blocks scoring below the (count + 1)-th smallest score are
    # the `count` smallest (count <= n_blocks - 1, so that score is a real block's): `at` is
    # its flat index in the group's sorted (rows, N_g) scores.
    M = keys.shape[1]
    wide = np.int32 if M < 2**19 else np.int64  # holds key * N + the terms (< 2049 M)
    terms, pad_o = _block_terms(M, wide), M - n_o
    at = ((np.arange(B) - (ends - sizes).repeat(sizes)) * N_group.repeat(sizes) + count[order])[:, None]

    # Spread: one buffer holds each row's entries, one per position (2**q per block) from its
    # first real one, rows end to end from `head`, padded by >= L entries at both ends:
    # position j of row b's mask is entry head + own_b + j - first_b. Rows of a sliding window
    # of width L over the buffer (row i = entries i to i + L - 1: a view with strides (1, 1)),
    # indexed by start = head + own - first, are exactly the mask rows (one (B, L) copy);
    # entries outside [first, last] read a neighbour's or the padding, and `& valid` drops
    # them. A group's choices are written as words of 2**min(q, 3) bytes (0 or 1 times
    # _SPREAD), the largest blocks first so that every group starts word-aligned.
    head = -(-L // 8) * 8
    total = head + int(own[-1] + width[-1])
    buffer = np.empty(total + L, bool)
    buffer[:head] = False
    buffer[total:] = False
    a, o = 0, head
    for q, b, N in zip(q_group.tolist(), ends.tolist(), N_group.tolist()):
        score = keys[order[a:b], :N].astype(wide)
        score *= N
        score += terms[pad_o[a:b], :N]
        sorted_score = score.copy()
        sorted_score.sort(axis=1)
        cut = sorted_score.take(at[a:b])  # (rows, 1)
        if q == 0:
            np.less(score, cut, out=np.ndarray(score.shape, bool, buffer, o))
        else:  # 0 or 1 per word (2**(q - 3) equal words per block past 8 points), times _SPREAD
            word = _SPREAD[min(q, 3)]
            dest = np.ndarray((b - a, N, 1 << max(q - 3, 0)), word.dtype, buffer, o)
            np.less(score[:, :, None], cut[:, :, None], out=dest, casting="unsafe")
            dest *= word
        a, o = b, o + ((b - a) * N << q)
    start = np.empty(B, np.int64)
    start[order] = own + head - first[order]
    windows = np.ndarray((total + 1, L), bool, buffer, strides=(1, 1))
    hidden = windows[start]  # (B, L) copy
    hidden &= v
    return hidden


def _check_valid(valid: torch.Tensor) -> None:
    if valid.dtype != torch.bool or valid.dim() != 2:
        raise LcgenError(
            f"valid must be a (batch, length) bool tensor, got dtype {valid.dtype} and shape "
            f"{tuple(valid.shape)}"
        )


def _n_keys_needed(length: int, min_block: int) -> int:
    """Most blocks any sample of this length can have: ceil(L / 2**p_lo), or, for a span too
    short for min_block (< 2**(p_lo + 1), cut into smaller blocks), up to that span."""
    p_lo = _power_range(min_block, min_block)[0]
    return max(1, -(-length // (1 << p_lo)), min(length, (1 << (p_lo + 1)) - 1))


def draw_train(
    valid: torch.Tensor, *, min_block: int = 1, generator: torch.Generator | None = None
) -> MaskDraws:
    """Fresh random draws for a training batch, from ``generator`` (on ``valid``'s device)."""
    B, L = valid.shape
    N = _n_keys_needed(L, min_block)
    u = torch.rand(B, 2, generator=generator, device=valid.device, dtype=torch.float64)
    # 63 random bits per int64 word; viewed as four int16, each gives one 10-bit key.
    words = torch.empty(B, -(-N // 4), dtype=torch.int64, device=valid.device).random_(generator=generator)
    keys = words.view(torch.int16)
    if valid.device.type == "cpu":  # in place in numpy: no second (B, N) array, ~2x cheaper than torch
        np.bitwise_and(keys.numpy(), _N_KEYS - 1, out=keys.numpy())
    else:
        keys &= _N_KEYS - 1
    return MaskDraws(u_block=u[:, 0], u_ratio=u[:, 1], keys=keys[:, :N])


def block_mask(
    valid: torch.Tensor,
    *,
    min_block: int = 1,
    max_block: int = 32,
    min_ratio: float = 0.1,
    max_ratio: float = 0.7,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw fresh training masks: hidden (B, L) bool, a subset of ``valid`` (B, L) bool.

    Draws from ``generator`` (on ``valid``'s device), or torch's default generator.
    """
    _check_valid(valid)
    check_mask_settings(min_block, max_block, min_ratio, max_ratio)
    draws = draw_train(valid, min_block=min_block, generator=generator)
    return lay_blocks(valid, draws, min_block=min_block, max_block=max_block,
                      min_ratio=min_ratio, max_ratio=max_ratio)


def _hash32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer mixer ("lowbias32", C. Wellons) on uint32 arrays, in place (returns x);
    numpy's uint32 products wrap mod 2**32 as the mixer needs."""
    x ^= x >> 16
    x *= np.uint32(0x7FEB352D)
    x ^= x >> 15
    x *= np.uint32(0x846CA68B)
    x ^= x >> 16
    return x


def _hash32_int(x: int) -> int:
    """:func:`_hash32` on one Python int (no array ops for per-call constants)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


@functools.lru_cache(maxsize=64)
def _counter_words(n: int) -> np.ndarray:
    """h(counter) for counters 0 .. n - 1, (n,) uint32 (read-only: shared between calls)."""
    words = _hash32(np.arange(n, dtype=np.uint32))
    words.flags.writeable = False
    return words


def _row_words(index: torch.Tensor, seed_word: int) -> np.ndarray:
    """Each sample's row word h(h(seed_word ^ index_lo) ^ h(index_hi)), (B,) uint32."""
    index = _numpy(index.to(torch.int64))
    row = _hash32((index & _M32).astype(np.uint32) ^ np.uint32(seed_word))
    return _hash32(row ^ _hash32((index >> 32).astype(np.uint32)))


def draw_fixed(
    valid: torch.Tensor, index: torch.Tensor, *, seed: int, min_block: int = 1
) -> MaskDraws:
    """Draws that depend only on (seed, sample index, counter): the same for a sample in any batch.

    ``index`` (B,) int64 >= 0 is the sample's row in its data file. Computed in numpy on the CPU
    (the draws are put on ``valid``'s device).
    """
    B, L = valid.shape
    N = _n_keys_needed(L, min_block)
    row = _row_words(index, _hash32_int((seed & _M32) ^ _hash32_int((seed >> 32) & _M32)))
    # One 32-bit hash per counter: counters 0, 1 give the two uniforms, each further counter
    # three 10-bit keys (its top 30 bits, which mix best).
    bits = _hash32(row[:, None] ^ _counter_words(2 + -(-N // 3)))  # (B, n_words)
    u = bits[:, :2] / 2.0**32
    keys = np.empty((B, bits.shape[1] - 2, 3), np.int16)
    for j, shift in enumerate((22, 12, 2)):  # one strided pass each: a (3,) broadcast is ~4x slower
        np.right_shift(bits[:, 2:], shift, out=keys[:, :, j], casting="unsafe")  # keeps the low 16 bits
    keys &= _N_KEYS - 1
    draws = MaskDraws(u_block=torch.from_numpy(u[:, 0]), u_ratio=torch.from_numpy(u[:, 1]),
                      keys=torch.from_numpy(keys.reshape(B, -1)[:, :N]))
    if valid.device.type != "cpu":
        draws = MaskDraws(draws.u_block.to(valid.device), draws.u_ratio.to(valid.device), draws.keys.to(valid.device))
    return draws


def fixed_mask(
    valid: torch.Tensor,
    index: torch.Tensor,
    *,
    seed: int,
    min_block: int = 1,
    max_block: int = 32,
    min_ratio: float = 0.1,
    max_ratio: float = 0.7,
    min_days: float = 0.0,
    max_days: float = 0.0,
    time: torch.Tensor | None = None,
) -> torch.Tensor:
    """Validation/test masks: hidden (B, L) bool fixed by ``seed`` and each sample's ``index``.

    A sample gets the same mask in every epoch, run and batch composition, so metrics compare.
    With ``max_days > 0`` the blocks are in days (:func:`lay_day_blocks`; needs ``time``).
    """
    _check_valid(valid)
    check_mask_settings(min_block, max_block, min_ratio, max_ratio)
    check_day_settings(min_days, max_days)
    if not isinstance(seed, int) or seed < 0:
        raise LcgenError(f"mask seed must be an integer >= 0, got {seed!r}")
    if index.shape != valid.shape[:1]:
        raise LcgenError(
            f"index must have shape ({valid.shape[0]},) to match valid, got {tuple(index.shape)}"
        )
    draws = draw_fixed(valid, index, seed=seed, min_block=key_block(min_block, max_days))
    return lay_mask(valid, draws, time=time, min_block=min_block, max_block=max_block,
                    min_ratio=min_ratio, max_ratio=max_ratio, min_days=min_days, max_days=max_days)


def model_input(values: torch.Tensor, valid: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Stack what the model may see: (B, L, 2) with channel 0 = value where visible else 0,
    channel 1 = 1.0 where visible else 0.0 (visible = valid & ~hidden).

    ``torch.where`` rather than a product, so NaN or inf at hidden/padded positions cannot leak.
    """
    visible = valid & ~hidden
    shown = torch.where(visible, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return torch.stack([shown, visible.to(values.dtype)], dim=-1)


# --------------------------------------------------------------------------------------------
# Several modalities of one window (lcgen train multimodal on paired data)

MODALITIES = ("series", "psd", "acf", "fstat")  # the time series, then the spectral channels
SEED_STRIDE = 1_000_003  # modality k's fixed masks use seed + k * SEED_STRIDE (k = 0: the series)


def modality_keys(name: str) -> tuple[str, str, str]:
    """Batch keys (values, valid, hidden) of a modality: the series keeps the plain names."""
    if name == "series":
        return "values", "valid", "hidden"
    return name, f"{name}_valid", f"{name}_hidden"


def fixed_uniforms(index: torch.Tensor, *, seed: int, n: int) -> torch.Tensor:
    """(B, n) float64 uniforms in [0, 1) fixed by ``seed`` and each sample's ``index`` (a
    counter-based hash, like :func:`draw_fixed`)."""
    seed_word = _hash32_int((seed & _M32) ^ _hash32_int((seed >> 32) & _M32) ^ 0x5BD1E995)
    bits = _hash32(_row_words(index, seed_word)[:, None] ^ _counter_words(n))
    return torch.from_numpy(bits / 2.0**32).to(index.device)


def drop_modalities(u: torch.Tensor, present: torch.Tensor, p: float) -> torch.Tensor:
    """Which whole modalities to hide: (B, M) bool from uniforms ``u`` (B, M >= 2), in
    ``MODALITIES`` order (the series first).

    With probability ``p`` (``u[:, 0] < p``) a sample hides one scenario's modalities, else none:
    half of those samples (``u[:, 1] < 1/2``) hide every spectral channel at once (the series
    alone visible: the PSD, ACF and F-statistic must come from the series through the latent),
    the other half one modality chosen uniformly (``u[:, 1]`` on [1/2, 1)), to be predicted from
    the others. Independent draws per modality would almost never hide all three spectra together
    (p³), yet only that scenario makes the latent read the spectra off the series. Only
    ``present`` modalities (with a real position) are hidden, and a sample whose scenario would
    leave nothing visible hides nothing."""
    B, M = present.shape
    drop = u[:, 0] < p
    all_spectra = u[:, 1] < 0.5
    one = ((u[:, 1] - 0.5) * 2 * M).long().clamp(0, M - 1)  # (B,) used where not all_spectra
    scenario = torch.zeros_like(present).scatter_(1, one[:, None], True)
    scenario[:, 1:] |= all_spectra[:, None]
    scenario[:, 0] &= ~all_spectra
    dropped = scenario & present & drop[:, None]
    nothing_left = (dropped | ~present).all(1)
    return dropped & ~nothing_left[:, None]


def paired_masks(batch: dict[str, torch.Tensor], series_hidden: torch.Tensor, *, p_drop: float,
                 generator: torch.Generator | None = None, seed: int | None = None,
                 share: tuple[int, int, int] | None = None, **mask_args) -> dict[str, torch.Tensor]:
    """Hidden masks of every modality of a paired batch, and the modality dropout.

    ``series_hidden`` is the time series' block mask (drawn as for the transformer, so fixed
    masks equal the transformer's on the same rows). Each spectral channel gets its own block
    mask (training: from ``generator``; validation/test: fixed by ``seed + k * SEED_STRIDE`` and
    the row index), then with probability ``p_drop`` a sample hides modalities whole: all the
    spectra, or one modality (:func:`drop_modalities`; uniforms from ``generator`` or fixed by
    ``seed``). Training draws are made for a global batch of ``share = (size, a, b)`` rows of
    which the batch holds rows ``a:b`` (one process of several; default the batch itself), so a
    row's masks do not depend on the number of processes. Returns ``{hidden key: (B, L_m) bool}`` and ``"dropped"``
    (B, M) bool in ``MODALITIES`` order.
    """
    B = series_hidden.shape[0]
    size, a, b = share or (B, 0, B)
    mask_args = {k: v for k, v in mask_args.items() if k not in ("min_days", "max_days")}  # spectra: points
    hidden = {"hidden": series_hidden}
    for k, name in enumerate(MODALITIES[1:], start=1):
        _, valid_key, hidden_key = modality_keys(name)
        valid = batch[valid_key]
        if seed is None:
            draws = draw_train(torch.empty(size, valid.shape[1], dtype=torch.bool),
                               min_block=mask_args.get("min_block", 1), generator=generator)
            draws = MaskDraws(draws.u_block[a:b], draws.u_ratio[a:b], draws.keys[a:b])
            hidden[hidden_key] = lay_blocks(valid, draws, **mask_args)
        else:
            hidden[hidden_key] = fixed_mask(valid, batch["index"], seed=seed + k * SEED_STRIDE, **mask_args)
    present = torch.stack([batch[modality_keys(m)[1]].any(1) for m in MODALITIES], 1)  # (B, M)
    if seed is None:
        u = torch.rand(size, len(MODALITIES), generator=generator, dtype=torch.float64)[a:b]
    else:
        u = fixed_uniforms(batch["index"], seed=seed, n=len(MODALITIES))
    dropped = drop_modalities(u.to(present.device), present, p_drop)
    for j, name in enumerate(MODALITIES):
        _, valid_key, hidden_key = modality_keys(name)
        hidden[hidden_key] = torch.where(dropped[:, j:j + 1], batch[valid_key], hidden[hidden_key])
    hidden["dropped"] = dropped
    return hidden
# Blocks in days (MaskConfig.max_days > 0): gaps as real data have them, whatever the cadence


def day_block_length(valid: torch.Tensor, time: torch.Tensor, u_block: torch.Tensor, *,
                     min_days: float, max_days: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sample's block length in days, (B,) float64, with its first time and span (B,).

    d = exp(log min_days + u (log max_days − log min_days)) (log-uniform), capped at half the
    span (so at least two blocks fit) and raised to span / (L − 1) (so there are at most L blocks;
    shorter blocks than the spacing hide the same points). A row with no valid point gets d = 1.
    """
    L = valid.shape[1]
    t = time.double()
    big = torch.tensor(float("inf"), dtype=torch.float64, device=t.device)
    first = torch.where(valid, t, big).amin(1)
    last = torch.where(valid, t, -big).amax(1)
    span = torch.where(valid.any(1), last - first, torch.zeros_like(first))
    first = torch.where(valid.any(1), first, torch.zeros_like(first))
    lo, hi = math.log(min_days), math.log(max_days)
    d = torch.exp(lo + u_block.to(t.device, torch.float64) * (hi - lo))
    d = torch.minimum(d, span / 2).maximum(span / max(L - 1, 1))
    return torch.where(span > 0, d, torch.ones_like(d)), first, span


def lay_day_blocks(valid: torch.Tensor, time: torch.Tensor, draws: MaskDraws, *, min_days: float,
                   max_days: float, min_ratio: float = 0.1, max_ratio: float = 0.7) -> torch.Tensor:
    """Hidden mask (B, L) bool of blocks in days: the span from each sample's first valid time is
    cut into ``n = floor(span / d) + 1`` blocks ``[first + k d, first + (k + 1) d)`` of
    :func:`day_block_length`, and ``c = floor(n r)`` of them, clamped to [1, n − 1], are chosen
    (the smallest keys, ties broken by block index) with ``r ~ U(min_ratio, max_ratio)``; hidden
    = the valid positions in a chosen block. Needs ``draws.keys`` with >= L keys a row
    (``min_block=1`` in :func:`draw_train`/:func:`draw_fixed`).
    """
    B, L = valid.shape
    if draws.keys.shape[1] < L:
        raise LcgenError(f"day blocks need {L} keys a row, got {draws.keys.shape[1]} (draw with min_block=1)")
    d, first, span = day_block_length(valid, time, draws.u_block, min_days=min_days, max_days=max_days)
    n_blocks = (span / d).floor().long().clamp_(0, L - 1) + 1  # (B,)
    ratio = draws.u_ratio * (max_ratio - min_ratio) + min_ratio
    count = (n_blocks * ratio).long().clamp_(min=1).minimum(n_blocks - 1).clamp_(min=0)
    block = torch.arange(L, device=valid.device)
    score = draws.keys[:, :L].long() * L + block  # distinct: key first, then block index
    score = torch.where(block < n_blocks[:, None], score, torch.full_like(score, _N_KEYS * L))
    rank = torch.empty_like(score).scatter_(1, score.argsort(1), block.expand(B, L).contiguous())
    chosen = rank < count[:, None]  # (B, L) over blocks
    block_of = ((time.double() - first[:, None]) / d[:, None]).floor().long().clamp_(0, L - 1)
    return chosen.gather(1, block_of) & valid


def lay_mask(valid: torch.Tensor, draws: MaskDraws, *, time: torch.Tensor | None = None,
             min_block: int = 1, max_block: int = 32, min_ratio: float = 0.1, max_ratio: float = 0.7,
             min_days: float = 0.0, max_days: float = 0.0) -> torch.Tensor:
    """The hidden mask of a :class:`MaskConfig` (``**asdict(cfg)``): blocks in days when
    ``max_days > 0`` (needs ``time``), else :func:`lay_blocks` in points."""
    if max_days > 0:
        if time is None:
            raise LcgenError("mask blocks in days (mask.max_days > 0) need time series; "
                             "spectra have no times: use mask.min_block/max_block")
        return lay_day_blocks(valid, time, draws, min_days=min_days, max_days=max_days,
                              min_ratio=min_ratio, max_ratio=max_ratio)
    return lay_blocks(valid, draws, min_block=min_block, max_block=max_block,
                      min_ratio=min_ratio, max_ratio=max_ratio)


def key_block(min_block: int = 1, max_days: float = 0.0) -> int:
    """The ``min_block`` to draw keys with for a :class:`MaskConfig` (1 for blocks in days)."""
    return 1 if max_days > 0 else min_block


# --------------------------------------------------------------------------------------------
# Gap augmentation (TrainConfig.gap_augment): real time gaps that index position cannot see


def close_gap(batch: dict[str, torch.Tensor], u: torch.Tensor, *, fraction: float,
              max_points: int, drop_max: float = 0.0,
              u_drop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Cut a run of real points out of some windows of a time-series batch and close them up.

    ``u`` (B, 3) uniforms in [0, 1) decide, per row: whether (``u0 < fraction``), how many
    (``k = 1 + floor(u1 · max_points)``, at most ``n − 2`` for ``n`` real points) and where
    (the cut starts at real point ``s = 1 + floor(u2 · (n − 1 − k))``, so real points ``s ..
    s + k − 1`` go and the first and last real points stay). Every (B, L) entry of the row
    (values, time, flux_err, valid) shifts left over the cut; the freed positions at the end
    become padding (valid False, zeros as the data reader writes them). The window then holds a
    time gap of k + 1 cadences between two neighbouring positions, which only the times show.
    Rows with fewer than 3 real points, other keys (``index``) and rows not chosen are unchanged.

    ``drop_max`` > 0 also scatters single losses over each chosen row, like the weather losses
    of ``seasonal`` sampling (gaps of 2-3 cadences, many per window): ``u`` then has a fourth
    column, the row's loss rate ``p = u3 · drop_max``, and ``u_drop`` (B, L) uniforms drop each
    other interior real point (never the first or last) where ``u_drop < p``.
    """
    valid = batch["valid"]
    B, L = valid.shape
    n = valid.sum(1)  # (B,)
    k = (1 + (u[:, 1] * max_points).long()).minimum(n - 2)
    on = (u[:, 0] < fraction) & (k >= 1)
    start = 1 + (u[:, 2] * (n - 1 - k).clamp(min=1)).long()
    rank = valid.cumsum(1) - 1  # (B, L) rank of each real point among the row's real points
    cut = valid & on[:, None] & (rank >= start[:, None]) & (rank < (start + k)[:, None])
    if drop_max > 0:
        interior = valid & (rank >= 1) & (rank <= (n - 2)[:, None])
        cut |= interior & on[:, None] & (u_drop < (u[:, 3] * drop_max)[:, None])
    order = torch.argsort(cut.to(torch.int8), dim=1, stable=True)  # kept positions first, in order
    freed = cut.gather(1, order)  # (B, L) the positions the cut points moved to: now padding
    out = dict(batch)
    for key, value in batch.items():
        if value.shape[:2] == (B, L):
            out[key] = torch.where(freed, torch.zeros((), dtype=value.dtype), value.gather(1, order))
    return out
