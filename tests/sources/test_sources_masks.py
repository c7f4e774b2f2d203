import numpy as np
import pytest

from changescout.cube import Quality
from changescout.errors import SourceError
from changescout.sources.masks import convention_for, is_mask_name, lookup_table, to_quality

Q = Quality


@pytest.mark.parametrize(
    "convention, mapping",
    [
        ("fmask", {0: Q.CLEAR, 1: Q.WATER, 2: Q.SHADOW, 3: Q.SNOW, 4: Q.CLOUD, 255: Q.NODATA, 7: Q.NODATA}),
        ("scl", {0: Q.NODATA, 1: Q.NODATA, 2: Q.SHADOW, 3: Q.SHADOW, 4: Q.CLEAR, 5: Q.CLEAR, 6: Q.WATER,
                 7: Q.CLEAR, 8: Q.CLOUD, 9: Q.CLOUD, 10: Q.CLOUD, 11: Q.SNOW, 12: Q.NODATA}),
        ("quality", {int(q): q for q in Quality} | {6: Q.NODATA}),
        # Landsat Collection 2 QA_PIXEL bit flags, as USGS writes them for Landsat 8-9
        ("qa_pixel", {1: Q.NODATA, 21824: Q.CLEAR, 21952: Q.WATER, 22280: Q.CLOUD, 55052: Q.CLOUD, 23888: Q.SHADOW,
                      30048: Q.SNOW, 54596: Q.CLOUD, 22018: Q.CLOUD, 0: Q.NODATA}),
        # HLS v2 Fmask bit flags, low aerosol (bit 6) set as HLS writes them: clear land is 64, not 0
        ("hls", {64: Q.CLEAR, 0: Q.CLEAR, 66: Q.CLOUD, 68: Q.CLOUD, 65: Q.CLOUD, 72: Q.SHADOW, 80: Q.SNOW, 96: Q.WATER,
                 224: Q.WATER, 106: Q.CLOUD, 255: Q.NODATA, 256: Q.NODATA}),
    ],
)
def test_conventions_map_every_class(convention, mapping):
    values = np.array(list(mapping), dtype=np.float32)
    np.testing.assert_array_equal(to_quality(values, lookup_table(convention)), np.array(list(mapping.values())))


def test_missing_and_odd_values_are_nodata():
    values = np.array([np.nan, -1, 256, 2.5, 4], dtype=np.float32)
    assert to_quality(values, lookup_table("fmask")).tolist() == [Q.NODATA] * 4 + [Q.CLOUD]


@pytest.mark.parametrize("name", ["fmask", "SCL", "qa", "mask", "Mask", "cloud_mask", "QA_PIXEL"])
def test_mask_names(name):
    assert is_mask_name(name)


@pytest.mark.parametrize("name", ["B04", "b3", "red", "masked_b3"])
def test_band_names_are_not_masks(name):
    assert not is_mask_name(name)


def test_convention_inferred_from_name_or_given():
    assert convention_for("LE7_fmask", None, "x") == "fmask"
    assert convention_for("SCL", None, "x") == "scl"
    assert convention_for("LC08_L2SP_198030_20180513_20200901_02_T1_QA_PIXEL", None, "x") == "qa_pixel"
    assert convention_for("fmask", "SCL", "x") == "scl"
    assert convention_for("HLS.S30.T31TCJ.2021001T105441.v2.0.Fmask", None, "x") == "hls"
    assert convention_for("2021-01-01_hls_fmask", None, "x") == "hls"
    assert convention_for("LC08_hlsx_fmask", None, "x") == "fmask"
    with pytest.raises(SourceError, match="pass --mask-convention, one of") as err:
        convention_for("qa", None, "/data/folder")
    assert "/data/folder" in str(err.value) and "'qa'" in str(err.value)
    with pytest.raises(SourceError, match="unknown mask convention 'bits'"):
        convention_for("qa", "bits", "x")


def test_values_a_convention_does_not_list_are_refused_with_the_one_that_reads_them():
    from changescout.sources.masks import check_values

    check_values(np.r_[np.zeros(90), np.full(10, 7.0), np.full(500, 255.0)], "fmask", "m.tif")  # a few odd: kept
    with pytest.raises(SourceError, match=r"m.tif: 82 of the 82 known pixels sampled from the mask \(100.0%\) hold values the 'fmask' "
                                          r"convention does not list \(64, 66, 96\).*they read as "
                                          r"'hls'"):
        check_values(np.r_[np.full(80, 64.0), [66, 96]], "fmask", "m.tif")
    with pytest.raises(SourceError, match=r"'fmask' convention does not list \(21824\).*they read as 'qa_pixel'"):
        check_values(np.full(9, 21824.0), "fmask", "m.tif")
    with pytest.raises(SourceError, match=r"'quality' convention does not list \(9\).*they read as 'scl'"):
        check_values(np.r_[np.full(99, 4.0), 9], "quality", "m.tif")  # SCL codes: any odd value is refused
    with pytest.raises(SourceError, match=r"1 of the 1,000 known pixels sampled from the mask \(0.1%\)"):
        check_values(np.r_[7, np.zeros(999)], "quality", "m.tif")  # (it read "0%" while refusing)
    check_values(np.full(9, np.nan), "scl", "m.tif")  # nothing known: nothing to say
    outside = np.r_[np.full(80, -9999.0), np.zeros(20)]  # a Landsat Fmask mostly outside its footprint
    check_values(outside, "fmask", "m.tif", nodata=-9999)  # the file's own fill is no unlisted code
    with pytest.raises(SourceError, match=r"80 of the 100 known pixels .* \(-9999\)"):
        check_values(outside, "fmask", "m.tif")
