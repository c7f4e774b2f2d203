"""The patch grid, its geometry, and series / event ids."""

import numpy as np
import pytest
import shapely

from changescout.errors import ConfigError, GridError
from changescout.tiling import PatchGrid, event_id, event_ids, pack_footprint, parse_event_id, series_id, unpack_footprint


@pytest.fixture
def pg(make_grid):
    # 70 x 100 px of 10 m, 16 px patches: 4 rows x 6 cols (incomplete edge patches dropped)
    return PatchGrid(make_grid(70, 100), 16)


def test_shape_drops_incomplete_edge_patches(pg):
    assert pg.shape == (4, 6)
    assert pg.n_patches == 24
    assert pg.stride == 16
    assert pg.pixel_window(2, 3) == (slice(32, 48), slice(48, 64))


def test_bounds_values(pg):
    b = pg.bounds(1, 2)
    assert tuple(b) == (372_000.0 + 2 * 160, 4_836_000.0 - 2 * 160, 372_000.0 + 3 * 160, 4_836_000.0 - 160)
    # broadcasts over arrays
    bb = pg.bounds(np.array([0, 3]), np.array([0, 5]))
    assert bb.shape == (2, 4)
    assert tuple(bb[1]) == (372_000.0 + 5 * 160, 4_836_000.0 - 4 * 160, 372_000.0 + 6 * 160, 4_836_000.0 - 3 * 160)


def test_polygons_bounds_centres_and_locate_agree(pg):
    rows, cols = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    polys = pg.polygons(rows, cols)
    bounds = pg.bounds(rows, cols)
    xs, ys = pg.centres()
    for poly, b, r, c in zip(polys, bounds, rows, cols):
        assert poly.area == pytest.approx(160.0 * 160.0)
        np.testing.assert_allclose(poly.bounds, b)
        centre = poly.centroid
        assert pg.locate(centre.x, centre.y) == (r, c)
        assert centre.x == pytest.approx(xs[c]) and centre.y == pytest.approx(ys[r])
        # any point inside the polygon (not only the centre) locates to the patch
        assert pg.locate(b[0] + 1.0, b[3] - 1.0) == (r, c)
        assert pg.locate(b[2] - 1.0, b[1] + 1.0) == (r, c)
    # polygons tile without overlap
    union = shapely.union_all(polys)
    assert union.area == pytest.approx(24 * 160.0 * 160.0)


def test_a_footprint_cuts_the_patches_the_images_cover_in_part_and_leaves_the_others_whole(pg):
    """A patch the images cover in part (a diagonal swath edge, a nodata corner) has the polygon of its covered
    pixels, holes and all; its packed footprint reads back as it was, for any patch size."""
    for p in (3, 5, 16):
        covered = np.random.default_rng(p).random((2 * p, 3 * p)) > 0.4
        assert (unpack_footprint(pack_footprint(covered, p), p) == covered.reshape(2, p, 3, p).transpose(0, 2, 1, 3)).all()
    covered = np.ones((64, 96), bool)
    covered[:16, :16] = np.tril(np.ones((16, 16), bool))  # (0, 0): a swath edge, 136 of 256 px
    covered[16:32, 16:32][5:8, 5:8] = False  # (1, 1): a 3 x 3 px hole
    fp = pack_footprint(covered, 16)
    rows, cols = np.array([0, 1, 2, 0]), np.array([0, 1, 2, 0])
    polys = pg.polygons(rows, cols, fp)
    boxes = pg.polygons(rows, cols)
    assert polys[0].area == pytest.approx(136 * 100) and polys[0].within(boxes[0]) and polys[0].equals(polys[3])
    assert polys[1].area == pytest.approx((256 - 9) * 100) and len(polys[1].interiors) == 1
    assert polys[2].equals(boxes[2])


@pytest.mark.parametrize("x, y", [(float("nan"), 4_835_900.0), (372_100.0, float("inf"))])
def test_locate_a_point_that_is_no_number_is_a_grid_error(pg, x, y):
    """NaN compared False with the grid's bounds and reached int(): an internal error (similar --at nan,nan)."""
    with pytest.raises(GridError, match="is not a place"):
        pg.locate(x, y)


def test_locate_outside_raises_with_bounds(pg):
    for x, y in [(371_999.0, 4_835_900.0), (372_000.0 + 6 * 160 + 1, 4_835_900.0), (372_100.0, 4_836_001.0),
                 (372_100.0, 4_836_000.0 - 4 * 160 - 1)]:
        with pytest.raises(GridError) as exc:
            pg.locate(x, y)
        msg = str(exc.value)
        assert "outside" in msg
        assert "372000.0" in msg and "4836000.0" in msg and "EPSG:32631" in msg


def test_a_longitude_latitude_given_as_x_y_is_named_with_where_it_lies_in_the_grid_crs(pg):
    """The report prints lon, lat beside X, Y; pasted into --at they fall outside a UTM grid. The message says
    where that point is in the grid's CRS, and that X, Y must be given there."""
    from pyproj import Transformer

    x, y = pg.centres()[0][2], pg.centres()[1][1]
    lon, lat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(x, y)
    with pytest.raises(GridError) as exc:
        pg.locate(lon, lat)
    hint = str(exc.value).split("--at ")[1].rstrip(")")
    px, py = (float(v) for v in hint.split(","))
    assert pg.locate(px, py) == (1, 2) and "in the grid's CRS" in str(exc.value)
    with pytest.raises(GridError) as exc:  # latitude, longitude: read the other way round (UAT: the hint for
        pg.locate(lat, lon)                 # lon, lat pointed outside the grid again)
    assert "read as latitude, longitude" in str(exc.value) and str(exc.value).endswith(f"(--at {px:.1f},{py:.1f})")
    with pytest.raises(GridError) as exc:  # not a longitude, latitude: no hint
        pg.locate(371_999.0, 4_835_900.0)
    assert "--at" not in str(exc.value)
    with pytest.raises(GridError) as exc:  # degrees of somewhere else, either way round: no --at to give
        pg.locate(10.0, 50.0)
    assert "--at" not in str(exc.value) and "outside the grid too" in str(exc.value)


def test_locate_takes_the_right_and_bottom_edges_of_the_patch_grid(pg):
    """The bounds printed when a point is refused hold it: a point on the grid's right or bottom edge is in its
    last patch, not outside (the patches' own extent: an incomplete edge patch is no patch)."""
    right, bottom = 372_000.0 + 6 * 160, 4_836_000.0 - 4 * 160
    assert pg.locate(right, bottom) == (3, 5)
    with pytest.raises(GridError, match=rf"bounds 372000.0, {bottom:.1f}, {right:.1f}, 4836000.0"):
        pg.locate(right + 1, bottom)


def test_patch_grid_rejects_bad_patch_size(make_grid):
    with pytest.raises(ConfigError, match="patch_size"):
        PatchGrid(make_grid(32, 32), 0)
    with pytest.raises(ConfigError, match="patch_size"):
        PatchGrid(make_grid(32, 32), 8.5)
    with pytest.raises(GridError, match="patch-size"):
        PatchGrid(make_grid(32, 32), 64)


# -- ids -----------------------------------------------------------------------------------------------
def test_series_id_is_stable_readable_and_grid_dependent(make_grid):
    g = make_grid(64, 64)
    a = series_id("My area: Lyon/2021", "abc", g, 16)
    assert a == series_id("My area: Lyon/2021", "abc", make_grid(64, 64), 16)
    assert a.startswith("My_area_Lyon_2021_")
    assert ":" not in a and "/" not in a and "-" not in a
    assert series_id("My area: Lyon/2021", "abc", make_grid(64, 80), 16) != a
    assert series_id("My area: Lyon/2021", "abc", g, 8) != a
    assert series_id("My area: Lyon/2021", "abd", g, 16) != a
    assert series_id("///", "abc", g, 16).startswith("series_")
    assert series_id("Données été", "abc", g, 16).startswith("Donnees_ete_")  # (was Donn_es_t_)
    assert series_id("東京", "abc", g, 16).startswith("series_")


def test_event_id_format_and_roundtrip(make_grid):
    s = series_id("lyon-east", "abc", make_grid(64, 64), 16)
    eid = event_id(s, np.datetime64("2021-03-15"), np.datetime64("2021-04-15T10:30"), 12, 7)
    assert eid == f"{s}-20210315-20210415-r12-c7"
    assert ":" not in eid and "/" not in eid
    d = parse_event_id(eid)
    assert d == {"series": s, "t0": "20210315", "t1": "20210415", "row": 12, "col": 7}
    assert event_id(d["series"], np.datetime64("2021-03-15"), np.datetime64("2021-04-15"), d["row"], d["col"]) == eid


def test_event_ids_vectorised_matches_scalar():
    t0 = np.array(["2021-01-15", "2021-02-15"], dtype="datetime64[ns]")
    t1 = np.array(["2021-02-15", "2021-03-15"], dtype="datetime64[ns]")
    ids = event_ids("s_1234", t0, t1, [0, 3], [5, 1])
    assert list(ids) == [event_id("s_1234", t0[0], t1[0], 0, 5), event_id("s_1234", t0[1], t1[1], 3, 1)]
    assert list(ids) == ["s_1234-20210115-20210215-r0-c5", "s_1234-20210215-20210315-r3-c1"]


@pytest.mark.parametrize("bad", ["", "s-2021-20210101-r1-c1", "s-20210101-20210201-r1", "s-20210101-20210201-rx-c1"])
def test_parse_event_id_rejects_malformed(bad):
    with pytest.raises(GridError, match="not an event id"):
        parse_event_id(bad)
