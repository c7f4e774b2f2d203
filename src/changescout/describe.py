"""What a change object did, in words, from its pixels before and after.

A change type (a cluster of change vectors, :mod:`changescout.cluster`) is a number, and an embedding does not say
what changed; what an analyst wants to read beside an object is "vegetation loss, brighter" or "water appears".
The bands say it. For each candidate object (:mod:`changescout.objects`), the pixels of its onset patches are
compared between each patch's ``t0`` and ``t1``: NDVI, visible brightness (mean of green and red, as the report's
true-colour chips show it) and open water (McFeeters' NDWI above 0 on a dark pixel: snow is bright). The scene's
own change between the same dates (the median over all patches of their mean NDVI and brightness: the season, a
haze) is taken off first. Pixels that changed (NDVI by 0.1, brightness by 0.02, or into or out of water) name the
object (:func:`describe`): "water appears" or "water recedes" when a quarter of them did that; "vegetation loss"
when their median NDVI fell by 0.15 from vegetation (0.3), "vegetation gain" when it rose by 0.15 to it;
"brighter" or "darker" by 0.03. Fewer than 5 % changed pixels: a "slight change". Pixel-level, because a
patch's mean mixes the change with what did not change around it. Series without bands named red and
near-infrared (B04/B08, red/nir, Landsat SR_B*, b3/b4) get no words; without a green band (a Landsat series of
bands 3-5) brightness is the red band's, and open water is a dark pixel whose near-infrared is below its red.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import xarray as xr

from .cube import band_names, usable_mask
from .quality import GREEN, NIR, RED, find_bands

CHANGED = {"ndvi": 0.1, "vis": 0.02}  # a pixel changed by this much (after the scene's own change)
NAMED = {"ndvi": 0.15, "vis": 0.03}  # the changed pixels' median change that names the object
VEGETATION = 0.3  # NDVI of vegetation, before a loss or after a gain
WATER_SHARE = 0.25  # of the changed pixels, into (or out of) water
DARK = 0.15  # visible brightness under which NDWI > 0 is open water (snow and clouds are brighter)
MIN_CHANGED = 0.05
#: Objects described, the best-ranked first: an analyst reads the top of the list, and a 2048 px, 12-date run
#: has 10 000 candidate objects (describing them all took 30-55 s of its 200 s; 500 take a few seconds).
TOP = 500


def index_bands(cube: xr.DataArray) -> list[str] | None:
    """Names of the green, red and near-infrared bands of ``cube`` (:func:`changescout.quality.find_bands`), red
    and near-infrared alone when there is no green band, or None without red or near-infrared."""
    found = find_bands(cube, GREEN, RED, NIR)
    if None in found[1:]:
        return None
    return [band_names(cube)[i] for i in found if i is not None]


def _indices(bands: np.ndarray, quality: np.ndarray | None = None) -> np.ndarray:
    """``(3, ...)`` green, red, NIR (or ``(2, ...)`` red, NIR: the red stands in for the green) -> ``(3, ...)``
    NDVI, NDWI, visible brightness; NaN where ``quality`` is neither clear nor water. Reflectances are floored
    at 1e-4 (an offset can leave dark water below 0)."""
    bands = np.maximum(np.asarray(bands, dtype=np.float32), 1e-4)
    green, red, nir = bands if len(bands) == 3 else (bands[0], *bands)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([(nir - red) / (nir + red), (green - nir) / (green + nir), (green + red) / 2])
    if quality is not None:
        out[:, ~usable_mask(quality)] = np.nan
    return out


def describe(pixels: pd.DataFrame) -> str:
    """Words for the changed pixels of an object, the strongest first: columns ``ndvi0``, ``ndvi1``, ``vis0``,
    ``vis1`` (the ``0`` ones moved by the scene's own change, so that ``1 - 0`` is the change beyond it),
    ``water0``, ``water1`` (open water before, after)."""
    parts = []
    into, out = (pixels["water1"] & ~pixels["water0"]).mean(), (pixels["water0"] & ~pixels["water1"]).mean()
    if max(into, out) >= WATER_SHARE:
        parts.append((np.inf, "water appears" if into >= out else "water recedes"))
    d_ndvi = float((pixels["ndvi1"] - pixels["ndvi0"]).median())
    if d_ndvi <= -NAMED["ndvi"] and pixels["ndvi0"].median() >= VEGETATION:
        parts.append((-d_ndvi / NAMED["ndvi"], "vegetation loss"))
    elif d_ndvi >= NAMED["ndvi"] and pixels["ndvi1"].median() >= VEGETATION:
        parts.append((d_ndvi / NAMED["ndvi"], "vegetation gain"))
    d_vis = float((pixels["vis1"] - pixels["vis0"]).median())
    if abs(d_vis) >= NAMED["vis"]:
        parts.append((abs(d_vis) / NAMED["vis"], "brighter" if d_vis > 0 else "darker"))
    return ", ".join(word for _, word in sorted(parts, key=lambda kv: -kv[0])) or "slight change"


def describe_objects(objects: pd.DataFrame, events: pd.DataFrame, cube: xr.DataArray, patch_size: int,
                     top: int = TOP) -> pd.DataFrame:
    """``objects`` with ``change`` (words, :func:`describe`) for its ``top`` best-ranked candidates, from their
    onset patch events' pixels (``events``: ``object_id``, ``row``, ``col``, ``t0``, ``t1``); "" elsewhere, where
    no pixel is usable at both dates, and everywhere without red and NIR bands. One computation reads the
    onset patches' windows and every patch's mean (for the scene's own change), so memory grows with those, not
    with the scene."""
    out = objects.assign(change="")
    names = index_bands(cube)
    described = objects[objects["candidate"]].nsmallest(top, "rank") if "rank" in objects else objects[objects["candidate"]].head(top)
    if names is None or not len(described):
        return out
    p = int(patch_size)
    times = pd.DatetimeIndex(cube["time"].values)
    t1 = pd.to_datetime(events["t1"])
    onset = (t1 == t1.groupby(events["object_id"].to_numpy()).transform("min")).to_numpy()
    ev = events[onset & events["object_id"].isin(described["object_id"]).to_numpy()]
    ev = ev.assign(i0=times.get_indexer(pd.to_datetime(ev["t0"])), i1=times.get_indexer(pd.to_datetime(ev["t1"])))
    ev = ev[(ev["i0"] >= 0) & (ev["i1"] >= 0)]  # (dates of this cube: always, for a run's own events)
    sub = cube.sel(band=names)
    rows, cols = cube.sizes["y"] // p, cube.sizes["x"] // p
    data, quality = sub.data, sub["quality"].data
    need = pd.DataFrame([(int(t), int(r), int(c)) for a, b, r, c in ev[["i0", "i1", "row", "col"]].itertuples(index=False)
                         for t in (a, b)], columns=["t", "r", "c"]).drop_duplicates()
    strips = need.groupby(["t", "r"])["c"].agg(["min", "max"]).reset_index()  # one slice per date and patch row
    windows = [(data[t, :, r * p:(r + 1) * p, c0 * p:(c1 + 1) * p], quality[t, r * p:(r + 1) * p, c0 * p:(c1 + 1) * p])
               for t, r, c0, c1 in strips.itertuples(index=False)]
    dates = np.unique(ev[["i0", "i1"]].to_numpy())
    compared = sub.isel(time=dates, y=slice(0, rows * p), x=slice(0, cols * p))
    means = compared.where(usable_mask(compared["quality"])).coarsen(y=p, x=p).mean().transpose("band", "time", "y", "x").data
    windows, means = dask.compute(windows, means)
    at = {}
    for (t, r, c0, c1), (w, q) in zip(strips.itertuples(index=False), windows):
        strip = _indices(w, q)
        for c in range(c0, c1 + 1):
            at[t, r, c] = strip[:, :, (c - c0) * p:(c - c0 + 1) * p]
    scene = _indices(means)  # (3, dates, rows, cols): every patch's mean
    slot = {int(t): k for k, t in enumerate(dates)}
    shift = {}  # the scene's own median change of NDVI and brightness between two dates
    with np.errstate(invalid="ignore"):
        for a, b in set(zip(ev["i0"], ev["i1"])):
            d = scene[:, slot[b]] - scene[:, slot[a]]
            shift[a, b] = (float(np.nan_to_num(np.nanmedian(d[0]))), float(np.nan_to_num(np.nanmedian(d[2]))))
    pixels: dict[int, list[np.ndarray]] = {}  # per object: ndvi0, ndvi1, vis0, vis1 (0: moved by the scene), water0, water1
    for oid, r, c, a, b in ev[["object_id", "row", "col", "i0", "i1"]].itertuples(index=False):
        (ndvi0, ndwi0, vis0), (ndvi1, ndwi1, vis1) = at[a, r, c].reshape(3, -1), at[b, r, c].reshape(3, -1)
        s_ndvi, s_vis = shift[a, b]
        with np.errstate(invalid="ignore"):  # (NaN compares False: unusable pixels are dropped below)
            pixels.setdefault(int(oid), []).append(np.stack([ndvi0 + s_ndvi, ndvi1, vis0 + s_vis, vis1,
                                                             (ndwi0 > 0) & (vis0 < DARK), (ndwi1 > 0) & (vis1 < DARK)]))
    words = {}
    for oid, chunks in pixels.items():
        ndvi0, ndvi1, vis0, vis1, water0, water1 = np.concatenate(chunks, axis=1)
        ok = np.isfinite(ndvi0) & np.isfinite(ndvi1) & np.isfinite(vis0) & np.isfinite(vis1)
        if not ok.any():  # no usable pixel at one of the dates: nothing to say
            continue
        px = pd.DataFrame({"ndvi0": ndvi0[ok], "ndvi1": ndvi1[ok], "vis0": vis0[ok], "vis1": vis1[ok],
                           "water0": water0[ok].astype(bool), "water1": water1[ok].astype(bool)})
        changed = (((px["ndvi1"] - px["ndvi0"]).abs() >= CHANGED["ndvi"]) | ((px["vis1"] - px["vis0"]).abs() >= CHANGED["vis"])
                   | (px["water0"] != px["water1"]))
        words[oid] = describe(px[changed]) if changed.mean() >= MIN_CHANGED else "slight change"
    out["change"] = out["object_id"].map(words).fillna("").astype(str).to_numpy()
    return out
