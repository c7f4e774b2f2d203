"""Presto (Tseng et al. 2023): a pretrained transformer over the time series of one pixel, as a change encoder.

Presto embeds a per-PIXEL series of Sentinel-2 bands (here without its optional S1, ERA5, SRTM and Dynamic
World inputs, which are masked). A change needs a per-DATE state, so :meth:`PrestoEncoder.encode_series`
turns the series of one window into one state per date, by one of these modes:

* ``"single"``: each date is embedded as a one-step series (its own bands, NDVI and month only). States of
  two dates differ only through the pixels of those two dates, like a per-date encoder.
* ``"window"``: the state of a pixel at date t is the embedding of its last ``context`` USABLE dates up to and
  including t (a trailing window; unusable dates are skipped, i.e. masked out of the series), in time order
  at positions 0, 1, ... with their own months. It smooths noise over a few observations and never looks
  ahead: a date's state depends only on dates up to it.

A pixel contributes to the state of date t only where it is usable at t; pixel embeddings are mean-pooled per
``patch_size`` patch over those pixels (a patch with none gets zeros, and the embedding stage's clear
fraction of 0 says so). Pixels are run through the network in batches of ``batch_size`` series.

Input: the cube's 0..1 reflectance (``spec.input = "reflectance"``; NaN filled with 0), bands B02..B08, B8A,
B11, B12. Presto was pretrained on Sentinel-2 Level-1C top-of-atmosphere reflectance (its export reads B10,
the cirrus band, which Level-2A products lack), so surface reflectance is another domain, which a run says.
Presto's published normalisation of Sentinel-2 is digital number / 10000, i.e. this reflectance;
NDVI is computed here from B04 and B08. The location token needs (latitude, longitude): pass ``latlon`` (the
window centre, or one per pixel: on OSCD both gave the same change ranking); without it
:data:`DEFAULT_LATLON` is used, the same for every date so that states stay comparable, but the embeddings
then differ markedly from those at the true location.

Measured on the 7 OSCD dev cities (16 px patches, cosine distance between the two dates in "single" mode):
a weak change score, pooled AUROC 0.47 / AP 0.15 (per-date z-scored band differences: 0.82 / 0.38), because
the month encoding and each date's global radiometry move every patch; subtracting each date's mean patch
embedding gives 0.64 / 0.18.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..errors import BandError, ConfigError, WeightsError, check_param
from .band_groups import BANDS, BandSubset, band_subset
from .base import EncoderSpec, PretrainedEncoder, changed_options, find_weights, pick_device, sha256_file
from .presto_net import CHANNELS, DIM, DW_MISSING, MAX_STEPS, NORM_ADD, NORM_DIV, PrestoNet, month_table, position_table

VERSION = "1"
MODES = ("single", "window")
# The Sentinel-2 bands Presto uses are BANDS of band_groups, in its channel order (channels 2..11 of
# presto_net.CHANNELS); a cube without some of them has their channel groups masked.
#: Common (STAC / eo-extension) and short names accepted for those bands.
BAND_ALIASES = {
    "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06", "rededge3": "B07",
    "nir": "B08", "nir08": "B8A", "swir16": "B11", "swir22": "B12",
    "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B05", "B6": "B06", "B7": "B07", "B8": "B08",
}
REFLECTANCE_SCALE = 10000.0  # Sentinel-2 digital number = reflectance x 10000
WEIGHTS_SHA256 = "559c9d76f525bdf2dd3774da8b1e7f1510769b73baacac12e9e4d8d5c67fbe65"
DEFAULT_LATLON = (0.0, 0.0)
_S2 = slice(2, 12)
_RED, _NIR, _NDVI = 4 - 2, 8 - 2, 16  # B04 and B08 within the bands; NDVI channel


# -- weights -------------------------------------------------------------------------------------------
def load_presto(path: str | Path) -> PrestoNet:
    """The network with the ``encoder.*`` weights of a Presto state dict (strict: every key used, none missing);
    the ``decoder.*`` keys (pre-training reconstruction) are dropped. Eval mode, float32."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"not a readable Presto weights file: {exc}", path) from exc
    if not isinstance(state, dict):
        raise WeightsError(f"a Presto weights file holds a state dict, got {type(state).__name__}", path)
    encoder = {k[len("encoder."):]: v.float() for k, v in state.items() if k.startswith("encoder.")}
    net = PrestoNet()
    expected = set(net.state_dict())
    missing, unused = sorted(expected - set(encoder)), sorted(set(encoder) - expected)
    if missing or unused:
        raise WeightsError(f"Presto encoder weights do not fit the architecture: missing {missing}, unused {unused}", path)
    try:
        net.load_state_dict(encoder, strict=True)
    except RuntimeError as exc:  # Presto's keys with other shapes (another model size)
        why = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise WeightsError(f"Presto encoder weights do not fit the architecture: {why}", path) from exc
    return net.eval()


def random_presto(seed: int = 0) -> PrestoNet:
    """The same architecture with seeded random weights (PyTorch default initialisation; the fixed month and
    position tables kept): a baseline showing what the pretrained weights add. The global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = PrestoNet()
    net.month_embed.weight.data.copy_(month_table())
    net.pos_embed.data.copy_(position_table()[None])
    return net.eval()


def state_digest(net: PrestoNet) -> str:
    """SHA-256 over the names and float32 bytes of a network's tensors (for weights that are not a file)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- preprocessing (pure numpy) ------------------------------------------------------------------------
def presto_inputs(reflectance: np.ndarray, valid: np.ndarray, missing: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``(N, T, 10)`` 0..1 reflectance in :data:`BANDS` order and ``(N, T)`` usable flags -> Presto's normalised
    ``x`` and ``mask`` ``(N, T, 17)`` float32 (mask 1 = missing). S2 channels: ``(DN + 0) / 10000`` with DN =
    reflectance x 10000; NDVI = (B08 - B04) / (B08 + B04), 0 where the sum is <= 0; S1, ERA5 and SRTM masked,
    and the bands ``missing`` names (NDVI too without B04 or B08: the network masks a group with one masked
    channel). Arithmetic in float64, rounded once to float32. Masked channels hold 0."""
    refl = np.asarray(reflectance, np.float64)
    ok = np.asarray(valid, bool)
    if refl.ndim != 3 or refl.shape[-1] != len(BANDS) or ok.shape != refl.shape[:2]:
        raise BandError(f"presto_inputs takes (N, T, {len(BANDS)}) reflectance and (N, T) flags, got {refl.shape} and {ok.shape}")
    raw = np.zeros(refl.shape[:2] + (len(CHANNELS),))
    raw[..., _S2] = refl * REFLECTANCE_SCALE
    x = (raw + NORM_ADD) / NORM_DIV
    red, nir = refl[..., _RED], refl[..., _NIR]
    total = nir + red
    x[..., _NDVI] = np.where(total > 0, (nir - red) / np.where(total > 0, total, 1.0), 0.0)
    mask = np.ones(x.shape)
    mask[..., _S2] = ~ok[..., None]
    mask[..., _NDVI] = ~ok
    for band in missing:
        mask[..., _S2.start + BANDS.index(band)] = 1
    if {"B04", "B08"} & set(missing):
        mask[..., _NDVI] = 1
    return np.where(mask > 0, 0.0, x).astype(np.float32), mask.astype(np.float32)


def usable_pixels(x: np.ndarray) -> np.ndarray:
    """``(..., C, H, W)`` -> ``(..., H, W)``: every band finite and not all bands 0 (the embedding stage's NaN fill)."""
    finite = np.isfinite(x).all(axis=-3)
    return finite & (np.nan_to_num(x) != 0).any(axis=-3)


def trailing_windows(valid: np.ndarray, t: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel (column of ``valid`` ``(T, N)``): the indices of its last ``context`` usable dates up to
    ``t``, oldest first, ``(N, context)`` int, and which of those slots are filled ``(N, context)`` bool (a
    pixel with fewer usable dates fills the first slots). Unfilled slots point at ``t``."""
    valid = np.asarray(valid, bool)
    count = valid[: t + 1].sum(axis=0)  # usable dates up to t, per pixel
    order = np.argsort(~valid, axis=0, kind="stable")  # usable dates first, in time order
    n = np.minimum(count, context)
    slots = np.arange(context)[None, :]
    rank = count[:, None] - n[:, None] + slots  # rank among the pixel's usable dates
    ok = slots < n[:, None]
    idx = np.take_along_axis(order.T, np.clip(rank, 0, len(valid) - 1), axis=1)
    return np.where(ok, idx, t), ok


def pixel_latlons(latlon, h: int, w: int) -> np.ndarray:
    """``(h * w, 2)`` float32 (latitude, longitude) degrees from None, one ``(lat, lon)`` or an ``(h, w, 2)`` array."""
    ll = np.asarray(DEFAULT_LATLON if latlon is None else latlon, np.float64)
    if ll.shape == (2,):
        ll = np.broadcast_to(ll, (h, w, 2))
    if ll.shape != (h, w, 2) or not np.isfinite(ll).all() or (np.abs(ll[..., 0]) > 90).any():
        raise ConfigError(f"latlon must be (latitude, longitude) degrees, one pair or one per pixel ({h}, {w}, 2); "
                          f"got shape {ll.shape}")
    return ll.reshape(-1, 2).astype(np.float32)


def patch_mean(emb: np.ndarray, where: np.ndarray, p: int) -> np.ndarray:
    """Pixel embeddings ``(n, dim)`` of the True pixels of ``where`` ``(H, W)`` -> ``(dim, H/p, W/p)`` means over
    each patch's True pixels (zeros where a patch has none)."""
    h, w = where.shape
    full = np.zeros((h * w, emb.shape[1]), np.float64)
    full[where.ravel()] = emb
    sums = full.reshape(h // p, p, w // p, p, -1).sum(axis=(1, 3))
    counts = where.reshape(h // p, p, w // p, p).sum(axis=(1, 3))[..., None]
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return mean.transpose(2, 0, 1).astype(np.float32)


# -- the encoder ---------------------------------------------------------------------------------------
class PrestoEncoder(BandSubset, PretrainedEncoder):
    """Pretrained Presto pixel-series embeddings, mean-pooled per patch; see the module docstring for modes.

    ``weights``: the ``default_model.pt`` file or a folder holding it (else ``$CHANGESCOUT_WEIGHTS_DIR/presto/``),
    or ``"random"`` for the same architecture with random weights drawn from ``seed`` (a baseline; ``seed`` is
    used for nothing else, Presto inference being deterministic). ``device``: a torch device, default CUDA when
    available. ``batch_size``: pixel series per forward pass (memory bound).
    """

    trained_level = "L1C"  # its export reads B10, which Level-2A products lack

    def __init__(self, patch_size: int = 16, mode: str = "window", context: int = 3, weights: str | Path | None = None,
                 device: str | None = None, batch_size: int = 4096, seed: int = 0, pixel_stride: int = 1,
                 bands: tuple[str, ...] | None = None):
        self._configure(patch_size, mode, context, device, batch_size, seed, pixel_stride, bands)
        if isinstance(weights, str) and weights == "random":
            self.weights, self.net = "random", random_presto(self.seed)
            self._digest = state_digest(self.net)
        else:
            self.weights = find_weights(self.spec, weights)
            self.net = load_presto(self.weights)
            self._digest = sha256_file(self.weights)
        self.net = self.net.to(self.device)

    def _configure(self, patch_size=16, mode="window", context=3, device=None, batch_size=4096, seed=0,
                   pixel_stride=1, bands=None) -> None:
        # (each checked for its type too: "x" from a --config file was an internal error, 2.5 was cut to 2)
        patch_size = check_param("presto", "patch_size", patch_size, 1, None, integer=True)
        pixel_stride = check_param("presto", "pixel_stride", pixel_stride, 1, None, integer=True)
        if patch_size % pixel_stride:
            raise ConfigError(f"presto pixel_stride must be >= 1 and divide the patch size {patch_size}, got {pixel_stride}")
        self.pixel_stride = pixel_stride
        if mode not in MODES:
            raise ConfigError(f"presto mode must be one of {MODES}, got {mode!r}")
        self.patch_size, self.mode, self.context = patch_size, mode, check_param("presto", "context", context, 1, MAX_STEPS, integer=True)
        self.batch_size = check_param("presto", "batch_size", batch_size, 1, None, integer=True)
        self.seed = check_param("presto", "seed", seed, 0, None, integer=True)
        self.bands = band_subset("presto", bands, BAND_ALIASES)
        self.device = pick_device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def spec(self) -> EncoderSpec:
        return EncoderSpec(
            name="presto", version=VERSION, dim=DIM, patch_size=self.patch_size, bands=self.source_bands or self.used_bands,
            band_family=self.source_family,
            band_aliases=dict(BAND_ALIASES),
            scaling="0..1 reflectance (= Sentinel-2 DN / 10000, Presto's normalisation); NDVI computed from B04, B08",
            window=max(256, self.patch_size * 8) // self.patch_size * self.patch_size,
            weights_file="default_model.pt",
            # (random weights are no file's: a run of them and one of the pretrained weights were one configuration,
            # and the one resumed the other; a review)
            weights_sha256=None if getattr(self, "weights", None) == "random" else WEIGHTS_SHA256,
            weights_url="https://github.com/nasaharvest/presto/raw/13173d0/data/default_model.pt",
            license="MIT (nasaharvest/presto)",
            citation="Tseng, Cartuyvels, Zvonkov, Purohit, Rolnick, Kerner, Lightweight, Pre-trained Transformers "
                     "for Remote Sensing Timeseries, arXiv:2304.14065 (2023)",
            description=f"Presto pixel time-series transformer, mode {self.mode!r}"
                        + (f" (last {self.context} usable dates)" if self.mode == "window" else "")
                        + ", mean-pooled per patch over usable pixels"
                        + (f" ({', '.join(self.masked_groups)} masked)" if self.bands is not None else ""),
            input="reflectance", temporal=True,
        )

    def __dask_tokenize__(self):
        return ("presto", VERSION, self._digest, self.patch_size, self.mode, self.context, self.pixel_stride, self.used_bands)

    def space_options(self) -> dict:
        """The options that change the embedding space, where they are not the defaults."""
        return self._space_bands(changed_options(self, ("mode", "context", "pixel_stride", "bands")))

    # -- inference -----------------------------------------------------------------------------------
    def encode(self, x: np.ndarray, months: np.ndarray, latlon=None) -> np.ndarray:
        """``(B, 10, H, W)`` reflectance of independent dates -> ``(B, 128, H/p, W/p)``: "single" mode per date
        (unusable pixels: non-finite or all bands 0)."""
        x, months = self._check(x, months)
        return self._states(self.as_ten_bands(x), months, usable_pixels(x), latlon, "single")  # dates are independent in this mode

    def encode_series(self, x: np.ndarray, months: np.ndarray, valid: np.ndarray | None = None, latlon=None) -> np.ndarray:
        """``(T, 10, H, W)`` reflectance of one window's whole series, ``(T,)`` months 0-11 and ``(T, H, W)`` usable
        flags (default: :func:`usable_pixels`) -> one state per date ``(T, 128, H/p, W/p)``, by ``self.mode``."""
        x, months = self._check(x, months)
        ok = usable_pixels(x)
        if valid is not None:
            if np.shape(valid) != ok.shape:
                raise ConfigError(f"valid must be (time, H, W) = {ok.shape}, got {np.shape(valid)}")
            ok &= np.asarray(valid, bool)
        return self._states(self.as_ten_bands(x), months, ok, latlon, self.mode)

    def _check(self, x: np.ndarray, months: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float32)
        bands = self.used_bands
        if x.ndim != 4 or x.shape[1] != len(bands):
            raise BandError(f"presto takes (dates, {len(bands)} bands {', '.join(bands)}, H, W), got shape {x.shape}")
        self._grid(x)
        months = np.asarray(months)
        if months.shape != (len(x),) or not np.issubdtype(months.dtype, np.integer) or ((months < 0) | (months > 11)).any():
            raise ConfigError(f"months must be {len(x)} integers 0-11 (January = 0), got {months!r}")
        return x, months.astype(np.int64)

    def _grid(self, x: np.ndarray) -> tuple[int, int]:
        h, w, p = x.shape[2], x.shape[3], self.patch_size
        if h % p or w % p:
            raise ConfigError(f"presto windows must be whole multiples of the {p} px patch, got {h} x {w} px")
        return h // p, w // p

    def _states(self, x: np.ndarray, months: np.ndarray, ok: np.ndarray, latlon, mode: str) -> np.ndarray:
        """Per-date patch states ``(T, 128, H/p, W/p)`` of usable pixels ``ok`` ``(T, H, W)``."""
        t_all, c, h, w = x.shape
        if self.pixel_stride > 1:  # pool each patch over a regular lattice of its pixels (pixel_stride^2 times faster)
            lattice = np.zeros((h, w), bool)
            lattice[:: self.pixel_stride, :: self.pixel_stride] = True
            ok = ok & lattice
        pix = np.nan_to_num(x).reshape(t_all, c, h * w).transpose(2, 0, 1)  # (N, T, C)
        flat_ok = ok.reshape(t_all, h * w)
        latlons = pixel_latlons(latlon, h, w)
        out = np.zeros((t_all, DIM) + self._grid(x), np.float32)
        for t in range(t_all):
            sel = np.flatnonzero(flat_ok[t])
            if not len(sel):
                continue
            if mode == "single":
                idx, slot_ok = np.full((len(sel), 1), t), np.ones((len(sel), 1), bool)
            else:
                idx, slot_ok = trailing_windows(flat_ok[:, sel], t, self.context)
            emb = self._embed(pix[sel[:, None], idx], slot_ok, months[idx], latlons[sel])
            out[t] = patch_mean(emb, flat_ok[t].reshape(h, w), self.patch_size)
        return out

    def _embed(self, refl: np.ndarray, slot_ok: np.ndarray, months: np.ndarray, latlons: np.ndarray) -> np.ndarray:
        """Pixel series ``(n, T, 10)`` -> pooled Presto embeddings ``(n, 128)``, ``batch_size`` series at a time."""
        out = np.empty((len(refl), DIM), np.float32)
        with torch.inference_mode():
            for i in range(0, len(refl), self.batch_size):
                j = slice(i, i + self.batch_size)
                x, mask = presto_inputs(refl[j], slot_ok[j], self.lacking_bands)
                dw = np.full(slot_ok[j].shape, DW_MISSING, np.int64)
                args = [torch.from_numpy(a).to(self.device) for a in (x, mask, dw, latlons[j], months[j])]
                out[j] = self.net(*args).float().cpu().numpy()
        return out
