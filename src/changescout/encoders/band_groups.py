"""Sentinel-2 channel groups of the pretrained encoders (Galileo-nano, Presto), and what a cube that lacks
some of their ten bands gets: those encoders tokenise the bands by group (blue-green-red, red edge, 10 m and
20 m near infrared, short-wave infrared, NDVI) and mask a group a sample does not have, as they mask the
other inputs (Sentinel-1, weather...) here. :class:`BandSubset` gives such an encoder a ``bands`` option (a
subset of :data:`BANDS`), the groups it masks, and :meth:`BandSubset.for_bands`, which reads the bands a cube
has: HLS S30 and L30 read together keep B02 B03 B04 B8A B11 B12; a 4-band image has blue, green, red, nir.
A Landsat series (:func:`~changescout.quality.band_family` "tm" or "oli") is read by its bands' Sentinel-2
equivalents (:data:`LANDSAT_AS_S2`): blue, green, red, near infrared, and the two short-wave infrared bands,
as HLS harmonises Landsat 8-9 with Sentinel-2 (OLI's narrow near infrared is B8A; TM's and ETM+'s broad one,
B08). Embeddings of fewer bands are another space than those of all ten: the encoder's ``space_options`` say so.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace

import numpy as np

from ..errors import BandError, ConfigError

_NUMBER = re.compile(r"B\d{1,2}A?", re.IGNORECASE)  # a band number, with or without its leading zero
#: The ten Sentinel-2 bands of both models, in their channel order.
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: The bands each channel group reads (NDVI is computed from B08 and B04): a group a cube lacks a band of is masked.
GROUP_BANDS = {"S2_RGB": ("B02", "B03", "B04"), "S2_Red_Edge": ("B05", "B06", "B07"), "S2_NIR_10m": ("B08",),
               "S2_NIR_20m": ("B8A",), "S2_SWIR": ("B11", "B12"), "NDVI": ("B04", "B08")}


#: The Sentinel-2 band each Landsat band role reads as (:mod:`changescout.quality`'s roles, found by the cube's
#: family's numbers): OLI's near infrared (B5, 851-879 nm) is narrow like B8A, TM's (B4, 760-900 nm) broad like B08.
LANDSAT_AS_S2 = {"oli": {"B02": "blue", "B03": "green", "B04": "red", "B8A": "nir", "B11": "swir1", "B12": "swir2"},
                 "tm": {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir1", "B12": "swir2"}}


def band_subset(name: str, bands, aliases: dict) -> tuple[str, ...] | None:
    """``bands`` as a subset of :data:`BANDS` in its order (``None``: all ten), checked: known names (or
    ``aliases``), and one channel group at least whole."""
    if bands is None:
        return None
    if isinstance(bands, str) or not all(isinstance(b, str) for b in bands):
        raise ConfigError(f"{name} bands must be a list of band names from {list(BANDS)}, got {bands!r}")
    lookup = {b.upper(): b for b in BANDS} | {a.upper(): b for a, b in aliases.items()}
    unknown = [b for b in bands if b.upper() not in lookup]
    if unknown:
        raise ConfigError(f"{name} has no bands {unknown}: its bands are {list(BANDS)} (or {sorted(aliases)})")
    chosen = {lookup[b.upper()] for b in bands}
    subset = tuple(b for b in BANDS if b in chosen)
    if len(masked_groups(subset)) == len(GROUP_BANDS):
        raise ConfigError(f"{name} bands {list(subset)} make no whole channel group: it needs one of "
                          + "; ".join(f"{g}: {' '.join(b)}" for g, b in GROUP_BANDS.items()))
    subset = in_whole_groups(subset)
    return None if subset == BANDS else subset


def in_whole_groups(bands: tuple[str, ...]) -> tuple[str, ...]:
    """The bands of ``bands`` that a whole group reads: a band whose every group is masked adds nothing (B11
    without B12), and recorded as read, it made a run of the same embeddings another configuration (a review)."""
    whole = [need for g, need in GROUP_BANDS.items() if g not in masked_groups(bands)]
    return tuple(b for b in bands if any(b in need for need in whole))


def masked_groups(bands: tuple[str, ...]) -> tuple[str, ...]:
    """The channel groups that read a band not in ``bands``."""
    return tuple(g for g, need in GROUP_BANDS.items() if not set(need) <= set(bands))


class BandSubset:
    """What an encoder of :data:`BANDS` that masks the groups it lacks shares; it sets ``self.bands`` (``None``
    or a subset, from :func:`band_subset`) and has a ``spec`` whose ``bands`` are :attr:`used_bands`."""

    bands: tuple[str, ...] | None = None
    #: The cube's names of :attr:`used_bands` where they are a Landsat series' (:meth:`for_bands`), and its family.
    source_bands: tuple[str, ...] | None = None
    source_family: str | None = None

    @property
    def used_bands(self) -> tuple[str, ...]:
        """The bands this encoder reads, in :data:`BANDS` order (all ten unless ``bands`` says fewer)."""
        return BANDS if self.bands is None else self.bands

    @property
    def masked_groups(self) -> tuple[str, ...]:
        """The channel groups masked for want of their bands (:data:`GROUP_BANDS`)."""
        return masked_groups(self.used_bands)

    @property
    def band_positions(self) -> list[int]:
        """Where :attr:`used_bands` sit among the ten :data:`BANDS`."""
        return [BANDS.index(b) for b in self.used_bands]

    @property
    def lacking_bands(self) -> tuple[str, ...]:
        """The bands of :data:`BANDS` this encoder does not read (their groups masked)."""
        return tuple(b for b in BANDS if b not in self.used_bands)

    def as_ten_bands(self, x):
        """``(B, used bands, H, W)`` -> ``(B, 10, H, W)`` in :data:`BANDS` order, the bands it lacks 0 (their
        groups are masked, so the value is never read)."""
        if self.bands is None:
            return x
        full = np.zeros((x.shape[0], len(BANDS), *x.shape[2:]), x.dtype)
        full[:, self.band_positions] = x
        return full

    def for_bands(self, cube):
        """This encoder for ``cube``: itself when the cube has its bands (all ten, or those ``bands`` gives); for a
        Landsat series a copy reading their equivalents (:meth:`_for_landsat`, ``bands`` given or not); itself
        when ``bands`` was given otherwise (the embedding stage then names what is missing); else a copy (sharing
        the model) reading the bands the cube names
        unmistakably and masking the channel groups it lacks, when one group at least is whole; else itself (the
        run then says which bands are missing). Bands are found as
        :func:`~changescout.encoders.base.select_bands` finds them, but only under Sentinel-2's own names (B02,
        B8A) or common names (blue, nir08): a bare number (B2, b11) means other bands on other sensors (Landsat
        5's B2 is green, a 13-band L1C stack without descriptions reads b11 as B10), and the ten bands' absence
        no longer tells such a cube from Sentinel-2's (a review)."""
        from ..quality import band_family
        from .base import select_bands

        spec = self.spec
        try:
            select_bands(cube, spec)
            return self
        except BandError:
            pass
        names = [str(b) for b in cube["band"].values]
        if (family := band_family(cube)) in LANDSAT_AS_S2:  # (bands given: read as their Landsat equivalents)
            return self._for_landsat(cube, family, names, only=self.bands)
        if self.bands is not None:
            return self
        if names == [f"b{i + 1}" for i in range(len(names))]:  # a source's placeholders for bands it found no name for
            return self
        common = {a.upper() for a in spec.band_aliases if not _NUMBER.fullmatch(a)}
        have = []
        for band in BANDS:
            try:
                (i,) = select_bands(cube, replace(spec, bands=(band,)))
            except BandError:
                continue
            if names[i].upper() == band or names[i].upper() in common:
                have.append(band)
        if len(masked_groups(tuple(have))) == len(GROUP_BANDS):
            return self
        other = copy.copy(self)
        other.bands = in_whole_groups(tuple(have))
        return other

    def _for_landsat(self, cube, family: str, names: list[str], only: tuple[str, ...] | None = None):
        """:meth:`for_bands` for a Landsat series: its bands found by role (:data:`LANDSAT_AS_S2`); ``only``: the
        bands given, every one of which it must have (else itself: the run says which it misses)."""
        from ..quality import BLUE, GREEN, NIR, RED, SWIR1, SWIR2, find_bands

        roles = {"blue": BLUE, "green": GREEN, "red": RED, "nir": NIR, "swir1": SWIR1, "swir2": SWIR2}
        wanted = LANDSAT_AS_S2[family]
        found = dict(zip(wanted, find_bands(cube, *(roles[r] for r in wanted.values()))))
        subset = in_whole_groups(tuple(b for b in BANDS if found.get(b) is not None and (only is None or b in only)))
        if only is not None and set(subset) != set(only):
            return self
        if len(masked_groups(subset)) == len(GROUP_BANDS):
            return self
        other = copy.copy(self)
        other.bands = subset
        other.source_bands = tuple(names[found[b]] for b in subset)
        other.source_family = family
        return other

    def bands_note(self) -> str:
        """What a run says of an encoder that reads fewer than the ten bands ("" when it reads them all)."""
        if self.bands is None:
            return ""
        lacking = self.lacking_bands
        if self.source_bands is not None:
            from ..quality import FAMILY_NAMES

            read = (f"reads {FAMILY_NAMES[self.source_family]} {' '.join(self.source_bands)} as Sentinel-2's "
                    f"{' '.join(self.bands)} (their equivalents, as HLS harmonises Landsat with Sentinel-2; Landsat "
                    "imagery is another domain than its pretraining's, Sentinel-2 top of atmosphere at 10 m)")
        else:
            read = f"reads {' '.join(self.bands)}"
        return (f"note: {self.spec.name} {read}; without {' '.join(lacking)} its channel groups "
                f"{', '.join(self.masked_groups)} are masked (embeddings of another space than those of all ten bands: "
                "similar compares runs of the same bands only)")

    def _space_bands(self, options: dict) -> dict:
        """``options`` (:func:`~changescout.encoders.base.changed_options`) with ``bands`` as a JSON list."""
        if options.get("bands") is not None:
            options["bands"] = list(options["bands"])
        return options
