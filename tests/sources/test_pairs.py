"""A/B/label pairs: the real LEVIR-CD samples (skipped when absent) and tiny pairs generated here."""

import warnings

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from changescout.cube import grid_of
from changescout.errors import SourceError
from changescout.sources import open_series, pairs

#: Change fractions of the LEVIR-CD samples, in percent (their PROVENANCE.md).
LEVIR_CHANGE = {"test_102_0512_0000": 20.7, "test_7_0256_0512": 13.7, "train_386_0512_0768": 0.0, "val_27_0000_0256": 12.1}


@pytest.fixture
def levir(real_data):
    path = real_data / "levir_cd_samples"
    if not path.is_dir():
        pytest.skip(f"LEVIR-CD samples not found at {path}")
    return path


def test_levir_samples(levir):
    names = pairs.list_items(levir)
    assert len(names) == 11 and set(LEVIR_CHANGE) <= set(names)
    for name, percent in LEVIR_CHANGE.items():
        item = pairs.load_item(levir, name)
        assert item.label.shape == (256, 256) == (item.cube.sizes["y"], item.cube.sizes["x"])
        assert item.label.dtype == bool and item.valid.all()
        assert 100 * item.change_fraction == pytest.approx(percent, abs=0.05)
    cube = item.cube
    assert pairs.is_pixel_grid(cube) and cube.attrs["crs_fallback"] == "pixel"
    assert list(cube.band.values) == ["red", "green", "blue"] and cube.dtype == np.float32
    assert float(cube.min()) >= 0 and float(cube.max()) <= 1
    assert "placeholder" in cube.attrs["dates"]
    assert list(pd.DatetimeIndex(cube.time.values)) == list(pd.to_datetime(pairs.PLACEHOLDER_DATES))
    grid = grid_of(cube)
    assert grid.transform == (1.0, 0.0, 0.0, 0.0, -1.0, 256.0)
    assert cube.x.values[0] == 0.5 and cube.y.values[0] == 255.5  # x = col + 0.5, y = H - row - 0.5


def _write(path, data, **profile):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    driver = "PNG" if path.suffix == ".png" else "GTiff"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver=driver, width=data.shape[2], height=data.shape[1], count=data.shape[0],
                           dtype=data.dtype.name, **profile) as dst:
            dst.write(data)
    return path


def make_pairs(root, names=("p1", "p2"), size=(24, 32), seed=3):
    """Tiny RGB pairs: B = A with a bright 8x8 square at rows 4..12, cols 6..14, labelled 255."""
    rng = np.random.default_rng(seed)
    for name in names:
        a = rng.integers(0, 200, (3, *size), dtype=np.uint8)
        b = a.copy()
        b[:, 4:12, 6:14] = 250
        label = np.zeros((1, *size), np.uint8)
        label[:, 4:12, 6:14] = 255
        _write(root / "A" / f"{name}.png", a)
        _write(root / "B" / f"{name}.png", b)
        _write(root / "label" / f"{name}.png", label)
    return root


def test_generated_pairs(tmp_path):
    root = make_pairs(tmp_path)
    assert pairs.list_items(root) == ["p1", "p2"]
    item = pairs.load_item(root, "p2")
    with rasterio.open(root / "A" / "p2.png") as src:
        a = src.read()
    np.testing.assert_allclose(item.cube.isel(time=0).values, a / 255, rtol=1e-6)
    assert np.allclose(item.cube.isel(time=1).values[:, 4:12, 6:14], 250 / 255)
    assert item.label.sum() == 64 and item.label[4:12, 6:14].all() and item.change_fraction == 64 / (24 * 32)
    assert item.files["label"].endswith("label/p2.png")


def test_run_source(tmp_path):
    root = make_pairs(tmp_path)
    cube = open_series(root / "A" / "p1.png")
    assert cube.attrs["source_kind"] == "pairs" and cube.attrs["label"] == "p1" and cube.sizes["time"] == 2
    with pytest.raises(SourceError) as err:
        open_series(root)
    # UAT: it said "pass item= one of [...]", an option the command line does not have: what works there first
    assert err.value.message == (f"holds 2 pairs, and a run takes one: pass one pair's A image as SOURCE, e.g. "
                                 f"{root / 'A' / 'p1.png'} (pairs: p1, p2); from Python, item=NAME; in a --config "
                                 'file, "source_options": {"item": NAME}')
    cube = open_series(root, item="p2", dates=["2015-06-01", "2019-06-01"], bands=["red"])
    assert cube.attrs["dates"] == "given" and cube.sizes["band"] == 1
    assert pd.Timestamp(cube.time.values[1]) == pd.Timestamp("2019-06-01")


def test_the_second_dates_image_names_the_same_pair_as_the_first(tmp_path):
    """UAT: ``B/<name>.png`` was refused with "cannot tell what kind of source this is" where ``A/<name>.png``
    ran: either image of a pair is the pair."""
    from changescout.sources import sniff_kind

    root = make_pairs(tmp_path)
    assert sniff_kind(root / "B" / "p2.png") == sniff_kind(root / "A" / "p2.png") == "pairs"
    a, b = open_series(root / "A" / "p2.png"), open_series(root / "B" / "p2.png")
    assert b.attrs["label"] == "p2" and b.attrs["source_files"] == a.attrs["source_files"]
    np.testing.assert_array_equal(b.values, a.values)  # A's image first, whichever was given
    assert not pairs.sniff(root / "label" / "p2.png")  # (a label is no image of the series)


def test_a_run_on_a_pair_without_dates_says_its_dates_are_placeholders(tmp_path):
    """UAT: a LEVIR-CD pair ran with 2000-01-01 and 2001-01-01 in its ids, tables and report, and nothing said
    they were made up."""
    from changescout.cube import grid_of
    from changescout.pipeline import input_notes

    root = make_pairs(tmp_path)
    cube = open_series(root / "A" / "p1.png")
    notes = input_notes(cube, {}, grid_of(cube), given_grid=True)
    assert notes == ["note: the images have no dates: 2000-01-01 and 2001-01-01 stand for them in the ids, tables and "
                     "report; give --dates T0,T1 for the real ones"]
    # nor a georeference: the grid is named as pixels, not as the pixel CRS's WKT
    grid_note = input_notes(cube, {}, grid_of(cube), given_grid=False)[0]
    assert grid_note == ("grid: image pixels (the images are not georeferenced), 32 x 32 px, the images' 32 x 24 px "
                         "extended to whole patches; areas are not known")
    given = open_series(root / "A" / "p1.png", dates=["2015-06-01", "2019-06-01"])
    assert input_notes(given, {}, grid_of(given), given_grid=True) == []


def test_name_mismatches_name_the_file(tmp_path):
    root = make_pairs(tmp_path)
    (root / "B" / "p2.png").unlink()
    with pytest.raises(SourceError, match=r"A/p2.png: has no counterpart B/p2\.\*"):
        pairs.list_items(root)
    make_pairs(root)
    _write(root / "label" / "extra.png", np.zeros((1, 24, 32), np.uint8))
    with pytest.raises(SourceError, match=r"label/extra.png: has no counterpart A/extra\.\*"):
        pairs.list_items(root)
    assert pairs.list_items(root, labelled=False) == ["p1", "p2"]
    with pytest.raises(SourceError, match="has no image named 'nope'"):
        pairs.load_item(root, "nope")


def test_shape_mismatches_name_the_file(tmp_path):
    root = make_pairs(tmp_path)
    _write(root / "B" / "p1.png", np.zeros((3, 24, 30), np.uint8))
    with pytest.raises(SourceError, match=r"B/p1.png: is 24x30 px but p1.png in A/ is 24x32 px"):
        pairs.load_item(root, "p1")
    _write(root / "label" / "p2.png", np.zeros((1, 20, 32), np.uint8))
    with pytest.raises(SourceError, match=r"label/p2.png: the label is 20x32 px but A/p2 is 24x32 px"):
        pairs.load_item(root, "p2")
    _write(root / "A" / "p2.tif", np.zeros((3, 24, 32), np.uint8))
    with pytest.raises(SourceError, match="two images named 'p2': p2.png and p2.tif"):
        pairs.list_items(root)


def test_georeferenced_tif_pair_keeps_its_crs(tmp_path):
    transform = rasterio.transform.from_origin(500000, 4000000, 0.5, 0.5)
    for folder in ("A", "B"):
        _write(tmp_path / folder / "x.tif", np.full((3, 16, 16), 100, np.uint8), crs="EPSG:32631", transform=transform)
    _write(tmp_path / "label" / "x.tif", np.zeros((1, 16, 16), np.uint8))
    item = pairs.load_item(tmp_path, "x")
    assert grid_of(item.cube).crs == "EPSG:32631" and not pairs.is_pixel_grid(item.cube)
    assert grid_of(item.cube).affine.almost_equals(transform) and not item.label.any()


def test_a_b_image_georeferenced_elsewhere_is_refused_not_stacked_off_its_place(tmp_path):
    # B 3 px (1.5 m) east of A: compared pixel for pixel, every pixel of B would be taken for A's neighbour
    for folder, east in (("A", 0.0), ("B", 1.5)):
        _write(tmp_path / folder / "x.tif", np.full((3, 16, 16), 100, np.uint8), crs="EPSG:32631",
               transform=rasterio.transform.from_origin(500000 + east, 4000000, 0.5, 0.5))
    with pytest.raises(SourceError, match=r"B/x.tif: is georeferenced on another grid than x.tif in A/ "
                                          r"\(EPSG:32631, origin 500001.5, 4000000, pixel 0.5 x 0.5 against .*origin 500000,"):
        open_series(tmp_path / "A" / "x.tif")


def test_given_dates_bands_and_options_are_checked(tmp_path):
    root = make_pairs(tmp_path)
    # the dates name A then B: reversed, B would silently become the earlier image
    with pytest.raises(SourceError, match=r"--dates must be strictly increasing, since they name the images in A/ and "
                                          r"B/ in order: date 2 \(2015-06-01\) is earlier than date 1 \(2019-06-01\)"):
        pairs.open(root, item="p2", dates=["2019-06-01", "2015-06-01"])
    with pytest.raises(SourceError, match=r"band names must be unique, but red occurs more than once in --bands"):
        pairs.open(root, item="p2", bands=["red", "red"])
    with pytest.raises(SourceError, match=r"--grid and --mask do not apply"):
        pairs.open(root, item="p2", mask=root / "label")


def test_labels_of_any_colour_are_read_as_change(tmp_path):
    """An RGB label is change wherever any colour band is set: green or blue change is not read as 'no change'
    (only the red band used to be read); an alpha band is ignored; 0/1 and 0/255 single-band masks still read."""
    root = make_pairs(tmp_path, names=("p1",))
    square = np.zeros((24, 32), bool)
    square[4:12, 6:14] = True

    def rgb(*colour):
        return np.stack([np.where(square, c, 0) for c in colour]).astype(np.uint8)

    _write(root / "label" / "p1.png", rgb(0, 255, 0))  # a green-coded change mask
    item = pairs.load_item(root, "p1")
    assert item.label.sum() == 64 and item.label[4:12, 6:14].all()
    labels = {"gray255": square[None].astype(np.uint8) * 255, "gray01": square[None].astype(np.uint8),
              "white": rgb(255, 255, 255), "red": rgb(255, 0, 0), "green": rgb(0, 255, 0), "blue": rgb(0, 0, 255),
              "green_opaque": np.concatenate([rgb(0, 255, 0), np.full((1, 24, 32), 255, np.uint8)])}
    for name, label in labels.items():
        profile = {"photometric": "RGB", "alpha": "YES"} if label.shape[0] == 4 else {}
        path = _write(tmp_path / "labels" / f"{name}.tif", label, **profile)
        np.testing.assert_array_equal(pairs.read_label(path), square, err_msg=name)
    path = _write(tmp_path / "labels" / "palette.tif", square[None].astype(np.uint8) * 3, photometric="palette")
    with rasterio.open(path, "r+") as dst:  # index 3 is green: read through the palette, not as the value 3
        dst.write_colormap(1, {0: (0, 0, 0, 255), 3: (0, 200, 0, 255)})
    np.testing.assert_array_equal(pairs.read_label(path), square)


def test_integer_images_other_than_8_bit_say_what_a_command_line_user_can_do(tmp_path):
    root = make_pairs(tmp_path, names=("p1",))
    _write(root / "A" / "p1.png", np.full((3, 24, 32), 1000, np.uint16))
    with pytest.raises(SourceError, match=r"A/p1.png: holds uint16 values, not 8-bit RGB: convert the images to 8-bit "
                                          r"RGB \(e.g. gdal_translate -ot Byte -scale"):
        pairs.load_item(root, "p1")


def test_a_run_on_an_image_pair_writes_its_outputs_in_pixel_coordinates(tmp_path):
    """`changescout run A/p1.png` (a pair without CRS): objects have no area (NaN: pixels are no ground area)
    and the report gives x, y in pixels with no lon, lat; both crashed on the pixel grid's CRS (ProjError)."""
    import geopandas as gpd

    from changescout.pipeline import RunConfig, run_pipeline

    root = make_pairs(tmp_path / "pairs", names=("p1",), size=(96, 96))
    out = run_pipeline(RunConfig(source=str(root / "A" / "p1.png"), patch_size=16), tmp_path / "run", log=lambda *a: None)
    objects = gpd.read_parquet(out / "objects.parquet")
    assert objects["area_ha"].isna().all()
    # a pair gives each patch one change: no history to compare it with, so its zscore is unknown (it read
    # 0, "ordinary for the place"), and the events rank by their surprise among the candidates' rarity
    events = gpd.read_parquet(out / "events.parquet")
    assert events["zscore"].isna().all() and objects["zscore"].isna().all()
    assert events["atypicality"].notna().all() and (events["atypicality"] > 0).any()
    html = (out / "report.html").read_text()
    first = objects.sort_values("rank").iloc[0].geometry.centroid
    assert f"{first.x:.0f}, {first.y:.0f}" in html


def test_changes_of_two_image_pairs_are_not_taken_for_one_change(tmp_path):
    """Pairs without georeferencing share a pixel CRS, placeholder dates and a transform, but no place: the
    results of a search over two pairs' runs were deduplicated as one change seen twice."""
    from changescout.events import read_events
    from changescout.pipeline import RunConfig, run_pipeline
    from changescout.similar import find_similar

    root = make_pairs(tmp_path / "pairs", names=("p1", "p2"), size=(96, 96))
    quiet = {"log": lambda *a: None}
    one = run_pipeline(RunConfig(source=str(root / "A" / "p1.png"), patch_size=16), tmp_path / "one", **quiet)
    two = run_pipeline(RunConfig(source=str(root / "A" / "p2.png"), patch_size=16, weights=str(one / "rcf_weights.npz")),
                       tmp_path / "two", **quiet)
    query = read_events(one).sort_values("rank").iloc[0]
    res = find_similar(one, query["event_id"], k=20, other_runs=[two])
    assert res.attrs["seen_twice"] == 0 and res.attrs["same_change_elsewhere"] == 0
    assert (res["run"] == str(two)).sum() >= 10  # the other pair's changes at the same pixels are listed too


def test_a_change_in_the_strip_past_the_last_whole_patch_is_found(tmp_path):
    """A pair (or OSCD city) is read on its own grid, rarely a multiple of the patch size; the patch grid kept
    whole patches only, and a run never looked at the right and bottom strips (8.5 % of bercy's labelled
    change). The cube is now extended there, as nodata, to whole patches; the image's pixels stay in place, and
    an edge patch is judged by the part of it the image covers (a strip of 10 px of 16 fell short of
    --min-clear 0.75 as a fraction of the whole patch); a strip under a quarter of a patch is left out."""
    from changescout.events import read_events
    from changescout.pipeline import RunConfig, run_pipeline

    rng = np.random.default_rng(5)
    a = rng.integers(60, 120, (3, 90, 83), dtype=np.uint8)
    b = a.copy()
    b[:, 82:90, 18:30] = 250  # in the bottom strip past 80 px (5 whole patches of 16), 10 px high
    _write(tmp_path / "pairs" / "A" / "x.png", a)
    _write(tmp_path / "pairs" / "B" / "x.png", b)
    cube = open_series(tmp_path / "pairs" / "A" / "x.png", patch_size=16)
    assert (cube.sizes["y"], cube.sizes["x"]) == (96, 96)
    np.testing.assert_allclose(cube.isel(time=0).values[:, :90, :83], a / 255, rtol=1e-6)
    assert np.isnan(cube.values[:, :, 90:, :]).all() and np.isnan(cube.values[:, :, :, 83:]).all()
    assert (cube["quality"].values[:, 90:, :] == 1).all() and (cube["quality"].values[:, :90, :83] == 0).all()
    out = run_pipeline(RunConfig(source=str(tmp_path / "pairs" / "A" / "x.png"), patch_size=16), tmp_path / "run",
                       log=lambda *a: None)
    events = read_events(out)
    top = events.sort_values("rank").iloc[0]
    assert (top["row"], top["col"]) == (5, 1) and top["clear_fraction"] == 1  # all that the image covers is clear
    assert set(events["row"]) == set(range(6)) and set(events["col"]) == set(range(5))  # col 5: 3 px of 16
