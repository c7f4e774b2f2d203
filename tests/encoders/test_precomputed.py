"""The precomputed encoder: per-pixel embeddings made elsewhere (AlphaEarth's annual Satellite Embedding), read
as the series' bands and averaged per patch at unit length."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from changescout.encoders import get_encoder
from changescout.errors import ConfigError


def test_a_patch_is_the_mean_of_its_pixels_vectors_at_unit_length():
    enc = get_encoder("precomputed", patch_size=4)
    v, w = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    x = np.zeros((1, 8, 4, 8), np.float32)
    x[0, :, :, :4] = v[:, None, None]  # patch (0, 0): v everywhere
    x[0, :, :2, 4:] = v[:, None, None]  # patch (0, 1): half v, half w
    x[0, :, 2:, 4:] = w[:, None, None]
    x[0, :, 0, 0] = np.nan  # a pixel without a vector does not spread
    out = enc.encode(x)
    assert out.shape == (1, 8, 1, 2) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0, :, 0, 0], v, atol=1e-6)
    np.testing.assert_allclose(out[0, :, 0, 1], (v + w) / np.sqrt(2), atol=1e-6)
    with pytest.raises(ConfigError, match="whole multiples of 4 px"):
        enc.encode(np.zeros((1, 8, 6, 8), np.float32))


def _annual_embeddings(folder, years=(2019, 2020, 2021), size=64, dim=64, seed=0):
    """Unit-length 64-d vectors per 10 m pixel (four land covers in 16 px squares, with noise), one file per
    year as an Earth Engine export names its bands (A00..A63); a 16 x 16 px block turns into a new cover from
    the second year on, rows 16-31 and columns 32-47 of the image."""
    rng = np.random.default_rng(seed)
    covers = np.add.outer(np.arange(size) // 16, np.arange(size) // 16) % 4
    protos = rng.standard_normal((5, dim))
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    for t, year in enumerate(years):
        c = covers.copy()
        if t >= 1:
            c[16:32, 32:48] = 4
        v = protos[c] + 0.15 * rng.standard_normal((size, size, dim))
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
        folder.mkdir(parents=True, exist_ok=True)
        with rasterio.open(folder / f"{year}-01-01.tif", "w", driver="GTiff", height=size, width=size, count=dim,
                           dtype="float32", crs="EPSG:32631", transform=Affine(10, 0, 360000, 0, -10, 4830080)) as dst:
            dst.write(np.moveaxis(v, -1, 0).astype(np.float32))
            for i in range(dim):
                dst.set_band_description(i + 1, f"A{i:02d}")
    return folder


def test_a_run_on_annual_embeddings_finds_the_new_cover_and_treats_the_bands_as_no_reflectance(tmp_path):
    """The whole pipeline with --encoder precomputed: the block that changed cover in 2020 is the top object, at
    2020; embeddings.zarr has one dimension per band; the run screens no clouds, does not co-register and warns
    of no implausible reflectance or missing bands for the words (it is told the bands are embeddings)."""
    import xarray as xr

    from changescout.objects import read_objects
    from changescout.pipeline import RunConfig, run_pipeline

    source = _annual_embeddings(tmp_path / "aef")
    said = []
    out = run_pipeline(RunConfig(source=str(source), encoder="precomputed", patch_size=16), tmp_path / "run", log=said.append)
    top = read_objects(out).iloc[0]
    assert str(top["t1"])[:10] == "2020-01-01" and top["n_patches"] == 1
    events = __import__("changescout.events", fromlist=["read_events"]).read_events(out)
    lead = events[events["event_id"] == top["event_id"]].iloc[0]
    assert (lead["row"], lead["col"]) == (1, 2)  # rows 16-31, columns 32-47 of the image (on the grid's lattice)
    assert xr.open_zarr(out / "embeddings.zarr").sizes["dim"] == 64
    config = json.loads((out / "config.json").read_text())
    state = json.loads((out / "state.json").read_text())
    assert config["cloud_screen"] == "none: the series' bands are embeddings made elsewhere, not reflectance"
    assert state["coregister"]["status"].startswith("skipped: the bands are embeddings")
    assert not [s for s in said if s.startswith("warning")], said
    assert (read_objects(out)["change"] == "").all()


def test_runs_of_other_bands_are_not_compared_and_reflectance_is_warned_of(tmp_path):
    """similar --in compares precomputed runs of the same bands only (a run of A00..A31 against one of the 64
    failed with faiss's dimension error; the same bands in another order were compared, meaninglessly: a
    review); a series of reflectance bands read as embeddings is warned of; the quicklooks stretch the values'
    own range (embeddings of -1..1 were black wherever negative)."""
    import make_sources as ms
    from PIL import Image

    from changescout.errors import InputError
    from changescout.pipeline import RunConfig, run_pipeline
    from changescout.similar import find_similar

    source = _annual_embeddings(tmp_path / "aef")
    whole = run_pipeline(RunConfig(source=str(source), encoder="precomputed", patch_size=16), tmp_path / "a", log=lambda *_: None)
    half = run_pipeline(RunConfig(source=str(source), encoder="precomputed", patch_size=16,
                                  bands=[f"A{i:02d}" for i in range(32)]), tmp_path / "b", log=lambda *_: None)
    again = run_pipeline(RunConfig(source=str(source), encoder="precomputed", patch_size=16, label="again"),
                         tmp_path / "c", log=lambda *_: None)
    first = __import__("changescout.events", fromlist=["read_events"]).read_events(whole).sort_values("rank").iloc[0]
    assert len(find_similar(whole, first["event_id"], k=3, other_runs=[again]))  # the same bands: compared
    with pytest.raises(InputError, match=r"weights_sha256|encoder_options"):
        find_similar(whole, first["event_id"], k=3, other_runs=[half])
    png = np.asarray(Image.open(whole / "quicklooks" / "date_20190101.png"))
    assert (png == 0).mean() < 0.1
    said = []
    ms.multiband_folder(tmp_path / "s2")
    run_pipeline(RunConfig(source=str(tmp_path / "s2"), encoder="precomputed", patch_size=8), tmp_path / "s2run", log=said.append)
    assert [s for s in said if "reads the bands as embeddings made elsewhere, but ['B02', 'B03', 'B04', 'B08'] are named "
                                "as reflectance" in s]


def _int8_twins(tmp_path, years=(2019, 2020), size=32):
    """AlphaEarth's int8 files (-128 nodata, one pixel of the first year masked) and float twins holding their
    de-quantised values, ``(v / 127.5)^2 x sign(v)``, NaN where masked."""
    rng = np.random.default_rng(3)
    folders = {"int8": tmp_path / "int8", "float": tmp_path / "float"}
    for f in folders.values():
        f.mkdir()
    for t, year in enumerate(years):
        raw = rng.integers(-127, 128, (64, size, size)).astype(np.int8)
        if t == 0:
            raw[:, 3, 5] = -128
        native = np.sign(raw.astype(np.float32)) * (raw.astype(np.float32) / 127.5) ** 2
        native[:, raw[0] == -128] = np.nan
        for kind, values, nodata in (("int8", raw, -128), ("float", native, None)):
            with rasterio.open(folders[kind] / f"{year}-01-01.tif", "w", driver="GTiff", height=size, width=size,
                               count=64, dtype=values.dtype, crs="EPSG:32631", nodata=nodata,
                               transform=Affine(10, 0, 360000, 0, -10, 4830080)) as dst:
                dst.write(values)
                for i in range(64):
                    dst.set_band_description(i + 1, f"A{i:02d}")
    return folders


def test_alphaearth_int8_files_are_dequantised_as_their_producer_says(tmp_path):
    """AlphaEarth's int8 files (Google Cloud Storage, Source Cooperative) give the embeddings of their de-quantised
    values, ``(v / 127.5)^2 x sign(v)``, exactly as float files holding those values do, and the two runs are
    compared by similar --in; the raw bytes' patch means (dequantize="none") are another space, which similar --in
    refuses to mix with them; a subset of the bands is de-quantised too; the run says what it did."""
    import xarray as xr

    from changescout.errors import InputError
    from changescout.events import read_events
    from changescout.pipeline import RunConfig, run_pipeline
    from changescout.similar import find_similar

    folders = _int8_twins(tmp_path)
    said = {}
    runs = {kind: run_pipeline(RunConfig(source=str(f), encoder="precomputed", patch_size=8), tmp_path / f"run_{kind}",
                               log=said.setdefault(kind, []).append) for kind, f in folders.items()}
    runs["raw"] = run_pipeline(RunConfig(source=str(folders["int8"]), encoder="precomputed", patch_size=8,
                                         encoder_options={"dequantize": "none"}), tmp_path / "run_raw",
                               log=said.setdefault("raw", []).append)
    half = [f"A{i:02d}" for i in range(0, 64, 2)]
    runs["half"], runs["half_float"] = (run_pipeline(RunConfig(source=str(folders[k]), encoder="precomputed", patch_size=8,
                                                               bands=half), tmp_path / f"run_half_{k}", log=lambda *_: None)
                                        for k in ("int8", "float"))
    emb = {k: xr.open_zarr(v / "embeddings.zarr")["embedding"].values for k, v in runs.items()}
    np.testing.assert_allclose(emb["int8"], emb["float"], atol=1e-5)
    np.testing.assert_allclose(emb["half"], emb["half_float"], atol=1e-5)
    assert np.abs(emb["raw"] - emb["float"]).max() > 0.05
    assert [n for n in said["int8"] if "AlphaEarth's bytes, de-quantised" in n]
    assert [n for n in said["raw"] if "read as they are (dequantize none)" in n]
    assert not [n for n in said["float"] if "AlphaEarth" in n]
    first = read_events(runs["int8"]).sort_values("rank").iloc[0]["event_id"]
    assert len(find_similar(runs["int8"], first, k=3, other_runs=[runs["float"]]))  # one space: compared
    with pytest.raises(InputError, match=r"weights_sha256|encoder_options"):
        find_similar(runs["raw"], read_events(runs["raw"]).iloc[0]["event_id"], k=3, other_runs=[runs["float"]])


def test_alphaearth_values_out_of_range_name_the_cause(tmp_path):
    """Values a de-quantisation cannot take are refused, naming the option to read them as they are, or, at -128,
    the nodata the files do not declare; an unknown dequantize value is refused."""
    from changescout.errors import BandError
    from changescout.sources import open_series

    folders = _int8_twins(tmp_path)
    forced = get_encoder("precomputed", patch_size=8, dequantize="alphaearth").for_cube(open_series(str(folders["float"])))
    assert forced.for_cube(open_series(str(folders["float"]))).dequantize == "alphaearth"
    assert get_encoder("precomputed", patch_size=8).for_cube(open_series(str(folders["float"]))).dequantize == "none"
    with pytest.raises(BandError, match="dequantize='none'"):
        forced.encode(np.full((1, 64, 8, 8), 200.0, np.float32))
    bytes_ = get_encoder("precomputed", patch_size=8).for_cube(open_series(str(folders["int8"])))
    x = np.zeros((1, 64, 8, 8), np.float32)
    x[:, :, 0, 0] = -128 * 1e-4  # (the int8 files' scaling: x 1e-4)
    with pytest.raises(BandError, match=r"-128, AlphaEarth's nodata, which the files do not declare: declare it "
                                        r"\(gdal_edit.py -a_nodata -128 FILE\)"):
        bytes_.encode(x)
    with pytest.raises(ConfigError, match="dequantize must be one of"):
        get_encoder("precomputed", dequantize="int8")


def test_an_edge_patch_is_the_mean_of_the_vectors_the_images_hold(tmp_path):
    """Pixels off the images took the window's mean vector, which moves with the rest of the window: an edge patch
    whose every covered pixel held still read as changed (cosine distance 0.10), with a clear fraction of 1."""
    from changescout.cube import grid_of
    from changescout.embed import embed_cube
    from changescout.sources import open_series
    from changescout.tiling import PatchGrid

    a, b, c = np.eye(64, dtype=np.float32)[:3]
    folder = tmp_path / "aef"
    folder.mkdir()
    for year, top in ((2018, a), (2019, c), (2020, c)):  # rows 0-15 change from a to c, rows 16-31 hold b
        values = np.empty((64, 32, 32), np.float32)
        values[:, :16], values[:, 16:] = top[:, None, None], b[:, None, None]
        with rasterio.open(folder / f"{year}-01-01.tif", "w", driver="GTiff", height=32, width=32, count=64,
                           dtype="float32", crs="EPSG:32631", transform=Affine(10, 0, 356000, 0, -10, 4835600)) as dst:
            dst.write(values)
            dst.descriptions = tuple(f"A{i:02d}" for i in range(64))
    cube = open_series(str(folder), kind="geotiff")
    grid = grid_of(cube)
    assert grid.shape[0] > 32  # the grid, snapped to whole patches, reaches past the images
    ds = embed_cube(cube, get_encoder("precomputed").for_cube(cube), PatchGrid(grid, 16), tmp_path / "e.zarr", "aef")
    emb, clear = ds["embedding"].values, ds["clear_fraction"].values
    # each patch: the mean of the vectors of its pixels on the images, at unit length
    v = cube.values.reshape(3, 64, grid.shape[0] // 16, 16, grid.shape[1] // 16, 16)
    on = np.isfinite(v).all(axis=1)
    expected = np.nansum(v, axis=(3, 5)).transpose(0, 2, 3, 1)
    expected /= np.maximum(np.linalg.norm(expected, axis=-1, keepdims=True), 1e-12)
    seen = clear[0] > 0
    share = on[0].mean(axis=(1, 3))  # of each patch, on the images
    assert seen.sum() >= 4 and ((share > 0) & (share < 1) & seen).sum() >= 2  # edge patches among them
    np.testing.assert_allclose(emb[:, seen], expected[:, seen], atol=1e-5)
    top = seen & (np.abs(emb[0] @ a - 1) < 1e-5)  # a patch of the first rows alone: nothing of b in it
    assert top.any() and (np.abs(emb[0][top] @ b) < 1e-6).all()
