"""Embeddings made elsewhere, read as the series' bands: AlphaEarth Foundations' annual Satellite Embedding
(Google's ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL``: 64 bands ``A00``..``A63`` per 10 m pixel, unit length),
or any per-pixel embedding raster exported as GeoTIFFs or a datacube, one image per date.

``--encoder precomputed``: every band of the cube is a dimension of the embedding (the source's ``--bands``
selects them). A patch's embedding is the mean of its pixels' vectors, at unit length (the mean of unit
vectors is shorter where they disagree: what a patch holds, not how mixed it is, is compared), and two dates
are compared by their cosine distance. The values are read as the source scales them (floats as stored;
integer rasters x 1e-4, as reflectance is: a common factor, which the cosine distance ignores), without the
embedding stage's per-date normalisation (``input="embeddings"``); nodata pixels take their nearest usable
date's vector, as for every encoder, and pixels no date holds (past the images' edge) add nothing to the mean.

AlphaEarth's files on Google Cloud Storage and Source Cooperative store each value as a signed byte, -127..127
(-128 is nodata), whose native value is ``(v / 127.5)^2 x sign(v)`` (Google's readme of the bucket). With
``dequantize="auto"`` (the default) a series whose bands are among ``A00``..``A63`` and whose source stores
integers (the cube's ``storage``; without it, a ``scale_factor`` other than 1) is de-quantised so, and the run
says it: a patch mean of the raw bytes would weigh the components in another space than the producer's.
``"alphaearth"`` de-quantises any series, ``"none"`` never; values outside -127.5..127.5 once the source's
scaling is undone are refused, naming the option (or, at -128, the undeclared nodata). De-quantised values are in
the space of float exports of the same bands: such runs are compared by ``similar --in``; AlphaEarth's bytes read
as they are (``"none"``) are another space, recorded (``values``) so that ``similar --in`` refuses to mix them.
On a grid other than the files' own (``--grid``), the bytes are resampled (bilinear) before they are
de-quantised, an approximation where neighbouring pixels differ much. Nothing is learnt and no weights are read:
the embedding space is the producer's, whose dimensions are the bands in their order, so ``similar --in``
compares runs of the same bands only.

The run knows the bands are no reflectance (the cube's ``embedding_bands``): it screens no clouds and no snow
(unless asked), co-registers only with ``--coregister on``, warns of no implausible reflectance, and leaves
the change words (NDVI, brightness) empty.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import BandError, ConfigError, check_param
from .base import EncoderSpec, PretrainedEncoder

NAME = "precomputed"
VERSION = "1"
DEQUANTIZE = ("auto", "alphaearth", "none")
#: AlphaEarth's Satellite Embedding bands, in order.
ALPHAEARTH_BANDS = tuple(f"A{i:02d}" for i in range(64))


def alphaearth_values(raw: np.ndarray) -> np.ndarray:
    """AlphaEarth's stored signed bytes -> native values -1..1: ``(v / 127.5)^2 x sign(v)``."""
    raw = np.asarray(raw, dtype=np.float32)
    return np.sign(raw) * np.square(raw / np.float32(127.5))


class PrecomputedEncoder(PretrainedEncoder):
    """Per-patch embeddings from per-pixel embedding bands: the patch mean at unit length."""

    def __init__(self, patch_size: int = 16, n_bands: int | None = None, batch_size: int = 16,
                 dequantize: str = "auto"):
        self._configure(patch_size, n_bands, batch_size, dequantize=dequantize)

    def _configure(self, patch_size=16, n_bands=None, batch_size=16, bands=(), dequantize="auto", stored=(1.0, 0.0),
                   raw_bytes=False) -> None:
        from ..tiling import check_patch_size

        self.patch_size = check_patch_size(patch_size)
        self.n_bands = None if n_bands is None else check_param(NAME, "n_bands", n_bands, 1, None, integer=True)
        self.batch_size = check_param(NAME, "batch_size", batch_size, 1, None, integer=True)
        if dequantize not in DEQUANTIZE:
            raise ConfigError(f"precomputed: dequantize must be one of {', '.join(DEQUANTIZE)}, got {dequantize!r}")
        self.dequantize = dequantize  # "auto" until a cube resolves it (for_cube)
        self.stored = tuple(float(v) for v in stored)  # (scale, offset) the source applied to the stored values
        self.raw_bytes = bool(raw_bytes)  # AlphaEarth's bytes read as they are: not the producer's space
        self.bands = tuple(bands)  # the embedding's dimensions, by name, once a cube gives them (for_cube)
        # no weights: the producer's space, whose dimensions are the bands in their order (two runs whose bands
        # differ are not comparable: similar --in refuses them); de-quantised values are in the space of floats
        said = f"{NAME}-{VERSION}-{','.join(self.bands)}" + ("-stored-bytes" if self.raw_bytes else "")
        self._digest = hashlib.sha256(said.encode()).hexdigest()

    @property
    def spec(self) -> EncoderSpec:
        return EncoderSpec(
            name=NAME, version=VERSION, dim=self.n_bands or 0, patch_size=self.patch_size, bands=None,
            weights_sha256=self._digest if self.bands else None,
            scaling="the stored values (per-pixel embeddings), not normalised", window=16 * self.patch_size,
            license="the producer's (AlphaEarth Satellite Embedding: CC-BY 4.0)",
            citation="Brown et al., AlphaEarth Foundations, arXiv:2507.22291 (2025), for the annual Satellite Embedding",
            description="per-pixel embeddings read as bands, averaged per patch at unit length",
            input="embeddings", temporal=False, batch_size=self.batch_size, distance="cosine",
        )

    def __dask_tokenize__(self):
        return (NAME, VERSION, self.patch_size, self.n_bands, self.bands, self.dequantize, self.stored, self.raw_bytes)

    def space_options(self) -> dict:
        """The bands the embedding's dimensions are, and ``values`` where AlphaEarth's bytes were read as they
        are (``similar --in`` compares runs of the same bands in the same space only)."""
        out = {"bands": ",".join(self.bands)} if self.bands else {}
        return {**out, "values": "stored bytes"} if self.raw_bytes else out

    def for_cube(self, cube) -> "PrecomputedEncoder":
        """This encoder for ``cube``: its embedding has one dimension per band, named by the bands;
        ``dequantize="auto"`` resolved (AlphaEarth's bands stored as integers: de-quantised)."""
        from ..cube import band_names

        bands = tuple(str(b) for b in band_names(cube))
        if self.n_bands not in (None, len(bands)):
            raise ConfigError(f"precomputed: n_bands is {self.n_bands} but the series has {len(bands)} bands")
        stored = (float(cube.attrs.get("scale_factor", 1.0) or 1.0), float(cube.attrs.get("offset", 0.0) or 0.0))
        kind = cube.attrs.get("storage")
        integers = "integers" in kind if kind else not np.isclose(stored[0], 1.0)
        alphaearth = bool(bands) and len(set(bands)) == len(bands) and set(bands) <= set(ALPHAEARTH_BANDS)
        how = self.dequantize
        if how == "auto":
            how = "alphaearth" if alphaearth and integers else "none"
        raw = how == "none" and alphaearth and integers
        if (self.bands, self.dequantize, self.stored, self.raw_bytes) == (bands, how, stored, raw):
            return self
        other = PrecomputedEncoder.__new__(PrecomputedEncoder)
        other._configure(self.patch_size, len(bands), self.batch_size, bands, how, stored, raw)
        return other

    def note(self) -> str:
        """What the run says of how it read the values (empty when as stored)."""
        if self.dequantize == "alphaearth":
            return ("precomputed: the bands' values are AlphaEarth's bytes, de-quantised as their producer says: "
                    "(v / 127.5)^2 x sign(v)")
        if self.raw_bytes:
            return ("precomputed: AlphaEarth's bytes are read as they are (dequantize none), not de-quantised: "
                    "similar --in compares this run with runs read the same way only")
        return ""

    def encode(self, x: np.ndarray, months: np.ndarray | None = None) -> np.ndarray:
        """``(B, C, H, W)`` per-pixel embeddings -> ``(B, C, H // patch, W // patch)``: each patch's mean vector at
        unit length (0 where the vectors cancel or no pixel has one)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise BandError(f"precomputed expects (batch, bands, H, W), got {x.shape}")
        if self.n_bands is not None and x.shape[1] != self.n_bands:
            raise BandError(f"precomputed: {x.shape[1]} bands given, {self.n_bands} expected")
        p = self.patch_size
        if x.shape[2] % p or x.shape[3] % p:
            raise ConfigError(f"precomputed needs windows that are whole multiples of {p} px, got {x.shape[2:]}")
        if self.dequantize == "alphaearth":
            x = alphaearth_values(self._stored_bytes(x))
        b, c, h, w = x.shape
        mean = np.nan_to_num(x).reshape(b, c, h // p, p, w // p, p).mean(axis=(3, 5))
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        return np.where(norm > 0, mean / np.maximum(norm, 1e-12), 0.0).astype(np.float32)

    def _stored_bytes(self, x: np.ndarray) -> np.ndarray:
        """The values as stored (the source's scale and offset undone), checked to be AlphaEarth's -127..127."""
        scale, offset = self.stored
        raw = (x - np.float32(offset)) / np.float32(scale)
        top = float(np.nanmax(np.abs(raw))) if np.isfinite(raw).any() else 0.0
        if top > 127.5 + 1e-3:
            if np.isclose(float(np.nanmin(raw)), -128.0, atol=0.5):
                raise BandError("precomputed: the stored values hold -128, AlphaEarth's nodata, which the files do not "
                                "declare: declare it (gdal_edit.py -a_nodata -128 FILE) and run again")
            raise BandError(f"precomputed: de-quantising as AlphaEarth's int8 files (-127..127), but the stored values "
                            f"reach {top:.4g}; pass dequantize='none' (--config encoder_options) for embeddings stored "
                            "as they are")
        return raw
