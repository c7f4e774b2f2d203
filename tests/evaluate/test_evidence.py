"""Evidence of change and its combination (evaluate/evidence.py) on small generated arrays."""

import numpy as np
import pytest

from changescout.errors import ConfigError, InputError
from changescout.evaluate import evidence as ev
from changescout.evaluate.metrics import Item, evaluate_items, ranking_metrics


def _embeddings(seed=0, n=400, dim=12, changed=40):
    """Correlated embeddings of two dates; the last ``changed`` vectors of the second date are new."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((dim, dim)) * np.linspace(0.1, 3.0, dim)  # anisotropic: whitening matters
    e0 = rng.standard_normal((n, dim)) @ mix
    e1 = e0 + 0.2 * rng.standard_normal((n, dim)) @ mix
    e1[-changed:] = rng.standard_normal((changed, dim)) @ mix
    return e0, e1


def test_whitened_distance_is_invariant_to_a_linear_map_of_the_embedding_space():
    e0, e1 = _embeddings()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((12, 12)) + 3 * np.eye(12)  # invertible
    shift = rng.standard_normal(12) * 10
    d = ev.whitened_distance(e0, e1, "pca")
    d_mapped = ev.whitened_distance(e0 @ a + shift, e1 @ a + shift, "pca")
    np.testing.assert_allclose(d, d_mapped, rtol=1e-4, atol=1e-5)
    # the plain distance is not invariant, so the test means something
    plain, plain_mapped = ev.embedding_distance(e0, e1, "euclidean"), ev.embedding_distance(e0 @ a, e1 @ a, "euclidean")
    assert not np.allclose(plain / plain.mean(), plain_mapped / plain_mapped.mean(), rtol=1e-2)
    # Ledoit-Wolf shrinks toward a multiple of the identity: invariant to rotations and a common scale
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    lw = ev.whitened_distance(e0, e1, "ledoit-wolf")
    np.testing.assert_allclose(lw, ev.whitened_distance(5 * e0 @ q, 5 * e1 @ q, "ledoit-wolf"), rtol=1e-4, atol=1e-5)
    # the changed vectors stand out
    label = np.zeros(len(e0), bool)
    label[-40:] = True
    assert ranking_metrics(d, label)["auroc"] > 0.95


def test_whiten_keeps_shape_and_marks_non_finite_vectors():
    e0, e1 = _embeddings(n=60, dim=4, changed=5)
    e0, e1 = e0.reshape(6, 10, 4), e1.reshape(6, 10, 4)
    e1[0, 0, 2] = np.nan
    w0, w1 = ev.whiten(e0, e1, "pca", n_components=3)
    assert w0.shape == w1.shape == (6, 10, 3)
    assert np.isnan(w1[0, 0]).all() and np.isnan(w0[0, 0]).all() and np.isfinite(w0[1:]).all()
    with pytest.raises(ConfigError):
        ev.whiten(e0, e1, "zca")
    with pytest.raises(InputError):
        ev.whiten(e0, e1[:, :5], "pca")


def test_combination_ranks_a_patch_with_both_evidences_above_one_with_one():
    rng = np.random.default_rng(0)
    emb = rng.normal(0.1, 0.02, (32, 32))
    spec = rng.normal(5.0, 1.0, (32, 32))  # another scale entirely
    emb[0:8, 0:8] += 0.1
    spec[0:8, 0:8] += 4  # both
    emb[8:16, 8:16] += 0.1  # embedding only
    spec[16:24, 16:24] += 4  # spectra only
    both = ev.combine([emb, spec], support=8)
    means = ev.block_means(both, 8)
    assert means[0, 0] > max(means[1, 1], means[2, 2]) > np.median(means)
    # weights tilt the balance; rank averaging works too
    tilted = ev.block_means(ev.combine([emb, spec], weights=[3, 1], support=8), 8)
    assert tilted[1, 1] > tilted[2, 2]
    ranked = ev.block_means(ev.combine([emb, spec], how="rank"), 8)
    assert ranked[0, 0] > max(ranked[1, 1], ranked[2, 2])
    with pytest.raises(ConfigError):
        ev.combine([emb, spec], weights=[1, -1])
    with pytest.raises(InputError):
        ev.combine([emb, spec[:16]])


def test_weights_that_sum_to_zero_are_refused():
    """All-zero weights leave nothing to average: refused, not a map of NaN scores (0 / 0) ranked as no change."""
    a, b = np.arange(16.0).reshape(4, 4), np.arange(16.0).reshape(4, 4)[::-1]
    for bad in ([0, 0], [0.0, 0.0]):
        with pytest.raises(ConfigError, match="positive sum"):
            ev.combine([a, b], weights=bad)
    assert np.isfinite(ev.combine([a, b], weights=[0, 1])).all()  # one weight 0 is fine: the other map alone


def test_calibration_makes_two_images_scores_comparable():
    rng = np.random.default_rng(0)
    labels, scores = [], []
    for gain, offset in ((1.0, 0.0), (8.0, 20.0)):  # the same kind of scene, scored on another scale
        label = np.zeros((40, 40), bool)
        label[:6] = True
        s = rng.normal(0, 1, (40, 40)) + 3 * label
        labels.append(label)
        scores.append(gain * s + offset)
    raw, _ = evaluate_items("raw", [Item(str(i), s, y) for i, (s, y) in enumerate(zip(scores, labels))])
    cal, per = evaluate_items("cal", [Item(str(i), ev.calibrate(s), y) for i, (s, y) in enumerate(zip(scores, labels))])
    # pooled: calibration recovers the ranking each image has on its own
    assert cal.auroc > raw.auroc + 0.1
    assert cal.auroc == pytest.approx(np.mean([p["auroc"] for p in per]), abs=0.02)
    # monotone within an image: its own ranking is unchanged
    for s, y in zip(scores, labels):
        assert ranking_metrics(ev.calibrate(s), y)["auroc"] == pytest.approx(ranking_metrics(s, y)["auroc"])
        assert ranking_metrics(ev.calibrate(s, how="rank"), y)["auroc"] == pytest.approx(ranking_metrics(s, y)["auroc"])


def test_robust_z_and_ranks():
    s = np.array([[1.0, 2.0, 3.0, np.nan], [4.0, 5.0, 100.0, 2.0]])
    z = ev.robust_z(s)
    assert np.isnan(z[0, 3]) and z[1, 2] > 10  # an outlier does not move the scale much
    assert ev.robust_z(np.full((4, 4), 3.0)).tolist() == np.zeros((4, 4)).tolist()
    assert np.isnan(ev.robust_z(np.full((2, 2), np.nan))).all()
    valid = np.ones_like(s, bool)
    valid[1, 2] = False  # left out of the statistics, still scored
    assert np.isfinite(ev.robust_z(s, valid)[1, 2])
    r = ev.rank_scores(s)
    assert r[1, 2] == 1.0 and 0 < np.nanmin(r) and np.isnan(r[0, 3])
    with pytest.raises(ConfigError):
        ev.calibrate(s, how="sigmoid")


def test_a_map_mostly_unchanged_keeps_its_few_changed_pixels_scored_and_ordered():
    """Most of a scene unchanged (one score, its MAD 0): the robust scale falls back on the standard deviation,
    else every pixel, the changed ones too, was scored 0 and calibration erased the change."""
    s = np.zeros((10, 10))
    s[0, :3] = [1.0, 2.0, 3.0]  # three changed pixels, the rest exactly unchanged
    z = ev.robust_z(s)
    assert 0 < z[0, 0] < z[0, 1] < z[0, 2]
    assert (z[1:] == 0).all()
    np.testing.assert_allclose(z[0, :3], s[0, :3] / s.std(), rtol=1e-6)


def test_robust_z_support_takes_its_scale_from_block_means():
    """With ``support`` p the median and MAD are those of the p px block means: a noisy per-pixel map and the same
    map averaged over each block get one scale at the patch level where they are compared (else the pixel noise
    widened the per-pixel map's MAD and shrank its patch scores)."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 1, (6, 6))
    means[1, 1] = 8.0  # a changed patch
    blocky = ev.spread_patches(means, 4, (24, 24))
    noisy = blocky + rng.normal(0, 3, blocky.shape)  # per-pixel noise around those means
    block = ev.block_means(noisy, 4)
    expected = (block - np.median(block)) / (ev.MAD_TO_STD * np.median(np.abs(block - np.median(block))))
    np.testing.assert_allclose(ev.block_means(ev.robust_z(noisy, support=4), 4), expected, rtol=1e-4, atol=1e-5)
    # a map constant over the blocks gets, with support p, the z-scores of its block means
    z = ev.block_means(ev.robust_z(blocky, support=4), 4)
    np.testing.assert_allclose(z, ev.robust_z(means), rtol=1e-5, atol=1e-6)
    # per pixel (support 1) the noisy map's scale is the pixels': its changed patch scores lower
    assert ev.block_means(ev.robust_z(noisy), 4)[1, 1] < 0.8 * expected[1, 1]


def test_aggregate_up_mean_max_top_k():
    fine = np.arange(16, dtype=float).reshape(4, 4)
    fine[0, 1] = np.nan
    assert ev.aggregate_up(fine, 2, "mean")[0, 0] == pytest.approx((0 + 4 + 5) / 3)
    assert ev.aggregate_up(fine, 2, "max").tolist() == [[5, 7], [13, 15]]
    assert ev.aggregate_up(fine, 2, "top2")[0, 0] == pytest.approx(4.5)
    assert ev.aggregate_up(fine, 2, "top9")[1, 1] == pytest.approx(np.mean([10, 11, 14, 15]))
    assert np.isnan(ev.aggregate_up(np.full((2, 2), np.nan), 2, "max")).all()
    assert ev.aggregate_up(np.ones((5, 5)), 2, "mean").shape == (2, 2)  # incomplete patches dropped
    for bad in ("median", "top0"):
        with pytest.raises(ConfigError):
            ev.aggregate_up(fine, 2, bad)


def test_top_k_of_a_patch_with_fewer_finite_fine_scores_than_k_is_their_mean():
    """A 16 px patch at a mask's or image's edge holds fewer than K finite fine scores: its topK is their mean,
    not their sum over K (which pulled masked and edge patches down the ranking)."""
    fine = np.array([[5.0, 5.0], [np.nan, np.nan]])  # the four 8 px fine patches of one 16 px patch, two masked
    assert ev.aggregate_up(fine, 2, "top4")[0, 0] == pytest.approx(5.0)
    assert ev.aggregate_up(np.array([[5.0, 1.0], [np.nan, 3.0]]), 2, "top4")[0, 0] == pytest.approx(3.0)


def test_smoothing_lets_a_change_over_touching_fine_patches_outrank_a_lone_spike():
    """A 4 px token beside a field edge can stand out alone; a new building changes several touching tokens."""
    fine = np.zeros((8, 8))
    fine[1, 1] = 3.0  # a lone spike, in the first 16 px patch (4 x 4 fine patches)
    fine[5:7, 5:7] = 2.0  # a 2 x 2 block of change, in the last
    assert ev.aggregate_up(fine, 4, "max")[0, 0] > ev.aggregate_up(fine, 4, "max")[1, 1]
    smoothed = ev.smooth_fine(fine, 1.0)
    assert ev.aggregate_up(smoothed, 4, "max")[1, 1] > ev.aggregate_up(smoothed, 4, "max")[0, 0]
    # NaN cells and the edges are left out of the weights, not counted as 0: a constant map stays constant
    flat = np.full((5, 6), 2.0)
    flat[2, 3] = np.nan
    out = ev.smooth_fine(flat, 1.5)
    assert np.isnan(out[2, 3]) and np.allclose(out[np.isfinite(flat)], 2.0)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="sigma"):
            ev.smooth_fine(fine, bad)


def test_spread_patches_and_block_means_are_inverse():
    fine = np.arange(6, dtype=np.float32).reshape(2, 3)
    px = ev.spread_patches(fine, 4, (9, 13))
    assert px.shape == (9, 13) and np.isnan(px[8]).all() and np.isnan(px[:, 12]).all()
    assert px[5, 9] == fine[1, 2]
    np.testing.assert_array_equal(ev.block_means(px, 4), fine)
    valid = np.ones((9, 13), bool)
    valid[:4, :4] = False
    assert np.isnan(ev.block_means(px, 4, valid)[0, 0])


def test_embedding_distance_cosine_and_euclidean():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert ev.embedding_distance(a, b, "cosine")[0] == pytest.approx(1.0)
    assert ev.embedding_distance(a, a * 3, "cosine")[0] == pytest.approx(0.0)  # a change of brightness only
    assert ev.embedding_distance(a, b, "euclidean")[0] == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        ev.embedding_distance(a, b, "manhattan")
