"""Change maps: COGs whose pixel (row, col) of band t1 holds the event of that patch and date."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.transform import rowcol

from changescout import maps
from changescout.cube import OutputGrid
from changescout.errors import GridError
from changescout.maps import write_change_maps
from changescout.tiling import PatchGrid, event_ids

SERIES = "demo_1a2b3c4d"


def make_grid(size=64, patch=8):
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999360, 500000 + 10 * size, 4999360 + 10 * size))
    return PatchGrid(grid, patch)


def make_events(pg, rows, cols, t0, t1, atypicality, cluster=None):
    """A synthetic events table following the SCHEMA."""
    n = len(rows)
    t0, t1 = pd.to_datetime(t0), pd.to_datetime(t1)
    atyp = np.asarray(atypicality, dtype="float32")
    order = np.argsort(-atyp, kind="stable")
    rank = np.empty(n, dtype="int32")
    rank[order] = np.arange(1, n + 1)
    cluster = np.arange(n) % 3 if cluster is None else np.asarray(cluster)
    return gpd.GeoDataFrame({
        "event_id": event_ids(SERIES, t0, t1, rows, cols),
        "series": SERIES,
        "row": np.asarray(rows, dtype="int32"),
        "col": np.asarray(cols, dtype="int32"),
        "t0": t0, "t1": t1,
        "magnitude": np.linspace(0.1, 2.0, n).astype("float32"),
        "zscore": np.linspace(-1, 5, n).astype("float32"),
        "persistence": pd.array([1] * (n - 1) + [None], dtype="Int32"),
        "clear_fraction": np.ones(n, dtype="float32"),
        "cluster": cluster.astype("int32"),
        "cluster_size": np.full(n, 5, dtype="int32"),
        "rarity": atyp, "atypicality": atyp, "rank": rank,
        "vec": np.arange(n, dtype="int64"),
    }, geometry=pg.polygons(rows, cols), crs=pg.grid.crs)


@pytest.fixture
def events_and_grid():
    pg = make_grid()
    # t1 dates given out of order on purpose
    t1 = ["2021-03-01", "2021-02-01", "2021-03-01", "2021-04-01", "2021-02-01"]
    t0 = ["2021-02-01", "2021-01-01", "2021-02-01", "2021-03-01", "2021-01-01"]
    return make_events(pg, [0, 7, 3, 5, 2], [0, 7, 4, 1, 6], t0, t1, [0.9, 0.1, 0.5, 0.7, 0.3]), pg


def test_maps_are_georeferenced_cogs_with_values_at_their_patch(tmp_path, events_and_grid):
    ev, pg = events_and_grid
    paths = write_change_maps(ev, pg, tmp_path / "maps")
    assert set(paths) == {"magnitude", "atypicality", "cluster"}
    for name, path in paths.items():
        assert path == tmp_path / "maps" / f"{name}.tif"
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32631
            assert src.transform == pg.grid.affine @ Affine.scale(8)
            assert (src.height, src.width) == pg.shape
            assert src.descriptions == ("t1=2021-02-01", "t1=2021-03-01", "t1=2021-04-01")
            assert src.tags()["changescout_variable"] == name
            assert src.tags()["series"] == SERIES
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.profile["tiled"] and src.profile["compress"] == "deflate"
            if name == "cluster":
                assert src.dtypes[0] == "int16" and src.nodata == -1
            else:
                assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
            data = src.read()
            for _, e in ev.iterrows():
                band = src.descriptions.index(f"t1={e.t1:%Y-%m-%d}")
                c = e.geometry.centroid
                assert rowcol(src.transform, c.x, c.y) == (e.row, e.col)
                assert data[band, e.row, e.col] == pytest.approx(e[name])
            # everything else is nodata: 5 events, 3 bands of 64 patches
            valid = data != -1 if name == "cluster" else ~np.isnan(data)
            assert valid.sum() == len(ev)


def test_duplicates_keep_the_most_atypical_event(tmp_path):
    pg = make_grid()
    ev = make_events(pg, [2, 2], [3, 3], ["2021-01-01", "2021-02-01"], ["2021-03-01", "2021-03-01"], [0.2, 0.8], cluster=[4, 9])
    paths = write_change_maps(ev, pg, tmp_path)
    with rasterio.open(paths["cluster"]) as src:
        assert src.count == 1 and src.read(1)[2, 3] == 9
    with rasterio.open(paths["atypicality"]) as src:
        assert src.read(1)[2, 3] == pytest.approx(0.8)


def test_large_maps_have_overviews_and_cluster_overviews_are_not_averaged(tmp_path):
    pg = make_grid(size=300, patch=1)  # 300 x 300 patches: larger than one block
    rows, cols = np.divmod(np.arange(300 * 300), 300)
    cluster = np.where((rows + cols) % 2 == 0, 0, 3)  # average of a checkerboard would invent 1 or 2
    ev = make_events(pg, rows, cols, ["2021-01-01"] * len(rows), ["2021-02-01"] * len(rows),
                     np.linspace(0, 1, len(rows)), cluster=cluster)
    paths = write_change_maps(ev, pg, tmp_path)
    for path in paths.values():
        with rasterio.open(path) as src:
            assert src.overviews(1)
    with rasterio.open(paths["cluster"], overview_level=0) as ov:
        assert set(np.unique(ov.read(1))) <= {0, 3}


def test_events_outside_the_grid_are_refused(tmp_path, events_and_grid):
    ev, _ = events_and_grid
    with pytest.raises(GridError, match="outside"):
        write_change_maps(ev, make_grid(size=32), tmp_path)
    assert not list(tmp_path.iterdir())


def test_no_events_write_nothing(tmp_path, events_and_grid):
    ev, pg = events_and_grid
    assert write_change_maps(ev.iloc[:0], pg, tmp_path / "maps") == {}


def test_failure_while_writing_leaves_the_previous_map(tmp_path, events_and_grid, monkeypatch):
    ev, pg = events_and_grid
    paths = write_change_maps(ev, pg, tmp_path)
    before = paths["magnitude"].read_bytes()
    real_open = rasterio.open

    class FailingWriter:
        def __init__(self, *args, **kwargs):
            self.ds = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.ds.close()  # the partial file lands on disk

        def write(self, arr):
            self.ds.write(arr)
            raise OSError("disk full")

    monkeypatch.setattr(maps.rasterio, "open", FailingWriter)
    ev2 = ev.assign(magnitude=ev["magnitude"] * 2)
    with pytest.raises(OSError, match="disk full"):
        write_change_maps(ev2, pg, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atypicality.tif", "cluster.tif", "magnitude.tif"]
    assert paths["magnitude"].read_bytes() == before


def test_maps_of_a_pixel_grid_carry_no_crs_that_places_them_on_earth(tmp_path):
    """Image pairs without georeferencing sit on a pixel CRS, which GeoTIFF cannot hold: GDAL wrote a local CRS
    in metres, and `rio info` (rasterio's lon/lat bounds) failed on every map of such a run."""
    from changescout.sources.pairs import PIXEL_CRS

    grid = OutputGrid(crs=PIXEL_CRS, transform=(1.0, 0.0, 0.0, 0.0, -1.0, 64.0), shape=(64, 64))
    pg = PatchGrid(grid, 8)
    ev = make_events(pg, [0, 3], [1, 2], ["2021-01-01"] * 2, ["2021-02-01"] * 2, [0.9, 0.2]).set_crs(PIXEL_CRS, allow_override=True)
    path = write_change_maps(ev, pg, tmp_path / "maps")["magnitude"]
    with rasterio.open(path) as src:
        assert src.crs is None and src.transform == grid.affine @ Affine.scale(8)
        assert src.read(1)[3, 2] == pytest.approx(float(ev["magnitude"].iloc[1]))
