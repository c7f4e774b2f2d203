"""Co-registration: each date's sub-pixel shift against a reference date, corrected on the same grid.

:class:`CoRegistration` (scikit-learn style: ``__init__`` stores parameters, ``fit`` learns ``reference_`` and
``shifts_``, ``transform`` corrects) estimates, for every date, the translation that aligns it with a
reference date:

* the estimation image of a date is the mean of its bands (the 10 m visible and NIR bands when the cube has
  them), each band z-scored over the date's usable pixels (clear or water, finite), in a central window of at
  most ``window`` px; unusable pixels (clouds, nodata) are set to the mean (0) with soft edges and both
  images are tapered at the borders (Tukey window), so that holes and image edges do not pull the estimate;
* the translation comes from :func:`skimage.registration.phase_cross_correlation` with ``upsample_factor``
  (matrix-multiply DFT refinement, Guizar-Sicairos 2008), in two passes: the moving image is moved by the
  first estimate and the rest is estimated on the pixels usable at both dates (:func:`estimate_shift`).
  ``normalization=None`` (plain cross-correlation) is the default: on the two real dates of five OSCD cities
  with planted shifts of up to 1.5 px, its mean error was 0.016 px (max 0.036) against 0.061 px (max 0.16)
  with ``"phase"``, whose peak locks toward whole pixels; ``error`` is skimage's translation-invariant
  normalised RMS error of the second pass (0 = same image up to a gain, about 1 = unrelated);
* where clouds or nodata cover more than 2 % of either window, the masked normalised cross-correlation
  (Padfield 2012, skimage's ``reference_mask``/``moving_mask``; whole pixels only) checks the estimate: a
  sub-pixel shift more than 1 px away from it is rejected (``status == "inconsistent"``);
* the two halves of the window (split across its longer side) are estimated alone: where they disagree by more
  than ``max_spread`` px, the estimate is noise rather than a shift (``status == "unstable"``, ``spread``
  recorded). On the seven OSCD cities the halves agree within 0.02-0.13 px; on the 80 x 80 px Landsat series
  (30 m) they disagreed by 0.36 px at the median date (0.2-16 px), and shifts of about 0.5 px were applied to
  58 of its 105 dates, moving dates that a reviewer found aligned within 0.05 px (4 of the top 15 objects
  changed with co-registration off); 25 are applied now (the run's cloud screen first), and the OSCD shifts all still are.

* where the window's estimate is refused (inconsistent, unreliable, unstable or too large), its tiles of about
  ``tile`` px (64) vote (:func:`_tile_vote`): each tile with enough usable pixels is estimated alone, and the
  median of the largest group of tile shifts within ``max_spread`` px of one of them is the date's shift when that group holds
  at least 3 tiles and more than half of them (``tiles`` recorded: ``agree``, ``of``, and the ``window``'s
  status). A large change pulls the window's estimate: with flat dark water painted over a quarter of one date of
  each of the 7 OSCD cities, shifted by up to 1.5 px (3 shifts a city), the window's estimate was refused for 11
  of 21 dates (at 40 %: 18 of 21), the tiles brought 4 (at 40 %: 6) of them back within 0.03 px, and the
  window's accepted estimates were within 0.03 px; on dates the window estimates well nothing changes (the
  OSCD, Landsat and unpainted Bouconne records are as they were). Two halves that disagree (above) hold no
  majority, and stay unapplied.

A shift is applied when the estimate is trustworthy (enough usable overlap, ``error <= max_error``, stable,
consistent), at least ``tolerance`` px long and at most ``max_shift`` px long; a longer one is not clamped (a
wrong shift is worse than none) but reported with ``status == "too_large"``. ``shifts_`` maps each date
``YYYY-MM-DD`` to ``{dy, dx, error, status, applied}``: ``(dy, dx)`` is the shift in pixels (rows down,
columns right) that moves the date's content onto the reference (``scipy.ndimage.shift`` convention).

Reference date: ``"clearest"`` (the default) is the first date whose usable fraction in the window is within
1 % of the best one, so a series of clear dates keeps its first date as reference (the OSCD labels sit on the
first date's grid), while a cloudy first date gives way; ``"first"`` or a date ``"YYYY-MM-DD"`` choose it.

The correction is lazy (dask ``map_overlap``, one block per date and spatial chunk): bands are resampled with
a cubic spline (``order=3``) over holes filled with their nearest usable values, the quality class with nearest
neighbour; a pixel whose centre falls in a nodata pixel becomes NaN / NODATA, so a hole moves with its date
without growing. Each block reads a halo of 16 px beyond its shift (``SPLINE_HALO``), as far as the spline's
prefilter reaches in float32, so the values do not depend on the chunks. A pixel whose centre falls outside the grid (``round(|d|)`` px at the edge a shift of ``d`` px
moves away from) takes the grid's nearest pixel of the same date (``edge="nearest"``, the default) or becomes
NaN / NODATA (``edge="nodata"``, the rule of GDAL's warper at a raster's edge). Left nodata, the pipeline's
embedding stage filled that row from another date, whose radiometry made a seam along the grid's edge: on a
crop of the Bouconne series shifted by 0.53 px, the strip along the top edge was the top-ranked object. The
cube stays on its grid.

:func:`tolerant_distance` is a change distance that tolerates what is left (about 1 px in several OSCD
cities): per pixel, the least distance to the other date over shifts of up to ``radius`` px, both ways.

Measured on the 7 OSCD cities (``benchmarks/coregistration.py``, cva-z, 16 px patches pooled): co-registration
raised AUROC from 0.790 to 0.798 and AP from 0.343 to 0.349 (higher in the 6 cities it shifted; abudhabi,
1.4 px, 0.772 -> 0.802). The tolerant distance (radius 1) lowered them (AUROC 0.779 without, 0.781 with
co-registration): the least distance over 9 shifts takes evidence from small new buildings (1-3 px) as well
as from misregistered edges; it helped abudhabi alone (0.793), less than co-registration did.
"""

from __future__ import annotations

import math
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage
from scipy.signal.windows import tukey
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .cube import Quality, band_names, usable_mask, validate_cube
from .errors import BandError, ConfigError, InputError
from .quality import role_band_names

MODES = ("auto", "on", "off")
EDGES = ("nearest", "nodata")  # what pixels moved in from outside the grid become
#: Bands averaged into the estimation image when the cube has them (10 m visible and NIR of Sentinel-2, or names).
ESTIMATION_BANDS = (("B02", "B03", "B04", "B08"), ("blue", "green", "red", "nir"))
#: Fraction of clouds or nodata in a window above which the masked cross-correlation checks the estimate.
MASKED_CHECK_ABOVE = 0.02
#: Least number of pixels usable at both dates to estimate a shift.
MIN_PIXELS = 256
#: Images smaller than this (px, either side) are not co-registered by ``mode="auto"``.
MIN_SIZE = 32


class CoRegistration(BaseEstimator):
    """Estimate and correct each date's sub-pixel shift against a reference date (see the module docstring).

    Parameters
    ----------
    reference : "clearest", "first" or a date "YYYY-MM-DD"
        The date every other date is aligned with.
    bands : list of str or None
        Bands averaged into the estimation image; ``None``: the 10 m visible and NIR bands, else all bands.
    upsample_factor : int
        Shifts are estimated to ``1 / upsample_factor`` px.
    normalization : None or "phase"
        Cross-power normalisation of :func:`skimage.registration.phase_cross_correlation`.
    tolerance : float
        Shifts shorter than this (px) are not applied.
    max_shift : float
        Shifts longer than this (px) are reported and not applied.
    max_error : float
        Estimates whose registration error is above this are not applied.
    max_spread : float
        Estimates whose two window halves disagree by more than this (px) are not applied.
    min_overlap : float
        Least fraction of the reference's usable pixels (in the window) also usable at the date to trust an
        estimate (and at least ``MIN_PIXELS`` pixels).
    window : int
        Side (px) of the central window the shifts are estimated in (memory and time stay bounded).
    order : int
        Spline order of the band resampling (1 bilinear, 3 cubic).
    edge : "nearest" or "nodata"
        What the pixels moved in from outside the grid become: copies of the grid's nearest pixel of the same
        date (with its quality), or nodata.
    """

    def __init__(self, reference="clearest", bands=None, upsample_factor=100, normalization=None, tolerance=0.1,
                 max_shift=3.0, max_error=0.95, min_overlap=0.3, window=512, order=3, edge="nearest", max_spread=0.25,
                 tile=64):
        self.reference = reference
        self.bands = bands
        self.upsample_factor = upsample_factor
        self.normalization = normalization
        self.tolerance = tolerance
        self.max_shift = max_shift
        self.max_error = max_error
        self.min_overlap = min_overlap
        self.max_spread = max_spread
        self.tile = tile
        self.window = window
        self.order = order
        self.edge = edge

    # -- estimation -------------------------------------------------------------------------------------
    def fit(self, cube: xr.DataArray, y=None) -> "CoRegistration":
        """Estimate every date's shift against the reference date: sets ``reference_``, ``shifts_``."""
        self._check_params()
        cube = validate_cube(cube)
        dates = _date_keys(cube)
        band_index = self._band_index(band_names(cube), role_band_names(cube))
        ys, xs = _central_window(cube.sizes["y"], cube.sizes["x"], int(self.window))
        sub = cube.isel(band=band_index, y=ys, x=xs)
        # the quality of every date first, in one computation (a bool a pixel): a cloud screen needs all the
        # dates of a pixel at once, and computed with each batch of dates it was redone (and every file
        # re-read) once a batch: 4-5 reads of each date, 75 s of a 584-date run's 330 s
        quality_ok = usable_mask(da.asarray(sub["quality"].data)).compute()
        # then the bands, batch by batch: the estimation images of every date (float32, window**2 * 5 bytes a date)
        parts = [_estimation_images(sub, quality_ok, batch)
                 for batch in _batches(len(dates), sub.sizes["band"] * sub.sizes["y"] * sub.sizes["x"] * 4)]
        images = np.concatenate([p[0] for p in parts])
        oks = np.concatenate([p[1] for p in parts])
        ref = choose_reference(dates, oks.mean(axis=(1, 2)), self.reference)
        taper = _taper(images.shape[1:])
        shifts = {}
        for t, (img, ok) in enumerate(zip(images, oks)):
            if t == ref:
                shifts[dates[t]] = {"dy": 0.0, "dx": 0.0, "error": 0.0, "status": "reference", "applied": False}
            else:
                shifts[dates[t]] = self._estimate(images[ref], oks[ref], img, ok, taper)
        self.reference_ = dates[ref]
        self.shifts_ = shifts
        self.window_ = {"y": [ys.start, ys.stop], "x": [xs.start, xs.stop]}
        return self

    def _estimate(self, ref, ref_ok, img, ok, taper) -> dict:
        both = ref_ok & ok
        overlap = float(both.sum() / max(ref_ok.sum(), 1))  # of the reference's usable pixels
        if overlap < self.min_overlap or both.sum() < MIN_PIXELS:
            return {"dy": None, "dx": None, "error": None, "status": "insufficient_overlap", "applied": False,
                    "overlap": round(overlap, 3)}
        dy, dx, error = estimate_shift(ref, img, ref_ok, ok, upsample_factor=self.upsample_factor,
                                       normalization=self.normalization, taper=taper)
        status = "ok"
        if min(ref_ok.mean(), ok.mean()) < 1 - MASKED_CHECK_ABOVE:
            coarse = _masked_shift(ref, img, ref_ok, ok)
            if coarse is not None and max(abs(coarse[0] - dy), abs(coarse[1] - dx)) > 1.0:
                status = "inconsistent"
        if status == "ok" and not error <= self.max_error:
            status = "unreliable"
        if status == "ok":
            status = self._by_length(dy, dx)
        spread = _split_half_spread(ref, ref_ok, img, ok, self.upsample_factor, self.normalization) if status == "ok" else None
        if spread is not None and spread > self.max_spread:
            status = "unstable"
        tiles = None
        if status in TILE_FALLBACK and self.tile is not None:  # a large change may have pulled the window's estimate
            vote = _tile_vote(ref, ref_ok, img, ok, int(self.tile), self.upsample_factor, self.normalization, self.max_error,
                              self.max_spread)
            if vote is not None:
                dy, dx, error, agree, n = vote
                tiles = {"agree": agree, "of": n, "window": status}
                status, spread = self._by_length(dy, dx), None
        return {"dy": round(dy, 3), "dx": round(dx, 3), "error": round(error, 4), "status": status,
                "applied": status == "ok", "overlap": round(overlap, 3),
                **({"spread": round(spread, 3)} if spread is not None else {}),
                **({"tiles": tiles} if tiles is not None else {})}

    def _by_length(self, dy: float, dx: float) -> str:
        """``too_large`` over ``max_shift``, ``below_tolerance`` under ``tolerance``, else ``ok``."""
        length = math.hypot(dy, dx)
        return "too_large" if length > self.max_shift else "below_tolerance" if length < self.tolerance else "ok"

    def _check_params(self):
        if not (isinstance(self.upsample_factor, (int, np.integer)) and self.upsample_factor >= 1):
            raise ConfigError(f"upsample_factor must be an integer of at least 1, got {self.upsample_factor!r}")
        if self.normalization not in (None, "phase"):
            raise ConfigError(f"normalization must be None or 'phase', got {self.normalization!r}")
        if self.tile is not None and not (isinstance(self.tile, (int, np.integer)) and self.tile >= 16):
            raise ConfigError(f"tile must be None or an integer of at least 16 px, got {self.tile!r}")
        for name in ("tolerance", "max_shift", "max_error", "min_overlap", "max_spread"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {v!r}")
        if not self.max_shift > 0:
            raise ConfigError(f"max_shift must be positive (px), got {self.max_shift!r}")
        if not (isinstance(self.window, (int, np.integer)) and self.window >= 8):
            raise ConfigError(f"window must be an integer of at least 8 px, got {self.window!r}")
        if self.order not in (0, 1, 2, 3, 4, 5):
            raise ConfigError(f"order must be a spline order 0..5, got {self.order!r}")
        if self.edge not in EDGES:
            raise ConfigError(f"edge must be one of {EDGES}, got {self.edge!r}")

    def _band_index(self, bands: list[str], roles: list[str] | None = None) -> list[int]:
        """Indices of the estimation bands: ``self.bands`` by the cube's names, else :data:`ESTIMATION_BANDS`
        by ``roles`` (the names as band roles are looked up: a Sentinel-2 ``B2`` is ``B02``), else every band."""
        roles = roles or bands
        if self.bands is not None:
            wanted = [str(b) for b in self.bands]
            missing = [b for b in wanted if b not in bands]
            if missing or not wanted:
                raise BandError(f"co-registration bands {missing or wanted} are not in the cube; its bands are {bands}")
            return [bands.index(b) for b in wanted]
        for names in ESTIMATION_BANDS:
            if all(n in roles for n in names):
                return [roles.index(n) for n in names]
        return list(range(len(bands)))

    # -- correction -------------------------------------------------------------------------------------
    def transform(self, cube: xr.DataArray) -> xr.DataArray:
        """``cube`` with the applied shifts corrected (lazy, same grid); the dates must be those of ``fit``."""
        check_is_fitted(self, "shifts_")
        cube = validate_cube(cube)
        dates = _date_keys(cube)
        if dates != list(self.shifts_):
            raise InputError(f"the cube's dates {dates} are not the dates the shifts were fitted on {list(self.shifts_)}")
        shifts = np.array([[s["dy"], s["dx"]] if s["applied"] else [0.0, 0.0] for s in self.shifts_.values()], float)
        out = shift_cube(cube, shifts, order=self.order, edge=self.edge)
        if out is not cube:
            out.attrs["coregistration"] = (f"shifts against {self.reference_} by cross-correlation "
                                           f"(1/{self.upsample_factor} px), spline order {self.order}, "
                                           f"pixels moved in from outside the grid: {self.edge}")
        return out

    def fit_transform(self, cube: xr.DataArray, y=None) -> xr.DataArray:
        return self.fit(cube).transform(cube)

    def record(self) -> dict:
        """What was estimated and applied, JSON-ready (``state.json``)."""
        check_is_fitted(self, "shifts_")
        return {"reference": self.reference_, "window": self.window_, "method": _method(self), "edge": self.edge,
                "tolerance": self.tolerance, "max_shift": self.max_shift, "shifts": self.shifts_,
                "applied": [d for d, s in self.shifts_.items() if s["applied"]],
                "too_large": [d for d, s in self.shifts_.items() if s["status"] == "too_large"]}


#: Why a date's shift was not estimated or not applied, as a run's note says it (statuses of :meth:`CoRegistration._estimate`).
UNCORRECTED = {"insufficient_overlap": "too little clear overlap with the reference to estimate",
               "unstable": "the two halves of the window disagree (noise, not a shift)",
               "inconsistent": "the estimate disagrees with the masked check", "unreliable": "the images match too poorly"}


def coregister_notes(record: dict) -> list[str]:
    """What a run says of its co-registration stage beyond ``state.json``: a shift found but longer than
    ``max_shift`` px (not applied: those dates' changes may be misregistration; the run said nothing, and its top
    objects were such a date's, a review), and how many dates could not be checked, and why."""
    shifts = record.get("shifts") or {}
    notes = []
    large = {d: s for d, s in shifts.items() if s.get("status") == "too_large"}
    if large:
        found = ", ".join(f"{d} ({math.hypot(s['dy'], s['dx']):.1f} px)" for d, s in list(large.items())[:4])
        notes.append(f"warning: co-registration found shift(s) longer than {record.get('max_shift', '?')} px against "
                     f"{record.get('reference')} and did not apply them (a wrong shift is worse than none): {found}"
                     f"{', ...' if len(large) > 4 else ''}; the changes of these dates may be misregistration: check "
                     "their files' georeference (state.json: coregister)")
    why = {}
    for s in shifts.values():
        if s.get("status") in UNCORRECTED:
            why[s["status"]] = why.get(s["status"], 0) + 1
    if why:
        told = "; ".join(f"{n} {UNCORRECTED[k]}" for k, n in why.items())
        notes.append(f"note: co-registration left {sum(why.values())} of {len(shifts)} dates as they are (no shift measured, or none trusted): {told} "
                     "(state.json: coregister)")
    return notes


def choose_reference(dates: list[str], fractions, reference="clearest") -> int:
    """Index of the reference date: ``"clearest"`` (the first date whose usable fraction is within 1 % of the
    best), ``"first"`` or a date ``YYYY-MM-DD`` among ``dates``."""
    fractions = np.asarray(fractions, dtype=float)
    if reference == "first":
        return 0
    if reference == "clearest":
        return int(np.flatnonzero(fractions >= np.nanmax(fractions) - 0.01)[0])
    try:
        key = f"{pd.Timestamp(reference):%Y-%m-%d}"
    except (ValueError, TypeError):
        key = None
    if key not in dates:
        raise ConfigError(f"reference must be 'clearest', 'first' or one of the dates {dates}, got {reference!r}")
    return dates.index(key)


def _method(est: CoRegistration) -> str:
    kind = "phase correlation" if est.normalization == "phase" else "cross-correlation"
    return f"{kind}, skimage phase_cross_correlation, upsample_factor {est.upsample_factor}"


def coregister(cube: xr.DataArray, mode: str = "auto", **params) -> tuple[xr.DataArray, dict]:
    """The pipeline's co-registration stage: ``(corrected cube, record)``.

    ``mode``: ``"on"`` estimates and corrects; ``"off"`` returns the cube as it is; ``"auto"`` does as ``"on"``
    except for synthetic series (aligned by construction), single dates and images under ``MIN_SIZE`` px.
    ``params`` go to :class:`CoRegistration`.
    """
    if mode not in MODES:
        raise ConfigError(f"coregister must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return cube, {"mode": mode, "status": "off"}
    skip = None
    if cube.sizes["time"] < 2:
        skip = "a single date"
    elif mode == "auto" and cube.attrs.get("level") == "synthetic":
        skip = "synthetic series (aligned by construction)"
    elif mode == "auto" and cube.attrs.get("embedding_bands"):
        skip = "the bands are embeddings made elsewhere (aligned by their producer)"
    elif mode == "auto" and min(cube.sizes["y"], cube.sizes["x"]) < MIN_SIZE:
        skip = f"image smaller than {MIN_SIZE} px"
    if skip:
        return cube, {"mode": mode, "status": f"skipped: {skip}"}
    est = CoRegistration(**params).fit(cube)
    return est.transform(cube), {"mode": mode, "status": "done", **est.record()}


# -- estimation helpers ----------------------------------------------------------------------------------
def estimate_shift(reference, moving, reference_ok=None, moving_ok=None, upsample_factor=100, normalization=None,
                   taper=None) -> tuple[float, float, float]:
    """``(dy, dx, error)``: the shift that moves ``moving`` onto ``reference`` (2-D images, NaN allowed).

    Pixels outside ``*_ok`` (or not finite) are set to the image's mean and faded in over a few pixels
    (``APODISE`` sigma), both images are tapered at the borders (``taper``, default a Tukey window) and
    :func:`skimage.registration.phase_cross_correlation` gives a first estimate; the moving image is then
    moved by it and the rest estimated with the pixels usable in both (on planted shifts with 20-40 % of
    clouds and nodata, the mean error fell from 0.07 to 0.015 px).
    """
    ref, mov = np.asarray(reference, np.float64), np.asarray(moving, np.float64)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise InputError(f"the two images must be 2-D and of one shape, got {ref.shape} and {mov.shape}")
    ref_ok = np.isfinite(ref) if reference_ok is None else (np.asarray(reference_ok, bool) & np.isfinite(ref))
    mov_ok = np.isfinite(mov) if moving_ok is None else (np.asarray(moving_ok, bool) & np.isfinite(mov))
    w = _taper(ref.shape) if taper is None else taper
    first, error = _correlate(_prepared(ref, ref_ok, w), _prepared(mov, mov_ok, w), upsample_factor, normalization)
    # second pass: the moving image moved by the first estimate, both seen through the same mask
    filled = np.where(mov_ok, mov - (mov[mov_ok].mean() if mov_ok.any() else 0.0), 0.0)
    moved = ndimage.shift(filled, first, order=3, mode="nearest")
    moved_ok = ndimage.shift(mov_ok.astype(np.float64), first, order=1, mode="constant", cval=0.0) > 0.999
    both = ref_ok & moved_ok
    if both.sum() < MIN_PIXELS:
        return float(first[0]) + 0.0, float(first[1]) + 0.0, error
    rest, error = _correlate(_prepared(ref, both, w), _prepared(moved, both, w), upsample_factor, normalization)
    shift = first + rest
    return float(shift[0]) + 0.0, float(shift[1]) + 0.0, error


#: Width (sigma, px) over which image content fades into masked holes, so that hole edges are not features.
APODISE = 4.0


def _split_half_spread(ref, ref_ok, img, ok, upsample_factor, normalization) -> float | None:
    """How far apart (px, the larger of the row and column differences) the shifts estimated on the two halves
    of the window lie, split across its longer side; None when a half has too few pixels usable at both dates."""
    axis = int(ref.shape[1] > ref.shape[0])
    half = ref.shape[axis] // 2
    found = []
    for part in (slice(0, half), slice(half, None)):
        sl = (slice(None), part) if axis else (part, slice(None))
        if (ref_ok[sl] & ok[sl]).sum() < MIN_PIXELS:
            return None
        dy, dx, _ = estimate_shift(ref[sl], img[sl], ref_ok[sl], ok[sl], upsample_factor=upsample_factor,
                                   normalization=normalization)
        found.append((dy, dx))
    return float(np.abs(np.subtract(*found)).max())


#: Statuses of a window's estimate after which the tiles vote (:func:`_tile_vote`).
TILE_FALLBACK = ("inconsistent", "unreliable", "unstable", "too_large")


def _tile_vote(ref, ref_ok, img, ok, tile, upsample_factor, normalization, max_error, agree):
    """``(dy, dx, error, agree, n)``: the shift most tiles of the window agree on, or ``None``.

    The window is cut into tiles of about ``tile`` px a side; each tile with :data:`MIN_PIXELS` usable at both
    dates and an estimate whose error is at most ``max_error`` (not a flat flooded field) has a shift. The shift
    is the median of the largest group of shifts within ``agree`` px of one of them (the estimator's
    ``max_spread``: what two halves of the window may differ by; ``error`` their median error), kept when that
    group is at least 3 tiles and more than half of the ``n`` tiles estimated: a flood or a clear-cut moves its
    tiles' estimates each its own way, the rest of the scene agrees. (Agreeing within 0.5 px, tiles outvoted the
    split-half check: halves 0.4 px apart got a shift that fits neither; a review.)"""
    ny, nx = ref.shape[0] // tile, ref.shape[1] // tile
    if ny * nx < 3:
        return None
    found, n = [], 0
    for i in range(ny):
        for j in range(nx):
            sl = (slice(i * ref.shape[0] // ny, (i + 1) * ref.shape[0] // ny),
                  slice(j * ref.shape[1] // nx, (j + 1) * ref.shape[1] // nx))
            if (ref_ok[sl] & ok[sl]).sum() < MIN_PIXELS:
                continue
            n += 1
            dy, dx, error = estimate_shift(ref[sl], img[sl], ref_ok[sl], ok[sl], upsample_factor=upsample_factor,
                                           normalization=normalization)
            if error <= max_error:
                found.append((dy, dx, error))
    if len(found) < 3:
        return None
    found = np.asarray(found)
    near = np.abs(found[:, None, :2] - found[None, :, :2]).max(axis=-1) <= agree
    group = found[near[near.sum(axis=1).argmax()]]
    if len(group) < 3 or len(group) <= n / 2:
        return None
    dy, dx, error = np.median(group, axis=0)
    return float(dy) + 0.0, float(dx) + 0.0, float(error), len(group), n


def _prepared(img: np.ndarray, ok: np.ndarray, taper: np.ndarray) -> np.ndarray:
    """Mean removed, holes at 0 with soft edges, borders tapered."""
    if not ok.any():
        return np.zeros_like(img)
    centred = np.where(ok, img - img[ok].mean(), 0.0)
    return centred * (ndimage.gaussian_filter(ok.astype(np.float64), APODISE) * ok) * taper


def _correlate(a: np.ndarray, b: np.ndarray, upsample_factor: int, normalization) -> tuple[np.ndarray, float]:
    from skimage.registration import phase_cross_correlation

    with warnings.catch_warnings():  # a flat window (a constant date) has no RMS error: its shift is refused later
        warnings.filterwarnings("ignore", message="Could not determine RMS error", category=UserWarning)
        shift, error, _ = phase_cross_correlation(a, b, upsample_factor=upsample_factor, normalization=normalization)
        if normalization == "phase":  # the phase-normalised error is always about 1: report the plain one
            error = phase_cross_correlation(a, b, upsample_factor=1, normalization=None)[1]
    return np.asarray(shift, np.float64), float(error)


def _masked_shift(ref, img, ref_ok, ok) -> tuple[float, float] | None:
    """Whole-pixel shift by masked normalised cross-correlation, or ``None`` when it cannot be computed."""
    from skimage.registration import phase_cross_correlation

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            s = phase_cross_correlation(np.nan_to_num(ref), np.nan_to_num(img), reference_mask=ref_ok,
                                        moving_mask=ok, overlap_ratio=0.3)[0]
    except ValueError:
        return None
    return (float(s[0]), float(s[1])) if np.all(np.isfinite(s)) else None


def _taper(shape, alpha: float = 0.25) -> np.ndarray:
    return np.outer(tukey(shape[0], alpha), tukey(shape[1], alpha))


def _estimation_images(sub: xr.DataArray, quality_ok: np.ndarray, index: list[int]):
    """``(images, usable)`` of the dates ``index``: band mean of per-date z-scored bands, NaN where unusable
    (``quality_ok`` false, or a band NaN)."""
    vals = da.asarray(sub.data)[index].compute()
    ok = quality_ok[index] & np.isfinite(vals).all(axis=1)
    vals = np.where(ok[:, None], vals, np.nan).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(vals, axis=(2, 3), keepdims=True)
        std = np.nanstd(vals, axis=(2, 3), keepdims=True)
        z = (vals - mean) / np.where(std > 0, std, 1.0)
        img = np.nanmean(z, axis=1)
    return img.astype(np.float32), ok & np.isfinite(img)


def _batches(n: int, bytes_per_date: int, budget: int = 256 << 20) -> list[list[int]]:
    size = max(1, budget // max(bytes_per_date, 1))
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _central_window(ny: int, nx: int, window: int) -> tuple[slice, slice]:
    h, w = min(ny, window), min(nx, window)
    y0, x0 = (ny - h) // 2, (nx - w) // 2
    return slice(y0, y0 + h), slice(x0, x0 + w)


def _date_keys(cube: xr.DataArray) -> list[str]:
    return [f"{t:%Y-%m-%d}" for t in pd.DatetimeIndex(cube["time"].values)]


# -- correction helpers ----------------------------------------------------------------------------------
def shift_cube(cube: xr.DataArray, shifts, order: int = 3, edge: str = "nearest") -> xr.DataArray:
    """``cube`` with date ``t`` moved by ``shifts[t] = (dy, dx)`` px (lazy, same grid and coordinates).

    Bands are resampled with a spline of ``order`` (nodata pixels take their nearest usable values first, so
    the spline sees no step there), the quality class with nearest neighbour; a pixel whose centre comes from
    a nodata pixel becomes NaN and NODATA. One whose centre comes from outside the grid (``round(|d|)`` px at
    the edge a shift of ``d`` px moves away from, none at the others) copies the grid's nearest pixel of its
    date, values and quality (``edge="nearest"``), or becomes NaN and NODATA (``edge="nodata"``). Returns
    ``cube`` itself when every shift is zero.
    """
    if edge not in EDGES:
        raise ConfigError(f"edge must be one of {EDGES}, got {edge!r}")
    shifts = np.asarray(shifts, dtype=float).reshape(-1, 2)
    if len(shifts) != cube.sizes["time"]:
        raise InputError(f"one (dy, dx) shift per date is needed: the cube has {cube.sizes['time']} dates, "
                         f"{len(shifts)} shifts were given")
    if not np.isfinite(shifts).all():
        raise InputError("shifts must be finite numbers of pixels")
    if not np.any(shifts):
        return cube
    moving = np.flatnonzero(np.any(shifts != 0, axis=1))
    # only the dates that move are resampled (with their halo); the others keep their own graph: one date
    # moved by 0.1 px took a 584-date series from 7 000 to 118 000 tasks and doubled its outputs stage
    moved, q = _shifted_dates(cube.isel(time=moving), shifts[moving], order, edge)
    if len(moving) < len(shifts):  # every date in order, from the moved ones or as it was
        at = {int(t): i for i, t in enumerate(moving)}

        def join(still: da.Array, shifted: da.Array) -> da.Array:
            return da.concatenate([shifted[at[t]:at[t] + 1] if t in at else still[t:t + 1] for t in range(len(shifts))])

        moved, q = join(da.asarray(cube.data), moved), join(da.asarray(cube["quality"].data), q)
    nodata = da.isnan(moved).any(axis=1)
    q = da.where(nodata, np.uint8(Quality.NODATA), q).astype(np.uint8)
    moved = da.where((q == Quality.NODATA)[:, None], np.float32(np.nan), moved)
    out = cube.copy(data=moved)
    return out.assign_coords(quality=(("time", "y", "x"), q))


#: Pixels a moved block reads beyond its shift for a spline of order > 1 (:func:`_shifted_dates`).
SPLINE_HALO = 16


def _shifted_dates(cube: xr.DataArray, shifts: np.ndarray, order: int, edge: str) -> tuple[da.Array, da.Array]:
    """Bands and quality of every date of ``cube`` moved by its shift (one chunk a date, with a halo)."""
    # a spline of order > 1 is prefiltered over the whole block: a pixel's weight falls by 0.27 a pixel (cubic),
    # so a halo of 16 px leaves the values the same, to float32 rounding, whatever the chunks (4 px left 5e-4)
    depth = int(math.ceil(np.abs(shifts).max())) + (SPLINE_HALO if order > 1 else 1)
    data = da.asarray(cube.data)
    data = data.rechunk({0: 1, 1: -1})
    ny, nx = data.shape[2:]
    depth_y, depth_x = min(depth, ny), min(depth, nx)
    # outside the grid: the edge pixels repeated (dask's "nearest" boundary), or nodata
    outside = ("nearest", "nearest") if edge == "nearest" else (np.nan, int(Quality.NODATA))
    moved = da.map_overlap(_shift_bands, data, depth={0: 0, 1: 0, 2: depth_y, 3: depth_x},
                           boundary={2: outside[0], 3: outside[0]}, dtype=np.float32, shifts=shifts, order=order)
    quality = da.asarray(cube["quality"].data).rechunk(data.chunks[:1] + data.chunks[2:])
    q = da.map_overlap(_shift_quality, quality, depth={0: 0, 1: depth_y, 2: depth_x},
                       boundary={1: outside[1], 2: outside[1]}, dtype=np.uint8, shifts=shifts)
    return moved, q


def _shift_bands(block: np.ndarray, shifts: np.ndarray, order: int, block_info=None) -> np.ndarray:
    t0 = block_info[0]["array-location"][0][0]
    out = np.empty(block.shape, np.float32)
    for i, dates in enumerate(block):
        dy, dx = shifts[t0 + i]
        if dy == 0 and dx == 0:
            out[i] = dates
            continue
        ok = np.isfinite(dates).all(axis=0)
        if not ok.any():
            out[i] = np.nan
            continue
        # a resampled pixel is usable where the pixel its centre falls in is (nearest neighbour, the rule of the
        # quality class and of GDAL's warper at a raster's edge): a shift of d px loses round(|d|) px at the edge
        # it moves away from, none at the others, and a hole moves with its date without growing
        kept = ndimage.shift(ok.astype(np.uint8), (dy, dx), order=0, mode="constant", cval=0).astype(bool)
        # holes (and the outside of the grid) take their nearest usable pixel's values, so the spline sees no
        # step there: a kept pixel next to a hole is interpolated from usable values only (nodata never enters)
        filled = _fill_holes(dates, ok)
        for b, band in enumerate(filled):
            moved = ndimage.shift(band, (dy, dx), order=order, mode="nearest")
            out[i, b] = np.where(kept, moved, np.nan)
    return out


def _fill_holes(bands: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``(band, H, W)`` with the pixels outside ``ok`` set to the values of their nearest pixel in ``ok``."""
    if ok.all():
        return bands
    iy, ix = ndimage.distance_transform_edt(~ok, return_distances=False, return_indices=True)
    return bands[:, iy, ix]


def _shift_quality(block: np.ndarray, shifts: np.ndarray, block_info=None) -> np.ndarray:
    t0 = block_info[0]["array-location"][0][0]
    out = np.empty_like(block)
    for i, q in enumerate(block):
        dy, dx = shifts[t0 + i]
        out[i] = q if dy == 0 and dx == 0 else ndimage.shift(q, (dy, dx), order=0, mode="constant",
                                                              cval=int(Quality.NODATA))
    return out


# -- a distance that tolerates residual misregistration ---------------------------------------------------
def tolerant_distance(a, b, radius: int = 1) -> np.ndarray:
    """Per-pixel change distance that tolerates ``radius`` px of misregistration: ``(H, W)`` float32.

    ``a`` and ``b`` are ``(band, H, W)`` (or ``(H, W)``) arrays on a comparable scale (e.g. z-scored per
    date). For each pixel ``p``, ``d_ab(p) = min_s ||b(p) - a(p + s)||`` and ``d_ba(p) = min_s ||a(p) - b(p + s)||``
    over integer shifts ``s`` with ``|s_y|, |s_x| <= radius``; the distance is ``max(d_ab, d_ba)``, so a pixel
    counts as changed only when neither date finds its match nearby (a change that appears or disappears
    keeps its evidence, an edge moved by a pixel loses it). NaN where ``a`` or ``b`` has a NaN band.
    ``radius=0`` is the plain Euclidean distance.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if b.ndim == 2:
        b = b[None]
    if a.ndim != 3 or a.shape != b.shape:
        raise InputError(f"the two dates must be arrays of one shape (band, H, W); got {np.shape(a)} and {np.shape(b)}")
    if not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ConfigError(f"radius must be a whole number of pixels >= 0, got {radius!r}")
    valid = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    out = np.maximum(_least_distance(a, b, radius), _least_distance(b, a, radius))
    out[~valid] = np.nan
    return out


def _least_distance(a: np.ndarray, b: np.ndarray, r: int) -> np.ndarray:
    """``min_s ||b(p) - a(p + s)||`` over shifts within ``r`` px (NaN and outside pixels of ``a`` skipped)."""
    _, h, w = a.shape
    padded = np.pad(a, ((0, 0), (r, r), (r, r)), constant_values=np.nan)
    best = np.full((h, w), np.inf, np.float32)
    for sy in range(2 * r + 1):
        for sx in range(2 * r + 1):
            d = np.sqrt(((b - padded[:, sy:sy + h, sx:sx + w]) ** 2).sum(axis=0))
            best = np.fmin(best, d)
    best[~np.isfinite(best)] = np.nan
    return best
