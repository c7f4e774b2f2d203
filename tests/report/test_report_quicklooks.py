"""Quicklooks: true-colour PNGs per date with one series-wide stretch, and t0 | t1 chips of top events."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image, ImageDraw

from changescout.cube import OutputGrid, make_cube
from changescout.report import quicklooks, write_quicklooks
from changescout.tiling import PatchGrid, event_ids

DATES = pd.to_datetime(["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01"])
BANDS = ["B02", "B03", "B04", "B08"]  # red is not among the first three on purpose


@pytest.fixture
def cube_and_grid():
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999360, 500640, 5000000))
    rng = np.random.default_rng(0)
    data = rng.uniform(0.1, 0.3, size=(4, 4, 64, 64)).astype("float32")
    data[1] = data[0]
    data[1, :, 8:16, 8:16] = [[[0.0]], [[0.0]], [[0.9]], [[0.0]]]  # a red roof appears in patch (1, 1)
    data[3] = data[0] * 0.5  # a darker date must look darker
    data[0, :, 40, 40] = np.nan
    return make_cube(data, DATES, BANDS, grid), PatchGrid(grid, 8)


def make_events(pg, rows, cols, t0, t1):
    n = len(rows)
    t0, t1 = pd.to_datetime(t0), pd.to_datetime(t1)
    atyp = np.linspace(0.9, 0.1, n).astype("float32")
    return gpd.GeoDataFrame({
        "event_id": event_ids("demo_1a2b3c4d", t0, t1, rows, cols), "series": "demo_1a2b3c4d",
        "row": np.asarray(rows, "int32"), "col": np.asarray(cols, "int32"), "t0": t0, "t1": t1,
        "magnitude": atyp, "zscore": atyp, "persistence": pd.array([1] * n, dtype="Int32"),
        "clear_fraction": np.ones(n, "float32"), "cluster": np.zeros(n, "int32"),
        "cluster_size": np.full(n, n, "int32"), "rarity": atyp, "atypicality": atyp,
        "rank": np.arange(1, n + 1, dtype="int32"), "vec": np.arange(n, dtype="int64"),
    }, geometry=pg.polygons(rows, cols), crs=pg.grid.crs)


def rgb(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im)


def test_date_quicklooks_are_true_colour_comparable_and_black_where_nodata(tmp_path, cube_and_grid):
    cube, pg = cube_and_grid
    ev = make_events(pg, [1], [1], ["2021-01-01"], ["2021-02-01"])
    out = write_quicklooks(cube, ev, pg, tmp_path / "quicklooks")
    assert [p.name for p in out["dates"]] == ["date_20210101.png", "date_20210201.png", "date_20210301.png", "date_20210401.png"]
    imgs = [rgb(p) for p in out["dates"]]
    assert imgs[0].shape == (64, 64, 3)
    assert tuple(imgs[1][12, 12]) == (255, 0, 0)  # B04 shown as red, B03 green, B02 blue
    assert tuple(imgs[0][40, 40]) == (0, 0, 0)
    np.testing.assert_array_equal(imgs[0][30:, :30], imgs[1][30:, :30])  # same stretch for every date
    assert imgs[3].mean() < imgs[0].mean() - 40


def test_large_scenes_are_downsampled(tmp_path, cube_and_grid, monkeypatch):
    cube, pg = cube_and_grid
    monkeypatch.setattr(quicklooks, "MAX_SIDE", 16)
    out = write_quicklooks(cube.chunk({"time": 1, "y": 32, "x": 32}), make_events(pg, [1], [1], ["2021-01-01"], ["2021-02-01"]),
                           pg, tmp_path)
    img = rgb(out["dates"][1])
    assert img.shape == (16, 16, 3)
    assert tuple(img[3, 3]) == (255, 0, 0)  # the 8 x 8 px roof is 2 x 2 px after a 4x reduction


def test_chips_of_a_series_too_large_to_hold_read_each_block_once(tmp_path, cube_and_grid, monkeypatch):
    """Above the size held in memory, each chip read (and cloud-screened) its blocks again: 40 chips of a
    4096 x 2048 px, 12-date series took 9 minutes (a review). The chips' windows are now computed together."""
    import dask.array as da

    cube, pg = cube_and_grid
    reads = []

    def counted(block, block_info=None):
        reads.append(tuple(block_info[0]["chunk-location"]))
        return block

    lazy = cube.copy(data=da.from_array(cube.values, chunks=(1, 4, 32, 32)).map_blocks(counted, dtype="float32"))
    monkeypatch.setattr(quicklooks, "PERSIST_BYTES", 0)  # (never held)
    events = make_events(pg, [1, 1, 5, 6], [1, 2, 6, 6], ["2021-01-01"] * 4, ["2021-02-01"] * 4)
    out = write_quicklooks(lazy, events, pg, tmp_path / "ql")
    assert len(out["events"]) == 4
    chip_reads = reads[len(DATES) * 4:]  # after the dates' images (every block of every date once)
    assert len(chip_reads) == len(set(chip_reads)), chip_reads
    assert set(chip_reads) == {(t, 0, y, x) for t in (0, 1) for y, x in ((0, 0), (1, 1))}
    held = write_quicklooks(cube, events, pg, tmp_path / "held")  # the same chips
    for key, path in out["events"].items():
        np.testing.assert_array_equal(rgb(path), rgb(held["events"][key]))


def test_event_chips_show_t0_and_t1_around_the_outlined_patch(tmp_path, cube_and_grid):
    cube, pg = cube_and_grid
    ev = make_events(pg, [1, 0, 5], [1, 7, 2], ["2021-01-01", "2021-02-01", "2021-03-01"],
                     ["2021-02-01", "2021-03-01", "2021-04-01"])
    out = write_quicklooks(cube, ev, pg, tmp_path, top=2)
    assert list(out["events"]) == list(ev["event_id"][:2])
    assert [p.name for p in out["events"].values()] == ["event_1.png", "event_2.png"]
    chip = rgb(out["events"][ev["event_id"][0]])
    hd = quicklooks._HEADER  # the dates, in a font large enough to read
    # 24 x 24 px window (patch + one patch margin) enlarged 10x, t0 | 4 px gap | t1, under the header
    assert chip.shape == (hd + 240, 2 * 240 + 4, 3)
    t0_centre, t1_centre = chip[hd + 120, 120], chip[hd + 120, 244 + 120]
    assert tuple(t1_centre) == (255, 0, 0) and tuple(t0_centre) != (255, 0, 0)
    assert tuple(chip[hd + 80, 100]) == quicklooks.OUTLINE  # top edge of the patch outline
    edge = rgb(out["events"][ev["event_id"][1]])  # top-right patch: the margin is cut by the scene edge
    assert edge.shape == (hd + 240, 2 * 240 + 4, 3)  # 16 x 16 px window enlarged 15x
    assert tuple(edge[hd, 8 * 15 + 5]) == quicklooks.OUTLINE  # the patch starts 8 px right of the window


def test_rgb_band_names_fall_back_to_the_first_bands(cube_and_grid):
    cube, _ = cube_and_grid
    assert quicklooks.rgb_bands(cube) == ["B04", "B03", "B02"]
    assert quicklooks.rgb_bands(cube.assign_coords(band=["blue", "green", "red", "nir"])) == ["red", "green", "blue"]
    # Sentinel-2 numbers without the leading zero are its bands; of two names for one band, the first (as the screens)
    s2 = cube.assign_coords(band=["B2", "B3", "B4", "B8A"])
    assert quicklooks.rgb_bands(s2) == ["B4", "B3", "B2"]
    names = ["B2", "B02", "B03", "B4", "B04", "B8A"]
    both = make_cube(np.zeros((1, 6, 8, 8), "float32"), DATES[:1], names, OutputGrid.from_bounds("EPSG:32631", 10, (0, 0, 80, 80)))
    assert quicklooks.rgb_bands(both) == ["B4", "B03", "B2"]
    # a Landsat series' own numbers, as the screens read them (TM: SR_B3 red, SR_B2 green, SR_B1 blue)
    tm = cube.assign_coords(band=["SR_B1", "SR_B2", "SR_B3", "SR_B4"], platform=("time", ["landsat-5"] * 4))
    assert quicklooks.rgb_bands(tm) == ["SR_B3", "SR_B2", "SR_B1"]
    assert quicklooks.rgb_bands(cube.assign_coords(band=["a", "b", "c", "d"])) == ["a", "b", "c"]
    assert quicklooks.rgb_bands(cube.isel(band=[3])) == ["B08"] * 3


def test_objects_overview_outlines_each_object_and_numbers_it_by_rank(tmp_path, cube_and_grid):
    cube, pg = cube_and_grid
    ev = make_events(pg, [1], [1], ["2021-01-01"], ["2021-02-01"])
    patches = {1: ([1, 1], [1, 2]), 2: ([5], [5]), 3: ([5], [5])}  # 2 and 3 share a patch
    objects = gpd.GeoDataFrame({"rank": list(patches)}, crs=pg.grid.crs,
                               geometry=[shapely.union_all(pg.polygons(r, c)) for r, c in patches.values()])
    out = write_quicklooks(cube, ev, pg, tmp_path, top=1, objects=objects)
    assert out["objects"] == tmp_path / "objects.png"
    img = rgb(out["objects"])
    side = 8 * quicklooks.OVERVIEW_SIDE // 64  # 8 px patches of a 64 px scene enlarged to the overview's size
    assert img.shape == (64 * side // 8, 64 * side // 8, 3)
    outline = lambda y, x: any(tuple(img[y, x + d]) == quicklooks.OUTLINE for d in (-2, -1, 0, 1))  # noqa: E731
    mid = side + side // 2  # halfway down patch row 1
    assert outline(mid, side) and outline(mid, 3 * side)  # the object's left and right edges
    assert not outline(mid, 2 * side)  # its two patches are one outline: no edge between them
    assert not outline(mid, side + side // 2)
    assert tuple(img[side + side // 2 + 20, side + side // 2]) != (255, 0, 0)  # the roof seen on 1 date of 4 is not in the median
    h = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "2")[3]
    top = 5 * side + 2  # ranks 2 and 3 share their top-left patch: two labels, one below the other
    for y in (top, top + h + 4):
        label = img[y: y + h + 2, 5 * side + 2: 5 * side + 10]
        yellow = (label[..., 0] > 150) & (label[..., 1] > 130) & (label[..., 2] < 100)  # the digit (anti-aliased)
        assert (label == 0).all(axis=-1).mean() > 0.3 and yellow.any()
    assert not (img[top + 2 * (h + 4): top + 3 * (h + 4), 5 * side + 2: 5 * side + 10] == 0).all(axis=-1).any()  # no third
    assert write_quicklooks(cube, ev, pg, tmp_path / "none", top=1)["objects"] is None


def test_an_overview_rank_at_the_pictures_edge_is_written_whole():
    """On Beirut (536 px, not enlarged) the rank 19 of an object in the last patch column ran off the right
    edge and read "1", beside the real rank 1."""
    img = np.full((800, 800, 3), 128, np.uint8)  # wider than the overview's size: not enlarged
    objects = gpd.GeoDataFrame({"rank": [19]}, geometry=[shapely.box(792, 0, 800, 8)])  # the top-right 8 px
    canvas = np.asarray(quicklooks._outline_objects(img, objects, [1, 0, 0, 1, 0, 0]))
    w, h = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "19")[2:]
    box = (canvas[: h + 8] == 0).all(axis=-1)  # the label's black box
    cols = np.flatnonzero(box.any(axis=0))
    assert len(cols) >= w + 3  # the whole box, inside the picture (it was cut to 6 columns)
    yellow = (canvas[: h + 8, cols.min():, 0] > 150) & (canvas[: h + 8, cols.min():, 2] < 100)
    assert len(np.unique(np.flatnonzero(yellow.any(axis=0)) // 6)) >= 2  # two digits drawn, not one


def test_a_tall_narrow_objects_chip_writes_both_dates_apart(tmp_path, cube_and_grid):
    """The demo's top object (2 patches wide, 11 high) got 64 px panels: "t1 2021-06-..." was written over
    "t0 2021-05-15", and neither date could be read."""
    cube, pg = cube_and_grid
    ev = make_events(pg, [1], [1], ["2021-01-01"], ["2021-02-01"])
    objects = gpd.GeoDataFrame({"rank": [1], "object_id": [0], "t0": pd.to_datetime(["2021-01-01"]),
                                "t1": pd.to_datetime(["2021-02-01"])}, crs=pg.grid.crs,
                               geometry=[shapely.union_all(pg.polygons(list(range(1, 7)), [3] * 6))])
    chip = rgb(write_quicklooks(cube, ev, pg, tmp_path, top=1, objects=objects)["object_chips"][0])
    from PIL import ImageFont

    dark = np.flatnonzero((chip[: quicklooks._HEADER] < 128).all(axis=-1).any(axis=0))  # columns holding text
    width = ImageFont.load_default(size=quicklooks._FONT_PX).getlength("t0 2021-01-01")
    panel = (chip.shape[1] - 4) // 2
    first, second = dark[dark < panel], dark[dark >= panel]
    assert panel >= width + 2 and first.max() >= width - 2  # t0's date whole inside its own panel
    assert second.min() >= panel + 4 and second.max() - second.min() >= width - 4  # t1's after it, whole


def test_objects_overview_outlines_only_the_objects_that_stand_out(tmp_path, cube_and_grid):
    """The single patch changes ranked after the candidates (objects.parquet holds them all) are not numbered
    on the overview as if they were change objects; a run without a candidate has no overview."""
    cube, pg = cube_and_grid
    ev = make_events(pg, [1], [1], ["2021-01-01"], ["2021-02-01"])
    objects = gpd.GeoDataFrame({"rank": [1, 2], "candidate": [True, False]}, crs=pg.grid.crs,
                               geometry=[pg.polygons([1], [1])[0], pg.polygons([5], [5])[0]])
    img = rgb(write_quicklooks(cube, ev, pg, tmp_path, top=1, objects=objects)["objects"])
    side = 8 * quicklooks.OVERVIEW_SIDE // 64
    outline = lambda y, x: any(tuple(img[y, x + d]) == quicklooks.OUTLINE for d in (-2, -1, 0, 1))  # noqa: E731
    assert outline(side + side // 2, side)  # the candidate's left edge
    assert not outline(5 * side + side // 2, 5 * side)  # the single patch: no outline
    assert not outline(5 * side + side // 2, 6 * side)
    singles = objects.assign(candidate=False)
    assert write_quicklooks(cube, ev, pg, tmp_path / "singles", top=1, objects=singles)["objects"] is None


def test_object_chips_show_the_whole_object_on_its_own_dates(tmp_path, cube_and_grid):
    """An object's chip is named by the object's rank, shows the object's t0 and t1 (those of its table row, not
    of one of its patches) and outlines its whole polygon: a two-patch object is not shown as its lead patch."""
    cube, pg = cube_and_grid
    ev = make_events(pg, [1], [1], ["2021-01-01"], ["2021-02-01"])
    objects = gpd.GeoDataFrame({"rank": [1, 2], "object_id": [7, 3], "t0": pd.to_datetime(["2021-01-01", "2021-02-01"]),
                                "t1": pd.to_datetime(["2021-02-01", "2021-03-01"])}, crs=pg.grid.crs,
                               geometry=[shapely.union_all(pg.polygons([1, 1], [1, 2])), shapely.union_all(pg.polygons([5], [5]))])
    out = write_quicklooks(cube, ev, pg, tmp_path, top=1, objects=objects)
    assert {k: p.name for k, p in out["object_chips"].items()} == {7: "object_1.png", 3: "object_2.png"}
    chip = rgb(out["object_chips"][7])
    hd = quicklooks._HEADER
    # the two patches (8 x 16 px) and a margin of one patch: 24 x 32 px, enlarged 7x (240 // 32)
    assert chip.shape == (hd + 24 * 7, 2 * 32 * 7 + 4, 3)
    on = lambda y, x: tuple(chip[hd + y * 7, x * 7]) == quicklooks.OUTLINE  # noqa: E731
    assert on(8, 12) and on(8, 20) and on(12, 8)  # the top edge over both patches, the left edge
    assert not on(12, 16)  # no edge between its two patches
    assert tuple(chip[hd + 12 * 7, 32 * 7 + 4 + 12 * 7]) == (255, 0, 0)  # the roof on t1 (2021-02-01), not on t0
    assert tuple(chip[hd + 12 * 7, 12 * 7]) != (255, 0, 0)


def test_an_object_wider_than_four_chips_is_shown_around_its_centre(tmp_path, cube_and_grid, monkeypatch):
    """A scene-wide object (a seasonal change on a large run) is not read whole for its chip: the window is
    4 chips around its centre, and the outline running beyond it stays inside each panel (not in the gap)."""
    cube, pg = cube_and_grid
    monkeypatch.setattr(quicklooks, "MAX_CHIP", 4)  # 4 chips = 16 px: the 48 px wide object is cut to 16 (+ margin)
    ev = make_events(pg, [1], [1], ["2021-01-01"], ["2021-02-01"])
    objects = gpd.GeoDataFrame({"rank": [1], "object_id": [0], "t0": pd.to_datetime(["2021-01-01"]),
                                "t1": pd.to_datetime(["2021-02-01"])}, crs=pg.grid.crs,
                               geometry=[shapely.union_all(pg.polygons([2] * 6, list(range(1, 7))))])
    chip = rgb(write_quicklooks(cube, ev, pg, tmp_path, top=1, objects=objects)["object_chips"][0])
    hd = quicklooks._HEADER
    panel = (chip.shape[1] - 4) // 2
    assert panel < 48 * 5  # not the whole 48 px object enlarged
    gap = chip[hd:, panel:panel + 4]
    assert not (gap == quicklooks.OUTLINE).all(axis=-1).any()
