"""Bad source inputs through the CLI: exit code 2, one message naming the file and the problem, no noise."""

import warnings

import pytest

import make_sources as ms
from cli_call import run_cli

BOUCONNE_DATES = "2018-04-29,2018-05-13,2018-07-08,2018-08-15,2018-09-15,2018-10-15,2018-11-15"
BOUCONNE_BANDS = "B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12"


def call(capsys, *args):
    """Run the CLI; return (exit code, stderr, the warnings a user would see)."""
    code, _, err, shown = run_cli(capsys, *args)
    return code, err, shown


@pytest.fixture
def bouconne(real_data):
    return real_data / "s2_timeseries_bouconne" / "2018_3A_Theia_Bouconne.tif"


def test_duplicate_band_exits_2_naming_it(capsys, tmp_path, bouconne):
    bands = BOUCONNE_BANDS.replace("B12", "B11")
    code, err, _ = call(capsys, "run", bouconne, "--kind", "stacked", "--dates", BOUCONNE_DATES, "--bands", bands,
                     "--out", tmp_path / "run")
    assert code == 2, err
    assert "2018_3A_Theia_Bouconne.tif" in err and "B11 occurs more than once in --bands" in err
    assert not (tmp_path / "run").exists()


def test_swapped_dates_exit_2_showing_the_pair(capsys, tmp_path, bouconne):
    swapped = "2018-05-13,2018-04-29," + BOUCONNE_DATES.split(",", 2)[2]
    code, err, _ = call(capsys, "run", bouconne, "--kind", "stacked", "--dates", swapped, "--bands", BOUCONNE_BANDS,
                     "--out", tmp_path / "run")
    assert code == 2, err
    assert "2018_3A_Theia_Bouconne.tif" in err and "--dates must be strictly increasing" in err
    assert "date 2 (2018-04-29) is earlier than date 1 (2018-05-13)" in err


def test_bad_date_is_one_line_naming_the_value_and_format(capsys, tmp_path, bouconne):
    dates = BOUCONNE_DATES.replace("2018-05-13", "2018-13-05")
    code, err, _ = call(capsys, "run", bouconne, "--kind", "stacked", "--dates", dates, "--bands", BOUCONNE_BANDS,
                     "--out", tmp_path / "run")
    assert code == 2, err
    assert "--dates holds '2018-13-05', which is not a date: expected YYYY-MM-DD" in err
    assert "ISO8601" not in err and "format=" not in err and "dates=" not in err


@pytest.mark.parametrize("transform", [ms.TRANSFORM, None], ids=["no-crs", "no-georeference"])
def test_raster_without_crs_exits_2_without_rasterio_warning(capsys, tmp_path, transform):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing a raster without a geotransform warns too
        ms.write_geotiff(tmp_path / "f" / "2020-01-01.tif", ms.scene(0), crs=None, transform=transform)
    code, err, shown = call(capsys, "run", tmp_path / "f", "--out", tmp_path / "run")
    assert code == 2, err
    assert "2020-01-01.tif: the raster has no CRS" in err
    assert not [w for w in shown if "NotGeoreferencedWarning" in w], shown


def test_grid_bounds_in_the_wrong_order_are_told_as_the_grids_not_the_sources(capsys, tmp_path):
    """UAT: ``--grid EPSG:32631,10,358310,4833220,356040,4835680`` (left and right swapped) read "error: <source
    file>: bounds must be ...": the file is not at fault, the option is, and it is named."""
    ms.multiband_folder(tmp_path / "f")
    grid = f"{ms.CRS},10,358310,4833220,356040,4835680"
    code, err, _ = call(capsys, "run", tmp_path / "f", "--grid", grid, "--out", tmp_path / "run")
    assert code == 2, err
    assert err.endswith(f"error: grid '{grid}': bounds must be LEFT,BOTTOM,RIGHT,TOP with RIGHT > LEFT and TOP > "
                        "BOTTOM: RIGHT 356040 is not above LEFT 358310")
    assert not (tmp_path / "run").exists()
