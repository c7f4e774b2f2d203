"""Classic change-detection baselines on tiny generated pairs, and one real OSCD city when it is present."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from changescout.errors import ConfigError, InputError
from changescout.evaluate.baselines import BASELINES, cva_raw, cva_z, get_baseline, irmad, pca_kmeans
from changescout.evaluate.metrics import patch_level, ranking_metrics

OSCD = Path(__file__).resolve().parents[3] / "shared" / "data" / "oscd"
SQUARE = (slice(20, 36), slice(24, 40))


def make_pair(seed=0, bands=4, size=64):
    """Correlated noisy bands; the second date is a noisy linear copy of the first with a changed 16 px square."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((2, size, size))
    mix = rng.uniform(0.2, 1.0, (bands, 2))
    a = np.einsum("bk,kyx->byx", mix, latent) + 0.3 * rng.standard_normal((bands, size, size))
    b = 0.9 * a + 0.2 + 0.3 * rng.standard_normal((bands, size, size))
    b[:, SQUARE[0], SQUARE[1]] += rng.uniform(1.5, 2.5, (bands, 1, 1)) * np.array([1, -1, 1, -1][:bands])[:, None, None]
    label = np.zeros((size, size), bool)
    label[SQUARE] = True
    return a, b, label


@pytest.mark.parametrize("name", list(BASELINES))
def test_planted_square_scores_above_background(name):
    a, b, label = make_pair()
    score = BASELINES[name](a, b)
    assert score.shape == label.shape and np.isfinite(score).all()
    assert ranking_metrics(score, label)["auroc"] > 0.95
    assert np.median(score[label]) > np.percentile(score[~label], 95)


@pytest.mark.parametrize("name", list(BASELINES))
def test_deterministic_and_single_band_accepted(name):
    a, b, label = make_pair(seed=1)
    assert np.array_equal(BASELINES[name](a, b), BASELINES[name](a, b))
    single = BASELINES[name](a[0], b[0])
    assert single.shape == label.shape
    assert np.mean(single[label]) > np.mean(single[~label])


def test_cva_z_ignores_per_date_gain_and_offset_but_cva_raw_does_not():
    a, b, _ = make_pair()
    gain, offset = np.array([2.0, 0.5, 3.0, 1.5])[:, None, None], np.array([1.0, -2.0, 0.0, 5.0])[:, None, None]
    np.testing.assert_allclose(cva_z(a, gain * b + offset), cva_z(a, b), rtol=1e-9, atol=1e-9)
    assert not np.allclose(cva_raw(a, gain * b + offset), cva_raw(a, b), rtol=1e-2)


def test_cva_raw_is_invariant_to_one_transform_shared_by_both_dates():
    a, b, _ = make_pair()
    gain, offset = np.array([2.0, 0.5, 3.0, 1.5])[:, None, None], np.array([1.0, -2.0, 0.0, 5.0])[:, None, None]
    np.testing.assert_allclose(cva_raw(gain * a + offset, gain * b + offset), cva_raw(a, b), rtol=1e-9, atol=1e-9)


def test_irmad_is_invariant_to_linear_band_transforms_of_each_date():
    a, b, _ = make_pair()
    rng = np.random.default_rng(5)
    m1, m2 = rng.standard_normal((4, 4)) + 3 * np.eye(4), rng.standard_normal((4, 4)) + 3 * np.eye(4)
    a2 = np.einsum("ij,jyx->iyx", m1, a) + rng.standard_normal((4, 1, 1))
    b2 = np.einsum("ij,jyx->iyx", m2, b) + rng.standard_normal((4, 1, 1))
    np.testing.assert_allclose(irmad(a2, b2), irmad(a, b), rtol=1e-4, atol=1e-6)


def test_mad_statistic_is_chi_square_where_nothing_changed():
    """One CCA (plain MAD) on unchanged Gaussian pairs: Z is chi-square with one degree of freedom per band."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 100, 100))
    b = 0.8 * a + 0.6 * rng.standard_normal((4, 100, 100))
    z = irmad(a, b, max_iter=1)
    assert np.mean(z) == pytest.approx(4.0, rel=0.03)
    assert np.var(z) == pytest.approx(8.0, rel=0.1)


def test_irmad_reweighting_separates_the_change_and_settles():
    a, b, label = make_pair(size=96)
    mad, z = irmad(a, b, max_iter=1), irmad(a, b)
    assert np.min(z[label]) > np.percentile(z[~label], 99)
    assert np.min(z[label]) / np.median(z[~label]) > np.min(mad[label]) / np.median(mad[~label])
    longer = irmad(a, b, max_iter=120, tol=1e-9)
    assert np.max(np.abs(longer - z) / z) < 0.01 * np.max(np.abs(longer - mad) / mad)


def test_irmad_survives_weights_collapsing_onto_saturated_pixels():
    """8-bit bands clipped at 255 in both dates: the weights end on pixels related exactly linearly."""
    rng = np.random.default_rng(0)
    scene = 200 + 60 * rng.standard_normal((64, 64))
    a, b = (scene + 10 * rng.standard_normal((3, 64, 64)) for _ in range(2))
    b[:, SQUARE[0], SQUARE[1]] -= 80
    a, b = np.clip(np.round(a), 0, 255), np.clip(np.round(b), 0, 255)
    label = np.zeros((64, 64), bool)
    label[SQUARE] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = irmad(a, b)
    assert np.isfinite(z).all() and ranking_metrics(z, label)["auroc"] > 0.9


def test_irmad_refuses_constant_bands():
    a, b, _ = make_pair()
    a[1] = a[0]
    b[:] = 1.0
    with pytest.raises(InputError, match="constant or linearly dependent"):
        irmad(a, b)


@pytest.mark.parametrize("name", ["cva-raw", "cva-z", "irmad"])
def test_nodata_is_left_out_of_the_statistics(name):
    """A pixel-wise baseline gives the same scores with NaN pixels as on the valid pixels alone."""
    a, b, _ = make_pair()
    a[:, 3, 4] = np.nan
    b[2, 10, 11] = np.nan
    b[0, 40, 50] = np.inf
    score = BASELINES[name](a, b)
    bad = np.zeros(score.shape, bool)
    bad[3, 4] = bad[10, 11] = bad[40, 50] = True
    assert np.isnan(score[bad]).all() and np.isfinite(score[~bad]).all()
    alone = BASELINES[name](a[:, ~bad][:, None, :], b[:, ~bad][:, None, :])
    np.testing.assert_allclose(score[~bad], alone.ravel(), rtol=1e-6)


def test_pca_kmeans_nodata_and_labels():
    a, b, label = make_pair()
    a[:, 0:3, 0:5] = np.nan
    score, changed = pca_kmeans(a, b, return_labels=True)
    assert np.isnan(score[0:3, 0:5]).all() and np.isfinite(score[3:]).all()
    assert np.array_equal(changed, np.nan_to_num(score, nan=-1) > 0)
    assert changed[label].mean() > 0.8 and changed[~label].mean() < 0.05


def test_pca_kmeans_arguments_are_checked():
    a, b, _ = make_pair()
    with pytest.raises(ConfigError, match="block"):
        pca_kmeans(a, b, block=1)
    with pytest.raises(ConfigError, match="n_components"):
        pca_kmeans(a, b, block=2, n_components=5)


def test_mismatched_dates_are_refused():
    a, b, _ = make_pair()
    with pytest.raises(InputError, match="same shape"):
        cva_z(a, b[:3])
    with pytest.raises(InputError, match="no pixel"):
        cva_raw(np.full_like(a, np.nan), b)


def test_unknown_baseline_lists_the_known_ones():
    assert get_baseline("irmad") is irmad
    with pytest.raises(ConfigError, match="cva-raw, cva-z, irmad, pca-kmeans"):
        get_baseline("mad")


BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def load_oscd_city(city: Path):
    """The 13 bands of both dates warped onto imgs_1 B02's 10 m grid, and the change label (cm value 2)."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.warp import Resampling, reproject

    with rasterio.open(next((city / "imgs_1").glob("*_B02.tif"))) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    x = np.zeros((2, len(BANDS)) + shape, np.float32)
    for t, folder in enumerate(("imgs_1", "imgs_2")):
        for i, band in enumerate(BANDS):
            with rasterio.open(next((city / folder).glob(f"*_{band}.tif"))) as src:
                reproject(rasterio.band(src, 1), x[t, i], dst_transform=transform, dst_crs=crs,
                          resampling=Resampling.bilinear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(next((city / "cm").glob("*-cm.tif"))) as src:
            label = src.read(1) == 2
    return x / 10000.0, label


@pytest.fixture(scope="module")
def rennes_crop():
    """The top-left 256 x 512 px of rennes (about 3 % change), both dates and the label."""
    if not (OSCD / "rennes" / "imgs_1").is_dir():
        pytest.skip("OSCD data not in ../shared/data/oscd")
    x, label = load_oscd_city(OSCD / "rennes")
    return x[:, :, :256, :512], label[:256, :512]


@pytest.mark.parametrize("name", ["cva-z", "pca-kmeans"])
def test_oscd_city_patch_ranking_beats_chance(rennes_crop, name):
    x, label = rennes_crop
    score = BASELINES[name](x[0], x[1])
    s, y = patch_level(score, label, 16)
    assert y.sum() >= 20
    assert ranking_metrics(s, y)["auroc"] > 0.75
