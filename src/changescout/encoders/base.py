"""The Encoder protocol, the spec every encoder declares, and the one encoder registry.

An encoder turns a window of normalised pixels ``(batch, band, H, W)`` into one embedding per patch
``(batch, dim, H // patch, W // patch)``. It declares what it needs in an :class:`EncoderSpec`: bands (with a
documented mapping from common names), scaling, native patch size, embedding dimension, weights file and
checksum, license and citation. Built-in encoders are listed in ``_BUILTINS``; other packages add theirs
through the ``changescout.encoders`` entry-point group.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import BandError, ConfigError, EncoderNotFoundError, WeightsError, check_options


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder expects and produces. ``bands=None`` means any band list."""

    name: str
    version: str
    dim: int
    patch_size: int
    bands: tuple[str, ...] | None = None
    band_aliases: dict = field(default_factory=dict)
    scaling: str = "reflectance 0..1, then per-date robust z-score of each band"
    window: int = 256
    weights_file: str | None = None
    weights_sha256: str | None = None
    weights_url: str | None = None
    license: str = ""
    citation: str = ""
    description: str = ""
    # What ``encode`` receives: "normalised" = the embedding stage's per-date robust z-score of each band;
    # "reflectance" = the cube's values (0..1 reflectance, NaN filled with 0), the encoder applies its own
    # published normalisation (pretrained models); "embeddings" = the cube's values too, which are per-pixel
    # embeddings made elsewhere (a run then screens no clouds, checks no reflectance and, unless asked, does not
    # co-register: the cube's ``embedding_bands`` attribute).
    input: str = "normalised"
    # True when the encoder needs the whole series of a window at once (``encode_series``), e.g. Presto.
    temporal: bool = False
    batch_size: int = 8
    # Distance between two embeddings of a patch: "euclidean" (RMS difference) or "cosine".
    distance: str = "euclidean"
    # Weight of a change's new state beside its residual in similar-change search
    # (:func:`changescout.change.search_vectors`); 0 = the residual alone. Measured per encoder.
    new_state_weight: float = 0.0
    # True when ``bands`` are roles (``blue``, ``green``, ``red``, ``nir``), found in a cube by what its family of
    # platforms calls them (:func:`changescout.quality.find_bands`: Landsat's SR_B4 is red on Landsat 8-9).
    band_roles: bool = False
    # The family of platforms whose band numbers ``bands`` are (:func:`changescout.quality.band_family`: "tm",
    # "oli"), where they are a Landsat series' own (a Sentinel-2 model reading their equivalents,
    # :mod:`changescout.encoders.band_groups`); None: Sentinel-2's numbers or names.
    band_family: str | None = None
    # Pixels of context a window needs beyond its edges (a convolution's half kernel). The embedding stage
    # reads them from the neighbouring windows (the grid's edge pixels repeated at its edge) and calls
    # ``encode(x, months, halo=halo)``, whose output covers the inside; 0: ``encode(x, months)`` on the window.
    halo: int = 0


@runtime_checkable
class Encoder(Protocol):
    """What the embedding stage needs from an encoder."""

    spec: EncoderSpec

    def fit(self, sample: np.ndarray) -> "Encoder":
        """Learn data-dependent state from ``(n, band, H, W)`` normalised windows (may do nothing)."""

    def encode(self, x: np.ndarray, months: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` float32 -> ``(B, dim, H // patch, W // patch)`` float32."""

    def weights_digest(self) -> str:
        """SHA-256 of the weights actually used (what makes two runs comparable)."""

    def save_weights(self, path: Path) -> Path | None:
        """Write data-dependent weights so that another run can reuse them (``--weights``); None if fixed."""


class PretrainedEncoder:
    """What every pretrained encoder shares: nothing to learn, fixed weights identified by their SHA-256."""

    _digest: str
    #: The Sentinel-2 processing level the model was pretrained on (``"L1C"``: top-of-atmosphere), or None
    #: where it does not matter or is not known: a run on another level is told (:func:`level_note`).
    trained_level: str | None = None

    @property
    def is_fitted(self) -> bool:
        return True

    def fit(self, sample: np.ndarray):
        """Nothing to learn: the weights are pretrained."""
        return self

    def weights_digest(self) -> str:
        return self._digest

    def save_weights(self, path: Path) -> None:
        return None

    @classmethod
    def declared_spec(cls, **params) -> EncoderSpec | None:
        """The spec of the encoder built with ``params``, without its weights: what it takes and gives (bands,
        dimension, patch size, license) before the weights file is found (``changescout encoders``). None for
        an encoder that cannot tell it: one without ``_configure`` (its options checked and set, no weights
        loaded)."""
        if not hasattr(cls, "_configure"):
            return None
        enc = cls.__new__(cls)
        enc._configure(**params)
        return enc._declared()

    def _declared(self) -> EncoderSpec:
        return self.spec


#: Families of platforms whose band numbers are their own (:func:`changescout.quality.band_family`).
_LANDSAT = {"tm": "Landsat 4-7 (TM, ETM+)", "oli": "Landsat 8-9 (OLI)"}
#: A band number, bare or as Landsat Collection 2 writes it: B3, b03, B8A, SR_B4.
_BAND_NUMBER = re.compile(r"(SR_)?B\d{1,2}A?", re.IGNORECASE)


def select_bands(available, spec: EncoderSpec) -> list[int]:
    """Indices of ``available`` bands in the order the encoder expects; clear error listing what is missing.

    ``available`` is the cube (a SeriesCube) or its band names. A cube's family of platforms
    (:func:`changescout.quality.band_family`, as the screens and the words read its bands) decides what a band
    number means: a Landsat series' ``b3`` is its own band 3 (red on Landsat 4-7), not Sentinel-2's B03 (green),
    so a Landsat band number takes no alias and matches no Sentinel-2 band, and the error says what each is.
    Names alone, or a cube of no known family, read bare numbers as Sentinel-2's (the aliases ``B3`` -> ``B03``).
    An encoder whose bands are roles (``spec.band_roles``: red, green, blue) finds them in a cube as its family
    names them (:func:`changescout.quality.find_bands`), Landsat's included."""
    family, cube = None, None
    if hasattr(available, "coords"):  # a cube: its band names and its family of platforms
        from ..cube import band_names
        from ..quality import band_family

        cube, available = available, band_names(available)
        family = band_family(cube)
    available = [str(b) for b in available]
    if spec.bands is None:
        return list(range(len(available)))
    if spec.band_roles and cube is not None:
        from ..quality import BLUE, GREEN, NIR, RED, find_bands

        roles = {"blue": BLUE, "green": GREEN, "red": RED, "nir": NIR}
        found = find_bands(cube, *(roles[b] for b in spec.bands))
        if None not in found:
            return list(found)
    landsat = family in _LANDSAT
    # Landsat's own numbers, which no Sentinel-2 name matches (unless the spec names them as that family's)
    numbers = {b.upper() for b in available if landsat and spec.band_family != family and _BAND_NUMBER.fullmatch(b)}
    # b1..bN: the names a source gives bands it found no name for, not Sentinel-2's B1..BN (a review: a 4-band
    # file of blue, green, red, nir gave hf nir, red and green as its red, green and blue); as the screens read them
    unnamed = family is None and available == [f"b{i + 1}" for i in range(len(available))]
    aliases = {c: o for c, o in spec.band_aliases.items() if not ((landsat or unnamed) and _BAND_NUMBER.fullmatch(c))}
    lookup = {b.upper(): i for i, b in enumerate(available) if b.upper() not in numbers}
    for common, own in aliases.items():
        if common.upper() in lookup and own.upper() not in lookup:
            lookup[own.upper()] = lookup[common.upper()]
    missing = [b for b in spec.bands if b.upper() not in lookup]
    if missing:
        raise BandError(
            f"encoder {spec.name!r} needs bands {list(spec.bands)}; the cube has {available} and misses {missing}"
            + (f" (accepted aliases: {aliases})" if aliases else "")
            + (_landsat_numbers(cube, family) if numbers else "")
            + ("; the bands have no names (b1..bN: files without band descriptions): name them with --bands"
               if unnamed else "")
        )
    return [lookup[b.upper()] for b in spec.bands]


def _landsat_numbers(cube, family: str) -> str:
    """What the band numbers of a Landsat ``cube`` are, for an encoder that wants Sentinel-2's: the roles the
    rest of the run reads them as (:func:`changescout.quality.find_bands`)."""
    from ..cube import band_names
    from ..quality import BLUE, GREEN, NIR, RED, SWIR1, find_bands

    roles = zip(find_bands(cube, BLUE, GREEN, RED, NIR, SWIR1),
                ("blue", "green", "red", "near infrared", "short-wave infrared 1"))
    named = [f"{band_names(cube)[i]} is {role}" for i, role in roles if i is not None]
    return (f"; the cube's bands are numbered as {_LANDSAT[family]}'s, not as Sentinel-2's"
            + (f": {', '.join(named)}" if named else ""))


def find_weights(spec: EncoderSpec, weights: str | Path | None = None) -> Path:
    """The weights file to load: ``weights`` if given (a file, or a folder holding ``spec.weights_file``), else
    ``$CHANGESCOUT_WEIGHTS_DIR/<encoder>/<weights_file>``. Checks the SHA-256; a clear error names the file
    expected and where to get it."""
    import os

    if weights is not None:
        path = Path(weights)
        if path.is_dir():
            path = path / spec.weights_file
    else:
        root = os.environ.get("CHANGESCOUT_WEIGHTS_DIR")
        if not root:
            where = f" (get it from {spec.weights_url})" if spec.weights_url else ""
            # (no path to name: none was given, and the benchmark has --weights-dir, not --weights; a review)
            raise WeightsError(
                f"encoder {spec.name!r} needs its weights file {spec.weights_file}{where}: put it in "
                f"DIR/{spec.name}/ and set CHANGESCOUT_WEIGHTS_DIR=DIR (or pass changescout run --weights PATH, "
                "changescout benchmark --weights-dir DIR)")
        path = Path(root) / spec.name / spec.weights_file
    return check_weights(path, spec)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_weights(path: Path, spec: EncoderSpec) -> Path:
    """Check that a weights file exists and matches the spec's SHA-256."""
    path = Path(path)
    if not path.is_file():
        where = f" Get it from {spec.weights_url}." if spec.weights_url else ""
        raise WeightsError(f"weights file for encoder {spec.name!r} not found (expected {spec.weights_file}).{where}", path)
    if spec.weights_sha256 and sha256_file(path) != spec.weights_sha256:
        raise WeightsError(f"SHA-256 does not match the expected {spec.weights_sha256} of {spec.name!r}", path)
    return path


# -- registry --------------------------------------------------------------------------------------
_BUILTINS = {
    "rcf": "changescout.encoders.rcf:RCFEncoder",
    "galileo-nano": "changescout.encoders.galileo:GalileoNanoEncoder",
    "presto": "changescout.encoders.presto:PrestoEncoder",
    "hf": "changescout.encoders.hf:HFVisionEncoder",
    "precomputed": "changescout.encoders.precomputed:PrecomputedEncoder",
}


def _entry_points() -> dict[str, object]:
    found = {}
    for ep in entry_points(group="changescout.encoders"):
        found[ep.name] = ep
    return found


def available_encoders() -> list[str]:
    """Names :func:`get_encoder` takes: the built-in encoders and those of installed plugins (entry points)."""
    return sorted(set(_BUILTINS) | set(_entry_points()))


def encoder_class(name: str):
    """The encoder class registered under ``name`` (built-in or entry point)."""
    if name in _BUILTINS:
        module, attr = _BUILTINS[name].split(":")
        return getattr(importlib.import_module(module), attr)
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as exc:  # a broken plugin must not hide the others
            warnings.warn(f"encoder plugin {name!r} failed to load: {exc}", stacklevel=2)
            raise EncoderNotFoundError(f"encoder plugin {name!r} failed to load: {exc}") from exc
    raise EncoderNotFoundError(f"no encoder named {name!r}; available: {', '.join(available_encoders())}")


def checked_encoder_class(name: str, params: dict):
    """:func:`encoder_class` of ``name``, after checking that it takes every option of ``params`` (a misspelt
    option: exit 2, not a TypeError); cheap, so a run checks it before any work or cluster connection."""
    cls = encoder_class(name)
    check_options(cls.__init__, params, f"encoder {name!r}")
    return cls


def get_encoder(name: str, **params) -> Encoder:
    """Build the encoder ``name`` with keyword parameters (``patch_size``, ``seed``, ``weights``...)."""
    return checked_encoder_class(name, params)(**params)


def changed_options(encoder, names) -> dict:
    """The options ``names`` of ``encoder`` (its attributes of those names) that differ from its constructor's
    defaults: what an encoder's ``space_options`` says of the options that change its embedding space."""
    defaults = inspect.signature(type(encoder).__init__).parameters
    return {n: getattr(encoder, n) for n in names if getattr(encoder, n) != defaults[n].default}


def pick_device(device: str | None = None):
    """The ``torch.device`` ``device`` if given (a :class:`ConfigError` unless torch has it here), else cuda, then
    mps, then cpu."""
    import torch

    if device is not None:
        try:
            picked = torch.device(device)
            if picked.type not in ("cpu", "cuda", "mps", "xpu"):  # (meta holds no values: an internal error later)
                raise RuntimeError(f"a {picked.type} device computes no values")
            torch.empty(0, device=picked)  # ("cuda:7", or cuda in a CPU build of torch, fail only when used)
        except (RuntimeError, AssertionError, TypeError) as exc:
            usable = "'cpu' or 'cuda'" if torch.cuda.is_available() else "'cpu'"
            raise ConfigError(f"device {device!r} is not one this torch can use ({str(exc).splitlines()[0]}); "
                              f"use {usable}") from exc
        return picked
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


#: Processing levels of surface reflectance (atmospherically corrected), as the sources name them.
SURFACE_LEVELS = ("L2A", "L3A")


def level_note(encoder, level) -> str | None:
    """What a run says when a model pretrained on one Sentinel-2 level embeds a series of another: the
    embeddings then see another domain than the model learnt (its normalisation statistics are of that level).
    None when the levels agree, or either is unknown."""
    trained = getattr(encoder, "trained_level", None)
    level = str(level or "")
    if trained is None or level not in (*SURFACE_LEVELS, "L1C") or level == trained:
        return None
    name = encoder.spec.name
    what = {"L1C": "Level-1C top-of-atmosphere", "L2A": "Level-2A surface", "L3A": "Level-3A composite surface"}
    return (f"note: {name} was pretrained on Sentinel-2 {what[trained]} reflectance; this series is {what[level]} "
            f"reflectance ({level}): its embeddings see another domain than the model learnt; search other runs "
            "(similar --in) of the same level")
