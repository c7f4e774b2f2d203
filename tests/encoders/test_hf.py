"""The hf encoder: a Hugging Face vision transformer read from a local folder (DINOv2, CLIP's vision tower), on
the RGB bands. The models are tiny ones with random weights that the tests write with ``save_pretrained``: no
download, the same loading code as a real checkpoint's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from changescout.encoders import encoder_class, get_encoder, select_bands  # noqa: E402
from changescout.encoders.hf import IMAGENET_MEAN, IMAGENET_STD, HFVisionEncoder  # noqa: E402
from changescout.errors import BandError, ConfigError, RunExistsError, WeightsError  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56)


def _dinov2(folder, seed=0, registers=0, mean=None):
    """A tiny DINOv2 (14 px patches, 32-d), as ``hf download`` or ``save_pretrained`` leaves it."""
    torch.manual_seed(seed)
    if registers:
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            patch_size=14, num_register_tokens=registers, **TINY))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(patch_size=14, **TINY))
    model.save_pretrained(folder)
    if mean is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": [0.5, 0.5, 0.5]}))
    return folder


def _reflectance(b=2, h=32, w=48, seed=1):
    return np.random.default_rng(seed).uniform(0.0, 0.3, (b, 3, h, w)).astype(np.float32)


def test_a_dinov2_folder_gives_one_embedding_per_patch_from_its_own_tokens(tmp_path):
    """Each 8 px patch is 2 x 2 tokens of 14 px: the window is resized to 28 px a patch, stretched x 3, normalised
    by ImageNet's statistics (no preprocessor_config.json), and a patch's embedding is the mean of its four
    tokens of the last hidden state, the class token left out."""
    folder = _dinov2(tmp_path / "dino")
    enc = get_encoder("hf", weights=folder, patch_size=8)
    assert (enc.spec.dim, enc.spec.patch_size, enc.spec.input, enc.spec.distance) == (32, 8, "reflectance", "cosine")
    x = _reflectance()
    out = enc.encode(x, np.zeros(2, int))
    assert out.shape == (2, 32, 4, 6) and out.dtype == np.float32 and np.isfinite(out).all()
    model = transformers.Dinov2Model.from_pretrained(folder).eval()
    rgb = (np.clip(x * 3.0, 0, 1) - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
    pixels = torch.nn.functional.interpolate(torch.from_numpy(rgb.astype(np.float32)), size=(112, 168), mode="bilinear",
                                             antialias=True)
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state[:, 1:].reshape(2, 8, 12, 32)
    expected = tokens.reshape(2, 4, 2, 6, 2, 32).mean(dim=(2, 4)).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.array_equal(out, enc.encode(x, np.zeros(2, int)))  # deterministic


def test_what_changes_the_embeddings_changes_the_digest_or_the_space(tmp_path):
    """Other weights, or another image normalisation, make another digest (similar --in refuses to mix them);
    gain and tokens are options of the embedding space."""
    a, b = _dinov2(tmp_path / "a"), _dinov2(tmp_path / "b", seed=1)
    c = _dinov2(tmp_path / "c", mean=[0.5, 0.5, 0.5])
    digests = {get_encoder("hf", weights=f).weights_digest() for f in (a, b, c)}
    assert len(digests) == 3
    assert get_encoder("hf", weights=a).weights_digest() == get_encoder("hf", weights=a / "config.json").weights_digest()
    assert get_encoder("hf", weights=a, gain=1.5, tokens=1).space_options() == {"gain": 1.5, "tokens": 1}
    assert get_encoder("hf", weights=a).space_options() == {"gain": 3.0}
    x = _reflectance(1, 16, 16)
    assert not np.allclose(get_encoder("hf", weights=c, patch_size=8).encode(x),
                           get_encoder("hf", weights=a, patch_size=8).encode(x))  # its preprocessor_config.json is read


def test_the_stretch_is_that_of_reflectance_or_of_8_bit_images_and_the_processor_says_the_normalisation(tmp_path):
    """gain "auto" is 3 on reflectance and 1 on a cube of 8-bit images (read as value / 255: photographs, whose
    colours x 3 were two thirds white), unless given; the mean and std come from preprocessor_config.json or, as
    transformers 5 saves a processor, from the image_processor of processor_config.json."""
    import make_sources as ms
    from changescout.sources import open_series
    from changescout.encoders.hf import image_statistics

    folder = _dinov2(tmp_path / "dino")
    ms.write_geotiff(tmp_path / "photos" / "2020-01-01.tif", np.full((3, 16, 16), 200, np.uint8), nodata=None)
    ms.write_geotiff(tmp_path / "photos" / "2021-01-01.tif", np.full((3, 16, 16), 90, np.uint8), nodata=None)
    ms.multiband_folder(tmp_path / "s2")
    enc = get_encoder("hf", weights=folder)
    assert enc.for_cube(open_series(tmp_path / "photos")).space_options()["gain"] == 1.0
    assert enc.for_cube(open_series(tmp_path / "s2")) is enc and enc.space_options()["gain"] == 3.0
    assert get_encoder("hf", weights=folder, gain=2).for_cube(open_series(tmp_path / "photos")).space_options()["gain"] == 2
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": {
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}}))
    mean, std = image_statistics(folder)
    assert np.allclose(mean, [0.48145466, 0.4578275, 0.40821073]) and np.allclose(std[0], 0.26862954)
    assert get_encoder("hf", weights=folder).weights_digest() != enc.weights_digest()


def test_landsat_bands_are_read_as_red_green_and_blue():
    """A Landsat 8 Collection 2 series (SR_B2..SR_B5) and a Landsat 5 one (SR_B1..SR_B4) give their red, green
    and blue, as each numbers them; a cube without them is told what it misses."""
    import pandas as pd

    from changescout.cube import OutputGrid, make_cube

    def cube(bands, platform):
        grid = OutputGrid.from_bounds("EPSG:32613", 30, (0, 0, 240, 240))
        c = make_cube(np.zeros((2, len(bands), 8, 8), np.float32), pd.to_datetime(["2020-05-21", "2020-06-14"]), bands, grid)
        return c.assign_coords(platform=("time", [platform] * 2))

    spec = encoder_class("hf").declared_spec()
    assert select_bands(cube(["SR_B2", "SR_B3", "SR_B4", "SR_B5"], "landsat-8"), spec) == [2, 1, 0]
    assert select_bands(cube(["SR_B1", "SR_B2", "SR_B3", "SR_B4"], "landsat-5"), spec) == [2, 1, 0]
    with pytest.raises(BandError, match=r"needs bands \['red', 'green', 'blue'\]"):
        select_bands(cube(["SR_B5", "SR_B6"], "landsat-8"), spec)


def test_register_tokens_and_clip_vision_towers(tmp_path):
    """DINOv2 with registers (class + 4 register tokens before the patch tokens) and a whole CLIP model, whose
    vision tower is read at the window's size (its position encodings interpolated)."""
    def by_hand(model, x, size, prefix, **forward):
        """What the encoder should give (tokens=1): the model's patch tokens after its ``prefix`` ones."""
        rgb = (np.clip(x * 3.0, 0, 1) - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
        pixels = torch.from_numpy(rgb.astype(np.float32))
        if size != x.shape[2:]:
            pixels = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", antialias=True)
        with torch.no_grad():
            hidden = model.eval()(pixel_values=pixels, **forward).last_hidden_state[:, prefix:]
        return hidden.reshape(len(x), size[0] // model.config.patch_size, -1, 32).permute(0, 3, 1, 2).numpy()

    reg = get_encoder("hf", weights=_dinov2(tmp_path / "reg", registers=4), patch_size=8, tokens=1)
    x = _reflectance(1, 16, 24)
    np.testing.assert_allclose(reg.encode(x), by_hand(transformers.Dinov2WithRegistersModel.from_pretrained(tmp_path / "reg"),
                                                      x, (28, 42), prefix=5), atol=1e-5)
    torch.manual_seed(0)
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=99)
    vision = dict(TINY, patch_size=16)
    transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision)).save_pretrained(tmp_path / "clip")
    clip = get_encoder("hf", weights=tmp_path / "clip", patch_size=16, tokens=1)
    x = _reflectance(2, 32, 48)
    assert clip.model_type == "clip_vision_model"
    np.testing.assert_allclose(clip.encode(x), by_hand(transformers.CLIPVisionModel.from_pretrained(tmp_path / "clip"), x,
                                                       (32, 48), prefix=1, interpolate_pos_encoding=True), atol=1e-5)


def test_bands_and_bad_folders_are_told(tmp_path):
    """The encoder takes red, green, blue (Sentinel-2's B04, B03, B02 read as them); a folder without a model, a
    model that is not a vision transformer, and a wrong window are clear errors naming what to do."""
    spec = encoder_class("hf").declared_spec(patch_size=8)
    assert spec.bands == ("red", "green", "blue") and spec.dim == 0  # (the model's: known once found)
    assert select_bands(["B02", "B03", "B04", "B08"], spec) == [2, 1, 0]
    with pytest.raises(BandError, match=r"needs bands \['red', 'green', 'blue'\]"):
        select_bands(["B08", "B11"], spec)
    with pytest.raises(WeightsError, match=r"weights file for encoder 'hf' not found \(expected config.json\)"):
        get_encoder("hf", weights=tmp_path)
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=32, vocab_size=99)).save_pretrained(tmp_path / "bert")
    with pytest.raises(WeightsError, match=r"bert: holds a bert model, not a vision transformer"):
        get_encoder("hf", weights=tmp_path / "bert")
    torch.manual_seed(0)  # SigLIP 2's NaFlex tower takes pre-cut patches and their shapes, not an image
    transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**dict(TINY, patch_size=16))).save_pretrained(
        tmp_path / "siglip2")
    with pytest.raises(WeightsError, match=r"siglip2: holds a siglip2_vision_model model, not a vision transformer of "
                                           r"whole images .*also needs"):
        get_encoder("hf", weights=tmp_path / "siglip2")
    from safetensors.torch import load_file, save_file

    folder = _dinov2(tmp_path / "dino")  # weights of another layout (every key under another prefix): refused
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "config.json").write_text((folder / "config.json").read_text())
    save_file({"blocks." + k: v for k, v in load_file(folder / "model.safetensors").items()},
              tmp_path / "moved" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"moved: its weight files lack \d+ of the dinov2 model's weights"):
        get_encoder("hf", weights=tmp_path / "moved")
    torch.manual_seed(0)  # position embeddings of a non-square image: transformers' resizing (square grids) failed, exit 1
    transformers.ViTModel(transformers.ViTConfig(**dict(TINY, image_size=(32, 48), patch_size=8)),
                          add_pooling_layer=False).save_pretrained(tmp_path / "wide")
    with pytest.raises(WeightsError, match=r"wide: its position embeddings are for 32 x 48 px images, not square ones"):
        get_encoder("hf", weights=tmp_path / "wide")
    enc = get_encoder("hf", weights=folder, patch_size=8)
    with pytest.raises(ConfigError, match=r"whole multiples of 8 px"):
        enc.encode(_reflectance(1, 12, 16))
    with pytest.raises(ConfigError, match=r"hf: tokens .* must be a whole number in \[1, 8\]"):
        get_encoder("hf", weights=tmp_path / "dino", tokens=0)


def test_without_transformers_the_encoder_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    folder = _dinov2(tmp_path / "dino")
    monkeypatch.setitem(sys.modules, "transformers", None)  # (import transformers raises ImportError)
    with pytest.raises(ConfigError, match=r'needs transformers, which is not installed: pip install "changescout\[hf\]"'):
        HFVisionEncoder(weights=folder)
    # and before the folder is looked for: `changescout encoders` on a core install asked for a model folder,
    # which is of no use without transformers (a review)
    monkeypatch.delenv("CHANGESCOUT_WEIGHTS_DIR", raising=False)
    with pytest.raises(ConfigError, match=r'needs transformers'):
        HFVisionEncoder()


def test_a_run_reads_a_local_dinov2_end_to_end(tmp_path):
    """The whole pipeline with --encoder hf on a small Sentinel-2-named series (B02..B08: its RGB read): every date
    pair is scored, embeddings.zarr holds the model's 32-d vectors, config.json records the folder's digest, and
    a bright roof planted in the third image changes its patches more than most (random weights: a trained model
    would rank it first; the tests have none)."""
    import xarray as xr

    import make_sources as ms
    from changescout.events import read_events
    from changescout.pipeline import RunConfig, run_pipeline

    folder = _dinov2(tmp_path / "dino")
    dates = ("2020-03-01", "2020-04-10", "2020-05-20", "2020-06-30")
    for t, date in enumerate(dates):
        data = ms.scene(t)
        if t >= 2:
            data[:, 24:36, 28:40] = 7000
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", data, descriptions=ms.BANDS)
    out = run_pipeline(RunConfig(source=str(tmp_path / "f"), encoder="hf", weights=str(folder), patch_size=8,
                                 cloud_screen="off"), tmp_path / "run", log=lambda *_: None)
    events = read_events(out)
    assert sorted(events["t1"].astype(str).str[:10].unique()) == list(dates[1:])
    assert xr.open_zarr(out / "embeddings.zarr").sizes["dim"] == 32
    assert get_encoder("hf", weights=folder).weights_digest() in (out / "config.json").read_text()
    _dinov2(folder, seed=1)  # other weights in the same folder: another run, not a resumed one
    with pytest.raises(RunExistsError, match=r"holds a run made with another configuration \(what differs: weights_sha256"):
        run_pipeline(RunConfig(source=str(tmp_path / "f"), encoder="hf", weights=str(folder), patch_size=8,
                               cloud_screen="off"), tmp_path / "run", log=lambda *_: None)
    roof = events["row"].isin([3, 4]) & events["col"].isin([3, 4]) & (events["t1"].astype(str).str[:10] == dates[2])
    assert roof.sum() == 4 and events.loc[roof, "magnitude"].min() > events.loc[~roof, "magnitude"].median()
