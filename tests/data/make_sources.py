"""Seeded generator of tiny input fixtures in the real layouts of changescout's sources.

Every image holds int16 reflectance x 10000 (nodata -9999) in UTM 31N at 10 m, with a bright square planted at
the same ground place (:data:`SQUARE`) on every date, so tests can check where pixels land after warping.
Tests call these functions to write fixtures into ``tmp_path``; ``python tests/data/make_sources.py OUT`` writes
one of each into ``OUT`` to look at them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

SEED = 7
CRS = "EPSG:32631"
RES = 10.0
ORIGIN = (355_000.0, 4_835_000.0)  # top-left corner
SHAPE = (40, 44)  # rows, cols
TRANSFORM = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
NODATA = -9999
BANDS = ("B02", "B03", "B04", "B08")
DATES = ("2020-03-01", "2020-04-10", "2020-05-20")
BRIGHT = 9000
#: Ground footprint (left, bottom, right, top) of the bright square: rows 12..20, cols 16..24 of the fixture grid.
SQUARE = (ORIGIN[0] + 160, ORIGIN[1] - 200, ORIGIN[0] + 240, ORIGIN[1] - 120)
#: Fmask classes planted in every date's mask, as (rows, cols, value); the rest is 0 (clear land).
FMASK_PATCHES = ((slice(0, 4), slice(0, 6), 4), (slice(4, 8), slice(0, 6), 2), (slice(30, 34), slice(30, 36), 1),
                 (slice(34, 36), slice(30, 36), 3), (slice(36, 40), slice(40, 44), 255))


def scene(t: int, n_bands: int = len(BANDS), seed: int = SEED) -> np.ndarray:
    """Reflectance x 10000 of date ``t``: ``(n_bands, *SHAPE)`` int16, a bright square at :data:`SQUARE`."""
    rng = np.random.default_rng([seed, t])
    data = rng.integers(300, 3000, size=(n_bands, *SHAPE)).astype(np.int16)
    data[:, 12:20, 16:24] = BRIGHT
    return data


def fmask(t: int) -> np.ndarray:
    """The Fmask layer of date ``t`` (uint8 ``SHAPE``), with the classes of :data:`FMASK_PATCHES`."""
    m = np.zeros(SHAPE, np.uint8)
    for rows, cols, value in FMASK_PATCHES:
        m[rows, cols] = value
    return m


def write_geotiff(path, data, *, crs=CRS, transform=TRANSFORM, nodata=NODATA, descriptions=None) -> Path:
    """Write ``data`` (``(bands, rows, cols)``) as a GeoTIFF; ``crs=None`` writes none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype.name,
                   transform=transform, nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or ()):
            dst.set_band_description(i + 1, d)
    return path


def multiband_folder(root, dates=DATES, names=None, with_nodata=True) -> list[Path]:
    """One 4-band file per date named ``<date>.tif`` (or ``names``), band descriptions :data:`BANDS`; date 0
    has a nodata block (rows 0..5, cols 0..8)."""
    files = []
    for t, date in enumerate(dates):
        data = scene(t)
        if t == 0 and with_nodata:
            data[:, 0:5, 0:8] = NODATA
        name = names[t] if names else f"{date}.tif"
        files.append(write_geotiff(Path(root) / name, data, descriptions=BANDS))
    return files


def landsat_folder(root, dates=DATES, platforms=("LE7", "LT5")) -> list[Path]:
    """Old-style Landsat scene folders ``<ID>/<ID>_{b3,b4,b5,fmask}.tif`` (ID like ``LE70350322008118EDC00``)."""
    files = []
    for t, date in enumerate(pd.to_datetime(list(dates))):
        sid = f"{platforms[t % len(platforms)]}035032{date.year}{date.day_of_year:03d}EDC00"
        data = scene(t, 3)
        data[:, 36:40, 40:44] = NODATA
        for b, band in enumerate(("b3", "b4", "b5")):
            files.append(write_geotiff(Path(root) / sid / f"{sid}_{band}.tif", data[b : b + 1]))
        files.append(write_geotiff(Path(root) / sid / f"{sid}_fmask.tif", fmask(t)[None], nodata=None))
    return files


def stacked_file(path, dates=DATES, bands=BANDS, descriptions=False) -> Path:
    """One GeoTIFF of ``len(dates) * len(bands)`` bands, date-major (band ``n_bands * t + b``)."""
    data = np.concatenate([scene(t, len(bands)) for t in range(len(dates))])
    desc = [b for _ in dates for b in bands] if descriptions else None
    return write_geotiff(path, data, descriptions=desc)


def reprojected(path, t: int = 0, crs="EPSG:4326", shift=(0.0, 0.0)) -> Path:
    """Date ``t`` warped (nearest) into ``crs`` or, with ``crs=CRS``, moved onto a grid shifted by ``shift`` metres."""
    src = scene(t)
    left, top = ORIGIN
    bounds = (left, top - RES * SHAPE[0], left + RES * SHAPE[1], top)
    if crs == CRS:
        transform = Affine(RES, 0, left + shift[0], 0, -RES, top + shift[1])
        width, height = SHAPE[1] + 2, SHAPE[0] + 2
    else:
        transform, width, height = calculate_default_transform(CRS, crs, SHAPE[1], SHAPE[0], *bounds)
    dst = np.full((len(src), height, width), NODATA, np.int16)
    reproject(src, dst, src_transform=TRANSFORM, src_crs=CRS, dst_transform=transform, dst_crs=crs,
              src_nodata=NODATA, dst_nodata=NODATA, resampling=Resampling.nearest)
    return write_geotiff(path, dst, crs=crs, transform=transform, descriptions=BANDS)


def datacube(path, dates=DATES, with_crs=True, float_scale=True):
    """A ``(time, band, y, x)`` cube as NetCDF (``.nc``) or Zarr (``.zarr``), float reflectance 0..1 by default,
    with a ``quality`` variable derived from :func:`fmask`."""
    import rioxarray  # noqa: F401
    import xarray as xr

    data = np.stack([scene(t) for t in range(len(dates))])
    values = data.astype(np.float32) / 10000 if float_scale else data
    x = ORIGIN[0] + RES * (np.arange(SHAPE[1]) + 0.5)
    y = ORIGIN[1] - RES * (np.arange(SHAPE[0]) + 0.5)
    coords = {"time": pd.to_datetime(list(dates)), "band": list(BANDS), "y": y, "x": x}
    quality = np.stack([np.where(fmask(t) == 4, 2, 0).astype(np.uint8) for t in range(len(dates))])
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), values), "quality": (("time", "y", "x"), quality)}, coords)
    if with_crs:
        ds = ds.rio.write_crs(CRS)
    path = Path(path)
    if path.suffix == ".zarr":
        ds.to_zarr(path, mode="w")
    else:
        ds.to_netcdf(path)
    return path


def corrupt_tif(path) -> Path:
    """A file named ``.tif`` that is not a GeoTIFF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00 this is not really a tiff" * 8)
    return path


def main(out: str) -> None:
    root = Path(out)
    multiband_folder(root / "multiband")
    landsat_folder(root / "landsat")
    stacked_file(root / "stacked.tif")
    reprojected(root / "multiband_4326" / "2020-06-01.tif")
    datacube(root / "cube.nc")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
