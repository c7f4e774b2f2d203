"""What a change object did, in words, from its pixels before and after.

A change type (a cluster of change vectors, :mod:`changescout.cluster`) is a number, and an embedding does not say
what changed; what an analyst wants to read beside an object is "vegetation loss, brighter" or "water appears".
The bands say it. For each candidate object (:mod:`changescout.objects`), the pixels of its onset patches are
compared between each patch's ``t0`` and ``t1``: NDVI, visible brightness (mean of green and red, as the report's
true-colour chips show it) and open water (McFeeters' NDWI above 0 on a dark pixel: snow is bright; with a SWIR1
band also Xu's MNDWI above :data:`WATER_MNDWI`: city shadows in winter are dark with NDWI above 0 too). The scene's
own change between the same dates (the median over all patches of their mean NDVI and brightness: the season, a
haze) is taken off first. Pixels that changed (NDVI by 0.1, brightness by 0.02, or into or out of water) name the
object (:func:`describe`): "water appears" or "water recedes" when a quarter of them did that; "vegetation loss"
when their median NDVI fell by 0.15 from vegetation (0.3), "vegetation gain" when it rose by 0.15 to it;
"brighter" or "darker" by 0.03. Where the changed pixels went both ways (a quarter of them each way at
least), the way whose summed change outweighs the other's 1.5 times names the object, from its own pixels'
median (a road through fields that greened up that month). Fewer than 5 % changed pixels: a "slight change". Pixel-level, because a
patch's mean mixes the change with what did not change around it. Series without a band named red
(B04, red, Landsat SR_B*, b3; Sentinel-2's B4 where the series is Sentinel-2's,
:func:`changescout.quality.band_family`) get no words, and a warning says so; without a green band (a Landsat
series of bands 3-5) brightness is the red band's, and open water is a dark pixel whose near-infrared is below
its red. A series with a red but no near-infrared band (an RGB image pair) gets the brightness words alone, which
need visible bands only: NDVI, water and snow need the near infrared. Its pixels changed where their brightness
did, and an object whose pixels kept their brightness is "brightness unchanged", not "slight change": what it
did (a new roof as bright as the field it covers) is in its colours or texture, which the words do not read. A
note says so, and advises ``--bands`` only where a band has a name that no role reads (it may be the near
infrared): naming the bands of an RGB series cannot give it one.

The vegetation words follow the object's own NDVI change the same way ("vegetation loss (less than the
scene)" for a forest that browned less than the autumn scene, not "vegetation gain"; "vegetation gain
relative to the scene" where its NDVI held while the scene's fell).

Scene-relative brightness never contradicts the object's own: when the whole scene brightened more than the
object did (snow over the scene, spring after November), the object is "darker" beyond the scene but its own
pixels brightened. Its brightness word then follows its own change: plain "brighter" or "darker" when its own
change goes the same way by 0.03 or more, "brighter (less than the scene)" when its own pixels brightened by
that much but the scene's more (and the reverse), "darker relative to the scene" when its own brightness held
(within 0.03) while the scene's rose (and the reverse). (A Landsat object whose red rose 0.13 -> 0.32 as snow
came was called "darker": the scene's median patch brightened by 0.2.)

Snow and ice (with a short-wave infrared band: B11, swir16, Landsat's band 5 or 6) are a bright pixel (visible
brightness 0.15 or more, near infrared above 0.11, as Fmask's snow test) whose NDSI (green - SWIR1) / (green +
SWIR1) is above 0.4 (the red band stands in for a missing green). A quarter of the changed pixels going into
(out of) snow names the object "snow or ice appears" ("snow or ice recedes"); snow over vegetation lowers its
NDVI and brightens it, so the vegetation and brightness words are then left out: the snow says it. Snow that
the source's mask (Fmask) or the run's snow screen (:mod:`changescout.snow`, NDSI above 0.15: on by default)
flags is not a usable pixel and is never compared, so these words come where that screen is off
(``snow_screen: off``, a glacier watched on purpose) or where bands let snow through it.
"""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pandas as pd
import xarray as xr

from .cube import band_names, usable_mask
from .quality import BLUE, GREEN, NIR, RED, SWIR1, find_bands

CHANGED = {"ndvi": 0.1, "vis": 0.02}  # a pixel changed by this much (after the scene's own change)
NAMED = {"ndvi": 0.15, "vis": 0.03}  # the changed pixels' median change that names the object
VEGETATION = 0.3  # NDVI of vegetation, before a loss or after a gain
WATER_SHARE = 0.25  # of the changed pixels, into (or out of) water
DARK = 0.15  # visible brightness under which NDWI > 0 is open water (snow and clouds are brighter)
#: The least MNDWI (Xu 2006: green against SWIR1, which NDSI's formula is) of open water where the series has a
#: SWIR1 band. NDWI > 0 on a dark pixel also holds for city shadows in winter top-of-atmosphere images (path
#: radiance lifts the green over the near infrared): in OSCD's November Bercy 70 % of the scene read as water and
#: every top-10 object "water recedes" (a review); MNDWI > 0.3 leaves 10 % that November, 2 % in August (the
#: Seine). Open water reads 0.6-0.8 (the synthetic series' water and floodwater 0.76 and 0.64).
WATER_MNDWI = 0.3
MIN_CHANGED = 0.05
#: The words of an object whose pixels did not change enough to be named: "slight change" where NDVI, water and
#: brightness were all read, "brightness unchanged" where brightness alone was (no near-infrared band).
SLIGHT = "slight change"
BRIGHTNESS_HELD = "brightness unchanged"
SNOW_NDSI = 0.4  # NDSI above which a bright pixel is snow or ice (Fmask's snow test: 0.15, with temperature)
SNOW_NIR = 0.11  # near infrared above which (Fmask's snow test) a bright, high-NDSI pixel is no turbid water
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


def visible_bands(cube: xr.DataArray) -> list[str] | None:
    """Names of the green and red bands of ``cube`` (red alone without green), or None without red: what the
    brightness words need, where the series has no near-infrared band (:func:`index_bands` is None)."""
    green, red = find_bands(cube, GREEN, RED)
    if red is None:
        return None
    return [band_names(cube)[i] for i in (green, red) if i is not None]


def _indices(bands: np.ndarray, quality: np.ndarray | None = None, swir: bool = False, nir: bool = True) -> np.ndarray:
    """``(3, ...)`` green, red, NIR (or ``(2, ...)`` red, NIR: the red stands in for the green), then SWIR1 when
    ``swir`` -> ``(5, ...)`` NDVI, NDWI, visible brightness, NDSI (NaN without SWIR1), NIR; NaN where
    ``quality`` is neither clear nor water. Without ``nir`` the bands are green, red (or red alone) and the
    NIR is NaN, so are NDVI, NDWI and NDSI's snow: brightness alone. Reflectances are floored at 1e-4 (an offset
    can leave dark water below 0)."""
    bands = np.maximum(np.asarray(bands, dtype=np.float32), 1e-4)
    bands, sw = (bands[:-1], bands[-1]) if swir else (bands, np.full(bands.shape[1:], np.nan, np.float32))
    if not nir:
        bands = np.concatenate([bands, np.full((1, *bands.shape[1:]), np.nan, np.float32)])
    green, red, nir = bands if len(bands) == 3 else (bands[0], *bands)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([(nir - red) / (nir + red), (green - nir) / (green + nir), (green + red) / 2,
                        (green - sw) / (green + sw), nir])
    if quality is not None:
        out[:, ~usable_mask(quality)] = np.nan
    return out


def _snow(ndsi, vis, nir) -> np.ndarray:
    """Snow or ice: bright, high NDSI, and a near infrared that water does not have (NaN: no)."""
    with np.errstate(invalid="ignore"):
        return (ndsi > SNOW_NDSI) & (vis >= DARK) & (nir > SNOW_NIR)


def _as_own(word: str, other: str, relative: float, own: float, named: float) -> str:
    """``word`` (named from ``relative``, the median change beyond the scene's) as the object's own change
    ``own`` bears it out: plain where ``own`` goes the same way by ``named`` or more, ``other`` (the own
    direction) "(less than the scene)" where ``own`` goes the other way by as much (the scene moved more than
    the object did), "... relative to the scene" where the object's own held. UAT: a forest whose NDVI fell
    0.75 -> 0.64 while the scene's fell more read "vegetation gain"; a Landsat object whose red rose
    0.13 -> 0.32 while the scene brightened by 0.2 read "darker"."""
    if abs(own) < named:
        return f"{word} relative to the scene"
    return word if (own > 0) == (relative > 0) else f"{other} (less than the scene)"


def _water(ndwi: np.ndarray, vis: np.ndarray, mndwi: np.ndarray) -> np.ndarray:
    """Open water: NDWI above 0 on a dark pixel, and MNDWI above :data:`WATER_MNDWI` where the series has SWIR1
    (``mndwi`` NaN without it: not tested)."""
    with np.errstate(invalid="ignore"):
        return (ndwi > 0) & (vis < DARK) & ~(mndwi <= WATER_MNDWI)


def _brightness_word(relative: float, own: float) -> str | None:
    """The brightness word of a median change ``relative`` beyond the scene's and ``own`` (the pixels' own),
    or None when ``relative`` is under :data:`NAMED` (:func:`_as_own`)."""
    if abs(relative) < NAMED["vis"]:
        return None
    word, other = ("brighter", "darker") if relative > 0 else ("darker", "brighter")
    return _as_own(word, other, relative, own, NAMED["vis"])


#: A split object's side whose summed change outweighs the other's this many times names it (:func:`_prevailing`),
#: where each side holds this share of its changed pixels at least.
PREVAILS, SPLIT_SHARE = 1.5, 0.25


def _prevailing(pixels: pd.DataFrame, change: pd.Series) -> pd.DataFrame:
    """The changed ``pixels`` whose ``change`` (an index's, beyond the scene's) goes the object's way: where they
    went both ways, each way by a quarter of the pixels at least, those of the way whose summed change outweighs
    the other's :data:`PREVAILS` times; else all of them. A planted road through fields that greened up that
    month (354 pixels of NDVI -0.67 among 632 of +0.21) read "slight change": the median of the two lay between
    them (an analyst review)."""
    up, down = change > 0, change < 0
    if min(up.mean(), down.mean()) < SPLIT_SHARE:
        return pixels
    gain, loss = float(change[up].sum()), float(-change[down].sum())
    if gain >= PREVAILS * loss:
        return pixels[up.to_numpy()]
    if loss >= PREVAILS * gain:
        return pixels[down.to_numpy()]
    return pixels


def describe(pixels: pd.DataFrame, nothing: str = SLIGHT) -> str:
    """Words for the changed pixels of an object, the strongest first: columns ``ndvi0``, ``ndvi1``, ``vis0``,
    ``vis1`` (the ``0`` ones moved by the scene's own change, so that ``1 - 0`` is the change beyond it),
    ``water0``, ``water1`` (open water before, after); optional: ``vis0_own`` (the brightness before as the
    pixel had it, not moved by the scene: ``vis0`` when absent), ``snow0``, ``snow1`` (snow or ice before,
    after; none when absent). NDVI is NaN where the series has no near-infrared band: no vegetation word.
    ``nothing``: the words when no word is named (:data:`SLIGHT`, :data:`BRIGHTNESS_HELD`)."""
    parts = []
    into, out = (pixels["water1"] & ~pixels["water0"]).mean(), (pixels["water0"] & ~pixels["water1"]).mean()
    if max(into, out) >= WATER_SHARE:
        parts.append((np.inf, "water appears" if into >= out else "water recedes"))
    if "snow0" in pixels and "snow1" in pixels:
        snow0, snow1 = pixels["snow0"].astype(bool), pixels["snow1"].astype(bool)
        into, out = (snow1 & ~snow0).mean(), (snow0 & ~snow1).mean()
        if max(into, out) >= WATER_SHARE:  # the snow explains the NDVI and the brightness: no other word
            parts.append((np.inf, "snow or ice appears" if into >= out else "snow or ice recedes"))
            return ", ".join(word for _, word in parts)
    veg = _prevailing(pixels, pixels["ndvi1"] - pixels["ndvi0"])
    d_ndvi = float((veg["ndvi1"] - veg["ndvi0"]).median())
    own_ndvi = float((veg["ndvi1"] - veg.get("ndvi0_own", veg["ndvi0"])).median())
    if d_ndvi <= -NAMED["ndvi"] and veg["ndvi0"].median() >= VEGETATION:
        parts.append((-d_ndvi / NAMED["ndvi"], _as_own("vegetation loss", "vegetation gain", d_ndvi, own_ndvi, NAMED["ndvi"])))
    elif d_ndvi >= NAMED["ndvi"] and veg["ndvi1"].median() >= VEGETATION:
        parts.append((d_ndvi / NAMED["ndvi"], _as_own("vegetation gain", "vegetation loss", d_ndvi, own_ndvi, NAMED["ndvi"])))
    lit = _prevailing(pixels, pixels["vis1"] - pixels["vis0"])
    d_vis = float((lit["vis1"] - lit["vis0"]).median())
    own = float((lit["vis1"] - lit.get("vis0_own", lit["vis0"])).median())
    if (word := _brightness_word(d_vis, own)) is not None:
        parts.append((abs(d_vis) / NAMED["vis"], word))
    return ", ".join(word for _, word in sorted(parts, key=lambda kv: -kv[0])) or nothing


#: The least share of a date pair's seen patches, outside the candidate objects, that the scene's own change is
#: measured on (fewer: the scene is taken as unchanged).
MIN_QUIET = 0.25


def describe_objects(objects: pd.DataFrame, events: pd.DataFrame, cube: xr.DataArray, patch_size: int,
                     top: int = TOP, log=None) -> pd.DataFrame:
    """``objects`` with ``change`` (words, :func:`describe`) for its ``top`` best-ranked candidates, from their
    onset patch events' pixels (``events``: ``object_id``, ``row``, ``col``, ``t0``, ``t1``); "" elsewhere, where
    no pixel is usable at both dates, and everywhere without red and NIR bands. One computation reads the
    onset patches' windows and every patch's mean (for the scene's own change), so memory grows with those, not
    with the scene. Without a red band, ``log`` (default :func:`warnings.warn`) says once that the objects get no
    words; with red but no near-infrared band, that they get the brightness words alone (:func:`_bands_note`)."""
    out = objects.assign(change="")
    if cube.attrs.get("embedding_bands"):  # (embeddings made elsewhere: no reflectance to put in words)
        return out
    names = index_bands(cube)
    has_nir = names is not None
    if not has_nir:
        names = visible_bands(cube)
    described = objects[objects["candidate"]].nsmallest(top, "rank") if "rank" in objects else objects[objects["candidate"]].head(top)
    if not has_nir and len(described):
        (log or warnings.warn)(_bands_note(cube, names is not None))
    if names is None or not len(described):
        return out
    swir = find_bands(cube, SWIR1)[0] if has_nir else None  # (snow needs the near infrared too)
    has_swir = swir is not None
    nothing = SLIGHT if has_nir else BRIGHTNESS_HELD
    if has_swir:
        names = [*names, band_names(cube)[swir]]
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
        strip = _indices(w, q, swir=has_swir, nir=has_nir)
        for c in range(c0, c1 + 1):
            at[t, r, c] = strip[:, :, (c - c0) * p:(c - c0 + 1) * p]
    scene = _indices(means, swir=has_swir, nir=has_nir)  # (5, dates, rows, cols): every patch's mean
    slot = {int(t): k for k, t in enumerate(dates)}
    # the scene's own change is measured on the patches no candidate object changed at that date: a clear-cut
    # over most of an area (a scene clipped to it, a disaster's pair) was its own scene's change, and read
    # "slight change"; where fewer than MIN_QUIET of the patches are left, the scene is taken as unchanged
    cand = events[events["object_id"].isin(objects.loc[objects["candidate"], "object_id"]).to_numpy()]
    cand_t1 = times.get_indexer(pd.to_datetime(cand["t1"]))
    shift = {}  # the scene's own median change of NDVI and brightness between two dates
    with np.errstate(invalid="ignore"):
        for a, b in set(zip(ev["i0"], ev["i1"])):
            d = scene[:, slot[b]] - scene[:, slot[a]]
            busy = np.zeros(d.shape[1:], bool)
            at_b = cand[cand_t1 == b]
            inside = (at_b["row"].to_numpy() < busy.shape[0]) & (at_b["col"].to_numpy() < busy.shape[1])
            busy[at_b["row"].to_numpy()[inside], at_b["col"].to_numpy()[inside]] = True
            seen = np.isfinite(d[2])
            quiet = seen & ~busy
            if quiet.sum() < MIN_QUIET * max(seen.sum(), 1):
                shift[a, b] = (0.0, 0.0)
                continue
            ndvi = float(np.nan_to_num(np.nanmedian(d[0][quiet]))) if has_nir else 0.0  # (no NDVI: NaN everywhere)
            shift[a, b] = (ndvi, float(np.nan_to_num(np.nanmedian(d[2][quiet]))))
    pixels: dict[int, list[np.ndarray]] = {}  # per object: ndvi0, ndvi1, vis0, vis1 (0: moved by the scene), water0,
    # water1, vis0_own (not moved), snow0, snow1, ndvi0_own (not moved)
    for oid, r, c, a, b in ev[["object_id", "row", "col", "i0", "i1"]].itertuples(index=False):
        (ndvi0, ndwi0, vis0, ndsi0, nir0), (ndvi1, ndwi1, vis1, ndsi1, nir1) = at[a, r, c].reshape(5, -1), at[b, r, c].reshape(5, -1)
        s_ndvi, s_vis = shift[a, b]
        with np.errstate(invalid="ignore"):  # (NaN compares False: unusable pixels are dropped below)
            pixels.setdefault(int(oid), []).append(np.stack([ndvi0 + s_ndvi, ndvi1, vis0 + s_vis, vis1,
                                                             _water(ndwi0, vis0, ndsi0), _water(ndwi1, vis1, ndsi1),
                                                             vis0, _snow(ndsi0, vis0, nir0), _snow(ndsi1, vis1, nir1), ndvi0]))
    words = {}
    for oid, chunks in pixels.items():
        ndvi0, ndvi1, vis0, vis1, water0, water1, vis0_own, snow0, snow1, ndvi0_own = np.concatenate(chunks, axis=1)
        ok = np.isfinite(vis0) & np.isfinite(vis1)
        if has_nir:  # (without it NDVI is NaN everywhere: brightness alone)
            ok &= np.isfinite(ndvi0) & np.isfinite(ndvi1)
        if not ok.any():  # no usable pixel at one of the dates: nothing to say
            continue
        px = pd.DataFrame({"ndvi0": ndvi0[ok], "ndvi1": ndvi1[ok], "vis0": vis0[ok], "vis1": vis1[ok],
                           "water0": water0[ok].astype(bool), "water1": water1[ok].astype(bool),
                           "vis0_own": vis0_own[ok], "snow0": snow0[ok].astype(bool), "snow1": snow1[ok].astype(bool),
                           "ndvi0_own": ndvi0_own[ok]})
        changed = (((px["ndvi1"] - px["ndvi0"]).abs() >= CHANGED["ndvi"]) | ((px["vis1"] - px["vis0"]).abs() >= CHANGED["vis"])
                   | (px["water0"] != px["water1"]) | (px["snow0"] != px["snow1"]))
        words[oid] = describe(px[changed], nothing) if changed.mean() >= MIN_CHANGED else nothing
    out["change"] = out["object_id"].map(words).fillna("").astype(str).to_numpy()
    return out


def unread_bands(cube: xr.DataArray) -> list[str]:
    """The bands of ``cube`` whose names read as no role (blue, green, red, near infrared, SWIR1:
    :func:`changescout.quality.find_bands`). Only where there is one may a band that a stage misses be there
    under another name, so that ``--bands`` is the advice; an RGB series named red, green, blue has none, and no
    name can give it a near-infrared band."""
    read = {i for i in find_bands(cube, BLUE, GREEN, RED, NIR, SWIR1) if i is not None}
    return [b for i, b in enumerate(band_names(cube)) if i not in read]


def _bands_note(cube: xr.DataArray, has_red: bool) -> str:
    """What a series without a near-infrared band gets in words, and why: the brightness words alone where it has
    a red band, none without; ``--bands`` is advised only where a band's name reads as no role
    (:func:`unread_bands`)."""
    bands = band_names(cube)
    unread = unread_bands(cube)
    if not has_red:
        return (f"warning: no change descriptions: the words (brighter, vegetation loss, water appears...) need a red "
                f"band, and all but brighter and darker the near-infrared band, found by name ({RED[0]}/{RED[1]}, "
                f"{NIR[0]}/{NIR[1]}...), and the series' bands are {bands}"
                + ("; name them with --bands" if unread else ""))
    words = f"its objects get the brightness words alone (brighter, darker; '{BRIGHTNESS_HELD}' where it held)"
    if unread:
        return (f"warning: no near-infrared band found by name ({NIR[0]}/{NIR[1]}...) among the series' bands {bands}, "
                f"which the vegetation, water and snow words need: {words}; if one of {unread} is the near infrared, "
                "name the bands with --bands")
    return (f"note: this series has no near-infrared band (its bands are {bands}), which the vegetation, water and "
            f"snow words need: {words}")
