import datetime as dt

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changescout.errors import ConfigError
from changescout.sources.dates import hls_product, parse_date, parse_level, parse_platform, to_times

days = st.dates(min_value=dt.date(1972, 1, 1), max_value=dt.date(2099, 12, 31))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("2018-04-29", "2018-04-29"),
        ("scene_2018_04_29_b3", "2018-04-29"),
        ("20180429", "2018-04-29"),
        ("S2A_MSIL2A_20180429T105031_N0207_R051_T31TCJ_20180429T130711.tif", "2018-04-29"),
        ("S2B_MSIL1C_20200101T105339_N0208_R051_T31TCJ_20200101T111925", "2020-01-01"),
        ("S2A_OPER_PRD_MSIL1C_PDMC_20150821T105214_R008_V20150820T105521_20150820T105521", "2015-08-20"),
        ("LC08_L2SP_035032_20200101_20200823_02_T1", "2020-01-01"),
        ("LT05_L1TP_035032_19950614_20160926_01_T1_SR_B4", "1995-06-14"),
        ("LE70350322008118EDC00", "2008-04-27"),
        ("LT50350322010099PAC01_b3", "2010-04-09"),
        ("LE70350322008366EDC00", "2008-12-31"),  # leap year
        ("SENTINEL2A_20180429-105520-123_L2A_T31TCJ_C_V2-2", "2018-04-29"),
        ("HLS.S30.T31TCJ.2021001T105441.v2.0.B04", "2021-01-01"),  # HLS: year + day of year
        ("HLS.L30.T31TCJ.2020366T105441.v2.0.Fmask", "2020-12-31"),
    ],
)
def test_parse_date_known_names(name, expected):
    assert parse_date(name) == pd.Timestamp(expected)


@pytest.mark.parametrize(
    "name",
    [
        "image",
        "B04",
        "12345678901",  # a long number holds no date
        "2018-13-01",  # no month 13
        "20180231",  # no 31 February
        "LE70350322009366EDC00",  # 2009 has no day 366 and no other date
        "S2A_OPER_MSI_L1C_TL_EPA__20160929T004310_A000833_T36SYC_B01",  # production date only
    ],
)
def test_parse_date_refuses_names_without_a_date(name):
    assert parse_date(name) is None


@settings(max_examples=60, deadline=None)
@given(day=days, prefix=st.sampled_from(["", "x_", "site-3_"]), suffix=st.sampled_from(["", "_b3", "_B8A", ".v2"]))
def test_parse_date_round_trips_every_pattern(day, prefix, suffix):
    t = pd.Timestamp(day)
    doy = t.day_of_year
    names = [
        f"{prefix}{t:%Y-%m-%d}{suffix}",
        f"{prefix}{t:%Y%m%d}{suffix}",
        f"S2B_MSIL2A_{t:%Y%m%d}T105031_N0207_R051_T31TCJ_20990101T000000{suffix}",
        f"LC09_L2SP_035032_{t:%Y%m%d}_20991231_02_T1{suffix}",
        f"LT5035032{t.year}{doy:03d}PAC01{suffix}",
    ]
    for name in names:
        assert parse_date(name) == t, name


@pytest.mark.parametrize(
    "name, platform, level",
    [
        ("S2A_MSIL2A_20180429T105031_N0207", "sentinel-2a", "L2A"),
        ("S2B_MSIL1C_20200101T105339_N0208", "sentinel-2b", "L1C"),
        ("S2A_OPER_MSI_L1C_TL_EPA__20160929T004310_A000833_T36SYC_B01", "sentinel-2a", "L1C"),
        ("SENTINEL2X_20180415-000000-000_L3A_T31TCJ_C_V1-1", "sentinel-2", "L3A"),
        ("LC08_L2SP_035032_20200101_20200823_02_T1", "landsat-8", "L2"),
        ("LT05_L1TP_035032_19950614_20160926_01_T1", "landsat-5", "L1"),
        ("LE70350322008118EDC00_b3", "landsat-7", None),
        ("LT50350322010099PAC01", "landsat-5", None),
        # MSS (sensor M) numbers other bands than TM and has no blue: a platform no band family reads (a review:
        # galileo-nano fed its green as blue)
        ("LM05_L1TP_035032_19900101_20200101_02_T2", "landsat-5-mss", "L1"),
        ("HLS.S30.T31TCJ.2021001T105441.v2.0.B04", "sentinel-2", None),
        ("HLS.L30.T31TCJ.2021001T105441.v2.0.B05", "landsat-8-9", None),
        ("2018-04-29", None, None),
    ],
)
def test_platform_and_level_from_names(name, platform, level):
    assert parse_platform(name) == platform
    assert parse_level(name) == level


def test_to_times_accepts_lists_and_text_and_names_bad_dates():
    assert to_times("2018-04-29, 2018-05-13") == [pd.Timestamp("2018-04-29"), pd.Timestamp("2018-05-13")]
    assert to_times([dt.date(2020, 1, 2)]) == [pd.Timestamp("2020-01-02")]
    with pytest.raises(ConfigError, match="not-a-date"):
        to_times(["2018-04-29", "not-a-date"])


@pytest.mark.parametrize("bad", ["2018-13-13", "2018-05-32", "29/04/2018", "2018/04/29", "today", "", "soon", 20180429])
def test_bad_dates_give_one_line_naming_the_value_and_the_format(bad):
    with pytest.raises(ConfigError) as err:
        to_times(["2018-04-29", bad], where="stack.tif")
    message = str(err.value)
    assert "\n" not in message and "ISO8601" not in message and "format=" not in message
    assert message.startswith("stack.tif: --dates holds ") and repr(bad) in message
    assert "expected YYYY-MM-DD" in message


def test_to_times_accepts_the_documented_forms():
    import numpy as np

    expected = pd.Timestamp("2018-04-29")
    for value in ("2018-04-29", " 2018-04-29 ", "20180429", np.datetime64("2018-04-29"), expected, dt.date(2018, 4, 29)):
        assert to_times([value]) == [expected]
    assert to_times(["2018-04-29T10:30"]) == [pd.Timestamp("2018-04-29 10:30")]
    assert to_times([]) == []
    # times with a time zone (a STAC item's datetime) in UTC, as the dates of file names are
    aware = dt.datetime(2018, 4, 29, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    assert to_times([aware, pd.Timestamp("2018-05-01T10:00Z")]) == [pd.Timestamp("2018-04-30 01:30"), pd.Timestamp("2018-05-01 10:00")]


def test_a_date_outside_1900_to_2100_is_refused_as_a_likely_typo():
    """--dates 1900-04-29,...,2200-08-15 on a stacked file ended in an internal error (the span overflowed the
    time encoding) and left config.json and state.json behind."""
    from changescout.errors import ConfigError
    from changescout.sources.dates import to_times

    with pytest.raises(ConfigError, match=r"--dates holds '2200-08-15', outside the dates an image can have here \(1900 to 2100\)"):
        to_times("2018-05-13,2200-08-15")
    assert to_times("1972-07-25,2099-01-01")[0] == pd.Timestamp("1972-07-25")


def test_hls_product_and_tile_from_file_and_item_names():
    """What reads S30 and L30 together (folders and STAC items) tells the products and tiles apart by name."""
    assert hls_product("HLS.S30.T31TCJ.2021001T105441.v2.0.B04.tif") == ("S30", "T31TCJ")
    assert hls_product("granules/hls.l30.t31tch.2021009T105441.v2.0") == ("L30", "T31TCH")
    for other in ("S2B_MSIL2A_20210101T105031_N0400_R051_T31TCJ_20210101T120000", "XHLS.S30.T31TCJ.2021001", "HLS.S30.B04"):
        assert hls_product(other) == (None, None)
