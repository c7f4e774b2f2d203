import importlib.metadata

import pytest

import make_sources as ms
from changescout.errors import ConfigError, SourceError
from changescout.sources import GridSpec, available_sources, get_source, open_series, sniff_kind
from changescout.sources import registry


def test_builtin_kinds_are_available():
    assert {"geotiff", "stacked", "datacube"} <= set(available_sources())


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda p: (p / "cube.zarr").mkdir(), "datacube"),
        (lambda p: ((p / "store").mkdir(), (p / "store" / ".zgroup").write_text("{}")), "datacube"),
        (lambda p: ((p / "store").mkdir(), (p / "store" / "zarr.json").write_text("{}")), "datacube"),
        (lambda p: (p / "cube.nc").write_bytes(b""), "datacube"),
        (lambda p: (p / "cube.h5").write_bytes(b""), "datacube"),
        (lambda p: (p / "folder").mkdir(), "geotiff"),
        (lambda p: (p / "stack.TIF").write_bytes(b""), "stacked"),
    ],
)
def test_sniff_kind(tmp_path, make, kind):
    make(tmp_path)
    (target,) = list(tmp_path.iterdir())
    assert sniff_kind(target) == kind


def test_sniff_synthetic_by_name():
    assert sniff_kind("synthetic") == "synthetic"
    assert sniff_kind("synthetic:seed=2") == "synthetic"


def test_unknown_path_and_kind_list_the_available_kinds(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(SourceError, match="cannot tell what kind") as err:
        open_series(notes)
    assert str(notes) in str(err.value) and "geotiff" in str(err.value) and "datacube" in str(err.value)
    assert "pass --kind, one of" in str(err.value) and "kind=" not in str(err.value)
    with pytest.raises(SourceError, match="unknown source kind 'bogus'; available kinds: .*stacked"):
        open_series(notes, kind="bogus")
    with pytest.raises(SourceError, match="does not exist"):
        open_series(tmp_path / "missing")
    # a folder given as a stacked file "did not exist" (a UAT): it is named as a folder
    with pytest.raises(SourceError, match=r"is a folder, not a raster file: .* leave --kind out"):
        open_series(tmp_path, kind="stacked", dates=["2021-01-01"])


def _fake_entry_points(monkeypatch, **plugins):
    eps = [importlib.metadata.EntryPoint(name, value, registry.ENTRY_POINT_GROUP) for name, value in plugins.items()]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [e for e in eps if e.group == group])


def test_plugins_are_listed_used_and_broken_ones_warn(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, mystack="changescout.sources.stacked", broken="no_such_module_for_changescout")
    assert {"mystack", "broken"} <= set(available_sources())
    path = ms.stacked_file(tmp_path / "s.tif", dates=ms.DATES[:2])
    cube = open_series(path, kind="mystack", dates=ms.DATES[:2], bands=ms.BANDS)
    assert cube.attrs["source_kind"] == "mystack" and cube.sizes["time"] == 2
    with pytest.raises(SourceError, match="plugin 'broken' failed to load"):
        get_source("broken")
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.warns(RuntimeWarning, match="plugin 'broken'"), pytest.raises(SourceError, match="mystack"):
        sniff_kind(notes)


def test_synthetic_route_passes_options():
    pytest.importorskip("changescout.sources.synthetic")
    cube = open_series("synthetic", seed=3, size=128, n_dates=4)
    assert cube.attrs["source_kind"] == "synthetic" and cube.sizes["time"] == 4


@pytest.mark.parametrize(
    "text, spec",
    [
        ("EPSG:32631", GridSpec("EPSG:32631")),
        ("EPSG:32631,10", GridSpec("EPSG:32631", 10.0)),
        ("EPSG:32631, 20.5", GridSpec("EPSG:32631", 20.5)),
        ("EPSG:32631,10,355000,4834000,356000,4835000", GridSpec("EPSG:32631", 10.0, (355000.0, 4834000.0, 356000.0, 4835000.0))),
        (",30", GridSpec(None, 30.0)),
    ],
)
def test_gridspec_parse(text, spec):
    assert GridSpec.parse(text) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("EPSG:32631,ten", "must be numbers"),
        ("NOT_A_CRS,10", "'NOT_A_CRS' is not a CRS"),
        ("EPSG:32631,10,1,2", "expected CRS"),
        ("EPSG:32631,-5", "positive"),
    ],
)
def test_gridspec_parse_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        GridSpec.parse(text)


def test_duplicate_bands_are_refused_for_every_kind_before_reading(tmp_path, monkeypatch):
    import changescout.sources.registry as registry

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was opened")

    monkeypatch.setattr(registry, "get_source", no_reading)
    for source in (tmp_path / "any.tif", "synthetic"):
        for bands in (["B02", "B11", "B11", "B02"], "B02,B11,B11,B02"):
            with pytest.raises(SourceError, match=r"band names must be unique, but B02, B11 occur more than once in "
                                                  r"--bands \(B02, B11, B11, B02\)") as err:
                open_series(source, kind="stacked", bands=bands)
            assert str(source) in str(err.value)


def test_a_source_option_the_source_does_not_take_is_refused_by_name(tmp_path):
    """``source_options`` from --config went into the source's open() as they were: a misspelt one was an
    internal error (TypeError, exit 1; UAT)."""
    ms.multiband_folder(tmp_path / "series")
    with pytest.raises(ConfigError, match="source kind 'geotiff' takes no option 'scale_factr'; its options: .*scale_factor"):
        open_series(tmp_path / "series", scale_factr=1e-4)


@pytest.mark.parametrize("size", [-16, 2.5, 0, "16", True])
def test_a_patch_size_that_is_no_whole_number_of_pixels_is_refused(size):
    """A negative or fractional patch size snapped the grid with it and silently cropped rows and columns of
    data; an rcf encoder built with 0 failed later with a ZeroDivisionError."""
    from changescout.encoders import get_encoder

    with pytest.raises(ConfigError, match="patch_size must be a positive integer number of pixels"):
        open_series("synthetic:size=128", patch_size=size)
    with pytest.raises(ConfigError, match="patch_size must be a positive integer number of pixels"):
        get_encoder("rcf", patch_size=size)


def test_a_whole_labelled_dataset_given_as_a_source_says_to_pass_one_item(tmp_path):
    """OSCD's root, read as a folder of GeoTIFFs, was refused for a label file's CRS, with the advice to write one
    into the dataset's label (gdal_edit.py); a run takes one city (a review)."""
    from changescout.errors import SourceError
    from changescout.sources.registry import sniff_kind

    for city in ("abudhabi", "bercy", "nantes"):
        for d in ("imgs_1", "imgs_2", "cm"):
            (tmp_path / "oscd" / city / d).mkdir(parents=True)
    with pytest.raises(SourceError, match=r"oscd: holds 3 OSCD cities \(abudhabi, bercy, nantes\), and a run takes one: "
                                          r"pass one city folder as SOURCE \(changescout benchmark oscd --root"):
        sniff_kind(tmp_path / "oscd")
    assert sniff_kind(tmp_path / "oscd" / "bercy") == "oscd"
