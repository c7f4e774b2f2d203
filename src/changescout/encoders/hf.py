"""Vision transformers of Hugging Face (DINOv2, CLIP, SigLIP, ViT) read from a local folder, on the RGB bands.

``--encoder hf --weights FOLDER``: the folder ``save_pretrained`` writes, or ``hf download facebook/dinov2-small
--local-dir FOLDER`` (``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``, with the
``preprocessor_config.json`` or ``processor_config.json`` beside them); it needs the ``hf`` extra (``pip install
"changescout[hf]"``: transformers). Nothing is downloaded at run time. Of a model of images and text (CLIP,
SigLIP) the vision tower is read. A folder whose weight files lack weights its configuration names (another
checkpoint's layout: transformers would draw them at random, another model at each load) is refused.

Each date of a window is one RGB image: red, green and blue reflectance times ``gain``, clipped to 0..1, then
normalised by the model's image mean and standard deviation (its processor's configuration, else ImageNet's).
``gain="auto"`` (the default) is 3, the usual true-colour stretch of Sentinel-2 and Landsat surface reflectance
(0.33 reads white), and 1 for 8-bit images, which the sources read as value / 255 (photographs, LEVIR-CD's
pairs: :meth:`HFVisionEncoder.for_cube`); a number sets it (``--config`` ``encoder_options``). The window is resized (bilinear, antialiased) so that each pipeline patch
spans ``tokens`` x ``tokens`` of the model's own patches (14 px for DINOv2), and a pipeline patch's embedding
is the mean of their final hidden states (the class and register tokens left out). Attention is global over a
window, so a token depends on its context: every date is encoded on the identical window grid (the embedding
stage does so). ``window`` patches a side make a window (16: 256 px at 16 px patches, 32 x 32 tokens with
``tokens=2``; DINOv2 was trained at 16 x 16 to 37 x 37 tokens).

Bands: ``red``, ``green``, ``blue``, found as each family of platforms names them (Sentinel-2's ``B04``, ``B03``,
``B02``; Landsat Collection 2's ``SR_B4``... of Landsat 8-9, ``SR_B3``... of Landsat 4-7: ``EncoderSpec.band_roles``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BandError, ConfigError, WeightsError, check_param
from .base import EncoderSpec, PretrainedEncoder, changed_options, find_weights, pick_device, sha256_file

NAME = "hf"
VERSION = "1"
BANDS = ("red", "green", "blue")
BAND_ALIASES = {"B04": "red", "B4": "red", "B03": "green", "B3": "green", "B02": "blue", "B2": "blue"}
#: What a folder without a ``preprocessor_config.json`` is normalised with: ImageNet's RGB mean and std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Models of images and text whose vision tower is read, by their ``model_type`` (SigLIP 2's NaFlex tower takes
#: pre-cut patches, not an image: refused as one that is not a vision transformer of images).
VISION_TOWERS = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel"}
#: Files of a folder that make its digest (the weights actually used, and what reads them).
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_MADE_OF = ("config.json", "preprocessor_config.json", "processor_config.json")
#: The stretch of reflectance (0.33 reads white) and of 8-bit images read as value / 255 (``gain="auto"``).
REFLECTANCE_GAIN, PHOTO_GAIN = 3.0, 1.0


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError('encoder "hf" needs transformers, which is not installed: pip install "changescout[hf]"') from exc
    return transformers


def load_vision_model(folder: Path, device: torch.device | str = "cpu"):
    """The vision transformer of a local model folder (the vision tower of CLIP and SigLIP), eval mode,
    float32; :class:`WeightsError` naming the folder when it holds none."""
    transformers = _transformers()
    folder = Path(folder)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers' errors for a folder that is not a model
        raise WeightsError(f"is not a Hugging Face model folder ({str(exc).splitlines()[0]})", folder) from exc
    tower = VISION_TOWERS.get(config.model_type)
    try:
        cls = getattr(transformers, tower) if tower else transformers.AutoModel
        with _quiet(transformers):  # (a whole CLIP's text tower is reported, weight by weight, as unexpected)
            model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot load the {config.model_type} model ({str(exc).splitlines()[0]})", folder) from exc
    size = getattr(model.config, "patch_size", None)
    forward = inspect.signature(model.forward).parameters
    needs = [n for n, q in forward.items() if n != "pixel_values" and q.default is inspect.Parameter.empty
             and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)]
    if not isinstance(size, int) or "pixel_values" not in forward or needs:
        raise WeightsError(f"holds a {config.model_type} model, not a vision transformer of whole images (no patch size, "
                           f"no pixel input{', or it also needs ' + ', '.join(needs) if needs else ''}): the hf encoder reads "
                           "DINOv2, ViT, and the vision towers of CLIP and SigLIP", folder)
    side = getattr(model.config, "image_size", None)
    if isinstance(side, (list, tuple)) and len(set(int(v) for v in side)) > 1:  # (transformers resizes square grids only)
        raise WeightsError(f"its position embeddings are for {side[0]} x {side[1]} px images, not square ones: the hf "
                           "encoder resizes them to its windows by transformers' interpolation, which takes square "
                           "grids only", folder)
    # weights that the configuration names but the files lack would be drawn at random: another model each load
    # (a pooler, which the encoder does not read, may be absent: a classifier's checkpoint read as its backbone)
    lacking = [k for k in [*info.get("missing_keys", ()), *(m[0] if isinstance(m, tuple) else m for m in info.get("mismatched_keys", ()))]
               if not str(k).startswith("pooler.")]
    if lacking:
        raise WeightsError(f"its weight files lack {len(lacking)} of the {config.model_type} model's weights (such as "
                           f"{', '.join(map(str, lacking[:3]))}) or hold them in other shapes: not this configuration's "
                           "checkpoint", folder)
    return model.float().eval().to(device)


@contextlib.contextmanager
def _quiet(transformers):
    """transformers' loading reports and progress bars held back (errors still show)."""
    logging = transformers.utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def image_statistics(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` of the model's pixel normalisation: its ``preprocessor_config.json``, else the
    ``image_processor`` of its ``processor_config.json`` (a processor saved by transformers 5), else ImageNet's."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            said = json.loads(path.read_text(encoding="utf-8"))
            said = said.get(key) or {} if key else said
            mean, std = said.get("image_mean", mean), said.get("image_std", std)
        except (OSError, ValueError, AttributeError) as exc:
            raise WeightsError(f"cannot be read ({exc})", path) from exc
        break
    mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
    if mean.shape != (3,) or std.shape != (3,) or not (std > 0).all():
        raise WeightsError(f"gives an image mean {mean.tolist()} and std {std.tolist()}: three of each (RGB), std > 0", path)
    return mean, std


def folder_digest(folder: Path) -> str:
    """SHA-256 over the folder's weight files and configuration, by name: what makes two runs comparable."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir()
                   if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in _MADE_OF))
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


class HFVisionEncoder(PretrainedEncoder):
    """A Hugging Face vision transformer: per-date, per-patch embeddings of the RGB bands."""

    def __init__(self, patch_size: int = 16, weights: str | Path | None = None, tokens: int = 2, gain: float | str = "auto",
                 window: int = 16, device: str | None = None, batch_size: int = 4):
        self._configure(patch_size, tokens, gain, window, device, batch_size)
        _transformers()  # first: a model folder is of no use without it (`changescout encoders` asked for the folder)
        self.folder = find_weights(self._spec(0, None), weights).parent
        self.model = load_vision_model(self.folder, self.device)
        self.mean, self.std = image_statistics(self.folder)
        self.model_patch = int(self.model.config.patch_size)
        self.dim = int(self.model.config.hidden_size)
        self.model_type = str(self.model.config.model_type)
        self._digest = folder_digest(self.folder)
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters

    def _configure(self, patch_size=16, tokens=2, gain="auto", window=16, device=None, batch_size=4) -> None:
        from ..tiling import check_patch_size

        self.patch_size = check_patch_size(patch_size)
        self.tokens = check_param(NAME, "tokens (model patches a side per pipeline patch)", tokens, 1, 8, integer=True)
        self.gain = gain if gain == "auto" else check_param(NAME, "gain ('auto' or a number)", gain, 0, None, lo_open=True)
        self.window = check_param(NAME, "window (pipeline patches a side)", window, 1, 64, integer=True)
        self.batch_size = check_param(NAME, "batch_size", batch_size, 1, None, integer=True)
        self.device = pick_device(device)

    def _spec(self, dim: int, sha256: str | None) -> EncoderSpec:
        what = f"{self.model_type} " if getattr(self, "model_type", None) else ""
        return EncoderSpec(
            name=NAME, version=VERSION, dim=dim, patch_size=self.patch_size, bands=BANDS, band_aliases=dict(BAND_ALIASES),
            scaling=f"RGB reflectance x {self._gain():g}, clipped to 0..1, then the model's image mean and std",
            window=self.window * self.patch_size, weights_file="config.json", weights_sha256=sha256,
            weights_url="a model's folder, such as hf download facebook/dinov2-small --local-dir DIR",
            license="the model's own (see its model card)",
            citation="the model's own (see its model card); read with Hugging Face transformers (Wolf et al., EMNLP 2020)",
            description=f"{what}vision transformer of a local Hugging Face folder, {self.tokens} x {self.tokens} "
                        "tokens per patch, averaged",
            input="reflectance", temporal=False, batch_size=self.batch_size, distance="cosine", band_roles=True,
        )

    @property
    def spec(self) -> EncoderSpec:
        # (the folder's digest: a run records it, and other weights in the same folder are another run)
        return self._spec(self.dim, self._digest)

    def _declared(self) -> EncoderSpec:
        return self._spec(0, None)  # (the dimension is the model's: known once its folder is found)

    def __dask_tokenize__(self):
        return (NAME, VERSION, self._digest, self.patch_size, self.tokens, self._gain(), self.window)

    def space_options(self) -> dict:
        """The options that change the embedding space, where they are not the defaults (the stretch always)."""
        return {**changed_options(self, ("tokens", "window")), "gain": self._gain()}

    def _gain(self) -> float:
        return REFLECTANCE_GAIN if self.gain == "auto" else float(self.gain)

    def for_cube(self, cube) -> "HFVisionEncoder":
        """This encoder for ``cube``'s values: ``gain="auto"`` is 1 for 8-bit images (read as value / 255: a
        photograph's colours as they are) and 3 for reflectance; a copy sharing the model when that differs."""
        if self.gain != "auto" or not np.isclose(float(cube.attrs.get("scale_factor", 0) or 0), 1 / 255):
            return self
        other = copy.copy(self)
        other.gain = PHOTO_GAIN
        return other

    def pixels(self, x: np.ndarray) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB reflectance -> the model's input ``(B, 3, H', W')``: stretched by ``gain``,
        clipped, normalised, resized to ``tokens`` model patches per pipeline patch."""
        b, _, h, w = x.shape
        rgb = np.clip(np.nan_to_num(x.astype(np.float32)) * self._gain(), 0.0, 1.0)  # (NaN would spread)
        rgb = (rgb - self.mean[:, None, None]) / self.std[:, None, None]
        side = self.tokens * self.model_patch
        size = (h // self.patch_size * side, w // self.patch_size * side)
        t = torch.from_numpy(rgb)
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True) if size != (h, w) else t

    def encode(self, x: np.ndarray, months: np.ndarray | None = None) -> np.ndarray:
        """``(B, 3, H, W)`` reflectance (red, green, blue) -> ``(B, dim, H // patch, W // patch)`` float32 (months
        are not read)."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != len(BANDS):
            raise BandError(f"hf expects (batch, 3 bands {' '.join(BANDS)}, H, W), got {x.shape}")
        if x.shape[2] % self.patch_size or x.shape[3] % self.patch_size:
            raise ConfigError(f"hf needs windows that are whole multiples of {self.patch_size} px, got {x.shape[2:]}")
        ph, pw = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        out = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], self.batch_size):
                pixels = self.pixels(x[i:i + self.batch_size]).to(self.device)
                extra = {"interpolate_pos_encoding": True} if self._interpolate else {}
                hidden = self.model(pixel_values=pixels, **extra).last_hidden_state  # (b, prefix + tokens, dim)
                grid = ph * self.tokens * pw * self.tokens
                if hidden.shape[1] < grid:
                    raise WeightsError(f"the {self.model_type} model gave {hidden.shape[1]} tokens for a "
                                       f"{ph * self.tokens} x {pw * self.tokens} token image", self.folder)
                cells = hidden[:, hidden.shape[1] - grid:].reshape(-1, ph * self.tokens, pw * self.tokens, self.dim)
                cells = cells.permute(0, 3, 1, 2)
                out.append((F.avg_pool2d(cells, self.tokens) if self.tokens > 1 else cells).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim, ph, pw), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)
