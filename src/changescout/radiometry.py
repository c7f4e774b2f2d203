"""Radiometric consistency across dates: what each date is, known offsets applied, relative normalisation.

* :func:`describe_dates`: per date, its platform, sensor, processing level, product name, Sentinel-2 processing
  baseline and the reflectance offset that applies, read from the cube's ``time`` coordinates (``platform``,
  ``product``..., ``processing_baseline``) and from the names of its source files (each file goes to the date
  its name holds, :func:`changescout.sources.dates.parse_date`; OSCD files by their ``imgs_1``/``imgs_2``
  folder). Landsat series mix sensors: ``LT05``/``LT5`` is TM, ``LE07``/``LE7`` ETM+, ``LC08``/``LC09``
  OLI/TIRS.
* :func:`apply_offsets`: the known offsets, applied lazily per date. Sentinel-2 products of processing
  baseline 04.00 and later (``..._N0400_...``, ``N0500``; 25 January 2022 on, and the reprocessed collection)
  store ``DN = 10000 * reflectance + 1000`` (``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET`` = -1000), so
  reflectance is ``(DN - 1000) / 10000``; Landsat Collection 2 Level-2 surface reflectance
  (``LC08_L2SP_..._02_T1``) is ``DN * 2.75e-5 - 0.2``, and Landsat 8-9 OLI Level-1 top-of-atmosphere
  reflectance (``LC08_L1TP_...``) ``DN * 2e-5 - 0.1``; Landsat 4-7 Level-1 DN are radiance, which the run warns
  of and leaves as they are. Collection 1 Level-2 files of USGS ESPA carry the Level-1 name with a suffix
  (``..._01_T1_sr_band4.tif``, ``_toa_band4``) and hold reflectance x 10000, as do Theia's Sentinel-2 Level-2A
  products (``SENTINEL2B_..._L2A_T31TCJ_...``, whatever the baseline of the Level-1C they came from) and NASA's
  HLS v2 surface reflectance (``HLS.S30...``, ``HLS.L30...``): no offset
  (until a review, ESPA surface reflectance took the Level-1 rule and read 0.18 as -0.06). A rule is applied only where the source scaled the
  files with the default ``DN / 10000`` and no offset (``attrs`` ``scale_factor`` and ``offset``): a scale or
  offset given to the source is taken as already right. Older Sentinel-2 products (names with ``_OPER_`` or a
  baseline under 04.00) and OSCD (top-of-atmosphere L1C of 2015-2018, published in 2018) have no offset; a
  date whose baseline cannot be told is recorded ``"unknown"`` and left as it is.
* :class:`RelativeNormalisation` (and :func:`normalise_dates`, the pipeline stage): a gain and an offset per
  date and band that give the date's median and interquartile range, over the pixels usable at both that date
  and the reference date, those of the reference date. The cube stays in reflectance units, so it suits the
  encoders that take reflectance and the baselines alike; it removes per-date calibration, illumination and
  haze differences, and with them a real change of the whole scene (a season). It is off by default in a run:
  the project's own encoder input already centres every date (:func:`changescout.embed.date_statistics`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .coregister import choose_reference
from .cube import usable_mask, validate_cube
from .errors import ConfigError, InputError
from .sources.dates import HLS_NAME, S2_BASELINE, parse_baseline, parse_date, parse_level, parse_platform
from .sources.geotiff import split_band_suffix

OFFSET_MODES = ("auto", "off")
NORMALISATION_MODES = ("off", "reference")
#: Sentinel-2 processing baseline from which products carry the -1000 DN add offset.
S2_OFFSET_BASELINE = (4, 0)
S2_ADD_OFFSET_DN = -1000.0
DEFAULT_SCALE = 1e-4
#: Landsat Collection 2 Level-2 surface reflectance: reflectance = DN * scale + offset.
LANDSAT_C2_L2 = (2.75e-5, -0.2)

_S2_OLD = re.compile(r"S2[A-D]_OPER_", re.I)
_LANDSAT_C2_L2 = re.compile(r"L[COTE]0\d_L2S[PR]_\d{6}_\d{8}_\d{8}_02_", re.I)
#: Landsat 8-9 OLI Level-1 (Collections 1 and 2): top-of-atmosphere reflectance = DN * 2e-5 - 0.1
#: (REFLECTANCE_MULT_BAND_n / REFLECTANCE_ADD_BAND_n, the same for every band and product).
LANDSAT_OLI_L1 = (2e-5, -0.1)
_LANDSAT_OLI_L1 = re.compile(r"L[CO]0[89]_L1(?:TP|GT|GS)_\d{6}_\d{8}_\d{8}_0[12]_", re.I)
#: Landsat Collection 1 Level-2 files of USGS ESPA (``LC08_L1TP_..._01_T1_sr_band4.tif``, ``..._toa_band4.tif``): the
#: Level-1 product's name with a suffix, holding surface (``sr``) or top-of-atmosphere (``toa``) reflectance x 10000.
_LANDSAT_ESPA = re.compile(r"L[COTEM]0\d_L1(?:TP|GT|GS)_\d{6}_\d{8}_\d{8}_01_[A-Z0-9]{2}_(sr|toa)(?![a-z])", re.I)
#: Theia's Sentinel-2 Level-2A (MAJA: ``SENTINEL2B_20220615-105856-123_L2A_T31TCJ_C_V3-0_FRE_B2.tif``): reflectance
#: x 10000, no offset whatever ESA's processing baseline of the Level-1C it came from.
_THEIA_S2 = re.compile(r"SENTINEL2[A-D]_\d{8}-\d{6}-\d{3}_L2A_T\d{2}[A-Z]{3}_", re.I)
#: Landsat 4-7 (MSS, TM, ETM+) Level-1: DN of calibrated radiance, whose gains the product's MTL file gives per band.
_LANDSAT_TM_L1 = re.compile(r"L[MTE]0[1-7]_L1(?:TP|GT|GS)_\d{6}_\d{8}_\d{8}_0[12]_", re.I)
#: The rule of a date left as it is because its DN are radiance, not reflectance.
RADIANCE_RULE = "Landsat 4-7 Level-1: DN of radiance, not reflectance; left as it is"
_LANDSAT_SENSOR = re.compile(r"(?<![A-Z0-9])L([COTEM])0?[1-9](?:_L[12]|\d{13}[A-Z]{3}\d{2})", re.I)
SENSORS = {"T": "TM", "E": "ETM+", "C": "OLI/TIRS", "O": "OLI", "M": "MSS"}
#: ``time`` coordinates that may hold a product name, and those that may hold a processing baseline.
PRODUCT_COORDS = ("product", "product_name", "product_id", "scene_id", "id")
BASELINE_COORDS = ("processing_baseline", "s2:processing_baseline")


# -- what each date is ----------------------------------------------------------------------------------
def describe_dates(cube: xr.DataArray) -> dict[str, dict]:
    """Per date ``YYYY-MM-DD``: platform, sensor, level, product, baseline and the offset rule that applies."""
    cube = validate_cube(cube)
    times = pd.DatetimeIndex(cube["time"].values)
    names = _names_by_date(cube, times)
    oscd = cube.attrs.get("dataset") == "oscd"
    out = {}
    for i, t in enumerate(times):
        these = names[i]
        platform = _coord(cube, "platform", i) or next(filter(None, map(parse_platform, these)), None)
        if platform is None and oscd:
            platform = "sentinel-2"  # OSCD is Sentinel-2 throughout; its later file names do not say which unit
        level = next(filter(None, map(parse_level, these)), None) or str(cube.attrs.get("level", "unknown"))
        if any((m := _LANDSAT_ESPA.search(n)) and m.group(1).lower() == "sr" for n in these):
            level = "L2"  # (the Level-1 product's name, with the surface reflectance suffix)
        baseline = _baseline(cube, i, these)
        rule = _rule(platform, baseline, these, oscd)
        out[f"{t:%Y-%m-%d}"] = {
            "platform": platform,
            "sensor": _sensor(platform, these),
            "level": level,
            "product": these[0] if these else None,
            "baseline": None if baseline is None else f"{baseline[0]:02d}.{baseline[1]:02d}",
            **rule,
        }
    return out


def _names_by_date(cube: xr.DataArray, times: pd.DatetimeIndex) -> list[list[str]]:
    """Product or file names of each date: a product ``time`` coordinate, else the reflectance files by date
    (mask files left out: an SCL file named after an L2A product says nothing of the image beside it)."""
    for key in PRODUCT_COORDS:
        if key in cube.coords and cube[key].dims == ("time",):
            return [[str(v)] for v in cube[key].values]
    by_date: list[list[str]] = [[] for _ in times]
    index = {t: i for i, t in enumerate(times)}
    masks = set(cube.attrs.get("mask_files", []))
    source = Path(str(cube.attrs.get("source", "")))
    root = source.resolve() if str(source) not in ("", ".") and source.is_dir() else None
    for f in (f for f in cube.attrs.get("source_files", []) if f not in masks):
        p = Path(str(f))
        i = _oscd_date(p) if cube.attrs.get("dataset") == "oscd" else None
        if i is None:
            t = next((d for d in map(parse_date, [p.stem, *(q.name for q in p.parents if q.name)]) if d is not None), None)
            i = index.get(t)
        if i is not None and i < len(times):
            by_date[i].append(_product_name(p, root))
    return [sorted(set(n)) for n in by_date]


def _oscd_date(path: Path) -> int | None:
    from .sources.oscd import DATE_FOLDERS

    folder = path.parent.name
    return DATE_FOLDERS.index(folder) if folder in DATE_FOLDERS else None


def _product_name(path: Path, root: Path | None = None) -> str:
    """A file's product: its stem without a band suffix when that names a product, else the nearest folder
    below the source folder ``root`` named like one (``S2A_MSIL2A_..._N0400_....SAFE``, a Landsat scene id),
    else its folder when the stem begins with the folder's name, else the stem. A band file of a Sentinel-2
    product folder (``T31TCJ_20220301T105031_B04_10m.tif``) names neither the baseline nor the platform
    itself; a folder above the source (``/data/S2B_MSIL2A_..._N0400_..._project/series/``) says nothing of it."""
    stem = split_band_suffix(path.stem)[0] or path.stem  # the band files' own rule (sources.geotiff)
    if is_product_name(stem):
        return stem
    parent = path.parent.name
    below = [q for q in path.parents if root is not None and root in q.parents]
    named = next((q.name for q in below if is_product_name(q.name)), None)
    return named or (parent if parent and path.stem.startswith(parent) else stem)


def is_product_name(name: str) -> bool:
    """Whether ``name`` (a file stem or folder) is named like a Sentinel-2 or Landsat product, whose name tells
    the processing baseline, level or sensor."""
    return any(p.search(name) for p in (S2_BASELINE, _S2_OLD, _LANDSAT_C2_L2, _LANDSAT_OLI_L1, _LANDSAT_TM_L1, _LANDSAT_SENSOR,
                                        _THEIA_S2))


def _coord(cube: xr.DataArray, key: str, i: int):
    if key in cube.coords and cube[key].dims == ("time",):
        v = cube[key].values[i]
        return None if v is None or str(v) in ("", "unknown", "nan", "None") else str(v)
    return None


def _baseline(cube: xr.DataArray, i: int, names: list[str]) -> tuple[int, int] | None:
    for key in BASELINE_COORDS:
        if (v := _coord(cube, key, i)) is not None:
            try:
                major, _, minor = f"{float(v):.2f}".partition(".")
                return int(major), int(minor)
            except ValueError:
                raise InputError(f"the time coordinate {key!r} must hold baselines like '04.00', got {v!r}") from None
    said = sorted({b for b in map(parse_baseline, names) if b is not None})
    if len(said) > 1:  # tiles of one date, mosaicked, from products of different baselines: one offset cannot do
        raise InputError(f"the images of {pd.Timestamp(cube['time'].values[i]):%Y-%m-%d} (tiles of one date, mosaicked: "
                         f"{', '.join(names)}) are products of different processing baselines "
                         f"({', '.join(f'{a:02d}.{b:02d}' for a, b in said)}), whose reflectance offsets differ; keep "
                         "tiles of one baseline")
    return said[0] if said else None


def _sensor(platform: str | None, names: list[str]) -> str | None:
    for n in names:
        if m := _LANDSAT_SENSOR.search(n):
            return SENSORS[m.group(1).upper()]
    if platform and platform.startswith("sentinel-2"):
        return "MSI"
    return {"landsat-5": "TM", "landsat-7": "ETM+", "landsat-8": "OLI/TIRS", "landsat-9": "OLI/TIRS",
            "landsat-8-9": "OLI/TIRS"}.get(platform or "")


def _rule(platform, baseline, names, oscd: bool) -> dict:
    """``{"rule", "scale", "offset"}``: how file values become reflectance for this date (scale/offset or None)."""
    if baseline is not None:
        if baseline >= S2_OFFSET_BASELINE:
            return {"rule": f"Sentinel-2 baseline >= 04.00: reflectance = (DN {S2_ADD_OFFSET_DN:+.0f}) / 10000",
                    "scale": DEFAULT_SCALE, "offset": S2_ADD_OFFSET_DN * DEFAULT_SCALE}
        return {"rule": "Sentinel-2 baseline < 04.00: no offset", "scale": DEFAULT_SCALE, "offset": 0.0}
    espa = next((m.group(1).lower() for m in map(_LANDSAT_ESPA.search, names) if m), None)
    if espa:  # before the Level-1 rules, whose product name these files carry
        what = "surface" if espa == "sr" else "top-of-atmosphere"
        return {"rule": f"Landsat Collection 1 Level-2 (USGS ESPA, {what} reflectance): reflectance = DN / 10000",
                "scale": DEFAULT_SCALE, "offset": 0.0}
    if any(HLS_NAME.search(n) for n in names):  # (S30 and L30 alike)
        return {"rule": "HLS v2 surface reflectance: reflectance = DN / 10000, no offset", "scale": DEFAULT_SCALE,
                "offset": 0.0}
    if any(_THEIA_S2.search(n) for n in names):
        return {"rule": "Theia Sentinel-2 Level-2A (MAJA): reflectance = DN / 10000, no offset", "scale": DEFAULT_SCALE,
                "offset": 0.0}
    if any(_LANDSAT_C2_L2.search(n) for n in names):
        return {"rule": "Landsat Collection 2 Level-2: reflectance = DN * 2.75e-5 - 0.2",
                "scale": LANDSAT_C2_L2[0], "offset": LANDSAT_C2_L2[1]}
    if any(_LANDSAT_OLI_L1.search(n) for n in names):
        return {"rule": "Landsat 8-9 OLI Level-1: top-of-atmosphere reflectance = DN * 2e-5 - 0.1 (not corrected for "
                        "the sun's elevation)", "scale": LANDSAT_OLI_L1[0], "offset": LANDSAT_OLI_L1[1]}
    if any(_LANDSAT_TM_L1.search(n) for n in names):
        return {"rule": RADIANCE_RULE, "scale": None, "offset": None}
    if oscd:
        return {"rule": "OSCD L1C (2015-2018, before baseline 04.00): no offset", "scale": DEFAULT_SCALE, "offset": 0.0}
    if any(_S2_OLD.search(n) for n in names):
        return {"rule": "Sentinel-2 product of the format before 2017 (baseline < 04.00): no offset",
                "scale": DEFAULT_SCALE, "offset": 0.0}
    if platform and platform.startswith("sentinel-2"):
        return {"rule": "Sentinel-2 of unknown processing baseline: left as it is", "scale": None, "offset": None}
    return {"rule": "no known offset", "scale": None, "offset": None}


# -- offsets --------------------------------------------------------------------------------------------
def apply_offsets(cube: xr.DataArray, mode: str = "auto") -> tuple[xr.DataArray, dict]:
    """``(cube, record)``: the known scale and offset of each date applied (lazy) where the source used the
    default ``DN / 10000``; ``mode="off"`` only records. ``record = {"mode", "source_scaling", "dates"}``
    with, per date, :func:`describe_dates` and ``status``: ``applied`` | ``none`` | ``unknown`` |
    ``given by the source`` | ``declared by the file`` (its files' GDAL scale and offset, ``file_scaling``,
    were used; cube attrs ``declared_scaling``) | ``off``."""
    if mode not in OFFSET_MODES:
        raise ConfigError(f"radiometry must be one of {OFFSET_MODES}, got {mode!r}")
    dates = describe_dates(cube)
    src_scale, src_offset = cube.attrs.get("scale_factor"), cube.attrs.get("offset")
    default = src_scale is not None and np.isclose(float(src_scale), DEFAULT_SCALE) and float(src_offset or 0.0) == 0.0
    gain = np.ones(len(dates), np.float32)
    add = np.zeros(len(dates), np.float32)
    declared = cube.attrs.get("declared_scaling") or {}  # read as its files declare: no rule over that
    for i, (day, info) in enumerate(dates.items()):
        if day in declared:
            info["status"] = "declared by the file"
            info["file_scaling"] = list(declared[day])
        elif info["scale"] is None:
            info["status"] = "unknown"
        elif info["offset"] == 0.0 and info["scale"] == DEFAULT_SCALE:
            info["status"] = "none"
        elif mode == "off":
            info["status"] = "off"
        elif not default:
            info["status"] = "given by the source"
        else:
            # the source computed x = DN * 1e-4; the product's own scaling is DN * scale + offset
            gain[i] = info["scale"] / DEFAULT_SCALE
            add[i] = info["offset"]
            info["status"] = "applied"
    record = {"mode": mode, "source_scaling": {"scale_factor": src_scale, "offset": src_offset}, "dates": dates}
    if not (np.any(gain != 1) or np.any(add != 0)):
        return cube, record
    out = cube * xr.DataArray(gain, dims="time") + xr.DataArray(add, dims="time")
    out = out.astype(np.float32)
    out.attrs = {**cube.attrs, "radiometric_offsets": "per-date product scaling applied (see state.json radiometry)"}
    out.name = cube.name
    return out.assign_coords(quality=cube["quality"]), record


#: A band of a date whose sampled values are negative this often is not reflectance as read (:func:`implausible_dates`).
#: (Half, until a review: a brighter scene's offset applied twice leaves a third of its blue below 0, and passed.
#: No date of the shared real series, the Bouconne, Landsat and OSCD images, has any band 1 % below -0.01.)
NEGATIVE_FRACTION = 0.2


def implausible_dates(cube: xr.DataArray, window: int = 512, step: int = 4) -> list[str]:
    """Warnings for dates that do not read as reflectance: a band with more than ``NEGATIVE_FRACTION`` of its
    values below -0.01 (an offset applied twice, or values in other units). Only a ``window`` px square at the
    centre of each date is read, every ``step``-th pixel, so the check costs a window's read whatever the
    area. A date shifted this way ran with magnitudes ten times the others' and no word (UAT); Sentinel-2's
    -1000 offset applied twice (-0.1) leaves most of a vegetated scene's blue and red below 0, and a third of a
    brighter scene's blue. Surface reflectance can dip below 0 over dark water; a fifth of a band's scene
    does not."""
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    ys, xs = (slice(max(0, n // 2 - window // 2), n // 2 + window // 2, step) for n in (ny, nx))
    vals = np.asarray(cube.isel(y=ys, x=xs).values, dtype=np.float32)  # (time, band, y, x)
    bands = [str(b) for b in cube["band"].values]
    out = []
    for t, when in enumerate(pd.DatetimeIndex(cube["time"].values)):
        v = vals[t].reshape(len(bands), -1)
        seen = np.isfinite(v).sum(axis=1)
        share = np.where(seen > 0, (v < -0.01).sum(axis=1) / np.maximum(seen, 1), 0.0)
        bad = np.flatnonzero(share > NEGATIVE_FRACTION)
        if len(bad):
            what = ", ".join(f"{bands[b]} {share[b]:.0%}" for b in bad[:4]) + (", ..." if len(bad) > 4 else "")
            out.append(f"warning: date {when:%Y-%m-%d}: a fifth or more of its sampled values are below -0.01 in band(s) {what}, "
                       "which reflectance is not: an offset applied twice, or values in other units? If these bands "
                       "are reflectance, its changes will be wrong; check its file and the --radiometry setting")
    return out


# -- relative normalisation ----------------------------------------------------------------------------
class RelativeNormalisation(BaseEstimator):
    """Per date and band ``x' = gain * x + offset`` matching the reference date's median and IQR.

    Statistics are computed over the pixels usable (clear or water, finite) at both the date and the reference,
    on a regular subsample of at most ``max_pixels`` pixels. A date sharing fewer than ``min_pixels`` such
    pixels with the reference keeps gain 1 and offset 0. Fitted: ``reference_``, ``gain_`` and ``offset_``
    ``(time, band)``, ``shared_`` (pixels used per date).
    """

    def __init__(self, reference="clearest", max_pixels=65536, min_pixels=100):
        self.reference = reference
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels

    def fit(self, cube: xr.DataArray, y=None) -> "RelativeNormalisation":
        cube = validate_cube(cube)
        ny, nx = cube.sizes["y"], cube.sizes["x"]
        step = max(1, int(np.ceil(np.sqrt(ny * nx / max(int(self.max_pixels), 1)))))
        sub = cube.isel(y=slice(None, None, step), x=slice(None, None, step))
        vals, qual = dask.compute(da.asarray(sub.data), da.asarray(sub["quality"].data))
        ok = usable_mask(qual) & np.isfinite(vals).all(axis=1)
        dates = [f"{t:%Y-%m-%d}" for t in pd.DatetimeIndex(cube["time"].values)]
        ref = choose_reference(dates, ok.mean(axis=(1, 2)), self.reference)
        nt, nb = vals.shape[:2]
        gain, offset, shared = np.ones((nt, nb)), np.zeros((nt, nb)), np.zeros(nt, int)
        for t in range(nt):
            both = ok[t] & ok[ref]
            shared[t] = int(both.sum())
            if t == ref or shared[t] < self.min_pixels:
                continue
            q_t = np.percentile(vals[t][:, both], [25, 50, 75], axis=1)
            q_r = np.percentile(vals[ref][:, both], [25, 50, 75], axis=1)
            iqr_t, iqr_r = q_t[2] - q_t[0], q_r[2] - q_r[0]
            g = np.where(iqr_t > 1e-6, iqr_r / np.where(iqr_t > 1e-6, iqr_t, 1.0), 1.0)
            gain[t], offset[t] = g, q_r[1] - g * q_t[1]
        self.reference_ = dates[ref]
        self.dates_ = dates
        self.bands_ = [str(b) for b in cube["band"].values]
        self.gain_, self.offset_, self.shared_ = gain.astype(np.float32), offset.astype(np.float32), shared
        return self

    def transform(self, cube: xr.DataArray) -> xr.DataArray:
        check_is_fitted(self, "gain_")
        cube = validate_cube(cube)
        dates = [f"{t:%Y-%m-%d}" for t in pd.DatetimeIndex(cube["time"].values)]
        bands = [str(b) for b in cube["band"].values]
        # gains belong to dates and bands, not to positions: a cube of other dates (or bands in another order)
        # of the same count took the gains of the fitted ones (up to 0.28 of reflectance off, unsaid)
        missing = [d for d in dates if d not in self.dates_]
        if missing:
            raise InputError(f"the cube's dates {missing[:5]}{' ...' if len(missing) > 5 else ''} are not among the dates "
                             f"the normalisation was fitted on ({self.dates_[0]} .. {self.dates_[-1]}, {len(self.dates_)} dates)")
        if set(bands) - set(self.bands_):
            raise InputError(f"the cube's bands {bands} are not the bands the normalisation was fitted on {self.bands_}")
        t = [self.dates_.index(d) for d in dates]
        b = [self.bands_.index(n) for n in bands]
        gain, offset = self.gain_[np.ix_(t, b)], self.offset_[np.ix_(t, b)]
        out = cube * xr.DataArray(gain, dims=("time", "band")) + xr.DataArray(offset, dims=("time", "band"))
        out = out.astype(np.float32)
        out.attrs = {**cube.attrs, "date_normalisation": f"median and IQR matched to {self.reference_} per band"}
        out.name = cube.name
        return out.assign_coords(quality=cube["quality"])

    def fit_transform(self, cube: xr.DataArray, y=None) -> xr.DataArray:
        return self.fit(cube).transform(cube)

    def record(self) -> dict:
        check_is_fitted(self, "gain_")
        return {"reference": self.reference_, "method": "median and IQR of each band matched to the reference date",
                "dates": {d: {"gain": np.round(self.gain_[i], 5).tolist(), "offset": np.round(self.offset_[i], 6).tolist(),
                              "shared_pixels": int(self.shared_[i])} for i, d in enumerate(self.dates_)}}


def normalise_dates(cube: xr.DataArray, mode: str = "off", reference="clearest") -> tuple[xr.DataArray, dict]:
    """The pipeline's per-date normalisation stage: ``mode`` ``"off"`` or ``"reference"``; ``(cube, record)``."""
    if mode not in NORMALISATION_MODES:
        raise ConfigError(f"date_normalisation must be one of {NORMALISATION_MODES}, got {mode!r}")
    if mode == "off" or cube.sizes["time"] < 2:
        return cube, {"mode": mode, "status": "off" if mode == "off" else "skipped: a single date"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est = RelativeNormalisation(reference=reference).fit(cube)
    return est.transform(cube), {"mode": mode, "status": "done", **est.record()}
