"""The memory bank: coreset subsampling, nearest-neighbour scores, PatchCore's reweighting.

Pure torch functions on patch rows ``(N, D)`` float32. Distances are Euclidean, as in PatchCore.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

QUERY_CHUNK = 1024


def nearest(query: torch.Tensor, bank: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances ``(N, k)`` to, and indices of, the k nearest bank rows of each query row.

    Uses ‖q−m‖² = ‖q‖² + ‖m‖² − 2 q·m in query chunks (bounded memory), clamped at 0."""
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty")
    k = min(k, bank.shape[0])
    bank_sq = (bank * bank).sum(1)
    dists, idxs = [], []
    for start in range(0, query.shape[0], QUERY_CHUNK):
        q = query[start:start + QUERY_CHUNK]
        # ‖m‖² − 2 q·m in one fused product; ‖q‖² does not change the ranking, so it is added after
        part = torch.addmm(bank_sq[None, :], q, bank.T, beta=1.0, alpha=-2.0)
        if k == 1:  # min is several times faster than topk on wide rows
            val, idx = part.min(1, keepdim=True)
        else:
            val, idx = torch.topk(part, k, dim=1, largest=False)
        val = val + (q * q).sum(1, keepdim=True)
        dists.append(val.clamp_min_(0).sqrt_())
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs)


def reweight(test_patch: torch.Tensor, nearest_idx: int, bank: torch.Tensor, b: int) -> float:
    """PatchCore eq. 7: s = (1 − exp‖m_test − m*‖ / Σ_{m ∈ N_b(m*)} exp‖m_test − m‖) · s*; returns the factor.

    ``N_b(m*)`` are the b nearest bank rows of m* (m* itself first). A test patch whose nearest
    memory patch sits in a dense, consistent neighbourhood keeps less of its score than one whose
    neighbour is an isolated (rare) patch. ``b = 0`` disables it (factor 1)."""
    if b <= 0 or bank.shape[0] < 2:
        return 1.0
    m_star = bank[nearest_idx:nearest_idx + 1]
    _, support = nearest(m_star, bank, k=min(b + 1, bank.shape[0]))
    d = torch.linalg.vector_norm(bank[support[0]] - test_patch[None, :], dim=1).double()
    # d[0] is ‖m_test − m*‖; the softmax is written with the max subtracted (no overflow)
    w = torch.softmax(d, dim=0)[0]
    return float(1.0 - w)


def greedy_coreset(x: torch.Tensor, n: int, proj_dims: int = 64, max_rounds: int = 1024,
                   seed: int = 0, candidates: int | None = None, part_size: int | None = None) -> torch.Tensor:
    """Indices of ``n`` rows chosen by greedy k-centre (PatchCore eq. 4, minimax facility location).

    As PatchCore, it selects on a random projection (Johnson–Lindenstrauss) to ``proj_dims``.
    To bound the cost on CPU the selection runs in at most ``max_rounds`` rounds: each round
    takes the ``ceil(n / rounds)`` rows farthest from everything chosen so far and updates the
    distances with one matrix product (exact greedy when ``n <= max_rounds``). ``candidates``:
    select among that many rows drawn at random first (the cost is rows × n × proj_dims).

    ``part_size``: a composable coreset (Indyk et al. 2014; Malkomes et al. 2015 for k-centre).
    The rows are split at random into parts of at most ``part_size``, and each part gives its
    share of ``n`` (proportional to its size) by greedy k-centre within the part, in
    ``max_rounds / parts`` rounds. The cost falls by the number of parts. On 65,536 real fabric
    patches, parts of 8,192 kept the covering radius within 2 % of whole-set greedy (a random
    subset: 2×), in a ninth of the time."""
    m = x.shape[0]
    if n >= m:
        return torch.arange(m)
    gen = torch.Generator().manual_seed(seed)
    if candidates is not None and n < candidates < m:
        pool = torch.randperm(m, generator=gen)[:candidates]
        return pool[greedy_coreset(x[pool], n, proj_dims, max_rounds, seed, part_size=part_size)]
    if part_size is not None and m > part_size:
        parts = torch.randperm(m, generator=gen).tensor_split(-(-m // part_size))
        shares = proportional_shares(n, [len(p) for p in parts])
        rounds = max(1, max_rounds // len(parts))
        return torch.cat([p[greedy_coreset(x[p], k, proj_dims, rounds, seed + 1 + i)]
                          for i, (p, k) in enumerate(zip(parts, shares, strict=True)) if k > 0])
    z = x.float()
    if z.shape[1] > proj_dims:
        proj = torch.randn(z.shape[1], proj_dims, generator=gen) / math.sqrt(proj_dims)
        z = z @ proj
    per_round = max(1, math.ceil(n / max_rounds))
    chosen = torch.empty(n, dtype=torch.long)
    first = int(torch.randint(m, (1,), generator=gen))
    chosen[0] = first
    sq = (z * z).sum(1)
    mind = ((z - z[first]) ** 2).sum(1)
    mind[first] = -1.0
    filled = 1
    while filled < n:
        take = min(per_round, n - filled)
        idx = torch.topk(mind, take).indices
        chosen[filled:filled + take] = idx
        filled += take
        c = z[idx]
        # ‖c‖² − 2 z·c in one fused product (one matmul per round); ‖z‖² is the same for every c
        d2 = torch.addmm((c * c).sum(1)[None, :], z, c.T, beta=1.0, alpha=-2.0)
        torch.minimum(mind, d2.min(1).values.add_(sq), out=mind)
        mind[idx] = -1.0
    return chosen


def proportional_shares(n: int, sizes: list[int]) -> list[int]:
    """Split ``n`` in proportion to ``sizes`` (largest remainder: the shares sum to ``n``, ties to the first)."""
    total = sum(sizes)
    exact = [n * s / total for s in sizes]
    shares = [int(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: shares[i] - exact[i])[: n - sum(shares)]:
        shares[i] += 1
    return shares


def mutual_scores(patches: torch.Tensor, h: int, w: int, exclusion: int) -> torch.Tensor:
    """0-shot: each patch's distance to the nearest patch of the *same* image outside a
    ``(2·exclusion+1)²`` window around it (FADE's 0-shot vision memory / MuSc's mutual scoring).

    ``patches`` is ``(h·w, D)`` in row-major grid order; returns ``(h·w,)``."""
    n = patches.shape[0]
    if n != h * w:
        raise ValueError(f"{n} patches do not form a {h}x{w} grid")
    ii = torch.arange(h).repeat_interleave(w)
    jj = torch.arange(w).repeat(h)
    sq = (patches * patches).sum(1)
    out = torch.empty(n)
    for start in range(0, n, QUERY_CHUNK):
        stop = min(n, start + QUERY_CHUNK)
        q = patches[start:stop]
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (q @ patches.T)
        near = ((ii[start:stop, None] - ii[None, :]).abs() <= exclusion) & \
               ((jj[start:stop, None] - jj[None, :]).abs() <= exclusion)
        d2 = d2.masked_fill(near, float("inf"))
        out[start:stop] = d2.min(1).values.clamp_min_(0).sqrt_()
    return out


def local_nearest(query: torch.Tensor, bank: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positional memory: each query cell's distance to the nearest bank cell within ``radius`` cells
    of the same grid position, in any reference (PatchCore's nearest neighbour, restricted in space).

    ``query`` is ``(D, h, w)``, ``bank`` ``(K, D, h, w)`` (references on the same grid). Returns the
    distances ``(h, w)`` and the flat index ``k·h·w + i'·w + j'`` of each winner in ``bank``'s
    ``(K, h, w)`` order. A part that is missing where every reference has one is anomalous here
    even though an empty area looks normal elsewhere."""
    k, d, h, w = bank.shape
    if query.shape != (d, h, w):
        raise ValueError(f"query {tuple(query.shape)} does not match the bank's grid {(d, h, w)}")
    r = max(0, int(radius))
    # channels last and padded by r cells: each offset's candidates are a strided view, not a copy;
    # padded cells have an infinite ‖m‖², so they never win
    rows = bank.permute(0, 2, 3, 1)  # K, h, w, D
    padded = F.pad(rows, (0, 0, r, r, r, r))
    padded_sq = F.pad((rows * rows).sum(-1), (r, r, r, r), value=float("inf"))
    q = query.permute(1, 2, 0).contiguous()  # h, w, D
    best = torch.full((h, w), float("inf"))
    best_idx = torch.zeros((h, w), dtype=torch.long)
    ii = torch.arange(h)[:, None]
    jj = torch.arange(w)[None, :]
    for di in range(-r, r + 1):
        for dj in range(-r, r + 1):
            # the bank cell (i + di, j + dj) seen from query cell (i, j);
            # ‖q‖² is the same for every candidate of a cell: added once at the end
            window = (slice(None), slice(r + di, r + di + h), slice(r + dj, r + dj + w))
            d2 = padded_sq[window] - 2.0 * torch.einsum("khwd,hwd->khw", padded[window], q)
            val, which = d2.min(0)
            better = val < best
            best = torch.where(better, val, best)
            best_idx = torch.where(better, which * h * w + (ii + di) * w + (jj + dj), best_idx)
    best = best + (q * q).sum(-1)
    return best.clamp_min_(0).sqrt_(), best_idx


def place_agreement(grids: torch.Tensor, radius: int, quantile: float = 0.99, stride: int = 3,
                    max_shots: int = 8, max_rows: int = 65536, seed: int = 0) -> float:
    """How well the references agree *in place*: ≈ 1 when a shot's patches find their match at the
    same grid position of the other shots as well as anywhere, > 1 when they must look elsewhere.

    ``grids`` is ``(K, D, h, w)``, K ≥ 2; only the first ``max_shots`` are compared (the cost grows
    with K²). For every shot i, leave-one-out against the other shots, the ``quantile`` of its cell
    distances (on every ``stride``-th cell in each direction) is taken twice: nearest within
    ``radius`` cells of the same place (:func:`local_nearest`), and nearest anywhere among the
    patches of the other shots (:func:`nearest`). Returns median_i(local_i) / median_i(anywhere_i).
    The local distance of a cell is never below its nearest anywhere, so the ratio is ≥ 1, unless
    the other shots hold more than ``max_rows`` patches: a random ``max_rows`` of them are then
    searched anywhere (a memory bound for large grids), which lowers the ratio. The ratio falls
    slowly as shots are added (measured, ball screw 2/4/8 shots: 1.67 / 1.13 / 1.10)."""
    grids = grids[:max_shots]
    k, d, h, w = grids.shape
    if k < 2:
        raise ValueError(f"place agreement needs at least 2 reference grids, got {k}")
    gen = torch.Generator().manual_seed(seed)
    cells = torch.zeros(h, w, dtype=torch.bool)
    cells[::stride, ::stride] = True
    local_q, anywhere_q = [], []
    for i in range(k):
        others = torch.cat([grids[:i], grids[i + 1:]])
        ldist, _ = local_nearest(grids[i], others, radius)
        rows = others.permute(0, 2, 3, 1).reshape(-1, d)
        if rows.shape[0] > max_rows:
            rows = rows[torch.randperm(rows.shape[0], generator=gen)[:max_rows]]
        query = grids[i].permute(1, 2, 0)[cells]  # (cells, D)
        gdist, _ = nearest(query, rows, 1)
        local_q.append(float(torch.quantile(ldist[cells], quantile)))
        anywhere_q.append(float(torch.quantile(gdist[:, 0], quantile)))
    return float(torch.tensor(local_q).median() / max(float(torch.tensor(anywhere_q).median()), 1e-12))
