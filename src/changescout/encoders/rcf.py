"""Random convolutional features (MOSAIKS; Rolf et al. 2021), the offline default encoder.

Filters are ``k x k x bands`` patches sampled from the series itself, ZCA-whitened; the image is convolved
with them, both signs pass a ReLU with a fixed bias, and the responses are pooled per patch. Three
choices make the features usable for change detection (measured in benchmarks/):

* the input is normalised per date and band (robust z-score, done by the embedding stage, centred on the
  date's most stable pixels), so that a global shift of illumination or haze does not move every patch;
* each output feature is standardised with statistics learnt at fit time, so that the Euclidean distance
  between two embeddings weighs all filters alike instead of being dominated by the few largest responses;
* the pooling is a generalised mean of power ``pooling`` (3 by default; 1 is MOSAIKS's mean, Radenovic et al.
  2018 for the generalised mean): a road or a pond a few pixels wide moves the strongest responses of a 16 px
  patch much more than their mean. On the planted series (benchmarks/planted.py, rcf, 5 seeds) it raised
  the patch AUROC on Bouconne from 0.903-0.982 to 0.964-0.998 and the AP from 0.70-0.82 to 0.95-0.97.

The learnt state (filters, biases, feature statistics, and the series-wide centre and scale per band that the
embedding stage normalised the input with) is saved beside the run (``rcf_weights.npz``) and can be given back
with ``--weights`` so that two runs share one embedding space: the second run's input is then normalised with
the first run's centre and scale (each date's own offset still removed). Weights files written before they
carried the input normalisation (changescout 0.3.0 and before) still load, but runs with them normalise on their own area, and
``similar --in`` refuses to compare them with another run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from ..errors import BandError, ConfigError, WeightsError, check_param
from .base import EncoderSpec

VERSION = "2"  # 2: generalised-mean pooling (version 1 files load with pooling=1, the plain mean)


class RCFEncoder:
    """MOSAIKS-style random convolutional features; any band count, deterministic from ``seed``."""

    def __init__(self, patch_size: int = 16, dim: int = 256, kernel: int = 3, bias: float = 1.0,
                 seed: int = 0, weights: str | Path | None = None, n_whitening: int = 20000, pooling: float = 3.0):
        # (each checked for its type too: "x" or 4.7 from a --config file ended in an internal error, or was cut)
        dim, kernel = check_param("rcf", "dim", dim, 2, None, integer=True), check_param("rcf", "kernel", kernel, 1, None, integer=True)
        if dim % 2:
            raise ConfigError(f"rcf dim must be an even number >= 2 (two ReLU signs per filter), got {dim}")
        if kernel % 2 == 0:
            raise ConfigError(f"rcf kernel must be an odd number of pixels, got {kernel}")
        from ..tiling import check_patch_size

        self.patch_size, self.dim, self.kernel = check_patch_size(patch_size), dim, kernel
        self.bias, self.seed = check_param("rcf", "bias", bias, -math.inf), check_param("rcf", "seed", seed, 0, None, integer=True)
        # (whitening needs at least as many sampled patches as filters; -1 failed in the middle of the run,
        # after config.json was written)
        self.n_whitening = check_param("rcf", "n_whitening", n_whitening, dim // 2, None, integer=True)
        self.pooling = check_param("rcf", "pooling (the power of the generalised mean; 1 = mean)", pooling, 1)
        self.weights = None if weights is None else Path(weights)
        self.filters_ = None  # (n_filters, bands, k, k) float32
        self.offsets_ = None  # (n_filters,) float32: the whitening mean folded into a conv bias
        self.feature_mean_ = None
        self.feature_std_ = None
        self.input_centre_ = None  # (bands,) float64: the input normalisation the weights were learnt with
        self.input_scale_ = None
        self.input_bands_ = None  # the names of those bands, in order
        self.input_family_ = None  # the band numbering those names follow (quality.band_family: tm, oli, msi)
        self.fitted_patch_size_ = None  # the patch size its feature scaling was learnt at (None: weights before 0.3.22)
        if self.weights is not None:
            self._load(self.weights)

    @property
    def spec(self) -> EncoderSpec:
        return EncoderSpec(
            name="rcf", version=self.version, dim=self.dim, patch_size=self.patch_size, bands=None,
            window=max(256, self.patch_size * 8) // self.patch_size * self.patch_size,
            weights_file="rcf_weights.npz (learnt from the series; reuse with --weights)",
            new_state_weight=0.5,  # what a change left tells a clear-cut from a harvest (change.search_vectors)
            # the convolution reads its neighbours: without them, patches on the edges of the 256 px windows
            # differed between two runs whose windows fall elsewhere (a crop: 140 of 380 inner patches, by up to
            # 1.6 in feature units; an invariance review)
            halo=self.kernel // 2,
            weights_sha256=self.weights_digest() if self.filters_ is not None else None,
            license="MIT (changescout)",
            citation="Rolf et al., A generalizable and accessible approach to machine learning with global "
                     "satellite imagery, Nature Communications 12, 4392 (2021)",
            description=f"random convolutional features (MOSAIKS), filters sampled from the series, whitened, "
                        f"generalised-mean pooling (power {self.pooling:g})",
        )

    @property
    def is_fitted(self) -> bool:
        return self.filters_ is not None

    # -- learning ------------------------------------------------------------------------------
    def fit(self, sample: np.ndarray) -> "RCFEncoder":
        """Sample and whiten filters from ``(n, bands, H, W)`` normalised windows, then learn feature statistics."""
        if self.is_fitted:  # weights given: only check that they fit these bands
            if sample.shape[1] != self.filters_.shape[1]:
                raise BandError(f"rcf weights were learnt on {self.filters_.shape[1]} bands; this cube has {sample.shape[1]}")
            return self
        rng = np.random.default_rng(self.seed)
        k, nf = self.kernel, self.dim // 2
        patches = _random_patches(sample, k, self.n_whitening, rng)
        if len(patches) < nf:
            raise ConfigError(f"too few clear pixels to sample {nf} rcf filters of {k}x{k} px (found {len(patches)} in "
                              f"{sample.shape[0]} windows of {sample.shape[2]}x{sample.shape[3]} px): the series is mostly "
                              "nodata or cloud, or its grid too coarse or too small (check --grid, --mask, --min-clear)")
        mean = patches.mean(axis=0)
        cov = np.cov(patches - mean, rowvar=False)
        evals, evecs = np.linalg.eigh(cov)
        eps = 0.1 * max(float(evals.mean()), 1e-6)
        zca = (evecs / np.sqrt(np.maximum(evals, 0) + eps)) @ evecs.T  # symmetric
        chosen = patches[rng.choice(len(patches), nf, replace=False)]
        white = (chosen - mean) @ zca  # whitened filters
        weight = white @ zca  # conv(x, weight) = <white, zca (p - mean)> + <weight, mean>
        self.filters_ = weight.reshape(nf, sample.shape[1], k, k).astype(np.float32)
        self.offsets_ = (-(weight @ mean)).astype(np.float32)
        feats = self._features(np.nan_to_num(sample))  # (n, dim, h, w); masked pixels at the median
        flat = feats.transpose(1, 0, 2, 3).reshape(self.dim, -1)
        self.feature_mean_ = flat.mean(axis=1).astype(np.float32)
        self.fitted_patch_size_ = self.patch_size
        # A filter that never fired in the sample (std 0) would be divided by almost nothing wherever it fires later:
        # on a Landsat series one such feature reached 19 000 (the others 1-10) at a partly masked patch, and that
        # change ranked as the run's largest by far. Stds are floored at a tenth of the median one.
        std = flat.std(axis=1)
        self.feature_std_ = np.maximum(std, max(0.1 * float(np.median(std)), 1e-6)).astype(np.float32)
        return self

    @property
    def input_normalisation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(centre, scale)`` per band of the input the weights were learnt on, or None (not fitted yet, or
        weights written before they carried it)."""
        return None if self.input_centre_ is None else (self.input_centre_, self.input_scale_)

    @property
    def input_bands(self) -> list[str] | None:
        """The names of the bands the weights were learnt on, in order (None for weights written before 0.3.1)."""
        return self.input_bands_

    @property
    def input_family(self) -> str | None:
        """The band numbering of :attr:`input_bands` (``tm``, ``oli``, ``msi``), None when it was not known."""
        return self.input_family_

    def set_input_normalisation(self, centre: np.ndarray, scale: np.ndarray, bands=None, family=None) -> None:
        """Record the series-wide input ``centre`` and ``scale`` per band the weights were learnt with, the
        bands' names and the numbering they follow (Landsat 8's B2 is blue, Landsat 7's green)."""
        centre, scale = np.asarray(centre, np.float64), np.asarray(scale, np.float64)
        n = len(centre) if bands is None else len(bands)
        if self.filters_ is not None and n != self.filters_.shape[1]:
            raise BandError(f"rcf weights were learnt on {self.filters_.shape[1]} bands; the normalisation has {n}")
        if centre.shape != (n,) or scale.shape != (n,):
            raise BandError(f"the rcf input normalisation needs one centre and one scale per band ({n} bands), got "
                            f"{centre.shape[0] if centre.ndim else 1} centres and {scale.shape[0] if scale.ndim else 1} scales")
        self.input_centre_, self.input_scale_ = centre, scale
        self.input_bands_ = None if bands is None else [str(b) for b in bands]
        self.input_family_ = family

    # -- inference -----------------------------------------------------------------------------
    def encode(self, x: np.ndarray, months: np.ndarray | None = None, halo: int = 0) -> np.ndarray:
        """``(B, C, H, W)`` normalised pixels -> ``(B, dim, H // patch, W // patch)`` standardised features;
        with ``halo``, ``x`` holds that many pixels of context each side, and the features cover the inside
        (``H - 2 halo`` px; without context, the edge pixels are repeated)."""
        if not self.is_fitted:
            raise ConfigError("the rcf encoder must be fitted (or given --weights) before encoding")
        if x.shape[1] != self.filters_.shape[1]:
            raise BandError(f"rcf weights expect {self.filters_.shape[1]} bands, got {x.shape[1]}")
        feats = self._features(x, halo)
        return ((feats - self.feature_mean_[None, :, None, None]) / self.feature_std_[None, :, None, None]).astype(np.float32)

    def _features(self, x: np.ndarray, halo: int = 0) -> np.ndarray:
        p, pad = self.patch_size, self.kernel // 2 - halo  # context still missing (< 0: more than the kernel reads)
        if pad < 0:
            x = x[..., -pad:pad, -pad:pad]
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            if pad > 0:
                t = F.pad(t, (pad, pad, pad, pad), mode="replicate")
            r = F.conv2d(t, torch.from_numpy(self.filters_), torch.from_numpy(self.offsets_))
            del t
            # each sign pooled on its own, the negative one in place of the responses: at full resolution the
            # responses are (batch, dim / 2, H, W) float32, and the two signs joined before pooling, with their
            # temporaries, took five times that (peak RSS of a run: Bouconne 1.81 -> 1.14 GB, synthetic demo
            # series 2.32 -> 1.53 GB; the same embeddings to the bit)
            pos = self._pool(F.relu_(r - self.bias), p)
            neg = self._pool(F.relu_(r.neg_().sub_(self.bias)), p)
            return torch.cat([pos, neg], dim=1).numpy()

    def _pool(self, x, p: int):
        """The generalised mean (``pooling``) of ``x`` (non-negative) over each ``p`` x ``p`` patch."""
        if self.pooling == 1:
            return F.avg_pool2d(x, p)
        return F.avg_pool2d(x.pow_(self.pooling), p).pow_(1 / self.pooling)

    # -- weights -------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"filters": self.filters_, "offsets": self.offsets_, "feature_mean": self.feature_mean_, "feature_std": self.feature_std_}
        if self.input_centre_ is not None:  # absent from weights written before 0.3.1 (their digest unchanged)
            arrays.update(input_centre=self.input_centre_, input_scale=self.input_scale_)
        return arrays

    def weights_digest(self) -> str:
        h = hashlib.sha256(json.dumps(self._params(), sort_keys=True).encode())
        for name, arr in self._arrays().items():
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    @property
    def version(self) -> str:
        """Weights version: 1 for the plain mean (what version 1 computed, so that its runs and weights stay
        comparable with theirs), else ``VERSION``."""
        return "1" if self.pooling == 1 else VERSION

    def _params(self) -> dict:
        params = {"version": self.version, "dim": self.dim, "kernel": self.kernel, "bias": self.bias}
        if self.input_bands_ is not None:  # absent from weights written before 0.3.1 (their digest unchanged)
            params["input_bands"] = self.input_bands_
        if self.input_family_ is not None:
            params["input_family"] = self.input_family_
        if self.fitted_patch_size_ is not None:  # (absent from weights written before 0.3.22: their digest unchanged)
            params["patch_size"] = self.fitted_patch_size_
        return params if self.pooling == 1 else {**params, "pooling": self.pooling}

    def save_weights(self, path: Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, params=np.array(json.dumps(self._params())), **self._arrays())
        return path

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise WeightsError("rcf weights file not found (write one with a first `changescout run`: <run>/rcf_weights.npz)", path)
        import zipfile

        if not zipfile.is_zipfile(path):  # numpy reads anything else as a pickle and says so
            raise WeightsError("not an rcf weights file: not a NumPy .npz archive (changescout writes them as "
                               "<run>/rcf_weights.npz)", path)
        try:
            with np.load(path, allow_pickle=False) as z:
                params = json.loads(str(z["params"]))
                arrays = {k: z[k].astype(np.float32) for k in ("filters", "offsets", "feature_mean", "feature_std")}
                if "input_centre" in z:
                    arrays.update(input_centre=z["input_centre"].astype(np.float64), input_scale=z["input_scale"].astype(np.float64))
        except Exception as exc:
            what = str(exc).strip("'") if isinstance(exc, KeyError) else str(exc)
            raise WeightsError(f"not an rcf weights file: {what}", path) from exc
        if params.get("version") not in ("1", VERSION):
            raise WeightsError(f"rcf weights version {params.get('version')} differs from this version {VERSION}", path)
        stored = {"dim": int(params["dim"]), "kernel": int(params["kernel"]), "bias": float(params["bias"]),
                  "pooling": float(params.get("pooling", 1.0))}  # (version 1: the plain mean)
        defaults = inspect.signature(type(self).__init__).parameters
        # an option asked for (not its default) that the weights were not made with: it was ignored, and
        # config.json recorded it as if it had been applied (a review)
        clash = [f"{k} {getattr(self, k):g} (the weights were made with {v:g})" for k, v in stored.items()
                 if getattr(self, k) != defaults[k].default and not math.isclose(getattr(self, k), v)]
        if clash:
            raise ConfigError(f"rcf options that differ from the weights file's: {'; '.join(clash)}; the weights decide "
                              "them: leave them out of encoder_options, or run without --weights", path)
        fitted = params.get("patch_size")
        if fitted is not None and int(fitted) != self.patch_size:  # its features were scaled as pooled over that size
            raise ConfigError(f"rcf weights learnt at patch size {int(fitted)} (their features are scaled as pooled over "
                              f"{int(fitted)} px patches), asked for patch size {self.patch_size}: run with --patch-size "
                              f"{int(fitted)}, or without --weights", path)
        self.fitted_patch_size_ = None if fitted is None else int(fitted)
        self.dim, self.kernel, self.bias, self.pooling = stored["dim"], stored["kernel"], stored["bias"], stored["pooling"]
        self.filters_, self.offsets_ = arrays["filters"], arrays["offsets"]
        self.feature_mean_, self.feature_std_ = arrays["feature_mean"], arrays["feature_std"]
        self.input_centre_, self.input_scale_ = arrays.get("input_centre"), arrays.get("input_scale")
        self.input_bands_ = params.get("input_bands")
        self.input_family_ = params.get("input_family")


def _random_patches(sample: np.ndarray, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` random finite ``k x k`` patches, flattened to ``(n, bands * k * k)``."""
    b, c, h, w = sample.shape
    if h < k or w < k:
        raise ConfigError(f"windows of {h}x{w} px are smaller than the {k} px rcf kernel")
    idx = rng.integers(0, b, 3 * n)
    ys = rng.integers(0, h - k + 1, 3 * n)
    xs = rng.integers(0, w - k + 1, 3 * n)
    offs = np.arange(k)
    rows = ys[:, None] + offs[None, :]
    cols = xs[:, None] + offs[None, :]
    patches = sample[idx[:, None, None, None], np.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    flat = patches.reshape(len(idx), -1).astype(np.float64)
    flat = flat[np.isfinite(flat).all(axis=1)]
    return flat[:n]
