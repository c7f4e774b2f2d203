"""Run an encoder over a SeriesCube, window by window, and write the EmbeddingCube (zarr).

Every date is encoded on the identical window grid (windows are whole multiples of the patch size, counted
from the grid origin), so an embedding never depends on where a chunk happened to start. The work is a dask
graph of one task per window (every date of it, in batches): it runs on the local threads or, given a ``dask.distributed`` client,
on a cluster; memory stays bounded by the window size.

Encoders that publish their own normalisation (pretrained models, ``spec.input == "reflectance"``) receive
the cube's reflectance and normalise it themselves; the others get each date centred on its median and each
band scaled by one series-wide robust scale. Encoders that need the whole series (``spec.temporal``, Presto)
get every date of a window at once through ``encode_series``.

EmbeddingCube: ``embedding (time, row, col, dim)`` float32, ``clear_fraction (time, row, col)``, patch-centre
coordinates ``x (col)`` and ``y (row)``, attributes naming the encoder, its weights' SHA-256, patch size,
stride, grid and the normalisation parameters.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from .atomic import atomic_path
from .cube import OutputGrid, usable_mask
from .encoders.base import Encoder, select_bands
from .errors import ConfigError
from .tiling import PatchGrid

NORMALISATION = "per-date median of each band subtracted; divided by the band's series-wide IQR/1.349 (usable pixels)"


def normalisation_method(spec) -> str:
    """What the encoder's input was: the project's normalisation, or the encoder's own published one."""
    return NORMALISATION if spec.input != "reflectance" else f"encoder's own: {spec.scaling}"


def date_statistics(cube: xr.DataArray, band_index: list[int], max_pixels: int = 65536) -> np.ndarray:
    """Per date and band robust centre, and per band series-wide scale, over usable pixels: ``(time, band, 2)``.

    Centring each date removes global shifts of illumination and atmosphere; one scale per band for the whole
    series keeps the contrast of an unchanged object the same at every date (a per-date scale would
    inflate it on dates whose scene happens to be uniform, such as a green forest in May).
    """
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    step = max(1, int(np.ceil(np.sqrt(ny * nx / max_pixels))))
    sub = cube.isel(band=band_index, y=slice(None, None, step), x=slice(None, None, step))
    vals, qual = dask.compute(sub.data, sub["quality"].data)
    ok = usable_mask(qual)[:, None] & np.isfinite(vals)
    v = np.where(ok, vals, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, med, q75 = np.nanpercentile(v, [25, 50, 75], axis=(2, 3))
    scale = (q75 - q25) / 1.349
    bad = ~np.isfinite(med) | ~np.isfinite(scale) | (scale <= 1e-6)
    med = np.where(bad, 0.0, med)
    scale = np.where(bad, np.nan, scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        band_scale = np.nanmedian(scale, axis=0)
    band_scale = np.where(np.isfinite(band_scale), band_scale, 1.0)
    scale = np.broadcast_to(band_scale, med.shape)
    return np.stack([med, scale], axis=-1)


def normalise(x: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """``(band, H, W)`` reflectance -> robust z-scores with ``stats`` ``(band, 2)``; NaN -> 0 (the median)."""
    z = (x - stats[:, 0, None, None]) / stats[:, 1, None, None]
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def fit_sample(cube: xr.DataArray, band_index: list[int], stats: np.ndarray, size: int = 128,
               n_windows: int = 12, seed: int = 0) -> np.ndarray:
    """Random normalised windows ``(n, band, size, size)`` from random dates, for encoders that learn from data."""
    rng = np.random.default_rng(seed)
    ny, nx, nt = cube.sizes["y"], cube.sizes["x"], cube.sizes["time"]
    size = min(size, ny, nx)
    out = []
    for _ in range(n_windows):
        t = int(rng.integers(nt))
        y0, x0 = int(rng.integers(ny - size + 1)), int(rng.integers(nx - size + 1))
        block = cube.isel(time=t, band=band_index, y=slice(y0, y0 + size), x=slice(x0, x0 + size))
        vals, qual = dask.compute(block.data, block["quality"].data)
        vals = np.where(usable_mask(qual)[None], vals, np.nan)
        out.append(np.where(np.isfinite(vals), (vals - stats[t, :, 0, None, None]) / stats[t, :, 1, None, None], np.nan))
    return np.stack(out).astype(np.float32)


def _prepare(values: np.ndarray, quality: np.ndarray, stats: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray]:
    """``(time, band, h, w)`` values -> (encoder input, usable ``(time, h, w)``): the project's per-date
    normalisation, or the cube's reflectance (NaN -> 0) for encoders that normalise themselves."""
    usable = usable_mask(quality) & np.isfinite(values).all(axis=1)
    masked = np.where(usable[:, None], values, np.nan)
    if spec.input == "reflectance":
        return np.nan_to_num(masked, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), usable
    return np.stack([normalise(masked[t], stats[t]) for t in range(len(masked))]), usable


def _embed_window(values: np.ndarray, quality: np.ndarray, stats: np.ndarray, months: np.ndarray,
                  encoder: Encoder, p: int, latlon: tuple[float, float] | None = None) -> np.ndarray:
    """Every date of one window: ``(time, band, h, w)`` -> ``(time, h/p, w/p, dim + 1)`` (last: clear fraction).

    Per-date encoders see the dates in batches of ``spec.batch_size``; temporal encoders see the series."""
    spec = encoder.spec
    x, usable = _prepare(values, quality, stats, spec)
    if spec.temporal:
        emb = encoder.encode_series(x, months, usable, latlon=latlon)
    else:
        b = max(1, int(spec.batch_size))
        emb = np.concatenate([encoder.encode(x[i:i + b], months[i:i + b]) for i in range(0, len(x), b)])
    t, h, w = usable.shape
    clear = usable.reshape(t, h // p, p, w // p, p).mean(axis=(2, 4))
    return np.concatenate([emb.transpose(0, 2, 3, 1), clear[..., None]], axis=-1).astype(np.float32)


def _window_centres(patch_grid: PatchGrid):
    """``(y0, y1, x0, x1) -> (lat, lon)`` of a window's centre (temporal encoders such as Presto take a location)."""
    from pyproj import Transformer

    a, b, c, d, e, f = patch_grid.grid.transform[:6]
    try:
        to_wgs84 = Transformer.from_crs(patch_grid.grid.crs, "EPSG:4326", always_xy=True)
    except Exception:  # a pixel or engineering CRS has no geographic location
        return lambda *_: None

    def centre(y0, y1, x0, x1):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        lon, lat = to_wgs84.transform(c + a * cx + b * cy, f + d * cx + e * cy)
        return (float(lat), float(lon)) if np.isfinite(lat) and np.isfinite(lon) else None

    return centre


def embedding_graph(cube: xr.DataArray, encoder: Encoder, patch_grid: PatchGrid, stats: np.ndarray,
                    band_index: list[int]) -> da.Array:
    """Lazy ``(time, row, col, dim + 1)`` array: one dask task per window (all dates of it), every date on the
    identical window grid counted from the grid origin."""
    spec = encoder.spec
    p = patch_grid.patch_size
    if p != spec.patch_size:
        raise ConfigError(f"patch grid has {p} px patches but the encoder {spec.name!r} was built for {spec.patch_size}")
    win = max(p, spec.window // p * p)
    nr, nc = patch_grid.shape
    data = cube.data
    quality = cube["quality"].data
    months = (pd.DatetimeIndex(cube["time"].values).month.to_numpy() - 1).astype(np.int64)
    nt, dim = cube.sizes["time"], spec.dim
    encode = dask.delayed(_embed_window, pure=True)
    enc = dask.delayed(encoder, pure=True, traverse=False)
    centre = _window_centres(patch_grid) if spec.temporal else (lambda *_: None)
    rows = []
    for y0 in range(0, nr * p, win):
        y1 = min(y0 + win, nr * p)
        cols = []
        for x0 in range(0, nc * p, win):
            x1 = min(x0 + win, nc * p)
            task = encode(data[:, band_index, y0:y1, x0:x1], quality[:, y0:y1, x0:x1], stats, months, enc, p,
                          centre(y0, y1, x0, x1))
            cols.append(da.from_delayed(task, shape=(nt, (y1 - y0) // p, (x1 - x0) // p, dim + 1), dtype=np.float32))
        rows.append(cols)
    return da.concatenate([da.concatenate(cols, axis=2) for cols in rows], axis=1)


IN_MEMORY_BYTES = 2 << 30


def _read_once(cube: xr.DataArray, limit: int = IN_MEMORY_BYTES) -> xr.DataArray:
    """``cube`` loaded into memory when it is small enough and the work runs on local threads: statistics, the
    fit sample and every window then read the files once, not three times. Larger cubes (and distributed runs)
    stay lazy, memory bounded by the window size."""
    try:
        from distributed import default_client

        default_client()
        return cube
    except (ImportError, ValueError):
        pass
    return cube.persist() if cube.chunks is not None and cube.size * 4 <= limit else cube


def embed_cube(cube: xr.DataArray, encoder: Encoder, patch_grid: PatchGrid, out: Path, series: str,
               progress=None) -> xr.Dataset:
    """Normalise, fit (if the encoder learns from data), embed every date and write ``out`` (zarr) atomically."""
    cube = _read_once(cube.isel(band=select_bands([str(b) for b in cube["band"].values], encoder.spec)))
    bands = [str(b) for b in cube["band"].values]
    band_index = list(range(len(bands)))  # the cube now holds the encoder's bands, in its order
    stats = date_statistics(cube, band_index)
    if hasattr(encoder, "is_fitted") and not encoder.is_fitted:
        encoder.fit(fit_sample(cube, band_index, stats, seed=getattr(encoder, "seed", 0)))
    arr = embedding_graph(cube, encoder, patch_grid, stats, band_index)
    spec = encoder.spec
    xs, ys = patch_grid.centres()
    nr, nc = patch_grid.shape
    ds = xr.Dataset(
        {
            "embedding": (("time", "row", "col", "dim"), arr[..., :-1]),
            "clear_fraction": (("time", "row", "col"), arr[..., -1]),
        },
        coords={"time": cube["time"].values, "row": np.arange(nr), "col": np.arange(nc), "x": ("col", xs), "y": ("row", ys)},
        attrs={
            "encoder": spec.name,
            "encoder_version": spec.version,
            "weights_sha256": encoder.weights_digest(),
            "patch_size": patch_grid.patch_size,
            "stride": patch_grid.stride,
            "grid": json.dumps(patch_grid.grid.to_dict()),
            "series": series,
            "bands": json.dumps(bands),
            "distance": spec.distance,
            "normalisation": json.dumps({"method": normalisation_method(spec), "centre_scale": np.round(stats, 6).tolist()}),
        },
    )
    with atomic_path(out) as tmp:
        with progress or _NullProgress():
            ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
    return open_embeddings(out)


class _NullProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def open_embeddings(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=True)


def embedding_grid(ds: xr.Dataset) -> PatchGrid:
    return PatchGrid(OutputGrid.from_dict(json.loads(ds.attrs["grid"])), int(ds.attrs["patch_size"]))

