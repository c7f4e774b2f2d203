"""The Presto encoder: golden vectors of the published weights, preprocessing, series modes, and that the
pretrained weights matter on OSCD. Tests needing ../shared (weights, golden vectors, OSCD) skip without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from changescout.encoders.base import EncoderSpec, select_bands, sha256_file
from changescout.encoders.presto import (
    BANDS, PrestoEncoder, load_presto, patch_mean, presto_inputs, random_presto, trailing_windows, usable_pixels,
)
from changescout.encoders.presto_net import CHANNELS, NORM_ADD, NORM_DIV, PrestoNet, month_table, position_table
from changescout.errors import BandError, ConfigError, WeightsError

SHARED = Path(__file__).resolve().parents[3] / "shared"
PRESTO = SHARED / "models" / "presto"
WEIGHTS = PRESTO / "default_model.pt"
GOLDEN = PRESTO / "golden" / "golden.npz"
OSCD = SHARED / "data" / "oscd"
needs_golden = pytest.mark.skipif(not (WEIGHTS.is_file() and GOLDEN.is_file()), reason="needs ../shared/models/presto")
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason="needs ../shared/models/presto/default_model.pt")
needs_oscd = pytest.mark.skipif(not (WEIGHTS.is_file() and (OSCD / "beirut").is_dir()), reason="needs ../shared/data/oscd")
TOL = dict(rtol=1e-4, atol=1e-4)  # GOLDEN.md's recommendation for float32


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def net():
    return load_presto(WEIGHTS)


def _run(net, g, prefix, index=None):
    """``net.tokens`` on the golden inputs ``prefix_*`` (optionally the first axis ``index`` of each)."""
    names = ("x", "mask", "dynamic_world", "latlons", "months")
    arrays = [g[f"{prefix}_{n}"] if index is None else g[f"{prefix}_{n}"][index] for n in names]
    with torch.inference_mode():
        out = net.tokens(*map(torch.from_numpy, arrays))
    return {k: v.numpy() for k, v in out.items()}


# -- weights and fixed tables --------------------------------------------------------------------------
@needs_weights
def test_weights_load_strictly_and_drop_the_decoder(net):
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    encoder = {k for k in state if k.startswith("encoder.")}
    assert len(encoder) == 50 and len(state) - len(encoder) == 52  # the 52 decoder.* keys are dropped
    assert {"encoder." + k for k in net.state_dict()} == encoder
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state["encoder." + k], rtol=0, atol=0)
    assert not net.training and all(p.dtype == torch.float32 for p in net.parameters())
    assert sha256_file(WEIGHTS) == PrestoEncoder(weights=WEIGHTS).spec.weights_sha256


@needs_weights
def test_stored_tables_follow_the_formulas(net):
    np.testing.assert_allclose(net.month_embed.weight.detach().numpy(), month_table().numpy(), atol=3e-7)
    np.testing.assert_allclose(net.pos_embed[0].detach().numpy(), position_table().numpy(), atol=3e-7)


def test_bad_weights_are_reported(tmp_path):
    bad = tmp_path / "default_model.pt"
    torch.save({"encoder.norm.weight": torch.ones(128)}, bad)
    with pytest.raises(WeightsError, match="missing"):
        load_presto(bad)
    bad.write_bytes(b"not a state dict")
    with pytest.raises(WeightsError):
        load_presto(bad)
    with pytest.raises(WeightsError, match="SHA-256"):
        PrestoEncoder(weights=tmp_path)  # a folder holding a file of the wrong checksum
    with pytest.raises(WeightsError, match="default_model.pt"):
        PrestoEncoder(weights=tmp_path / "nowhere")
    # Presto's keys with other shapes (another model size): a bare RuntimeError of torch
    state = {f"encoder.{k}": v[..., :1] if v.ndim else v for k, v in random_presto(0).state_dict().items()}
    torch.save(state, bad)
    with pytest.raises(WeightsError, match=r"default_model.pt: Presto encoder weights do not fit the architecture: size mismatch"):
        load_presto(bad)


# -- golden cases --------------------------------------------------------------------------------------
@needs_golden
def test_golden_rand(net, golden):
    out = _run(net, golden, "rand")
    np.testing.assert_allclose(out["embedded"], golden["rand_embedded"], **TOL)
    np.testing.assert_allclose(out["tokens"], golden["rand_tokens"], **TOL)
    np.testing.assert_allclose(out["pooled"], golden["rand_pooled"], **TOL)
    assert not out["pad"].any()
    kept = out["order"][:, 1:] - 1  # positions in the 9T + 1 sequence without the location token
    np.testing.assert_array_equal(kept, golden["rand_kept_indices"])
    removed = np.stack([np.setdiff1d(np.arange(9 * 6 + 1), k) for k in kept])
    np.testing.assert_array_equal(removed, golden["rand_removed_indices"])


@needs_golden
@pytest.mark.parametrize("date", [0, 1])
def test_golden_oscd_single_dates(net, golden, date):
    out = _run(net, golden, "oscd_t1", date)
    np.testing.assert_allclose(out["pooled"], golden["oscd_t1_pooled"][date], **TOL)
    diag = golden["oscd_diag_pixels"]
    np.testing.assert_allclose(out["tokens"][diag], golden["oscd_t1_diag_tokens"][date], **TOL)
    np.testing.assert_allclose(out["pooled"][diag], golden["oscd_t1_diag_pooled"][date], **TOL)


@needs_golden
def test_golden_oscd_two_date_series(net, golden):
    out = _run(net, golden, "oscd_t2")
    np.testing.assert_allclose(out["tokens"], golden["oscd_t2_tokens"], **TOL)
    np.testing.assert_allclose(out["pooled"], golden["oscd_t2_pooled"], **TOL)
    np.testing.assert_array_equal(out["order"][:, 1:] - 1, golden["oscd_t2_kept_indices"])


@needs_golden
def test_pixels_with_different_missing_tokens_share_a_batch(net, golden):
    """Every other pixel of oscd_t2 loses its second date: those equal the one-date golden embeddings, the
    others stay the two-date ones, all in one batch (the reference needs equal counts per batch)."""
    g = dict(golden)
    mask = g["oscd_t2_mask"].copy()
    mask[::2, 1, 2:12] = 1
    mask[::2, 1, 16] = 1
    g["oscd_t2_mask"] = mask
    out = _run(net, g, "oscd_t2")
    assert out["pad"][::2].sum(axis=1).tolist() == [6] * 16 and not out["pad"][1::2].any()
    np.testing.assert_allclose(out["pooled"][::2], golden["oscd_t1_diag_pooled"][0, ::2], **TOL)
    np.testing.assert_allclose(out["pooled"][1::2], golden["oscd_t2_pooled"][1::2], **TOL)


# -- preprocessing, end to end from the raw OSCD crop ------------------------------------------------------
def _raw_reflectance(golden) -> np.ndarray:
    """``oscd_raw`` (date, 13 bands DN, 32, 32) -> (date, 10 bands of BANDS, 32, 32) 0..1 reflectance, as a cube holds."""
    names = [str(b) for b in golden["oscd_raw_bands"]]
    return golden["oscd_raw"][:, select_bands(names, EncoderSpec("p", "1", 1, 1, bands=BANDS))] / np.float32(10000)


def test_normalisation_constants_follow_golden_md():
    assert CHANNELS[2:12] == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    np.testing.assert_array_equal(NORM_ADD[[0, 2, 12]], [25, 0, -272.15])
    np.testing.assert_array_equal(NORM_DIV[[0, 2, 12, 13, 14, 15, 16]], [25, 10000, 35, 0.03, 2000, 50, 1])


@needs_golden
def test_end_to_end_from_raw_sentinel2(golden):
    refl = _raw_reflectance(golden)  # (2, 10, 32, 32)
    pixels = refl.reshape(2, 10, 1024).transpose(0, 2, 1)[:, :, None]  # (date, pixel, 1 step, band)
    for d in range(2):
        x, mask = presto_inputs(pixels[d], np.ones((1024, 1), bool))
        np.testing.assert_allclose(x, golden["oscd_t1_x"][d], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(mask, golden["oscd_t1_mask"][d])
    latlon = np.stack([golden["oscd_lat"], golden["oscd_lon"]], axis=-1)
    months = golden["oscd_months"]
    single = PrestoEncoder(patch_size=1, mode="single", weights=WEIGHTS, device="cpu")
    out = single.encode(refl, months, latlon=latlon)  # (2, 128, 32, 32): one embedding per pixel
    np.testing.assert_allclose(out.reshape(2, 128, 1024).transpose(0, 2, 1), golden["oscd_t1_pooled"], **TOL)
    # 16 px patches in window mode, date 2 usable on the diagonal only: date 1 = the mean of the one-date pixel
    # embeddings; date 2 = the mean of the two-date series of the diagonal pixels, zeros off the diagonal
    window = PrestoEncoder(patch_size=16, mode="window", context=3, weights=WEIGHTS, device="cpu")
    valid = np.ones((2, 32, 32), bool)
    valid[1] = np.eye(32, dtype=bool)
    states = window.encode_series(refl, months, valid, latlon=latlon)
    mean = golden["oscd_t1_pooled"][0].reshape(2, 16, 2, 16, 128).mean(axis=(1, 3)).transpose(2, 0, 1)
    np.testing.assert_allclose(states[0], mean, **TOL)
    diag = golden["oscd_t2_pooled"].reshape(2, 16, 128).mean(axis=1)  # pixels (k, k): patch (0, 0), then (1, 1)
    np.testing.assert_allclose(states[1][:, [0, 1], [0, 1]].T, diag, **TOL)
    assert not states[1][:, 0, 1].any() and not states[1][:, 1, 0].any()
    # the golden sanity check: changed pixels move further between the dates than unchanged ones
    a, b = (out[d].reshape(128, -1) for d in range(2))
    cos = 1 - (a * b).sum(0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)
    change = golden["oscd_change"].ravel()
    assert cos[change].mean() == pytest.approx(0.168, abs=2e-3) and cos[~change].mean() == pytest.approx(0.096, abs=2e-3)


def test_presto_inputs_masks_and_ndvi():
    refl = np.array([[[0.1] * 10, [0.0] * 10]], np.float32)  # one pixel, two steps, the second all 0
    refl[0, 0, 2], refl[0, 0, 6] = 0.1, 0.3  # red, nir
    x, mask = presto_inputs(refl, np.array([[True, False]]))
    assert x.shape == mask.shape == (1, 2, 17) and x.dtype == mask.dtype == np.float32
    assert x[0, 0, 16] == pytest.approx(0.5) and x[0, 0, 2] == pytest.approx(0.1)
    np.testing.assert_array_equal(mask[0, 0], [1, 1] + [0] * 10 + [1] * 4 + [0])
    np.testing.assert_array_equal(mask[0, 1], np.ones(17))
    assert not x[0, 1].any()
    with pytest.raises(BandError):
        presto_inputs(refl[..., :4], np.ones((1, 2), bool))


# -- helpers and the encoder API -----------------------------------------------------------------------------
def test_trailing_windows_skip_unusable_dates():
    valid = np.array([[1, 1, 1, 0], [1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], bool)  # (T=4 dates, N=4 pixels)
    idx, ok = trailing_windows(valid, t=3, context=3)
    assert idx.tolist() == [[0, 1, 3], [0, 2, 3], [1, 2, 3], [1, 3, 3]]
    assert ok.tolist() == [[True] * 3, [True] * 3, [True] * 3, [True, True, False]]
    idx, ok = trailing_windows(valid, t=0, context=2)
    assert ok.tolist() == [[True, False]] * 3 + [[False, False]] and (idx[:3, 0] == 0).all()


def test_patch_mean_over_usable_pixels():
    where = np.zeros((4, 4), bool)
    where[0, 0] = where[1, 1] = where[2, 3] = True
    emb = np.array([[1.0, 0], [3.0, 2], [5.0, 5]], np.float32)
    out = patch_mean(emb, where, 2)
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[:, 0, 0], [2, 1])
    np.testing.assert_allclose(out[:, 1, 1], [5, 5])
    assert not out[:, 0, 1].any() and not out[:, 1, 0].any()


@needs_weights
def test_spec_and_protocol():
    enc = PrestoEncoder(weights=WEIGHTS, device="cpu")
    s = enc.spec
    assert (s.name, s.dim, s.patch_size, s.input, s.temporal, s.weights_file) == ("presto", 128, 16, "reflectance", True, "default_model.pt")
    assert s.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert s.weights_sha256 == enc.weights_digest() and "nasaharvest/presto" in s.weights_url and "MIT" in s.license
    assert s.window % s.patch_size == 0
    assert enc.fit(np.zeros((1, 10, 16, 16))) is enc and enc.is_fitted and enc.save_weights(Path("x")) is None
    stac = ["coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"]
    assert select_bands(stac, s) == list(range(1, 11))
    with pytest.raises(BandError):
        select_bands(["blue", "green", "red", "nir"], s)


@needs_weights
def test_bad_arguments_raise_clear_errors():
    for kw in ({"mode": "median"}, {"context": 0}, {"context": 25}, {"batch_size": 0}, {"patch_size": 0}):
        with pytest.raises(ConfigError):
            PrestoEncoder(weights=WEIGHTS, **kw)
    enc = PrestoEncoder(weights=WEIGHTS, patch_size=8, device="cpu")
    x = np.full((2, 10, 16, 16), 0.1, np.float32)
    with pytest.raises(BandError):
        enc.encode(x[:, :4], np.array([0, 1]))
    with pytest.raises(ConfigError, match="multiples"):
        enc.encode(x[..., :12], np.array([0, 1]))
    with pytest.raises(ConfigError, match="months"):
        enc.encode(x, np.array([1, 12]))
    with pytest.raises(ConfigError, match="valid"):
        enc.encode_series(x, np.array([0, 1]), valid=np.ones((2, 8, 8), bool))
    with pytest.raises(ConfigError, match="latlon"):
        enc.encode(x, np.array([0, 1]), latlon=(1.0, 2.0, 3.0))


def test_random_weights_are_seeded():
    a, b, c = (PrestoEncoder(weights="random", seed=s, patch_size=4, device="cpu") for s in (0, 0, 1))
    assert a.weights_digest() == b.weights_digest() != c.weights_digest()
    x = np.random.default_rng(0).uniform(0.01, 0.4, (1, 10, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(a.encode(x, np.array([3])), b.encode(x, np.array([3])))
    assert isinstance(PrestoNet(), torch.nn.Module) and not random_presto(0).training


def test_unusable_pixels_are_left_out():
    enc = PrestoEncoder(weights="random", patch_size=4, mode="single", device="cpu")
    x = np.random.default_rng(1).uniform(0.01, 0.4, (1, 10, 8, 8)).astype(np.float32)
    holed = x.copy()
    holed[0, :, :4, :4] = 0.0  # the embedding stage's NaN fill: a whole patch unusable
    holed[0, :, 4, 4] = np.nan  # one pixel
    assert usable_pixels(holed).sum() == 64 - 16 - 1
    out, ref = enc.encode(holed, np.array([5])), enc.encode(x, np.array([5]))
    assert not out[0, :, 0, 0].any() and np.isfinite(out).all()
    np.testing.assert_allclose(out[0, :, 0, 1], ref[0, :, 0, 1], atol=1e-5)
    assert not np.allclose(out[0, :, 1, 1], ref[0, :, 1, 1], atol=1e-5)


# -- series modes on a synthetic series ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def series():
    """8 x 8 px, 8 monthly dates of the synthetic source; the top-left 4 x 4 patch is unusable at date 3."""
    import pandas as pd

    from changescout.sources.synthetic import make_series

    cube, _ = make_series(seed=0, size=128, n_dates=8)
    x = np.ascontiguousarray(cube.isel(y=slice(44, 52), x=slice(44, 52)).values)
    months = pd.DatetimeIndex(cube["time"].values).month.to_numpy() - 1
    valid = np.ones((8, 8, 8), bool)
    valid[3, :4, :4] = False
    return x, months, valid


@pytest.fixture(scope="module")
def window_encoder():
    """The pretrained weights where available, else random ones (the series logic is the same)."""
    weights = WEIGHTS if WEIGHTS.is_file() else "random"
    return PrestoEncoder(patch_size=4, mode="window", context=3, weights=weights, device="cpu")


@pytest.fixture(scope="module")
def window_states(series, window_encoder):
    return window_encoder.encode_series(*series)


def test_window_states_are_finite_and_deterministic(series, window_encoder, window_states):
    assert window_states.shape == (8, 128, 2, 2) and window_states.dtype == np.float32
    assert np.isfinite(window_states).all()
    assert not window_states[3, :, 0, 0].any() and window_states[3, :, 1, 1].any()  # no usable pixel: zeros
    np.testing.assert_array_equal(window_encoder.encode_series(*series), window_states)


def test_window_state_depends_only_on_dates_up_to_it(series, window_encoder, window_states):
    x, months, valid = series
    first = window_encoder.encode_series(x[:5], months[:5], valid[:5])  # the series cut after date 4
    np.testing.assert_allclose(first, window_states[:5], rtol=1e-5, atol=1e-5)
    changed = x.copy()
    changed[4] = changed[4, ::-1]  # date 4 replaced by other spectra
    states = window_encoder.encode_series(changed, months, valid)
    moved = np.abs(states - window_states).max(axis=(1, 2, 3))
    assert (moved[:4] < 1e-5).all() and (moved[4:7] > 1e-2).all()  # dates 4, 5, 6 see date 4 ...
    assert moved[7] < 1e-5  # ... date 7 sees 5, 6, 7 only (every pixel usable at those dates)


def test_window_of_one_date_is_single_mode(series, window_encoder):
    x, months, valid = series
    one = PrestoEncoder(patch_size=4, mode="window", context=1, weights="random", device="cpu")
    single = PrestoEncoder(patch_size=4, mode="single", weights="random", device="cpu")
    np.testing.assert_allclose(one.encode_series(x[:3], months[:3], valid[:3]), single.encode_series(x[:3], months[:3], valid[:3]), atol=1e-5)
    np.testing.assert_allclose(single.encode(x[:3], months[:3]), single.encode_series(x[:3], months[:3]), atol=1e-5)


# -- the pretrained weights matter on OSCD ----------------------------------------------------------------------
#: (row0, col0) of a 256 x 384 px window of each city's imgs_1 B02 grid: the window with the most changed
#: 16 px patches (72 of 384 in beirut, 43 in cupertino). Measured on all 7 cities, the margins below hold on
#: these windows but not on every city (see the report): Presto's single-date distance is a weak change score.
OSCD_WINDOWS = {"beirut": (0, 576), "cupertino": (576, 128)}
OSCD_STRIDE = 8  # every 8th pixel: 2 x 2 of the 256 pixels of a patch, to keep the test fast


def _oscd_window(city: str, row0: int, col0: int, h: int = 256, w: int = 384):
    """Both dates' BANDS warped (bilinear) onto a window of the imgs_1 B02 grid, as 0..1 reflectance
    ``(2, 10, h, w)``; the change label ``(h, w)``; months ``(2,)``; the window centre (lat, lon)."""
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject
    from rasterio.windows import Window

    folder = OSCD / city
    with rasterio.open(next((folder / "imgs_1").glob("*_B02.tif"))) as src:
        a, b, c, d, e, f = tuple(src.transform)[:6]
        crs, transform = src.crs, Affine(a, b, c + a * col0 + b * row0, d, e, f + d * col0 + e * row0)
    x = np.zeros((2, len(BANDS), h, w), np.float32)
    for t, imgs in enumerate(("imgs_1", "imgs_2")):
        for b, band in enumerate(BANDS):
            with rasterio.open(next((folder / imgs).glob(f"*_{band}.tif"))) as src:
                reproject(rasterio.band(src, 1), x[t, b], dst_transform=transform, dst_crs=crs, resampling=Resampling.bilinear)
    with rasterio.open(folder / "cm" / f"{city}-cm.tif") as src:
        label = src.read(1, window=Window(col0, row0, w, h)) == 2  # 1 = no change, 2 = change
    dates = [line.split(":")[1].strip() for line in (folder / "dates.txt").read_text().splitlines() if ":" in line]
    months = np.array([int(d[4:6]) - 1 for d in dates])
    centre = (transform.f + transform.e * h / 2, transform.c + transform.a * w / 2)  # (lat, lon); north-up grid
    return x / np.float32(10000), label, months, centre


def _patch_aurocs(windows, encoder, bands=slice(None)) -> float:
    """Mean over the windows of the AUROC of the 16 px patch score = cosine distance between the two dates'
    "single"-mode patch embeddings; a patch is changed when >= 5 % of its pixels are."""
    from sklearn.metrics import roc_auc_score

    aurocs = []
    for x, label, months, latlon in windows:
        e = encoder.encode(x[:, bands, ::OSCD_STRIDE, ::OSCD_STRIDE], months, latlon=latlon).reshape(2, 128, -1)
        cos = 1 - (e[0] * e[1]).sum(0) / (np.linalg.norm(e[0], axis=0) * np.linalg.norm(e[1], axis=0) + 1e-9)
        h, w = label.shape
        changed = label.reshape(h // 16, 16, w // 16, 16).mean(axis=(1, 3)).ravel() >= 0.05
        aurocs.append(roc_auc_score(changed, cos))
    return float(np.mean(aurocs))


@pytest.fixture(scope="module")
def oscd_windows():
    return [_oscd_window(city, *rc) for city, rc in OSCD_WINDOWS.items()]


@pytest.fixture(scope="module")
def oscd_pretrained(oscd_windows):
    return _patch_aurocs(oscd_windows, PrestoEncoder(patch_size=16 // OSCD_STRIDE, mode="single", weights=WEIGHTS, device="cpu"))


@needs_golden
@needs_oscd
def test_oscd_warp_matches_the_golden_crop(golden):
    x, label, months, _ = _oscd_window("beirut", 416, 640, 32, 32)
    np.testing.assert_array_equal(x, _raw_reflectance(golden))
    np.testing.assert_array_equal(label, golden["oscd_change"])
    np.testing.assert_array_equal(months, golden["oscd_months"])


@needs_oscd
def test_oscd_pretrained_beats_random_weights(oscd_windows, oscd_pretrained):
    random = _patch_aurocs(oscd_windows, PrestoEncoder(patch_size=16 // OSCD_STRIDE, mode="single", weights="random", seed=0, device="cpu"))
    assert oscd_pretrained > 0.75 and oscd_pretrained > random + 0.2, (oscd_pretrained, random)  # measured 0.81 vs 0.46


@needs_oscd
def test_oscd_permuted_bands_do_worse(oscd_windows, oscd_pretrained):
    enc = PrestoEncoder(patch_size=16 // OSCD_STRIDE, mode="single", weights=WEIGHTS, device="cpu")
    permuted = _patch_aurocs(oscd_windows, enc, bands=slice(None, None, -1))  # B12 ... B02
    assert oscd_pretrained > permuted + 0.05, (oscd_pretrained, permuted)  # measured 0.81 vs 0.72


def test_pixel_stride_pools_a_lattice_of_pixels():
    """``pixel_stride=k`` embeds only every k-th pixel of each axis; a patch's state is their mean."""
    from changescout.encoders.presto import PrestoEncoder

    rng = np.random.default_rng(0)
    x = rng.uniform(0.01, 0.3, (2, 10, 16, 16)).astype(np.float32)
    months = np.array([3, 4])
    full = PrestoEncoder(patch_size=8, mode="single", weights="random", seed=1)
    lattice = PrestoEncoder(patch_size=8, mode="single", weights="random", seed=1, pixel_stride=4)
    sub = np.zeros_like(x)
    sub[:, :, ::4, ::4] = x[:, :, ::4, ::4]
    valid = np.zeros((2, 16, 16), bool)
    valid[:, ::4, ::4] = True
    np.testing.assert_allclose(lattice.encode_series(x, months), full.encode_series(sub, months, valid), atol=1e-5)
    with pytest.raises(ConfigError):
        PrestoEncoder(patch_size=8, weights="random", pixel_stride=3)


def test_the_options_of_the_embedding_space_are_named(window_encoder):
    """mode, context and pixel_stride change the space (window vs single: cosine 0.98): the runs' attributes say so."""
    assert window_encoder.space_options() == {}
    single = PrestoEncoder(patch_size=4, mode="single", weights=WEIGHTS if WEIGHTS.is_file() else "random", device="cpu")
    assert single.space_options() == {"mode": "single"}


def test_a_band_subset_masks_the_groups_it_lacks():
    """A cube without some of the ten bands (HLS S30 + L30: no B05-B08) was refused; Presto now masks the
    channel groups that read a missing band, so what would fill them does not reach the states."""
    from changescout.encoders.presto import PrestoEncoder

    hls = ("B02", "B03", "B04", "B8A", "B11", "B12")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.01, 0.3, (3, 10, 16, 16)).astype(np.float32)
    months = np.array([3, 4, 5])
    sub = PrestoEncoder(patch_size=8, weights="random", seed=1, bands=list(hls))
    full = PrestoEncoder(patch_size=8, weights="random", seed=1)
    assert sub.spec.bands == hls and sub.masked_groups == ("S2_Red_Edge", "S2_NIR_10m", "NDVI")
    assert sub.space_options() == {"bands": list(hls)} and full.space_options() == {}
    keep = [BANDS.index(b) for b in hls]
    states = sub.encode_series(x[:, keep], months)
    other = x.copy()
    other[:, [3, 4, 5, 6]] = rng.uniform(0.01, 0.5, (3, 4, 16, 16))  # what the missing bands would hold
    x_in, mask = presto_inputs(other.transpose(0, 2, 3, 1).reshape(3, -1, 10).transpose(1, 0, 2), np.ones((256, 3), bool),
                               ("B05", "B06", "B07", "B08"))
    assert (mask[..., 5:9] == 1).all() and (mask[..., 16] == 1).all() and (x_in[..., 5:9] == 0).all()  # masked, zeroed
    assert states.shape == (3, 128, 2, 2) and np.isfinite(states).all()
    sub.as_ten_bands = lambda _: other  # the missing bands holding values instead of zeros: masked, they change nothing
    np.testing.assert_allclose(sub.encode_series(x[:, keep], months), states, atol=1e-5)
    assert np.abs(states - full.encode_series(x, months)).max() > 1e-3  # another space than all ten bands
    with pytest.raises(BandError, match="6 bands B02, B03, B04, B8A, B11, B12"):
        sub.encode_series(x, months)


def test_random_weights_are_no_run_of_the_pretrained_ones(tmp_path):
    """A review: presto --weights random declared the pretrained file's SHA-256, so a run of random weights and
    one of the pretrained weights were one configuration, and the second command resumed the first."""
    from changescout.errors import RunExistsError
    from changescout.pipeline import RunConfig, run_pipeline

    assert PrestoEncoder(weights="random", seed=1).spec.weights_sha256 is None
    if not WEIGHTS.is_file():
        return
    config = RunConfig(source="synthetic:seed=0,size=128,n_dates=4", encoder="presto", weights="random",
                       encoder_options={"pixel_stride": 8})
    run_pipeline(config, tmp_path / "run", log=None)
    with pytest.raises(RunExistsError, match="another configuration"):
        run_pipeline(RunConfig(**{**config.to_dict(), "weights": str(WEIGHTS)}), tmp_path / "run", log=None)
