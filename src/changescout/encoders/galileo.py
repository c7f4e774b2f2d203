"""Galileo-nano (Tseng et al. 2025): a pretrained multimodal ViT, used here on Sentinel-2 alone.

Each date of a window is one sample with one timestep: the ten Sentinel-2 bands and NDVI are visible (six
channel-group tokens per ``token_size`` px cell), every other input (Sentinel-1, elevation, land cover, weather,
location) is masked. The embedding of a cell is the mean of its six group tokens; a pipeline patch
(``patch_size`` px, a multiple of ``token_size``) averages its cells (:meth:`GalileoNanoEncoder.encode`);
:meth:`GalileoNanoEncoder.encode_tokens` gives the cells themselves.

Input: reflectance 0..1 (the cube's values, NaN filled with 0). The encoder rescales it to digital numbers
(x 10000) and applies the published normalisation ``(DN - (mean - 2 std)) / (4 std)`` per band; NDVI is
computed from the raw B08 and B04 and is not normalised. Galileo was pretrained on Sentinel-2 Level-1C
top-of-atmosphere reflectance (Earth Engine's ``COPERNICUS/S2_HARMONIZED``, the -1000 offset of baselines 04.00
on removed), whose statistics the normalisation is: surface reflectance (L2A, L3A composites) is another domain,
which a run says (:data:`changescout.encoders.base.PretrainedEncoder.trained_level`).

Attention is global over a window, so a token depends on its context and on its position in the window:
every date must be encoded on the identical window grid (the embedding stage does so).

Measured on the 7 dev OSCD cities (64 px windows, 16 px patches, patch changed when >= 5 % of its pixels
are): pooled AUROC 0.778 for the mean over a patch's 8 px tokens of the cosine distance between dates,
0.667 for the cosine distance between the patch means that :meth:`GalileoNanoEncoder.encode` returns; giving
both dates the same month raises them to 0.835 and 0.793.

Band names: the Sentinel-2 names B02 B03 B04 B05 B06 B07 B08 B8A B11 B12; also accepted (see
``BAND_ALIASES``): B2..B8 without the leading zero and the common STAC names blue, green, red, rededge1,
rededge2, rededge3, nir (B08), nir08 (B8A), swir16 (B11), swir22 (B12).

A cube that lacks some of these bands (HLS S30 and L30 read together keep no B05-B08; a 4-band image has
blue, green, red and nir) is encoded with the channel groups it has: :meth:`GalileoNanoEncoder.for_bands`
gives an encoder whose ``bands`` are those the cube has, and which masks every group (:data:`~changescout.encoders.band_groups.GROUP_BANDS`)
that reads a band it lacks (:mod:`~changescout.encoders.band_groups`), as the model masks the inputs a sample does not have (Sentinel-1 here); a cell's
embedding is then the mean of its visible group tokens. Such embeddings are another space than those of all
ten bands: the run records the bands (``encoder_options``), and ``similar`` does not compare the two.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BandError, ConfigError, WeightsError, check_param
from .band_groups import BANDS, BandSubset, band_subset
from .base import EncoderSpec, PretrainedEncoder, changed_options, find_weights, pick_device, sha256_file
from .galileo_net import BASE_PATCH, S_T_GROUPS, SP_GROUPS, ST_GROUPS, T_GROUPS, GalileoEncoder, GalileoInputs, pool_per_patch

VERSION = "1"
NAME = "galileo-nano"
BAND_ALIASES = {
    "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B05", "B6": "B06", "B7": "B07", "B8": "B08",
    "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06", "rededge3": "B07",
    "nir": "B08", "nir08": "B8A", "swir16": "B11", "swir22": "B12",
}
#: Per-band mean and standard deviation of the pretraining data (DN), in ``BANDS`` order: the space-time
#: entry of ``config/normalization.json`` of nasaharvest/galileo.
S2_MEAN = np.array([1395.3408730676722, 1338.4026921784578, 1343.0988381035700, 1543.8607982512297,
                    2186.2022069512263, 2525.0932853316694, 2410.3377187373408, 2750.2854646886753,
                    2234.9111000614871, 1474.5311266077113])
S2_STD = np.array([917.70414403708526, 913.29884235815280, 1092.6787235275549, 1047.2206083460424,
                   1048.0101611156767, 1143.6903026819996, 1098.9791777316491, 1204.4727550858929,
                   1145.9774063078878, 980.24298400077964])
STD_MULTIPLIER = 2.0
WEIGHTS_SHA256 = "eab6acacf527886a508a555bc24efe4b4a2cf91b162e84cd1c4a1807e942180c"
WEIGHTS_URL = "https://github.com/nasaharvest/galileo/raw/0f0b5b9/data/models/nano/encoder.pt"  # commit of PROVENANCE
CITATION = ("Tseng et al., Galileo: Learning Global & Local Features of Many Remote Sensing Modalities, "
            "ICML 2025, arXiv:2502.09356")
#: Window side in tokens (64 px with 8 px tokens): pretraining used grids of 4 to 12 tokens a side; on the 7 dev
#: OSCD cities 8 tokens scored best (pooled patch-16 AUROC 0.778; 4: 0.745, 6: 0.769, 12: 0.777).
WINDOW_TOKENS = 8


# -- preprocessing -----------------------------------------------------------------------------------
def normalise_s2(dn: np.ndarray) -> np.ndarray:
    """``(..., 10, H, W)`` digital numbers in ``BANDS`` order -> Galileo's normalised values (float64)."""
    shift = S2_MEAN - STD_MULTIPLIER * S2_STD
    divide = 2 * STD_MULTIPLIER * S2_STD
    return (np.asarray(dn, dtype=np.float64) - shift[:, None, None]) / divide[:, None, None]


def ndvi(dn: np.ndarray) -> np.ndarray:
    """``(..., 10, H, W)`` digital numbers -> ``(..., H, W)`` NDVI from raw B08 and B04; 0 where B08 + B04 <= 0."""
    dn = np.asarray(dn, dtype=np.float64)
    nir, red = dn[..., BANDS.index("B08"), :, :], dn[..., BANDS.index("B04"), :, :]
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (nir - red) / np.where(total > 0, total, 1.0), 0.0)


def space_time_input(dn: np.ndarray) -> np.ndarray:
    """``(B, 10, H, W)`` digital numbers -> the space-time input ``(B, H, W, 1, 13)`` float32:
    VV VH (zeros, masked) | the ten normalised bands | NDVI."""
    b, c, h, w = dn.shape
    if c != len(BANDS):
        raise BandError(f"Galileo needs the {len(BANDS)} bands {list(BANDS)}, got {c} channels")
    channels = np.concatenate([np.zeros((b, 2, h, w)), normalise_s2(dn), ndvi(dn)[:, None]], axis=1)
    return channels.transpose(0, 2, 3, 1)[:, :, :, None].astype(np.float32)


def s2_only_inputs(s_t_x: torch.Tensor, months: torch.Tensor, token_size: int, masked: tuple[str, ...] = ()
                   ) -> GalileoInputs:
    """Model inputs with the Sentinel-2 groups and NDVI visible, but for the groups named in ``masked``
    (:data:`~changescout.encoders.band_groups.GROUP_BANDS`), and every other group masked."""
    b, h, w, t, _ = s_t_x.shape
    like = dict(dtype=s_t_x.dtype, device=s_t_x.device)
    s_t_m = torch.zeros(b, h, w, t, len(S_T_GROUPS), **like)
    names = [n for n, _ in S_T_GROUPS]
    for group in ("S1", *masked):
        s_t_m[..., names.index(group)] = 1
    return GalileoInputs(
        s_t_x=s_t_x, sp_x=torch.zeros(b, h, w, 16, **like), t_x=torch.zeros(b, t, 6, **like),
        st_x=torch.zeros(b, 18, **like), s_t_m=s_t_m, sp_m=torch.ones(b, h, w, len(SP_GROUPS), **like),
        t_m=torch.ones(b, t, len(T_GROUPS), **like), st_m=torch.ones(b, len(ST_GROUPS), **like),
        months=months.long(), patch_size=token_size)


# -- model -------------------------------------------------------------------------------------------
def load_galileo(path: Path, device: torch.device | str = "cpu") -> GalileoEncoder:
    """Galileo-nano with the weights of ``path`` (a state dict, every key used), eval mode, float32."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read Galileo weights: {exc}", path) from exc
    with torch.random.fork_rng(devices=[]):  # the initial values are overwritten: leave the global RNG alone
        model = GalileoEncoder()
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise WeightsError(f"not a Galileo-nano encoder state dict: {exc}", path) from exc
    return model.float().eval().to(device)


def untrained_galileo(seed: int = 0, device: torch.device | str = "cpu") -> GalileoEncoder:
    """The same architecture with seeded random weights (fixed encodings kept), for ablations."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GalileoEncoder()
    return model.float().eval().to(device)


def _state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (keys and float values), for weights that have no file."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- changescout encoder -----------------------------------------------------------------------------
class GalileoNanoEncoder(BandSubset, PretrainedEncoder):
    """Pretrained Galileo-nano: per-date, per-patch 128-d embeddings of Sentinel-2 reflectance."""

    trained_level = "L1C"  # Earth Engine's COPERNICUS/S2_HARMONIZED

    def __init__(self, patch_size: int = 16, token_size: int = 8, weights: str | Path | None = None,
                 device: str | None = None, batch_size: int = 8, seed: int = 0, bands: tuple[str, ...] | None = None):
        self._configure(patch_size, token_size, device, batch_size, seed, bands)
        self.weights_path = find_weights(self._spec(WEIGHTS_SHA256), weights)
        self.model = load_galileo(self.weights_path, self.device)
        self._digest = sha256_file(self.weights_path)

    @classmethod
    def untrained(cls, patch_size: int = 16, token_size: int = 8, device: str | None = None, batch_size: int = 8,
                  seed: int = 0, bands: tuple[str, ...] | None = None) -> "GalileoNanoEncoder":
        """The same encoder with seeded random weights instead of the pretrained ones (an ablation baseline)."""
        enc = cls.__new__(cls)
        enc._configure(patch_size, token_size, device, batch_size, seed, bands)
        enc.weights_path = None
        enc.model = untrained_galileo(enc.seed, enc.device)
        enc._digest = _state_digest(enc.model)
        return enc

    def _configure(self, patch_size=16, token_size=8, device=None, batch_size=8, seed=0, bands=None) -> None:
        # (checked for their type too: "big" from a --config file was an internal error, 4.7 was cut to 4)
        patch_size = check_param(NAME, "patch_size", patch_size, 1, None, integer=True)
        token_size = check_param(NAME, "token_size (px)", token_size, 1, BASE_PATCH, integer=True)
        batch_size = check_param(NAME, "batch_size", batch_size, 1, None, integer=True)
        seed = check_param(NAME, "seed", seed, 0, None, integer=True)
        if patch_size < token_size or patch_size % token_size:
            raise ConfigError(f"galileo-nano patch_size ({patch_size} px) must be a multiple of token_size "
                              f"({token_size} px); e.g. --patch-size {2 * token_size}")
        self.patch_size, self.token_size, self.batch_size, self.seed = patch_size, token_size, batch_size, seed
        self.bands = band_subset(NAME, bands, BAND_ALIASES)
        self.device = pick_device(device)

    def _spec(self, sha256: str | None) -> EncoderSpec:
        window = max(self.patch_size, WINDOW_TOKENS * self.token_size // self.patch_size * self.patch_size)
        return EncoderSpec(
            name=NAME, version=VERSION, dim=128, patch_size=self.patch_size, bands=self.source_bands or self.used_bands,
            band_family=self.source_family,
            band_aliases=dict(BAND_ALIASES),
            scaling="reflectance 0..1; x 10000 then (DN - (mean - 2 std)) / (4 std) per band, NDVI from raw B08/B04",
            window=window, weights_file="encoder.pt", weights_sha256=sha256, weights_url=WEIGHTS_URL,
            license="MIT", citation=CITATION,
            description=f"Galileo-nano ViT, Sentinel-2 + NDVI tokens of {self.token_size} px, mean of the "
                        + ("six channel-group tokens" if self.bands is None else
                           f"visible channel-group tokens ({', '.join(self.masked_groups)} masked)")
                        + ", averaged per patch",
            input="reflectance", temporal=False, batch_size=self.batch_size, distance="cosine",
        )

    @property
    def spec(self) -> EncoderSpec:
        return self._spec(WEIGHTS_SHA256 if self.weights_path is not None else None)

    def _declared(self) -> EncoderSpec:
        return self._spec(WEIGHTS_SHA256)

    def __dask_tokenize__(self):
        return (NAME, VERSION, self._digest, self.patch_size, self.token_size, self.used_bands)

    def space_options(self) -> dict:
        """The options that change the embedding space, where they are not the defaults (the token size)."""
        return self._space_bands(changed_options(self, ("token_size", "bands")))

    # -- inference -----------------------------------------------------------------------------
    def _check(self, x: np.ndarray, months: np.ndarray, unit: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x)
        bands = self.used_bands
        if x.ndim != 4 or x.shape[1] != len(bands):
            raise BandError(f"galileo-nano expects (batch, {len(bands)} bands {' '.join(bands)}, H, W), got {x.shape}")
        if x.shape[2] % unit or x.shape[3] % unit:
            raise ConfigError(f"galileo-nano needs windows that are whole multiples of {unit} px, got {x.shape[2:]}")
        months = np.asarray(months).reshape(-1)
        if months.shape[0] != x.shape[0]:
            raise ConfigError(f"one month per window is needed: {x.shape[0]} windows, {months.shape[0]} months")
        if months.size and (months.min() < 0 or months.max() > 11):
            raise ConfigError(f"months must be 0 (January) to 11, got {sorted(set(months.tolist()))}")
        return x, months

    def encode_tokens(self, x: np.ndarray, months: np.ndarray) -> np.ndarray:
        """``(B, bands, H, W)`` reflectance (the ten :data:`BANDS`, or ``used_bands``), ``(B,)`` months 0-11 ->
        ``(B, 128, H // token, W // token)`` float32."""
        x, months = self._check(x, months, self.token_size)
        out = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], self.batch_size):
                dn = np.nan_to_num(self.as_ten_bands(x[i:i + self.batch_size]).astype(np.float64) * 10000.0)  # (NaN would spread)
                s_t_x = torch.from_numpy(space_time_input(dn)).to(self.device)
                m = torch.from_numpy(months[i:i + self.batch_size, None].astype(np.int64)).to(self.device)
                cells = pool_per_patch(self.model(s2_only_inputs(s_t_x, m, self.token_size, self.masked_groups)))
                out.append(cells.permute(0, 3, 1, 2).float().cpu().numpy())
        if not out:
            return np.zeros((0, 128, x.shape[2] // self.token_size, x.shape[3] // self.token_size), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode(self, x: np.ndarray, months: np.ndarray) -> np.ndarray:
        """``(B, bands, H, W)`` reflectance -> ``(B, 128, H // patch, W // patch)``: mean of the token embeddings
        in each patch (for change scores, distances between :meth:`encode_tokens` averaged per patch rank
        changes better; see the module docstring)."""
        self._check(x, months, self.patch_size)
        cells = torch.from_numpy(self.encode_tokens(x, months))
        k = self.patch_size // self.token_size
        return (F.avg_pool2d(cells, k) if k > 1 else cells).numpy()
