"""Spectral cloud and haze screening for series that come without a quality mask.

The haze-optimised transform (HOT; Zhang, Guindon & Cihlar 2002, also the first pass of Fmask) flags pixels
whose blue reflectance is high for their red: ``blue - 0.5 * red - 0.08 > 0``. Clear land, water, bare soil
and bright roofs stay below it; clouds and thick haze rise above it. Flags are dilated by a few pixels to
take cloud edges (as Fmask dilates its masks). Pixels that a mask already classifies are left alone.

A fixed threshold misses thin clouds over dark vegetation, so a temporal test (in the manner of Tmask's
multi-temporal screening, Zhu & Woodcock 2014) also flags a pixel whose HOT stands ``spike`` above that of
both its neighbouring dates (for the first date: the next two). The last date has no later date to tell a
cloud from a new bright surface (a construction site), so it only gets the fixed threshold. Flagged regions of
fewer than ``min_flag`` pixels (20, 8-connected) are dropped before they grow and are dilated: sensor noise on
a hazy date lifts single pixels over the temporal margin, and each became a 7 x 7 px "cloud" whose pixels
took the previous date's value. Over a flood that appeared that date, this split its onset over two dates
(a phantom second change ranked in the top 10 of the planted synthetic series). On the five synthetic seeds
every planted cloud flags a region of at least 65 px, and no region of 17-64 px lies on a cloud. The filter
takes the fixed threshold's specks too (a bright roof's few pixels): sparing them, as a review suggested for
tiny opaque clouds, lowered the synthetic AP (seed 0: 0.790 -> 0.737, seed 4: 0.820 -> 0.771) and the rare
planted objects in the top 10 (64 -> 63 of 80).

Monthly composites of overlapping periods (the level-3A syntheses of the Bouconne series, two weeks apart)
share acquisitions, and so their clouds: a thin cloud on two consecutive dates is compared, by the one-date
test, with itself. Such a cloud whitens the visible bands (+0.04 over forest on Bouconne's first two dates,
HOT only +0.015) and leaves the near-infrared, so a blue test (:func:`lasting_spikes`) flags pixels of one or
two consecutive dates whose blue stands ``rise`` (and 1.5 times) above the dates around them, beyond the
scene's excess (a scene-wide haze), while their near-infrared holds (a harvest or a flood darkens it); half
that rise is the weak level its clouds grow over. Unscreened, those clouds were three of the five top objects
of the real Bouconne series (1 557 px flagged, dilation included, on each of its first two dates now, none on
the later ones). On the planted series (benchmarks/planted.py, rcf, 5 seeds): Bouconne AP 0.964 -> 0.979
(AUROC 0.996 -> 0.994), synthetic AP 0.800 -> 0.796, rare objects in the top 10 64 -> 63 of 80; ``rise`` 0.02
(two dates only) gave 0.969, 0.800 and 63.

The fixed threshold also flags white surfaces (a white roof, a greenhouse: 0.5-0.6 in every band), and the
gaps filled over them hid the change: an acceptance test's new white roof on a 7-date Bouconne cut ranked
116th, and first with the screen off. A white surface stays where it is, at a steady brightness, and a cloud
does not: a pixel's run of flagged dates whose blue varies by less than 1.5 times is a surface when it lasts
at least three dates to the end of the series (a new roof) or six anywhere (one that was there before)
(:func:`bright_surfaces`). A cloud that two overlapping composites share lasts two dates. A cloud deck is
steady white too, everywhere: on a date whose fixed test flags more than half of the scene's clear pixels, and
a quarter more than the series' lower quartile of that share (:func:`overcast_dates`, from the scene sample: a
scene mostly of greenhouses is white at every date), nothing is a surface (three overcast dates at the end of a
series read clear, and ranked as the run's top change). A new white roof seen only on the last two dates
is still taken for a cloud: nothing tells them apart yet.

Cloud shadows are not bright: HOT misses them, and at the first or last date, where the change stage cannot
see that a state lasts one date only, a shadow looks like a new dark surface. Darkening alone cannot tell a
shadow from a harvest or a flood, so shadows are looked for as Fmask does, as the projection of a cloud: each
cloud of a date is moved (up to ``reach`` px each way; the sun geometry is not read here, so the shift is
searched) to where its outline best fits the pixels whose near-infrared reflectance fell well below both
neighbouring dates' (first date: the next two; last date: the previous two), relative to the date's median
ratio. Where the placed cloud fits, its dark pixels are flagged SHADOW. A dark change next to a cloud stays
clear unless it has the cloud's very outline. A cloud that two consecutive dates share casts its shadow on
both, and the one-date test compares them with each other: the part of the cloud on both dates is also moved
over the pixels of that pair whose brighter date is darker than the dates around the pair
(:func:`dark_pairs`), and only that part over only that pair (a flood that lasts two dates darkens them too).

:func:`fill_gaps` then gives the encoder, for each masked pixel, the value of the nearest usable date of that
pixel, so that a patch partly under a cloud or outside a scene's footprint at one date does not look changed.
"""

from __future__ import annotations

import math
import re
import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage, signal

from .cube import SENTINEL2_ONLY, Quality, band_names, sentinel2_band

BLUE = ("B02", "blue", "B1_blue")
GREEN = ("B03", "green")
RED = ("B04", "red")
NIR = ("B08", "nir", "B8A", "nir08")
SWIR1 = ("B11", "swir16", "swir1")
SWIR2 = ("B12", "swir22", "swir2")
#: More names of blue, green, red, near infrared and short-wave infrared (keyed by the first of the tuples above)
#: per family of platforms, when every date of the cube comes from one: Landsat Collection 2's (``SR_B4``) and
#: bare band numbers (``b3``: old Landsat scene files, unnamed products). Landsat 4-7 number their bands one lower
#: than Landsat 8-9 (SR_B2 is green there, SR_B4 near infrared). Without a known family, ``SR_B*`` are read as
#: Landsat 8-9's. Sentinel-2's bare numbers (``B2``, as its products' PROVENANCE and many tools write them) are
#: its own names without the leading zero: :func:`changescout.cube.sentinel2_band` reads them.
_BY_FAMILY = {
    "tm": {"B02": ("SR_B1", "B1"), "B03": ("SR_B2", "B2"), "B04": ("SR_B3", "B3"), "B08": ("SR_B4", "B4"),
           "B11": ("SR_B5", "B5"), "B12": ("SR_B7", "B7")},
    "oli": {"B02": ("SR_B2", "B2"), "B03": ("SR_B3", "B3"), "B04": ("SR_B4", "B4"), "B08": ("SR_B5", "B5"),
            "B11": ("SR_B6", "B6"), "B12": ("SR_B7", "B7")},
    "msi": {},
}
_UNKNOWN_FAMILY = {key: names[:1] for key, names in _BY_FAMILY["oli"].items()}
_SENTINEL2_NUMBER = re.compile(r"B(0\d|1[0-2]|8A)", re.IGNORECASE)
#: The Landsat platforms of each band numbering: 4-7 (TM, ETM+) and 8-9 (OLI), whose band numbers name other bands.
TM_PLATFORMS = {"landsat-4", "landsat-5", "landsat-7"}
OLI_PLATFORMS = {"landsat-8", "landsat-9", "landsat-8-9"}  # (the last: HLS L30, one or the other)
#: What each band family (:func:`band_family`) is called in messages.
FAMILY_NAMES = {"tm": "Landsat 4-7 (TM, ETM+)", "oli": "Landsat 8-9 (OLI)", "msi": "Sentinel-2 (MSI)"}


def band_family(cube: xr.DataArray) -> str | None:
    """The family of platforms whose band numbering ``cube``'s band names follow: ``"tm"`` (Landsat 4-7),
    ``"oli"`` (Landsat 8-9), ``"msi"`` (Sentinel-2), or None. From the ``platform`` coordinate when every date
    has one family; without a platform (a stacked GeoTIFF, ``--bands``), a series with a band only Sentinel-2
    has (B8A, B12: :data:`changescout.cube.SENTINEL2_ONLY`) is Sentinel-2's, so that its ``B2`` is B02 (a
    Landsat ``B2`` is blue or green, and is not read so without a platform)."""
    platforms = {str(v).lower().replace("_", "-") for v in np.atleast_1d(cube["platform"].values)} if "platform" in cube.coords else set()
    platforms -= {"unknown", "", "none", "nan"}  # a scene whose name told no platform: the others decide
    family = None if not platforms else (  # ("LANDSAT_5", as USGS STAC spells it, too)
        "tm" if platforms <= TM_PLATFORMS else "oli" if platforms <= OLI_PLATFORMS
        else "msi" if all(p.startswith("sentinel-2") for p in platforms) else None)
    if family is None and not any(p.startswith(("landsat", "sentinel-2")) for p in platforms):
        if any(sentinel2_band(b) in SENTINEL2_ONLY for b in band_names(cube)):
            family = "msi"
    return family


def role_band_names(cube: xr.DataArray) -> list[str]:
    """``cube``'s band names as the band roles are looked up (:func:`find_bands`): Sentinel-2's bare numbers
    spelt as Sentinel-2 does (``B2`` -> ``B02``) where the series is Sentinel-2's (:func:`band_family`), the
    names as they are otherwise. Same order as the cube's bands, which keep their names."""
    return _role_names(band_names(cube), band_family(cube))


def _role_names(names: list[str], family: str | None) -> list[str]:
    return [sentinel2_band(b) for b in names] if family == "msi" else names


def find_bands(cube: xr.DataArray, *names: tuple[str, ...]) -> tuple[int | None, ...]:
    """Index in ``cube`` of the first band found of each tuple of ``names`` (None where absent), case-blind,
    with the names of the cube's family of platforms (:func:`band_family`, :data:`_BY_FAMILY`: TM/ETM+, OLI,
    Sentinel-2 MSI, whose ``B2`` is ``B02``: :func:`role_band_names`)."""
    family = band_family(cube)
    bands = _role_names(band_names(cube), family)
    extra = _BY_FAMILY.get(family, _UNKNOWN_FAMILY)
    if family in ("tm", "oli"):  # a Landsat series: its own numbers (B5 or B05), no Sentinel-2 number (its B11 is thermal)
        def landsat(wanted):
            own = extra.get(wanted[0], ())
            padded = [f"B0{n[1:]}" for n in own if re.fullmatch(r"B\d", n)]
            return [*own, *padded, *(w for w in wanted if not _SENTINEL2_NUMBER.fullmatch(w))]
        return tuple(_find(bands, landsat(wanted)) for wanted in names)
    return tuple(_find(bands, [*wanted, *extra.get(wanted[0], ())]) for wanted in names)


def _screen_bands(cube: xr.DataArray) -> tuple[int | None, int | None, int | None]:
    """Indices of the blue, red and near-infrared bands of ``cube`` (None where absent)."""
    return find_bands(cube, BLUE, RED, NIR)


def _find(bands: list[str], names) -> int | None:
    upper = {}
    for i, b in enumerate(bands):
        upper.setdefault(b.upper(), i)  # (B2 and B02 both in a cube: the first)
    for n in names:
        if n.upper() in upper:
            return upper[n.upper()]
    return None


def can_screen(cube: xr.DataArray) -> bool:
    blue, red, _ = _screen_bands(cube)
    return blue is not None and red is not None


def _neighbours(x: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The two dates date ``t`` of ``x`` (``time`` first, at least 3 dates) is compared with: the one before and
    the one after; for the first date the next two, for the last date the previous two."""
    T = len(x)
    return (x[1], x[2]) if t == 0 else (x[T - 2], x[T - 3]) if t == T - 1 else (x[t - 1], x[t + 1])


def temporal_spikes(hot: np.ndarray, spike: float) -> np.ndarray:
    """``(time, h, w)`` HOT values -> pixels whose HOT exceeds both neighbouring dates' by more than ``spike``
    (first date: the next two; the last date is never flagged). NaN never flags."""
    out = np.zeros(hot.shape, bool)
    T = len(hot)
    if T < 3:
        return out
    with np.errstate(invalid="ignore"):
        for t in range(T - 1):
            out[t] = hot[t] - np.fmax(*_neighbours(hot, t)) > spike
    return out


def _around(T: int, t: int, n: int) -> tuple[int, int] | None:
    """The two dates a run of ``n`` dates from ``t`` is compared with: the one before and the one after; for a
    run at the start the next two after it; None for a run that ends at the last date."""
    if t + n >= T:
        return None
    if t == 0:
        return (n, n + 1) if n + 1 < T else None
    return t - 1, t + n


def _blue_runs(blue: np.ndarray, runs: tuple[int, ...]):
    """``(n, t, dates around, the run's lowest blue, the higher blue around it)`` of every run of ``n`` dates
    (``runs``) from ``t`` that has dates around it (:func:`_around`)."""
    T = len(blue)
    for n in runs:
        for t in range(T):
            around = _around(T, t, n)
            if around is not None:
                yield n, t, around, np.min(blue[t:t + n], axis=0), np.fmax(blue[around[0]], blue[around[1]])


def scene_excess(blue: np.ndarray, runs: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """``(max(runs) + 1, time)``: the median of each run's blue excess over the dates around it, over all of
    ``blue`` (``(time, h, w)``, a whole scene or a sample of it; the same for every block of it), 0 where
    nothing is known or it is negative: what a haze over the scene adds, which the per-date normalisation
    takes care of. A cloud over more than half of the scene is taken for such a haze. (The 25th percentile,
    which would keep such a cloud, left a thin scene-wide haze on synthetic seed 2 (0.011 over one date) to
    flag 5 097 px, 434 of them on a planted road, against 671.)"""
    out = np.zeros((max(runs) + 1, len(blue)))
    with np.errstate(invalid="ignore"):
        for n, t, _, high, low in _blue_runs(blue, runs):
            diff = (high - low)[np.isfinite(high - low)]
            out[n, t] = max(float(np.median(diff)), 0.0) if diff.size else 0.0
    return out


def lasting_spikes(blue: np.ndarray, nir: np.ndarray, rises: tuple[float, ...], ratio: float = 1.5,
                   keep: float = 0.9, runs: tuple[int, ...] = (1, 2), excess: np.ndarray | None = None) -> list[np.ndarray]:
    """``(time, h, w)`` blue and near-infrared values -> for each margin of ``rises`` (one pass for all), the
    pixels of one or two consecutive dates (``runs``) whose blue, at each of them, exceeds the higher blue of the
    dates around them by more than that margin and ``ratio`` times (beyond the scene's excess,
    :func:`scene_excess`, given as ``excess`` or taken from ``blue`` itself: a haze over the whole scene is the
    normalisation's business), while their near-infrared stays at least ``keep`` times the higher of those
    dates' (a thin cloud whitens the visible bands over vegetation and leaves its near-infrared; a harvest or a
    flood that lasts two dates, and a bright roof on two slightly brighter dates, are not flagged). The dates
    around: the one before and the one after; for a run at the start the next two. A run that ends at the last
    date, which no later date can tell from a new bright surface, is never flagged. NaN never flags. (The
    screen flags clouds at ``rise`` and grows them over half of it.)"""
    out = [np.zeros(blue.shape, bool) for _ in rises]
    excess = scene_excess(blue, runs) if excess is None else excess
    with np.errstate(invalid="ignore", divide="ignore"):
        for n, t, around, high, low in _blue_runs(blue, runs):
            high = high - excess[n, t]
            qualifies = (high > ratio * low) & (np.min(nir[t:t + n], axis=0) >= keep * np.fmax(nir[around[0]], nir[around[1]]))
            for flags, rise in zip(out, rises):
                flags[t:t + n] |= qualifies & (high - low > rise)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is under 0.01 reflectance (near-black neighbours, water, tell nothing)."""
    ratio = num / den
    ratio[~np.isfinite(ratio) | ~(den >= 0.01)] = np.nan
    return ratio


def _dark(ratio: np.ndarray, dark: float, median: float | None = None) -> np.ndarray:
    """``ratio`` below ``dark`` times ``median`` (default: its own median); NaN never."""
    if median is None:
        median = np.nanmedian(ratio) if np.isfinite(ratio).any() else np.nan
    return ratio < dark * median if np.isfinite(median) else np.zeros(ratio.shape, bool)


def _spike_ratios(nir: np.ndarray):
    """``(t, ratio)`` of :func:`dark_spikes`: each date's near infrared over the darker of its neighbours'."""
    for t in range(len(nir)):
        yield t, _ratio(nir[t], np.fmin(*_neighbours(nir, t)))


def _pair_ratios(nir: np.ndarray):
    """``(t, ratio)`` of :func:`dark_pairs` for each pair ``(t, t + 1)`` that has two dates around it."""
    T = len(nir)
    for t in range(T - 1):
        around = _around(T, t, 2) if t + 2 < T else ((t - 1, t - 2) if t >= 2 else None)
        if around is not None:
            yield t, _ratio(np.fmax(nir[t], nir[t + 1]), np.fmin(nir[around[0]], nir[around[1]]))


def scene_dark_medians(nir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The medians over the scene (``nir (time, h, w)``, or a regular sample of it) of the ratios that
    :func:`dark_spikes` (per date) and :func:`dark_pairs` (per pair of dates) compare with them; NaN where
    none is known. Taken in each block instead, a date's shadows depended on where the blocks fell: on a 512
    px synthetic scene 96 px blocks made 3712 shadow pixels 7388."""
    spikes, pairs = np.full(len(nir), np.nan), np.full(max(len(nir) - 1, 0), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (all-NaN dates)
        if len(nir) >= 3:
            for t, ratio in _spike_ratios(nir):
                spikes[t] = np.nanmedian(ratio)
        for t, ratio in _pair_ratios(nir):
            pairs[t] = np.nanmedian(ratio)
    return spikes, pairs


def dark_spikes(nir: np.ndarray, dark: float, medians: np.ndarray | None = None) -> np.ndarray:
    """``(time, h, w)`` near-infrared values -> pixels whose ratio to the darker of both neighbouring dates
    (first date: the next two; last date: the previous two) is below ``dark`` times that ratio's median over
    the date (``medians``, from :func:`scene_dark_medians`; default: over ``nir`` itself) (autumn darkens a
    whole scene; a shadow darkens a place more than the rest). NaN, and neighbours darker than 0.01
    reflectance (water), never flag."""
    out = np.zeros(nir.shape, bool)
    if len(nir) < 3:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        for t, ratio in _spike_ratios(nir):
            out[t] = _dark(ratio, dark, None if medians is None else medians[t])
    return out


def dark_pairs(nir: np.ndarray, dark: float, medians: np.ndarray | None = None) -> np.ndarray:
    """``(time - 1, h, w)``: for each pair of consecutive dates ``(t, t + 1)``, the pixels whose brighter date
    of the two is darker, as :func:`dark_spikes` measures it, than the dates around the pair (:func:`_around`;
    the last pair: the two dates before it; a pair without two other dates flags nothing): where the shadow of
    a cloud that both dates share may lie (the cloud's outline tells it from a new dark surface)."""
    out = np.zeros((max(len(nir) - 1, 0), *nir.shape[1:]), bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for t, ratio in _pair_ratios(nir):
            out[t] = _dark(ratio, dark, None if medians is None else medians[t])
    return out


def cast_shadows(cloud: np.ndarray, dark: np.ndarray, reach: int, min_cloud: int = 64, min_match: float = 0.3) -> np.ndarray:
    """``(h, w)`` cloud mask and dark-spike mask of one date -> where the clouds' shadows fall.

    Each cloud of at least ``min_cloud`` px is moved, by up to ``reach`` px each way, to the place where its
    outline best fits the ``dark`` pixels (FFT cross-correlations: the dark pixels it covers, less those just
    outside it, scaled to its area); when it covers at least ``min_match`` of its area there, that placed copy
    is its shadow. The sun geometry is not known here, so the shift is searched
    (Fmask searches the cloud height along the known sun direction). A placement may reach beyond the edge
    of the image when at least half of it stays inside; it is then judged, and flagged, on its part inside."""
    out = np.zeros(cloud.shape, bool)
    labels, _ = ndimage.label(cloud)
    h, w = cloud.shape
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        shape = labels[box] == i
        area = int(shape.sum())
        if area < min_cloud:
            continue
        # the search window: the reach, plus the 2 px ring, each way; extended beyond the image (or block) edge
        # where it crosses it: a shadow may fall partly outside, and is then judged on its part inside
        m = reach + 2
        y0, x0, y1, x1 = box[0].start - m, box[1].start - m, box[0].stop + m, box[1].stop + m
        part = np.s_[max(-y0, 0):y1 - y0 - max(y1 - h, 0), max(-x0, 0):x1 - x0 - max(x1 - w, 0)]  # inside the image
        inside = np.zeros((y1 - y0, x1 - x0), np.float32)
        inside[part] = 1
        window = np.zeros_like(inside)
        window[part] = dark[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
        if window.sum() < min_match * area / 2:
            continue
        # Score a placement by the dark pixels it covers less those in a 2 px ring around it: a shadow has
        # the cloud's outline, a dark field that merely holds the cloud's shape does not.
        padded = np.pad(shape, 2)
        ring = ndimage.binary_dilation(padded, iterations=2) & ~padded
        kernel = padded[::-1, ::-1].astype(np.float32)
        cover = signal.fftconvolve(window, kernel, mode="valid")
        seen = signal.fftconvolve(inside, kernel, mode="valid")  # its pixels inside the image
        spill = signal.fftconvolve(window, ring[::-1, ::-1].astype(np.float32), mode="valid")
        score = cover - spill * (area / max(int(ring.sum()), 1))
        score[seen < area / 2 - 0.01] = -np.inf  # at least half of the shadow must be inside to judge it
        iy, ix = np.unravel_index(np.argmax(score), score.shape)
        if np.isfinite(score[iy, ix]) and cover[iy, ix] >= min_match * seen[iy, ix] and score[iy, ix] > 0:
            top, left = y0 + iy + 2, x0 + ix + 2  # the placed cloud's corner (the kernel holds the 2 px ring)
            ys = slice(max(top, 0), min(top + shape.shape[0], h))
            xs = slice(max(left, 0), min(left + shape.shape[1], w))
            if ys.start < ys.stop and xs.start < xs.stop:
                out[ys, xs] |= shape[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]
    return out


_PER_DATE = np.array([np.zeros((3, 3)), np.ones((3, 3)), np.zeros((3, 3))], bool)  # 8-connected, never across dates


def drop_specks(flags: np.ndarray, min_size: int) -> np.ndarray:
    """``flags (time, h, w)`` less its 8-connected regions (per date) of fewer than ``min_size`` px."""
    if min_size <= 1 or not flags.any():
        return flags
    labels, _ = ndimage.label(flags, structure=_PER_DATE)
    return flags & (np.bincount(labels.ravel()) >= min_size)[labels]


def grow(core: np.ndarray, weak: np.ndarray, min_core: int = 64) -> np.ndarray:
    """Hysteresis per date: ``core`` plus the 8-connected regions of ``weak`` that hold a core region of at
    least ``min_core`` px (a cloud; the few bright pixels of a roof or a road do not grow)."""
    labels, n = ndimage.label(core, structure=_PER_DATE)
    if n == 0:
        return core
    sizes = np.bincount(labels.ravel())
    big = (sizes >= min_core)[labels] & core
    weak_labels, _ = ndimage.label(weak | big, structure=_PER_DATE)
    keep = np.unique(weak_labels[big])
    return core | np.isin(weak_labels, keep[keep > 0])


def bright_surfaces(flags: np.ndarray, value: np.ndarray, min_dates: int = 3, long_dates: int = 6,
                    tolerance: float = 1.5, overcast: np.ndarray | None = None) -> np.ndarray:
    """``(time, h, w)`` fixed-threshold flags and a brightness (blue) -> the flags that mark a bright surface
    rather than a cloud: runs of a pixel's consecutive flagged dates over which ``value`` varies by at most
    ``tolerance`` times, that reach the last date and last ``min_dates`` dates at least (a new white roof or
    greenhouse), or that last ``long_dates`` dates wherever they lie (one that was there before). Clouds do not
    sit on one place for that many dates at a steady brightness; a cloud shared by two overlapping composites
    lasts two. A date without data ends a run. On the dates ``overcast`` (bool per date) says, most of the scene
    is flagged: nothing of them is a surface (a cloud deck over the last three dates read as a white roof, the
    whole scene clear, and ranked as the top change), though their flags still carry a surface's run."""
    T = len(flags)
    out = np.zeros(flags.shape, bool)
    if T < min_dates or not flags.any():
        return out
    f = np.moveaxis(flags, 0, -1).reshape(-1, T)  # pixel-major: each pixel's runs are contiguous
    v = np.moveaxis(value, 0, -1).reshape(-1, T)[f]
    start = f & ~np.concatenate([np.zeros((len(f), 1), bool), f[:, :-1]], axis=1)
    run = np.cumsum(start[f]) - 1  # run of each flagged entry, in order
    first = np.flatnonzero(start[f])
    length = np.diff(np.append(first, run.size))
    ends = np.tile(np.arange(T), len(f))[f.ravel()][first + length - 1] == T - 1  # the run's last entry is the last date
    with np.errstate(invalid="ignore"):
        steady = np.maximum.reduceat(v, first) <= tolerance * np.minimum.reduceat(v, first)
    surface = steady & ((ends & (length >= min_dates)) | (length >= long_dates))
    keep = np.zeros(f.shape, bool)
    keep[f] = surface[run]
    if overcast is not None:
        keep[:, np.asarray(overcast, bool)] = False
    return np.moveaxis(keep.reshape(*flags.shape[1:], T), -1, 0)


def hot_index(blue: np.ndarray, red: np.ndarray) -> np.ndarray:
    """The haze-optimised transform, ``blue - 0.5 * red`` (the module docstring)."""
    return blue - 0.5 * red


def overcast_dates(blue: np.ndarray, red: np.ndarray, quality: np.ndarray, offset: float, most: float = 0.5,
                   above: float = 0.25) -> np.ndarray:
    """Per date of a ``(time, h, w)`` sample of the scene: whether HOT flags more than ``most`` of its clear
    pixels, and ``above`` more than the series' usual share (its lower quartile over the dates): a cloud deck,
    not a scene that is mostly white at every date (greenhouses, a salt flat: a review found such a scene's
    steady surfaces cloud at every date with the share alone)."""
    clear = quality == Quality.CLEAR
    with np.errstate(invalid="ignore"):
        hot = (hot_index(blue, red) - offset > 0) & clear
    share = hot.sum(axis=(1, 2)) / np.maximum(clear.sum(axis=(1, 2)), 1)
    usual = np.quantile(share, 0.25) if len(share) else 0.0
    return (share > most) & (share > usual + above)


def _screen_block(blue: np.ndarray, red: np.ndarray, quality: np.ndarray, nir: np.ndarray | None = None, *,
                  offset: float, dilate: int, spike: float | None = None, edge: float | None = None,
                  dark: float | None = None, reach: int = 0, min_cloud: int = 64, min_flag: int = 0,
                  rise: float | None = None, excess: np.ndarray | None = None,
                  dark_medians: tuple[np.ndarray, np.ndarray] | None = None,
                  overcast: np.ndarray | None = None) -> np.ndarray:
    index = hot_index(blue, red)
    with np.errstate(invalid="ignore"):
        hot = (index - offset) > 0
        if len(hot) > 1:  # every date of the pixel is here (a temporal screen): a lasting white roof is no cloud
            hot &= ~bright_surfaces(hot, blue, overcast=overcast)
        if spike is not None:
            hot |= temporal_spikes(index, spike)
        lasting = rise is not None and nir is not None
        if lasting:
            core, thin = lasting_spikes(blue, nir, (rise, rise / 2), excess=excess)
            hot |= core
        hot = drop_specks(hot, min_flag)
        if edge is not None or lasting:  # a cloud's thinner edge: HOT over ``edge``, or half the blue rise
            weak = index > edge if edge is not None else np.zeros_like(hot)
            hot = grow(hot, weak | thin if lasting else weak)
    shadow = np.zeros_like(hot)
    if nir is not None and dark is not None:
        spike_medians, pair_medians = dark_medians if dark_medians is not None else (None, None)
        darker = dark_spikes(nir, dark, spike_medians) & ~hot
        shadow = np.stack([cast_shadows(hot[t], darker[t], reach, min_cloud) for t in range(len(hot))]) & darker
        # A cloud that two consecutive dates share casts its shadow on both, and the one-date test compares them
        # with each other: the pair's dark pixels are searched for the shadow of the part of the cloud on both
        # dates, and only of that (a flood that lasts two dates darkens them too, and may lie near a cloud).
        shared = hot[:-1] & hot[1:]
        busy = [t for t in range(len(shared)) if shared[t].any()]
        pairs = dark_pairs(nir, dark, pair_medians) if len(busy) else None
        for t in busy:
            pair = pairs[t] & ~hot[t] & ~hot[t + 1]
            found = cast_shadows(shared[t], pair, reach, min_cloud) & pair
            shadow[t] |= found
            shadow[t + 1] |= found
    if dilate:
        structure = np.ones((1, 2 * dilate + 1, 2 * dilate + 1), bool)
        hot = ndimage.binary_dilation(hot, structure=structure)
        shadow = ndimage.binary_dilation(shadow, structure=structure) & ~hot
    clear = quality == Quality.CLEAR
    out = np.where(hot & clear, np.uint8(Quality.CLOUD), quality)
    return np.where(shadow & clear, np.uint8(Quality.SHADOW), out).astype(np.uint8)


def screen_haze(cube: xr.DataArray, offset: float = 0.08, dilate: int = 3, spike: float | None = 0.03,
                edge: float | None = 0.04, dark: float | None = 0.8, reach: int = 40, min_flag: int = 20,
                rise: float | None = 0.015) -> xr.DataArray:
    """A copy of ``cube`` whose ``quality`` marks HOT-flagged clear pixels as CLOUD and the dark spikes near
    them as SHADOW (lazy, blockwise; see the module docstring).

    ``spike``: the temporal test's margin (None: the fixed threshold only); ``dark``: the shadow test's
    near-infrared ratio (None: no shadow test; it needs a near-infrared band), ``reach``: how far from a
    cloud of its date a shadow may lie, in pixels; ``min_flag``: flagged regions (8-connected, per date,
    before growing and dilation) of fewer pixels are dropped as noise; ``rise``: the blue test's margin over
    one or two dates (:func:`lasting_spikes`; None: no such test; it needs a near-infrared band). The temporal tests
    need every date of a pixel in one block, so the screen then works on all dates at once, in spatial blocks.
    What a block compares with its whole date (the blue excess of hazy dates, the median darkening of the
    shadow test) comes from a sample of the whole scene. Blocks overlap by ``dilate + reach + min_flag`` px
    (63 by default): a cloud that reaches further beyond a block (the source's chunks, 1024 px by default) is
    placed from its part inside, so the shadows of such clouds near a block's edge depend on where it falls."""
    ib, ir, inir = _screen_bands(cube)
    if ib is None or ir is None:
        return cube
    if inir is None:
        dark = rise = None
    data = da.asarray(cube.data)
    q = da.asarray(cube["quality"].data)
    temporal = spike is not None or dark is not None or rise is not None
    time_chunks = {0: -1} if temporal else {0: 1}
    blue, red = data[:, ib].rechunk(time_chunks), data[:, ir].rechunk(time_chunks)
    chunks = blue.chunks
    q = q.rechunk(chunks)
    args = [blue, red, q] + ([data[:, inir].rechunk(chunks)] if dark is not None or rise is not None else [])
    excess = dark_medians = overcast = None
    # what each block compares with the whole date: from about 512 x 512 px of the scene, the same for every block
    step = max(1, math.ceil(math.sqrt(blue.shape[1] * blue.shape[2] / 512 ** 2)))
    if temporal:  # (one pass over a lazy source for the samples)
        nir_part = args[3][:, ::step, ::step] if len(args) > 3 else None
        blue_sample, red_sample, q_sample, nir_sample = dask.compute(blue[:, ::step, ::step], red[:, ::step, ::step],
                                                                     q[:, ::step, ::step], nir_part)
        overcast = overcast_dates(np.asarray(blue_sample), np.asarray(red_sample), np.asarray(q_sample), offset)
        if rise is not None:  # the scene's excess of each run
            excess = scene_excess(np.asarray(blue_sample))
        if dark is not None:  # the median darkening of each date and pair
            dark_medians = scene_dark_medians(np.asarray(nir_sample))
    depth = dilate + (reach if dark is not None else 0) + min_flag  # a speck is judged on all its pixels
    depth = {0: 0, 1: min(depth, blue.shape[1]), 2: min(depth, blue.shape[2])}  # dask: no deeper than the array
    screened = da.map_overlap(_screen_block, *args, depth=depth, boundary="none",
                              dtype=np.uint8, offset=offset, dilate=dilate, spike=spike, edge=edge, dark=dark, reach=reach,
                              min_flag=min_flag, rise=rise, excess=excess, dark_medians=dark_medians,
                              overcast=overcast)
    out = cube.assign_coords(quality=(("time", "y", "x"), screened))
    rule = f"HOT > {offset}" + (f" or {spike} above both neighbouring dates" if spike is not None else "")
    rule += f" or blue {rise} above the dates around one or two dates whose NIR holds" if rise is not None else ""
    rule += "; white surfaces steady over 3 dates to the end, or 6, kept (none on overcast dates)" if temporal else ""
    rule += f", grown over HOT > {edge}" if edge is not None else ""
    rule += (f"; shadow: NIR below {dark} x both neighbouring dates (or the dates around a pair, for a cloud on both) "
             f"within {reach} px of a cloud") if dark is not None else ""
    rule += f"; regions under {min_flag} px dropped" if min_flag > 1 else ""
    names = [str(cube["band"].values[i]) for i in (ib, ir, inir) if i is not None]
    out.attrs = {**cube.attrs, "cloud_screen": f"{rule}, dilated {dilate} px; bands read: {', '.join(names)}"}
    return out


def fill_unseen(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``(time, band, h, w)`` with ``known (h, w)`` (usable at some date) -> each pixel that no date saw (past the
    images' edge, a tile's nodata corner) takes, at each date and in each band, the mean of the known pixels
    there; all 0 when none is known. In place where it can (a float array), and returned.

    (Filled with 0, an edge patch showed the encoder a sharp edge between its image and the void: no other patch
    looked like it, and it stood out as surprising. Filled with its nearest known pixel, the image's outermost
    column filled most of the patch, and its noise ranked quiet edge patches among the top changes of a series
    with no change: the mean adds no texture and no edge.)"""
    if known.all():
        return values
    if not known.any():
        values[...] = 0
        return values
    values[:, :, ~known] = values[:, :, known].mean(axis=-1, keepdims=True)
    return values


def fill_gaps(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """``(time, band, h, w)`` with ``usable (time, h, w)`` -> each unusable pixel takes the value of the nearest
    earlier usable date of that pixel (the nearest later one before the first). Pixels usable at no date have
    nothing to take and keep their values (mask them with ``usable.any(axis=0)``). A copy when anything is
    filled; ``values`` itself when nothing can be (every pixel usable at every date or at none)."""
    ever = usable.any(axis=0)
    if (usable == ever).all():
        return values
    T = len(values)
    steps = np.arange(T)[:, None, None]
    prev = np.maximum.accumulate(np.where(usable, steps, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(usable, steps, T)[::-1], axis=0)[::-1]
    t, y, x = np.nonzero(~usable & ever)
    src = np.where(prev[t, y, x] >= 0, prev[t, y, x], nxt[t, y, x])
    out = values.astype(np.result_type(values, np.float32), copy=True)
    out[t, :, y, x] = values[src, :, y, x]
    return out
