"""Embeddings made elsewhere, read as the series' bands: AlphaEarth Foundations' annual Satellite Embedding
(Google's ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL``: 64 bands ``A00``..``A63`` per 10 m pixel, unit length),
or any per-pixel embedding raster exported as GeoTIFFs or a datacube, one image per date.

``--encoder precomputed``: every band of the cube is a dimension of the embedding (the source's ``--bands``
selects them). A patch's embedding is the mean of its pixels' vectors, at unit length (the mean of unit
vectors is shorter where they disagree: what a patch holds, not how mixed it is, is compared), and two dates
are compared by their cosine distance. The values are read as the source scales them (floats as stored;
integer rasters x 1e-4, as reflectance is: a common factor, which the cosine distance ignores; the
de-quantisation of AlphaEarth's int8 files on Source Cooperative is not applied), without the embedding stage's
per-date normalisation (``input="embeddings"``), and nodata pixels take their nearest usable date's vector, as
for every encoder. Nothing is learnt and no weights are read: the embedding space is the producer's, whose
dimensions are the bands in their order, so ``similar --in`` compares runs of the same bands only.

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


class PrecomputedEncoder(PretrainedEncoder):
    """Per-patch embeddings from per-pixel embedding bands: the patch mean at unit length."""

    def __init__(self, patch_size: int = 16, n_bands: int | None = None, batch_size: int = 16):
        self._configure(patch_size, n_bands, batch_size)

    def _configure(self, patch_size=16, n_bands=None, batch_size=16, bands=()) -> None:
        from ..tiling import check_patch_size

        self.patch_size = check_patch_size(patch_size)
        self.n_bands = None if n_bands is None else check_param(NAME, "n_bands", n_bands, 1, None, integer=True)
        self.batch_size = check_param(NAME, "batch_size", batch_size, 1, None, integer=True)
        self.bands = tuple(bands)  # the embedding's dimensions, by name, once a cube gives them (for_cube)
        # no weights: the producer's space, whose dimensions are the bands in their order (two runs whose bands
        # differ are not comparable: similar --in refuses them)
        self._digest = hashlib.sha256(f"{NAME}-{VERSION}-{','.join(self.bands)}".encode()).hexdigest()

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
        return (NAME, VERSION, self.patch_size, self.n_bands, self.bands)

    def space_options(self) -> dict:
        """The bands the embedding's dimensions are (``similar --in`` compares runs of the same ones only)."""
        return {"bands": ",".join(self.bands)} if self.bands else {}

    def for_cube(self, cube) -> "PrecomputedEncoder":
        """This encoder for ``cube``: its embedding has one dimension per band, named by the bands."""
        from ..cube import band_names

        bands = tuple(str(b) for b in band_names(cube))
        if self.n_bands not in (None, len(bands)):
            raise ConfigError(f"precomputed: n_bands is {self.n_bands} but the series has {len(bands)} bands")
        if self.bands == bands:
            return self
        other = PrecomputedEncoder.__new__(PrecomputedEncoder)
        other._configure(self.patch_size, len(bands), self.batch_size, bands)
        return other

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
        b, c, h, w = x.shape
        mean = np.nan_to_num(x).reshape(b, c, h // p, p, w // p, p).mean(axis=(3, 5))
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        return np.where(norm > 0, mean / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
