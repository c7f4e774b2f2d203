"""What a change object did, in words, from its pixels before and after.

A change type (a cluster of change vectors, :mod:`changescout.cluster`) is a number, and an embedding does not say
what changed; what an analyst wants to read beside an object is "vegetation loss, brighter" or "water appears".
The bands say it: for each candidate object (:mod:`changescout.objects`), the pixels of its onset patches that
changed (NDVI by 0.1, brightness by 0.03 reflectance, or NDWI crossing 0), compared between each patch's ``t0``
and ``t1``, and their median changes name it (:func:`describe`): vegetation loss or gain (NDVI down or up 0.15),
brighter or darker (0.03), water appearing or receding (the median NDWI, McFeeters' open-water index, crossing
0). A patch mean would not do: a road 3 px wide or a pond in a corner moves a 16 px patch's mean NDVI by a few
hundredths. Series without bands named green, red and near-infrared (B03/B04/B08, green/red/nir, Landsat SR_B*)
get no description.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .cube import Quality
from .quality import NIR, RED, _TM_NAMES, _TM_PLATFORMS, _find

GREEN = ("B03", "green", "SR_B3")

#: Median changes of an object's changed pixels from which it is named (with open water appearing or receding:
#: their median NDWI crossing 0); a pixel counts as changed from ``CHANGED``.
THRESHOLDS = {"d_ndvi": 0.15, "d_brightness": 0.03}
CHANGED = {"d_ndvi": 0.1, "d_brightness": 0.03}
_WORDS = {"d_ndvi": ("vegetation gain", "vegetation loss"), "d_brightness": ("brighter", "darker")}
MIN_CHANGED = 0.05  # fewer changed pixels than this fraction of the onset patches' usable ones: a slight change


def index_bands(cube: xr.DataArray) -> list[str] | None:
    """Names of the green, red and near-infrared bands of ``cube`` (Landsat 4-7 numbering when every date comes
    from those platforms), or None when one is missing."""
    bands = [str(b) for b in cube["band"].values]
    platforms = {str(v).lower().replace("_", "-") for v in np.atleast_1d(cube["platform"].values)} if "platform" in cube.coords else set()
    tm = bool(platforms) and platforms <= _TM_PLATFORMS
    renamed = {**_TM_NAMES, "SR_B3": "SR_B2"}  # Landsat 4-7: green is SR_B2
    found = [_find(bands, [renamed.get(n, n) for n in names] if tm else names) for names in (GREEN, RED, NIR)]
    return None if any(i is None for i in found) else [bands[i] for i in found]


def date_indices(cube: xr.DataArray, names: list[str], times: np.ndarray) -> np.ndarray:
    """``(len(times), 3, y, x)`` float32: NDVI, NDWI and brightness (mean of green, red and NIR) of the dates
    ``times`` (indices), NaN where a pixel is not usable (neither clear nor water); one computation, so that a
    lazy cloud screen runs once."""
    import dask

    sub = cube.isel(time=np.asarray(times)).sel(band=names)
    values, quality = dask.compute(sub.data, sub["quality"].data)
    green, red, nir = np.moveaxis(np.asarray(values, dtype=np.float32), 1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([(nir - red) / (nir + red), (green - nir) / (green + nir), (green + red + nir) / 3], axis=1)
    out[np.broadcast_to(~np.isin(np.asarray(quality), [int(Quality.CLEAR), int(Quality.WATER)])[:, None], out.shape)] = np.nan
    return out


def describe(changes: pd.Series) -> str:
    """Words for median changes (``d_ndvi``, ``d_brightness``, ``ndwi_before``, ``ndwi_after``), strongest first;
    "slight change" when none passes its threshold."""
    parts = []
    for key, limit in THRESHOLDS.items():
        value = changes.get(key, np.nan)
        if np.isfinite(value) and abs(value) >= limit:
            parts.append((abs(value) / limit, _WORDS[key][0 if value > 0 else 1]))
    before, after = changes.get("ndwi_before", np.nan), changes.get("ndwi_after", np.nan)
    if before <= 0 < after or after <= 0 < before:  # (False with NaN)
        parts.append((np.inf, "water appears" if after > 0 else "water recedes"))
    return ", ".join(word for _, word in sorted(parts, key=lambda kv: -kv[0])) or "slight change"


def describe_objects(objects: pd.DataFrame, events: pd.DataFrame, cube: xr.DataArray, patch_size: int) -> pd.DataFrame:
    """``objects`` with ``change`` (words, :func:`describe`) for its candidates, from their onset patch events'
    pixels (``events``: ``object_id``, ``row``, ``col``, ``t0``, ``t1``); "" elsewhere, where no pixel is usable at
    both dates, and everywhere without green, red and NIR bands. The dates those changes compare are read at once (three bands)."""
    out = objects.assign(change="")
    names = index_bands(cube)
    if names is None or not objects["candidate"].any():
        return out
    times = pd.DatetimeIndex(cube["time"].values)
    t1 = pd.to_datetime(events["t1"])
    onset = (t1 == t1.groupby(events["object_id"].to_numpy()).transform("min")).to_numpy()
    ev = events[onset & events["object_id"].isin(objects.loc[objects["candidate"], "object_id"]).to_numpy()]
    ev = ev.assign(i0=times.get_indexer(pd.to_datetime(ev["t0"])), i1=times.get_indexer(pd.to_datetime(ev["t1"])))
    needed = np.unique(np.r_[ev["i0"].to_numpy(), ev["i1"].to_numpy()])
    maps = date_indices(cube, names, needed)
    slot = {int(t): k for k, t in enumerate(needed)}
    p = int(patch_size)
    pixels: dict[int, list[np.ndarray]] = {}
    for oid, r, c, i0, i1 in ev[["object_id", "row", "col", "i0", "i1"]].itertuples(index=False):
        win = np.s_[:, r * p:(r + 1) * p, c * p:(c + 1) * p]
        pair = np.concatenate([maps[slot[i0]][win], maps[slot[i1]][win]]).reshape(6, -1)
        pixels.setdefault(int(oid), []).append(pair)
    words = {}
    for oid, chunks in pixels.items():
        ndvi0, ndwi0, bright0, ndvi1, ndwi1, bright1 = np.concatenate(chunks, axis=1)
        ok = np.isfinite(ndvi0) & np.isfinite(ndvi1) & np.isfinite(ndwi0) & np.isfinite(ndwi1)
        d = pd.DataFrame({"d_ndvi": (ndvi1 - ndvi0)[ok], "d_brightness": (bright1 - bright0)[ok],
                          "ndwi_before": ndwi0[ok], "ndwi_after": ndwi1[ok]})
        changed = ((d["d_ndvi"].abs() >= CHANGED["d_ndvi"]) | (d["d_brightness"].abs() >= CHANGED["d_brightness"])
                   | ((d["ndwi_before"] > 0) != (d["ndwi_after"] > 0)))
        if ok.any():  # (no usable pixel at one of the dates: nothing to say)
            words[oid] = describe(d[changed].median()) if changed.mean() >= MIN_CHANGED else "slight change"
    out["change"] = out["object_id"].map(words).fillna("").astype(str).to_numpy()
    return out
