"""Nearest-neighbour distances to the reference memory, residual whitening and the greedy coreset."""

from __future__ import annotations

import numpy as np


def local_nn_distance(query: np.ndarray, bank: np.ndarray, radius: int,
                      valid: np.ndarray | None = None) -> np.ndarray:
    """min over references k and offsets |d| <= radius of ||q(p) - bank_k(p + d)||  (variation model).

    query (D, H, W); bank (K, D, H, W), both in the reference frame; ``valid`` (K, H, W) bool marks the
    bank cells a reference really shows. A cell no valid reference cell reaches is NaN.
    Computed as ||q||² + ||b||² - 2 q·b per offset (one pass over the bank, no difference arrays).
    """
    k, d, h, w = bank.shape
    r = radius
    pb = np.pad(bank, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge") if r else bank
    pv = None if valid is None else np.pad(valid, ((0, 0), (r, r), (r, r)), constant_values=False)
    b_sq = np.einsum("kdhw,kdhw->khw", pb, pb)
    best = np.full((h, w), np.inf, np.float32)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            cross = np.einsum("kdhw,dhw->khw", pb[:, :, dy:dy + h, dx:dx + w], query)
            d2 = b_sq[:, dy:dy + h, dx:dx + w] - 2.0 * cross
            if pv is not None:
                d2[~pv[:, dy:dy + h, dx:dx + w]] = np.inf
            np.minimum(best, d2.min(0), out=best)
    best += np.einsum("dhw,dhw->hw", query, query)
    best[~np.isfinite(best)] = np.nan
    return np.sqrt(np.maximum(best, 0.0))


def global_nn_distance(query: np.ndarray, bank: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Nearest-neighbour distance of each row of ``query`` (N, D) to ``bank`` (M, D) (PatchCore eq. 6)."""
    bank_sq = np.einsum("md,md->m", bank, bank)
    out = np.empty(query.shape[0], np.float32)
    for start in range(0, query.shape[0], chunk):
        q = query[start:start + chunk]
        d2 = bank_sq[None, :] - 2.0 * (q @ bank.T)
        out[start:start + chunk] = d2.min(1) + np.einsum("nd,nd->n", q, q)
    return np.sqrt(np.maximum(out, 0.0))


def nn_residuals(query: np.ndarray, bank: np.ndarray, mode: str, radius: int) -> np.ndarray:
    """Difference vectors (N, D) between each query patch and its nearest reference patch."""
    if mode == "global":
        d, h, w = query.shape
        q = np.ascontiguousarray(query.reshape(d, -1).T)
        d2 = np.einsum("md,md->m", bank, bank)[None, :] - 2.0 * (q @ bank.T)
        return q - bank[d2.argmin(1)]
    k, d, h, w = bank.shape
    r = radius
    pb = np.pad(bank, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge") if r else bank
    best = np.full((h, w), np.inf, np.float32)
    res = np.zeros((d, h, w), np.float32)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            diff = query[None] - pb[:, :, dy:dy + h, dx:dx + w]
            d2 = np.einsum("kdhw,kdhw->khw", diff, diff)
            kb = d2.argmin(0)
            m = np.take_along_axis(d2, kb[None], 0)[0]
            better = m < best
            best[better] = m[better]
            sel = np.take_along_axis(diff, kb[None, None].repeat(d, 1), 0)[0]
            res[:, better] = sel[:, better]
    return res.reshape(d, -1).T


def residual_whitener(residuals: np.ndarray, shrinkage: float) -> np.ndarray:
    """W with W Σ W^T = I for the shrunk second moment Σ of normal residuals (Mahalanobis metric).

    Directions in which good parts differ from each other count little, directions in which they
    agree count much: Σ_s = (1 - α) E[r r^T] + α tr(E[r r^T]) / D · I.
    """
    r = np.asarray(residuals, np.float64)
    cov = r.T @ r / max(len(r), 1)
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-9 * max(vals.max(), 1e-12))
    return (vecs / np.sqrt(vals)) @ vecs.T


def greedy_coreset(x: np.ndarray, n: int, seed: int = 0, proj_dims: int = 8) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-centre (PatchCore eq. 4, minimax facility location).

    As in PatchCore, the selection runs on a random projection (``proj_dims``) of the rows.
    """
    m = x.shape[0]
    if n >= m:
        return np.arange(m)
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[1] > proj_dims:
        x = x @ (rng.standard_normal((x.shape[1], proj_dims)).astype(np.float32) / np.sqrt(proj_dims))
    chosen = np.empty(n, np.int64)
    chosen[0] = int(rng.integers(m))
    mind = np.einsum("md,md->m", x - x[chosen[0]], x - x[chosen[0]])
    for t in range(1, n):
        i = int(np.argmax(mind))
        chosen[t] = i
        diff = x - x[i]
        np.minimum(mind, np.einsum("md,md->m", diff, diff), out=mind)
    return chosen
