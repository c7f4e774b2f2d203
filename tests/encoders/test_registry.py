"""The encoder registry, the spec every encoder declares, and band selection."""

import hashlib

import numpy as np
import pytest

from changescout.encoders import Encoder, EncoderSpec, available_encoders, encoder_class, get_encoder, select_bands
from changescout.encoders import base
from changescout.encoders.rcf import RCFEncoder
from changescout.errors import BandError, EncoderNotFoundError, InputError, WeightsError


def test_registry_lists_rcf():
    names = available_encoders()
    assert "rcf" in names
    assert names == sorted(names)
    assert encoder_class("rcf") is RCFEncoder


def test_unknown_encoder_lists_available():
    with pytest.raises(EncoderNotFoundError) as exc:
        get_encoder("no-such-encoder")
    msg = str(exc.value)
    assert "no-such-encoder" in msg and "rcf" in msg
    assert exc.value.exit_code == 2  # bad input in the CLI


@pytest.mark.parametrize("name", available_encoders())
def test_every_registered_encoder_declares_a_consistent_spec(name):
    try:
        enc = get_encoder(name)
    except (WeightsError, EncoderNotFoundError) as exc:  # weights not installed here: a clear error is fine
        pytest.skip(f"{name}: {exc}")
    assert isinstance(enc, Encoder)
    if hasattr(enc, "for_cube"):  # an encoder whose dimension is its input's (precomputed embeddings): on one
        enc = enc.for_cube(_cube(["B02", "B03", "B04", "B08"]))
    spec = enc.spec
    assert isinstance(spec, EncoderSpec)
    assert spec.name == name
    assert spec.dim >= 1 and spec.patch_size >= 1
    assert spec.window % spec.patch_size == 0 and spec.window >= spec.patch_size
    assert spec.version and spec.license and spec.citation
    if spec.bands is not None:
        assert len(set(spec.bands)) == len(spec.bands)
        for common, own in spec.band_aliases.items():
            assert own in spec.bands, f"alias {common}->{own} points to a band the encoder does not use"


def test_get_encoder_passes_parameters():
    enc = get_encoder("rcf", patch_size=8, dim=16, seed=3)
    assert (enc.spec.patch_size, enc.spec.dim, enc.seed) == (8, 16, 3)


def test_broken_plugin_warns_and_raises_not_found(monkeypatch):
    class BrokenEP:
        name = "broken"

        def load(self):
            raise ImportError("no module named broken_encoder")

    monkeypatch.setattr(base, "_entry_points", lambda: {"broken": BrokenEP()})
    assert "broken" in available_encoders() and "rcf" in available_encoders()
    with pytest.warns(UserWarning, match="broken"):
        with pytest.raises(EncoderNotFoundError, match="no module named broken_encoder"):
            encoder_class("broken")
    assert encoder_class("rcf") is RCFEncoder  # the broken plugin does not hide the built-ins


# -- band selection -----------------------------------------------------------------------------------
SPEC = EncoderSpec(name="s2", version="1", dim=8, patch_size=8, bands=("B02", "B03", "B04", "B08"),
                   band_aliases={"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"})


def test_select_bands_orders_as_the_encoder_expects():
    assert select_bands(["B08", "B04", "B03", "B02", "B11"], SPEC) == [3, 2, 1, 0]
    assert select_bands(["b02", "b03", "b04", "b08"], SPEC) == [0, 1, 2, 3]  # case-insensitive


def test_select_bands_uses_documented_aliases():
    assert select_bands(["nir", "red", "green", "blue"], SPEC) == [3, 2, 1, 0]


def test_select_bands_error_lists_missing_bands():
    with pytest.raises(BandError) as exc:
        select_bands(["B02", "B03", "B11"], SPEC)
    msg = str(exc.value)
    assert "['B04', 'B08']" in msg  # what is missing
    assert "B11" in msg  # what the cube has
    assert "s2" in msg and "nir" in msg  # which encoder, and the accepted aliases
    assert isinstance(exc.value, InputError)


def test_unnamed_bands_are_not_taken_for_sentinel2_numbers():
    """b1..bN are the names a source gives bands it found no name for: hf took a 4-band blue, green, red, nir
    file's b4, b3, b2 (nir, red, green) as red, green, blue (a review); they are refused, asking for --bands."""
    from changescout.encoders import encoder_class

    hf = encoder_class("hf").declared_spec(patch_size=8)
    for spec in (hf, SPEC):
        with pytest.raises(BandError, match=r"the bands have no names \(b1..bN: files without band descriptions\): "
                                            r"name them with --bands"):
            select_bands(["b1", "b2", "b3", "b4"], spec)
    assert select_bands(["b1", "B02", "B03", "B04"], hf) == [3, 2, 1]  # named ones are read as before


def test_select_bands_any_band_list():
    spec = EncoderSpec(name="any", version="1", dim=8, patch_size=8, bands=None)
    assert select_bands(["a", "b", "c"], spec) == [0, 1, 2]


# -- weights files ------------------------------------------------------------------------------------
def test_check_weights_missing_and_checksum(tmp_path):
    spec = EncoderSpec(name="w", version="1", dim=8, patch_size=8, weights_file="w.pt", weights_url="https://example.org/w.pt",
                       weights_sha256=hashlib.sha256(b"good").hexdigest())
    with pytest.raises(WeightsError) as exc:
        base.check_weights(tmp_path / "w.pt", spec)
    assert "https://example.org/w.pt" in str(exc.value) and str(tmp_path / "w.pt") in str(exc.value)
    (tmp_path / "w.pt").write_bytes(b"bad")
    with pytest.raises(WeightsError, match="SHA-256"):
        base.check_weights(tmp_path / "w.pt", spec)
    (tmp_path / "w.pt").write_bytes(b"good")
    assert base.check_weights(tmp_path / "w.pt", spec) == tmp_path / "w.pt"
    assert base.sha256_file(tmp_path / "w.pt") == hashlib.sha256(b"good").hexdigest()


def _cube(bands, platform=None):
    import pandas as pd

    from changescout.cube import OutputGrid, make_cube

    grid = OutputGrid.from_bounds("EPSG:32613", 30, (0, 0, 240, 240))
    cube = make_cube(np.zeros((2, len(bands), 8, 8), np.float32), pd.to_datetime(["2008-05-21", "2008-06-14"]),
                     bands, grid)
    return cube.assign_coords(platform=("time", [platform] * 2)) if platform else cube


def test_landsat_band_numbers_are_not_taken_for_sentinel2s():
    """UAT: a Landsat series of bands b3, b4, b5 (TM red, near infrared, SWIR1) with galileo-nano read "the cube
    has ['b3', 'b4', 'b5'] and misses ['B02', 'B06', ...]": its b3 counted as Sentinel-2's B03 (green). The
    cube's family of platforms decides what a number means, as it does for the screens and the words."""
    from changescout.encoders.galileo import BAND_ALIASES, BANDS

    spec = EncoderSpec(name="galileo-nano", version="1", dim=8, patch_size=8, bands=BANDS, band_aliases=BAND_ALIASES)
    with pytest.raises(BandError) as exc:
        select_bands(_cube(["b3", "b4", "b5"], "landsat-5"), spec)
    msg = exc.value.message
    assert f"the cube has ['b3', 'b4', 'b5'] and misses {list(BANDS)}" in msg
    assert "'B3': 'B03'" not in msg  # (an alias that does not apply to Landsat numbers is not offered)
    assert msg.endswith("; the cube's bands are numbered as Landsat 4-7 (TM, ETM+)'s, not as Sentinel-2's: b3 is "
                        "red, b4 is near infrared, b5 is short-wave infrared 1")
    # Sentinel-2's own names, bare as its PROVENANCE writes them, still select (B8A makes the series Sentinel-2's)
    s2 = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    assert select_bands(_cube(s2), spec) == list(range(10)) == select_bands(_cube(s2, "sentinel-2a"), spec)
    with pytest.raises(BandError, match="misses"):  # the same names on a Landsat series are no Sentinel-2 bands
        select_bands(_cube(s2, "landsat-7"), spec)
    assert select_bands(_cube(["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16",
                               "swir22"], "landsat-8"), spec) == list(range(10))  # common names are common names


@pytest.mark.parametrize("name", ["galileo-nano", "presto"])
def test_a_pretrained_encoders_declared_spec_is_its_spec_once_built(name):
    """What `changescout encoders` shows before the weights are found is what the encoder says once built (here
    with random weights): the same bands, dimension, patch size, window and license, for other options too."""
    cls = encoder_class(name)
    built = cls.untrained(patch_size=32) if name == "galileo-nano" else cls(patch_size=32, weights="random")
    declared = cls.declared_spec(patch_size=32)
    for key in ("name", "bands", "dim", "patch_size", "window", "license", "weights_file", "input"):
        assert getattr(declared, key) == getattr(built.spec, key), key

    class Plugin(base.PretrainedEncoder):  # a plugin that cannot describe itself without its weights
        pass

    assert Plugin.declared_spec() is None


@pytest.mark.parametrize("name, options, message", [
    # values of the wrong type from a --config file ended in an internal error (exit 1), or were cut short
    ("rcf", {"dim": "x"}, r"rcf: dim must be a whole number"),
    ("rcf", {"kernel": "x"}, r"rcf: kernel must be a whole number"),
    ("rcf", {"bias": "x"}, r"rcf: bias must be a number"),
    ("rcf", {"pooling": "banana"}, r"rcf: pooling .* must be a number in \[1, inf\]"),
    ("rcf", {"n_whitening": -1}, r"rcf: n_whitening must be a whole number in \[128, inf\], got -1"),  # (failed mid-run)
    ("galileo-nano", {"token_size": "big"}, r"galileo-nano: token_size \(px\) must be a whole number in \[1, 8\], got 'big'"),
    ("galileo-nano", {"token_size": 4.7}, r"token_size \(px\) must be a whole number in \[1, 8\], got 4.7"),  # (was cut to 4)
    ("galileo-nano", {"seed": "abc"}, r"galileo-nano: seed must be a whole number"),
    ("galileo-nano", {"device": "banana"}, r"device 'banana' is not one this torch can use .*use 'cpu'"),
    # (torch makes tensors on it, which hold no values: the run ended in an internal error, exit 1; a review)
    ("galileo-nano", {"device": "meta"}, r"device 'meta' is not one this torch can use \(a meta device computes no values\)"),
    ("presto", {"context": "x"}, r"presto: context must be a whole number in \[1, 24\]"),
    ("presto", {"batch_size": 2.5}, r"presto: batch_size must be a whole number"),
    ("presto", {"device": "cuda:7" if not __import__("torch").cuda.is_available() else "banana"}, r"is not one this torch can use"),
])
def test_encoder_option_values_of_the_wrong_type_are_refused_as_bad_input(name, options, message):
    with pytest.raises(InputError, match=message) as told:
        get_encoder(name, **({"weights": "random"} if name == "presto" else {}), **options)
    assert told.value.exit_code == 2


def test_a_run_is_told_when_a_model_pretrained_on_l1c_embeds_surface_reflectance():
    """Galileo and Presto were pretrained on Sentinel-2 Level-1C top-of-atmosphere reflectance (a review): a
    series of surface reflectance is another domain for them, which nothing said."""
    from changescout.encoders.base import level_note
    from changescout.encoders.galileo import GalileoNanoEncoder
    from changescout.encoders.presto import PrestoEncoder

    galileo, presto = GalileoNanoEncoder.untrained(), PrestoEncoder(weights="random")
    note = level_note(galileo, "L2A")
    assert note.startswith("note: galileo-nano was pretrained on Sentinel-2 Level-1C top-of-atmosphere reflectance; "
                           "this series is Level-2A surface reflectance (L2A)")
    assert "Level-3A composite surface" in level_note(presto, "L3A")
    assert [level_note(e, lv) for e in (galileo, presto) for lv in ("L1C", "unknown", None, "synthetic", "L2")] == [None] * 10
    assert level_note(get_encoder("rcf"), "L2A") is None  # it learns its filters from the series itself
