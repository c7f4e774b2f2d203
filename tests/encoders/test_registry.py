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
