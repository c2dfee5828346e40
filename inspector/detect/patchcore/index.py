"""An inverted-file (IVF) index over the memory bank: nearest-neighbour search in bounded time.

PatchCore's scoring (eq. 5–6) is an exact nearest-neighbour search of every test patch in the
bank, which costs ``N·M·D`` multiply-adds (6,400 patches × 16,384 bank rows × 64 dims ≈ 6.7 G
for one image: about 300 ms on two CPU cores). The published implementation hands this search
to faiss; here it is a small k-means inverted file written on torch:

* the bank rows are clustered by k-means (Lloyd iterations) into lists of about ``list_size``
  rows each, and stored grouped by list;
* a query row visits only the ``probes`` lists whose centroids are nearest to it, and takes the
  nearest row among them.

The distance returned is always a true distance to a bank row, so a missed neighbour can only
make a patch look *more* anomalous, never hide it. Pure torch functions on float32 rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from inspector.detect.patchcore.memory import nearest

SEED_POOL = 16  # k-means++ seeding: candidate rows per cluster


@dataclass(frozen=True)
class ListIndex:
    """Centroids ``(L, D)`` and list boundaries: rows ``offsets[l]:offsets[l+1]`` of the grouped bank are list l."""

    centroids: torch.Tensor
    offsets: torch.Tensor  # (L + 1,) int64, non-decreasing, offsets[-1] == bank rows

    @property
    def lists(self) -> int:
        return int(self.centroids.shape[0])


def kmeans(x: torch.Tensor, n: int, iters: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from a k-means++ start: centroids ``(n, D)`` and each row's cluster ``(M,)``.

    k-means++ (Arthur & Vassilvitskii 2007) draws each next seed with probability proportional to
    its squared distance from the seeds so far; an emptied cluster keeps its previous centroid."""
    m = x.shape[0]
    if not 1 <= n <= m:
        raise ValueError(f"kmeans: cannot make {n} clusters of {m} rows")
    gen = torch.Generator().manual_seed(seed)
    # the seeding runs on at most SEED_POOL rows per cluster, drawn at random (it is sequential)
    pool = x[torch.randperm(m, generator=gen)[:SEED_POOL * n]] if m > SEED_POOL * n else x
    sq = (pool * pool).sum(1)
    seeds = [int(torch.randint(pool.shape[0], (1,), generator=gen))]
    d2 = (sq - 2.0 * pool @ pool[seeds[0]] + sq[seeds[0]]).clamp_min_(0)
    for _ in range(1, n):
        total = float(d2.sum())
        nxt = (int(torch.multinomial(d2 / total, 1, generator=gen)) if total > 0
               else int(torch.randint(pool.shape[0], (1,), generator=gen)))
        seeds.append(nxt)
        torch.minimum(d2, (sq - 2.0 * pool @ pool[nxt] + sq[nxt]).clamp_min_(0), out=d2)
    centroids = pool[seeds].clone()
    assign = torch.zeros(m, dtype=torch.long)
    for _ in range(max(1, iters)):
        _, idx = nearest(x, centroids, 1)
        assign = idx[:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    _, idx = nearest(x, centroids, 1)
    return centroids, idx[:, 0]


def build_index(bank: torch.Tensor, list_size: int, iters: int = 8, seed: int = 0) -> tuple[torch.Tensor, ListIndex]:
    """Cluster the bank into lists of about ``list_size`` rows.

    Returns ``order`` (``bank[order]`` is the bank grouped by list, the layout :func:`probe_nearest`
    expects) and the :class:`ListIndex`."""
    m = bank.shape[0]
    n = max(1, min(m, math.ceil(m / max(1, list_size))))
    centroids, assign = kmeans(bank, n, iters, seed)
    order = torch.argsort(assign, stable=True)
    counts = torch.bincount(assign, minlength=n)
    offsets = torch.zeros(n + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts, 0)
    return order, ListIndex(centroids=centroids, offsets=offsets)


def probe_nearest(query: torch.Tensor, grouped: torch.Tensor, index: ListIndex, probes: int,
                  allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance ``(N,)`` to, and row ``(N,)`` in ``grouped`` of, each query row's nearest row among
    the rows of its ``probes`` nearest lists.

    ``allowed``: an optional bool mask over ``grouped`` rows (leave-one-out: the rows of the
    other references); a query whose probed lists hold no allowed row is searched exactly over
    the allowed rows. With ``probes >= lists`` this is the exact search."""
    n = query.shape[0]
    lists = index.lists
    if grouped.shape[0] == 0 or (allowed is not None and not bool(allowed.any())):
        raise ValueError("the memory bank is empty")
    probes = max(1, min(int(probes), lists))
    _, near_lists = nearest(query, index.centroids, probes)  # (N, P)
    # one (query, list) pair per probe, sorted by list: each list's queries are one contiguous slice
    flat = near_lists.reshape(-1)
    order = torch.argsort(flat, stable=True)
    who = order // probes  # the query of each sorted pair
    q_sorted = query[who]
    bounds = torch.searchsorted(flat[order], torch.arange(lists + 1)).tolist()
    row_sq = (grouped * grouped).sum(1)
    if allowed is not None:
        row_sq = row_sq.masked_fill(~allowed, float("inf"))
    pair_val = torch.full((n * probes,), float("inf"))
    pair_row = torch.zeros(n * probes, dtype=torch.long)
    offsets = index.offsets.tolist()
    for lst in range(lists):
        a, b = bounds[lst], bounds[lst + 1]
        lo, hi = offsets[lst], offsets[lst + 1]
        if a == b or hi == lo:
            continue
        # ‖m‖² − 2 q·m; ‖q‖² does not change which row wins and is added at the end
        part = torch.addmm(row_sq[None, lo:hi], q_sorted[a:b], grouped[lo:hi].T, beta=1.0, alpha=-2.0)
        val, idx = part.min(1)
        pair_val[order[a:b]] = val
        pair_row[order[a:b]] = idx + lo
    best, which = pair_val.view(n, probes).min(1)
    best_row = pair_row.view(n, probes).gather(1, which[:, None])[:, 0]
    lost = torch.isinf(best).nonzero().squeeze(1)
    dist = (best + (query * query).sum(1)).clamp_min_(0).sqrt_()
    if lost.numel():  # every probed row excluded: exact search over the allowed rows
        keep = allowed.nonzero().squeeze(1) if allowed is not None else torch.arange(grouped.shape[0])
        d, i = nearest(query[lost], grouped[keep], 1)
        dist[lost] = d[:, 0]
        best_row[lost] = keep[i[:, 0]]
    return dist, best_row
