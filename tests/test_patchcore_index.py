"""The inverted-file index (``detect/patchcore/index.py``) against float64 brute force written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.detect.patchcore.index import build_index, kmeans, probe_nearest


def naive_probe(query: np.ndarray, grouped: np.ndarray, centroids: np.ndarray, offsets: list[int],
                probes: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each query: the nearest allowed row among the rows of its ``probes`` nearest lists, by loops."""
    dist, row = [], []
    ok = np.ones(len(grouped), bool) if allowed is None else allowed
    for q in query.astype(np.float64):
        to_c = [float(np.sum((q - c) ** 2)) for c in centroids.astype(np.float64)]
        lists = np.argsort(to_c, kind="stable")[:probes]
        cand = [r for lst in lists for r in range(offsets[lst], offsets[lst + 1]) if ok[r]]
        if not cand:  # the documented fallback: exact search over the allowed rows
            cand = [r for r in range(len(grouped)) if ok[r]]
        d = [float(np.sqrt(np.sum((q - grouped[r]) ** 2))) for r in cand]
        k = int(np.argmin(d))
        dist.append(d[k])
        row.append(cand[k])
    return np.array(dist), np.array(row)


def clustered(seed: int, centres: int, per: int, dims: int, spread: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dims)) * 3.0
    return (c[:, None, :] + spread * rng.standard_normal((centres, per, dims))).reshape(-1, dims).astype(np.float32)


def test_kmeans_recovers_well_separated_clusters() -> None:
    x = clustered(0, 5, 40, 6)
    truth = np.repeat(np.arange(5), 40)
    cents, assign = kmeans(torch.from_numpy(x), 5, iters=10, seed=1)
    a = assign.numpy()
    # every true cluster maps to one k-means cluster and back (a bijection)
    pairs = {(int(t), int(k)) for t, k in zip(truth, a, strict=True)}
    assert len(pairs) == 5 and len({k for _, k in pairs}) == 5
    for t, k in pairs:  # centroids are the cluster means
        np.testing.assert_allclose(cents[k].numpy(), x[truth == t].mean(0), atol=1e-5)


def test_build_index_groups_the_bank_by_list() -> None:
    x = torch.from_numpy(clustered(1, 8, 30, 5))
    order, index = build_index(x, list_size=30)
    assert index.lists == 8
    off = index.offsets.tolist()
    assert off[0] == 0 and off[-1] == x.shape[0] and all(a <= b for a, b in zip(off, off[1:], strict=False))
    assert sorted(order.tolist()) == list(range(x.shape[0]))  # a permutation: no row lost or repeated
    grouped = x[order].double()
    cents = index.centroids.double()
    for lst in range(index.lists):  # every row of list l is nearer to centroid l than to any other
        rows = grouped[off[lst]:off[lst + 1]]
        d = torch.cdist(rows, cents)
        assert bool((d.argmin(1) == lst).all())


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_probe_nearest_is_the_nearest_row_of_the_probed_lists(probes: int) -> None:
    rng = np.random.default_rng(2)
    bank = clustered(3, 12, 20, 8, spread=0.8)
    query = (bank[rng.choice(len(bank), 40)] + 0.9 * rng.standard_normal((40, 8))).astype(np.float32)
    order, index = build_index(torch.from_numpy(bank), list_size=20)
    grouped = bank[order.numpy()]
    got_d, got_r = probe_nearest(torch.from_numpy(query), torch.from_numpy(grouped), index, probes)
    want_d, want_r = naive_probe(query, grouped, index.centroids.numpy(), index.offsets.tolist(), probes)
    np.testing.assert_allclose(got_d.numpy(), want_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got_r.numpy(), want_r)
    # the distance is a true distance to the returned row, never smaller than the exact nearest
    exact = np.sqrt(((query[:, None, :].astype(np.float64) - bank[None]) ** 2).sum(-1)).min(1)
    assert np.all(got_d.numpy() >= exact - 1e-4)


def test_probing_every_list_is_the_exact_search() -> None:
    rng = np.random.default_rng(4)
    bank = rng.standard_normal((300, 6)).astype(np.float32)
    query = rng.standard_normal((50, 6)).astype(np.float32)
    order, index = build_index(torch.from_numpy(bank), list_size=25)
    d, r = probe_nearest(torch.from_numpy(query), torch.from_numpy(bank[order.numpy()]), index, index.lists)
    full = np.sqrt(((query[:, None, :].astype(np.float64) - bank[order.numpy()][None]) ** 2).sum(-1))
    np.testing.assert_allclose(d.numpy(), full.min(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(r.numpy(), full.argmin(1))


def test_allowed_rows_only_and_the_exact_fallback() -> None:
    rng = np.random.default_rng(5)
    bank = clustered(6, 6, 25, 4, spread=0.3)
    order, index = build_index(torch.from_numpy(bank), list_size=25)
    grouped = bank[order.numpy()]
    off = index.offsets.tolist()
    allowed = rng.random(len(grouped)) > 0.5
    allowed[off[0]:off[1]] = False  # one whole list excluded: its queries need the fallback
    query = np.concatenate([grouped[off[0]:off[0] + 5] + 0.01, grouped[rng.choice(len(grouped), 20)] + 0.2])
    query = query.astype(np.float32)
    got_d, got_r = probe_nearest(torch.from_numpy(query), torch.from_numpy(grouped), index, 1,
                                 torch.from_numpy(allowed))
    want_d, want_r = naive_probe(query, grouped, index.centroids.numpy(), off, 1, allowed)
    assert allowed[got_r.numpy()].all()
    np.testing.assert_allclose(got_d.numpy(), want_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got_r.numpy(), want_r)
    with pytest.raises(ValueError, match="empty"):
        probe_nearest(torch.from_numpy(query), torch.from_numpy(grouped), index, 1,
                      torch.zeros(len(grouped), dtype=torch.bool))
