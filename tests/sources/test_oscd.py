"""OSCD loader on the real cities in ../shared/data/oscd (skipped when absent) and layouts built from them."""

import shutil

import numpy as np
import pandas as pd
import pytest
import rasterio

from changescout.cube import grid_of
from changescout.errors import SourceError
from changescout.sources import open_series, oscd

CITIES = ["abudhabi", "aguasclaras", "beirut", "bercy", "cupertino", "nantes", "rennes"]
IMAGES = "Onera Satellite Change Detection dataset - Images"
TRAIN = "Onera Satellite Change Detection dataset - Train Labels"
TEST = "Onera Satellite Change Detection dataset - Test Labels"


@pytest.fixture
def root(real_data):
    path = real_data / "oscd"
    if not path.is_dir():
        pytest.skip(f"OSCD not found at {path}")
    return path


def _header(path):
    with rasterio.open(path) as src:
        return src.transform, src.shape


def test_list_items(root):
    assert oscd.list_items(root) == CITIES


def test_bercy_item_sits_on_the_imgs_1_b02_grid(root):
    item = oscd.load_item(root, "bercy")
    cube = item.cube
    b02 = oscd.band_files(root / "bercy" / "imgs_1")["B02"]
    transform, shape = _header(b02)
    assert (cube.sizes["y"], cube.sizes["x"]) == shape == item.label.shape == item.valid.shape
    assert grid_of(cube).affine.almost_equals(transform) and grid_of(cube).crs == "EPSG:4326"
    assert list(cube.band.values) == list(oscd.BANDS) and cube.sizes["band"] == 13
    assert list(pd.DatetimeIndex(cube.time.values)) == [pd.Timestamp("2016-11-30"), pd.Timestamp("2017-08-29")]
    assert cube.attrs["level"] == "L1C" and cube.attrs["scale_factor"] == 1e-4 and cube.dtype == np.float32
    with rasterio.open(b02) as src:
        np.testing.assert_allclose(cube.sel(band="B02").isel(time=0).values, src.read(1) / 10000, atol=1e-6)
    # 1 = no change, 2 = change in the file: 1046 change pixels of 142200
    assert item.label.dtype == bool and item.label.sum() == 1046
    assert item.change_fraction == pytest.approx(1046 / 142196, rel=1e-3)
    assert (~item.valid).sum() == 4  # one DN 0 (no data) in a 60 m band of bercy
    values = cube.values[:, :, item.valid]
    assert np.isfinite(values).all() and 0 < values.min() and values.max() < 3


def test_abudhabi_imgs_2_with_other_pixels_lands_on_the_same_grid(root):
    city = root / "abudhabi"
    cube = oscd.open(city, bands=["B02", "B08"])
    b02_1, b08_2 = oscd.band_files(city / "imgs_1")["B02"], oscd.band_files(city / "imgs_2")["B08"]
    (_, shape1), (_, shape2) = _header(b02_1), _header(b08_2)
    assert shape2 != shape1 and (cube.sizes["y"], cube.sizes["x"]) == shape1 == (799, 785)
    label = oscd.read_label(city / "cm" / "abudhabi-cm.tif")
    assert label.shape == shape1 and label.mean() == pytest.approx(23592 / (603623 + 23592))
    nir = cube.sel(band="B08").values
    assert np.isfinite(nir).all()
    h, w = shape1
    top_left, bottom_right = (slice(10, h // 2), slice(10, w // 2)), (slice(h // 2, h - 10), slice(w // 2, w - 10))
    warped_tl, warped_br = _best_shift(nir[0], nir[1], top_left), _best_shift(nir[0], nir[1], bottom_right)
    assert warped_tl == warped_br and max(map(abs, warped_br)) <= 1  # ~1 px misregistration, no drift
    with rasterio.open(b08_2) as src:
        padded = np.zeros(shape1)
        padded[: shape2[0], : shape2[1]] = src.read(1)
    naive_br = _best_shift(nir[0], padded, bottom_right)
    assert max(abs(a - b) for a, b in zip(naive_br, warped_br)) >= 2  # padding instead of warping drifts


def _best_shift(a, b, window, reach=4):
    scores = {}
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            shifted = np.roll(b, (dy, dx), axis=(0, 1))[window]
            scores[(dy, dx)] = np.corrcoef(a[window].ravel(), shifted.ravel())[0, 1]
    return max(scores, key=scores.get)


def test_official_two_tree_layout(root, tmp_path):
    for tree, city in ((TRAIN, "bercy"), (TEST, "rennes"), (None, "nantes")):
        images = tmp_path / IMAGES / city
        images.mkdir(parents=True)
        for name in ("imgs_1", "imgs_2", "dates.txt"):
            (images / name).symlink_to(root / city / name)
        if tree:
            (tmp_path / tree / city).mkdir(parents=True)
            (tmp_path / tree / city / "cm").symlink_to(root / city / "cm")
    (tmp_path / IMAGES / "train.txt").write_text("bercy\n")
    assert oscd.list_items(tmp_path) == ["bercy", "rennes"]
    assert oscd.list_items(tmp_path, labelled=False) == ["bercy", "nantes", "rennes"]
    item = oscd.load_item(tmp_path, "bercy")
    assert item.label.sum() == 1046 and item.files["label"].startswith(str(tmp_path / TRAIN))
    assert oscd.city_folder(tmp_path, "rennes") == tmp_path / IMAGES / "rennes"
    with pytest.raises(SourceError, match="no change label for 'nantes'"):
        oscd.load_item(tmp_path, "nantes")
    with pytest.raises(SourceError, match="no OSCD city 'paris'.*bercy"):
        oscd.load_item(tmp_path, "paris")


def test_run_source_is_sniffed(root):
    cube = open_series(root / "bercy", bands=["B02", "B03", "B04"], chunks=256)
    assert cube.attrs["source_kind"] == "oscd" and cube.attrs["label"] == "bercy"
    assert cube.sizes["band"] == 3 and cube.data.chunksize[2:] == (256, 256)


def _copy_city(root, tmp_path, city="bercy"):
    folder = tmp_path / city
    for name in ("imgs_1", "imgs_2", "cm"):
        shutil.copytree(root / city / name, folder / name)
    shutil.copy(root / city / "dates.txt", folder / "dates.txt")
    return folder


def test_errors_name_the_file(root, tmp_path):
    folder = _copy_city(root, tmp_path)
    next((folder / "imgs_2").glob("*_B8A.tif")).unlink()
    with pytest.raises(SourceError, match=r"imgs_2: has no file for band\(s\) \['B8A'\]"):
        oscd.open(folder)
    shutil.copytree(root / "bercy" / "imgs_2", folder / "imgs_2", dirs_exist_ok=True)
    b03 = next((folder / "imgs_2").glob("*_B03.tif"))
    with rasterio.open(b03, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint16") as dst:
        dst.write(np.ones((1, 10, 10), np.uint16))  # no CRS, no geotransform: it was warped as if at the origin
    with pytest.raises(SourceError, match=r"_B03.tif: has no georeferencing"):
        oscd.open(folder).load()
    shutil.copytree(root / "bercy" / "imgs_2", folder / "imgs_2", dirs_exist_ok=True)
    (folder / "dates.txt").unlink()  # (the benchmark has no --dates: the message says what to add)
    with pytest.raises(SourceError, match=r"bercy: no dates.txt: add one with the lines 'date_1: YYYYMMDD'"):
        oscd.open(folder)
    (folder / "dates.txt").write_text("first: 2016\n")
    with pytest.raises(SourceError, match="dates.txt: expected the lines"):
        oscd.open(folder)
    (folder / "dates.txt").write_text("date_1: 20170829\ndate_2: 20161130\n")
    with pytest.raises(SourceError, match=r"dates.txt: date_2 \(2016-11-30\) must be after date_1 \(2017-08-29\)"):
        oscd.open(folder)
    (folder / "dates.txt").write_text("date_1: 20161341\ndate_2: 20170829\n")
    with pytest.raises(SourceError, match="dates.txt: date_1: 20161341 is not a date"):
        oscd.open(folder)
    (folder / "dates.txt").write_text("date_1: 20161130\ndate_2: 20170829\n")
    label = folder / "cm" / "bercy-cm.tif"
    with rasterio.open(label, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 10, 10), 2, np.uint8))
    with pytest.raises(SourceError, match="bercy-cm.tif: the label is 10x10 px but the imgs_1 B02 grid is 395x360"):
        oscd.load_item(tmp_path, "bercy")
    with rasterio.open(label, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 10, 10), 7, np.uint8))
    with pytest.raises(SourceError, match=r"found values \[7\]"):
        oscd.read_label(label)


def test_label_conventions(tmp_path):
    def write(name, values):
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8") as dst:
            dst.write(np.asarray(values, np.uint8).reshape(1, 2, 2))
        return path

    assert oscd.read_label(write("a.tif", [1, 2, 1, 1])).tolist() == [[False, True], [False, False]]
    assert oscd.read_label(write("b.tif", [0, 1, 0, 0])).tolist() == [[False, True], [False, False]]
    assert not oscd.read_label(write("c.tif", [1, 1, 1, 1])).any()  # all "no change" (1/2 convention)


def test_given_dates_and_bands_are_checked(root):
    folder = root / "bercy"
    with pytest.raises(SourceError, match=r"bercy: --dates must be strictly increasing, since they name imgs_1/ and "
                                          r"imgs_2/ in order: date 2 \(2016-11-30\) is earlier than date 1"):
        oscd.open(folder, dates=["2017-08-29", "2016-11-30"])
    with pytest.raises(SourceError, match=r"bercy: band names must be unique, but B04 occurs more than once in --bands"):
        oscd.open(folder, bands=["B04", "B08", "B04"])
    with pytest.raises(SourceError, match=r"bercy: OSCD images have no quality mask; --mask does not apply"):
        oscd.open(folder, mask=folder / "cm")


def test_skipped_names_unlabelled_cities_and_folders_that_are_not_cities(tmp_path):
    for city in ("paris", "lyon"):
        for d in ("imgs_1", "imgs_2"):
            (tmp_path / city / d).mkdir(parents=True)
    (tmp_path / "paris" / "cm").mkdir()
    (tmp_path / "paris" / "cm" / "paris-cm.tif").touch()
    (tmp_path / "nantes").mkdir()  # an empty city folder
    (tmp_path / "rennes" / "imgs_1").mkdir(parents=True)  # an unfinished one
    assert oscd.list_items(tmp_path) == ["paris"]
    assert oscd.skipped(tmp_path) == [
        f"lyon skipped: no change label, expected {tmp_path / 'lyon' / 'cm' / 'lyon-cm.tif'} (or cm.png beside it)",
        "nantes/ skipped: not an OSCD city folder (it has no imgs_1/ and imgs_2/) and holds no city folders",
        "rennes/ skipped: not an OSCD city folder (it has no imgs_2/) and holds no city folders"]


def test_a_city_folder_given_as_the_root_is_told_to_give_its_parent(tmp_path):
    """--root oscd/bercy (a city, not the folder of cities) said only that it holds no city folder (a review)."""
    for d in ("imgs_1", "imgs_2", "cm"):
        (tmp_path / "paris" / d).mkdir(parents=True)
    (tmp_path / "paris" / "cm" / "paris-cm.tif").touch()
    assert oscd.list_items(tmp_path) == ["paris"]
    with pytest.raises(SourceError, match=r"paris: holds no labelled OSCD city folder .*\(it is a city folder itself: "
                                          r"give the folder that holds the cities\)"):
        oscd.list_items(tmp_path / "paris")


def test_a_city_without_a_label_in_the_official_layout_names_the_label_trees(tmp_path):
    """Images and labels in sibling trees (the official download): the note sent the user to
    Images/<city>/cm/, where no label of that layout lies (a review)."""
    for city in ("bercy", "nantes"):
        for d in ("imgs_1", "imgs_2"):
            (tmp_path / IMAGES / city / d).mkdir(parents=True)
    (tmp_path / TRAIN / "bercy" / "cm").mkdir(parents=True)
    (tmp_path / TRAIN / "bercy" / "cm" / "bercy-cm.tif").write_bytes(b"")
    notes = oscd.skipped(tmp_path)
    assert f"nantes skipped: no change label, expected nantes/cm/nantes-cm.tif (or cm.png) in one of the label trees ({TRAIN})" in notes

    # a tree of cities with their own cm/ (one layout split into train/ and test/) is no label tree: the city's own path
    for city, tree in (("abudhabi", "train"), ("rennes", "test")):
        for d in ("imgs_1", "imgs_2"):
            (tmp_path / "split" / tree / city / d).mkdir(parents=True)
    (tmp_path / "split" / "train" / "abudhabi" / "cm").mkdir()
    (tmp_path / "split" / "train" / "abudhabi" / "cm" / "abudhabi-cm.tif").write_bytes(b"")
    expected = tmp_path / "split" / "test" / "rennes" / "cm" / "rennes-cm.tif"
    assert oscd.skipped(tmp_path / "split") == [f"rennes skipped: no change label, expected {expected} (or cm.png beside it)"]
