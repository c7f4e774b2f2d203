"""The events table: schema, GeoParquet round trip, exports for GIS tools."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from changescout.errors import ConfigError, RunNotFoundError
from changescout.events import (
    COLUMNS,
    SCHEMA,
    check_directions,
    export_table,
    read_events,
    write_events,
)
from changescout.tiling import PatchGrid, event_ids


@pytest.fixture
def events(make_grid):
    n = 12
    rng = np.random.default_rng(0)
    pg = PatchGrid(make_grid(64, 64), 16)
    rows, cols = np.arange(n) % 4, np.arange(n) // 4
    t0 = pd.to_datetime(["2021-01-15"] * 6 + ["2021-02-15"] * 6)
    t1 = pd.to_datetime(["2021-02-15"] * 6 + ["2021-03-15"] * 6)
    atyp = np.sort(rng.uniform(0, 1, n))[::-1].astype(np.float32)
    df = pd.DataFrame({
        "event_id": event_ids("area_12345678", t0, t1, rows, cols),
        "series": "area_12345678",
        "row": rows.astype(np.int32), "col": cols.astype(np.int32),
        "t0": t0, "t1": t1,
        "magnitude": rng.uniform(0, 2, n).astype(np.float32),
        "surprise": rng.uniform(0, 2, n).astype(np.float32),
        "zscore": rng.normal(0, 1, n).astype(np.float32),
        "persistence": pd.array([0, 1, 2, None] * 3, dtype="Int32"),
        "recurrence": np.array([0.9, 0.2, np.nan, -0.1] * 3, np.float32),
        "spectral": rng.uniform(0, 30, n).astype(np.float32),
        "clear_fraction": np.ones(n, np.float32),
        "cluster": (np.arange(n) % 3).astype(np.int32),
        "cluster_size": np.full(n, 4, np.int32),
        "rarity": rng.uniform(0, 1, n).astype(np.float32),
        "atypicality": atyp,
        "rank": np.arange(1, n + 1, dtype=np.int32),
        "false_alarm_rate": np.linspace(0, 1, n).astype(np.float32),
        "object_id": np.arange(n, dtype=np.int64) // 2,
        "object_rank": (np.arange(n, dtype=np.int32) // 2 + 1).astype(np.int32),
        "vec": np.arange(100, 100 + n, dtype=np.int64),
    })
    return gpd.GeoDataFrame(df, geometry=pg.polygons(rows, cols), crs=pg.grid.crs)


def test_schema_describes_direction_of_every_score():
    assert COLUMNS[:2] == ["event_id", "series"]
    for c in ("magnitude", "zscore", "rarity", "atypicality"):
        assert "higher" in SCHEMA[c][1]
    assert "1 = most atypical" in SCHEMA["rank"][1]
    assert "null" in SCHEMA["persistence"][1]
    assert "seasonal" in SCHEMA["recurrence"][1] and "NaN" in SCHEMA["recurrence"][1]


def test_write_read_roundtrip_keeps_dtypes_values_and_crs(events, tmp_path):
    path = write_events(events, tmp_path / "events.parquet")
    back = read_events(path)
    assert back.crs == events.crs and back.crs.to_epsg() == 32631
    for c in COLUMNS:
        assert str(back[c].dtype) == str(events[c].dtype), c
    pd.testing.assert_frame_equal(pd.DataFrame(back.drop(columns="geometry")), pd.DataFrame(events.drop(columns="geometry")))
    assert back.geometry.geom_equals(events.geometry).all()
    assert back["persistence"].isna().sum() == 3
    # reading the run directory works too
    assert len(read_events(tmp_path)) == len(events)
    assert [p.name for p in tmp_path.iterdir()] == ["events.parquet"]


def test_parquet_metadata_has_the_schema_and_geo_keys(events, tmp_path):
    write_events(events, tmp_path / "events.parquet")
    meta = pq.read_schema(tmp_path / "events.parquet").metadata
    assert b"geo" in meta
    cs = json.loads(meta[b"changescout"])
    assert cs["schema_version"] == "1"
    assert set(cs["columns"]) == set(COLUMNS)
    assert cs["columns"]["rank"]["dtype"] == "int32"
    assert "higher" in cs["columns"]["atypicality"]["description"]


def test_write_refuses_missing_columns_or_crs(events, tmp_path):
    with pytest.raises(ConfigError, match="rarity"):
        write_events(events.drop(columns=["rarity"]), tmp_path / "e.parquet")
    with pytest.raises(ConfigError, match="CRS"):
        write_events(events.set_crs(None, allow_override=True), tmp_path / "e.parquet")
    assert not (tmp_path / "e.parquet").exists()


def test_read_refuses_missing_file_and_foreign_tables(events, tmp_path):
    with pytest.raises(RunNotFoundError, match="changescout run"):
        read_events(tmp_path / "nope.parquet")
    events.drop(columns=["rank", "vec"]).to_parquet(tmp_path / "foreign.parquet")
    with pytest.raises(RunNotFoundError) as exc:
        read_events(tmp_path / "foreign.parquet")
    assert "rank" in str(exc.value) and "vec" in str(exc.value)
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    with pytest.raises(RunNotFoundError, match="cannot read"):
        read_events(tmp_path / "garbage.parquet")


@pytest.mark.parametrize("fmt", ["gpkg", "geojson"])
def test_export_vector_formats_keep_crs_and_top_rows(events, tmp_path, fmt):
    shuffled = events.sample(frac=1, random_state=0)
    path = export_table(shuffled, tmp_path / f"events.{fmt}", fmt, top=5)
    back = gpd.read_file(path)
    assert len(back) == 5
    assert back["rank"].tolist() == [1, 2, 3, 4, 5]
    assert back["event_id"].tolist() == events["event_id"].iloc[:5].tolist()
    top5 = events.iloc[:5].reset_index(drop=True)
    import pyogrio  # the layer name a GIS shows: "events", not the temporary name the file was written under

    info = pyogrio.read_info(path)
    types = dict(zip(info["fields"], info["ogr_types"]))
    assert types["persistence"] == "OFTInteger"  # a count, not 4.0 (nulls stay null)
    if fmt == "gpkg":  # the grid's CRS, and dates as dates: DATE fields (a DATETIME needs a time zone in GeoPackage)
        assert back.crs.to_epsg() == 32631 and pd.api.types.is_datetime64_any_dtype(back["t1"])
        assert types["t0"] == types["t1"] == "OFTDate"
        assert back.geometry.geom_equals_exact(top5.geometry, tolerance=1e-6).all()
    else:  # RFC 7946: longitude/latitude on WGS 84, which web maps assume
        assert back.crs.to_epsg() == 4326 and '"crs"' not in path.read_text()
        assert back.geometry.geom_equals_exact(top5.geometry.to_crs(4326), tolerance=1e-6).all()
    assert back["t1"].astype(str).str[:10].tolist() == ["2021-02-15"] * 5
    assert [name for name, _ in pyogrio.list_layers(path)] == ["events"]


def test_a_pixel_grid_is_not_exported_as_geojson_but_keeps_its_pixels_in_geopackage(events, tmp_path):
    """Image pairs without georeferencing sit on a pixel CRS, which has no place on Earth to reproject to. A
    GeoJSON of it (no CRS member, RFC 7946) was read by GDAL and geopandas as WGS 84, latitudes up to 256."""
    from changescout.sources.pairs import PIXEL_CRS

    pixels = events.set_crs(PIXEL_CRS, allow_override=True)
    with pytest.raises(ConfigError, match="pixel coordinates.*--format gpkg or csv"):
        export_table(pixels, tmp_path / "events.geojson", "geojson")
    assert not (tmp_path / "events.geojson").exists()
    back = gpd.read_file(export_table(pixels, tmp_path / "events.gpkg", "gpkg"))
    assert len(back) == len(events) and not back.crs.is_geographic
    assert np.allclose(back.total_bounds, events.total_bounds)


def test_export_csv_has_wkt_geometry_and_crs(events, tmp_path):
    path = export_table(events, tmp_path / "events.csv", "csv", top=5)
    df = pd.read_csv(path)
    assert len(df) == 5 and df["rank"].tolist() == [1, 2, 3, 4, 5]
    assert df["WKT"].str.startswith("POLYGON").all()
    assert (df["crs"] == "EPSG:32631").all()
    assert df["t0"].tolist() == ["2021-01-15"] * 5
    back = gpd.read_file(path).set_crs(events.crs)  # GDAL's CSV driver takes a column named WKT as the geometry
    assert back.geometry.geom_equals_exact(events.geometry.iloc[:5].reset_index(drop=True), tolerance=1e-6).all()


def test_export_rejects_bad_format_and_top(events, tmp_path):
    with pytest.raises(ConfigError, match="shp"):
        export_table(events, tmp_path / "e.shp", "shp")
    with pytest.raises(ConfigError, match="--top"):
        export_table(events, tmp_path / "e.csv", "csv", top=0)
    with pytest.raises(ConfigError, match="--top must be a whole number of at least 1, got 2.5"):
        export_table(events, tmp_path / "e.csv", "csv", top=2.5)  # (pandas' TypeError of positional indexing)


def test_export_from_python_keeps_the_safeguards_of_the_command(events, tmp_path):
    """export_table wrote a CSV over a run's events.parquet (the run lost), a GeoPackage as e.shp, a file
    without extension, into folders it made of a typo, and over an existing file: the command refused each,
    the library did not (a notebook user's review)."""
    from changescout.errors import OutputError, RunExistsError

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "state.json"):
        (run / name).write_text("{}")
    (run / "events.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match=r"events.parquet: the export would write over the run .*run's own events.parquet"):
        export_table(events, run / "events.parquet", "csv")
    assert (run / "events.parquet").read_bytes() == b"PAR1"
    with pytest.raises(ConfigError, match=r"e.shp: a GIS opens a file by its extension, and .shp is not that of --format gpkg"):
        export_table(events, tmp_path / "e.shp", "gpkg")
    with pytest.raises(ConfigError, match=r"e: has no extension, by which a GIS opens a file; name it e.csv"):
        export_table(events, tmp_path / "e", "csv")
    with pytest.raises(OutputError, match=r"nodir: does not exist"):
        export_table(events, tmp_path / "nodir" / "e.csv", "csv")
    assert not (tmp_path / "nodir").exists()
    path = export_table(events, run / "top.csv", "csv", top=3)  # beside a run's files, under its own name
    with pytest.raises(RunExistsError, match="top.csv: exists; use --overwrite"):
        export_table(events, path, "csv")
    assert len(pd.read_csv(export_table(events, path, "csv", overwrite=True))) == len(events)
    objects = events.assign(n_patches=1)  # an objects table: its layer is named objects
    assert gpd.list_layers(export_table(objects, tmp_path / "o.gpkg", "gpkg"))["name"].tolist() == ["objects"]


def test_helpers(events):
    check_directions(events)
    bad = events.copy()
    bad["rank"] = bad["rank"][::-1].to_numpy()
    with pytest.raises(ConfigError, match="ranks"):
        check_directions(bad)


def test_tables_of_earlier_versions_read_with_recurrence_unknown(events, tmp_path):
    """events.parquet written by 0.2.0 has no recurrence column, and by 0.3.29 or earlier no spectral score: it
    still opens (export, similar --in)."""
    old = events.drop(columns=["recurrence", "spectral"])
    old.to_parquet(tmp_path / "events.parquet")
    back = read_events(tmp_path)
    assert list(back.columns) == COLUMNS + ["geometry"] and back["recurrence"].isna().all() and back["spectral"].isna().all()
    events.drop(columns=["rarity"]).to_parquet(tmp_path / "events.parquet")
    with pytest.raises(RunNotFoundError, match="rarity"):
        read_events(tmp_path)
