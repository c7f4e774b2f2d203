"""What a file or folder name tells: acquisition date, platform and processing level.

Recognised date patterns, tried in this order (the first that matches a valid date wins):

* Sentinel-2 product names, ``S2A_MSIL2A_20180429T105031_...`` -> the sensing date;
* old Sentinel-2 names, ``S2A_OPER_..._V20150820T105521_...`` -> the validity start; an old name without
  ``_V<date>`` has only a production date, which is not the sensing date, so it gives no date;
* Landsat collection names, ``LC08_L2SP_035032_20200101_20200823_02_T1`` -> the acquisition date;
* old Landsat scene ids, ``LE70350322008118EDC00`` -> year 2008, day of year 118;
* HLS v2 names, ``HLS.S30.T31TCJ.2021001T105441.v2.0`` -> year 2021, day of year 1;
* ``YYYY-MM-DD`` (also with ``_`` or ``.``) and ``YYYYMMDD`` anywhere in the name, not inside a longer number.

HLS's ``S30`` products are Sentinel-2's (platform ``sentinel-2``, Sentinel-2 band numbers), its ``L30`` ones
Landsat 8 or 9's (platform ``landsat-8-9``, OLI band numbers: B05 is the near infrared).
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

from ..errors import ConfigError, SourceError

ACCEPTED_PATTERNS = (
    "YYYY-MM-DD",
    "YYYYMMDD",
    "Sentinel-2 product names (S2A_MSIL2A_20180429T105031_...)",
    "old Sentinel-2 names with a validity date (S2A_OPER_..._V20150820T...)",
    "Landsat collection names (LC08_L2SP_035032_20200101_20200823_02_T1)",
    "old Landsat scene ids (LE70350322008118EDC00, year + day of year)",
    "HLS names (HLS.S30.T31TCJ.2021001T105441.v2.0, year + day of year)",
)

_S2 = re.compile(r"S2[A-D]_MSI(?:L1C|L2A)_(\d{8})T\d{6}", re.I)
_S2_OLD = re.compile(r"S2[A-D]_OPER_", re.I)
_S2_OLD_V = re.compile(r"_V(\d{8})T\d{6}", re.I)
_LANDSAT = re.compile(r"L[COTEM]0\d_L[12][A-Z]{2}_\d{6}_(\d{8})_\d{8}_\d{2}_(?:T1|T2|RT)", re.I)
_LANDSAT_OLD = re.compile(r"(?<![A-Z0-9])L[COTEM][1-9]\d{6}(\d{4})(\d{3})[A-Z]{3}\d{2}", re.I)
#: NASA's HLS v2 product names (``HLS.S30.T31TCJ.2021001T105441.v2.0``): year and day of the year.
HLS_NAME = re.compile(r"(?<![A-Z0-9])HLS\.[LS]30\.T\d{2}[A-Z]{3}\.(\d{4})(\d{3})T\d{6}", re.I)
#: The HLS product and tile a name says (``HLS.S30.T31TCJ...``): :func:`hls_product`.
_HLS_ID = re.compile(r"(?<![A-Z0-9])HLS\.([SL])30\.(T\d{2}[A-Z]{3})\.", re.I)
_ISO = re.compile(r"(?<!\d)(\d{4})[-_.](\d{2})[-_.](\d{2})(?!\d)")
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")

_YEARS = range(1950, 2101)


def hls_product(name: str) -> tuple[str | None, str | None]:
    """``(product, tile)`` of an HLS v2 file or item name (``("S30", "T31TCJ")``, ``("L30", ...)``), or
    ``(None, None)`` for another name."""
    m = _HLS_ID.search(str(name))
    return (m.group(1).upper() + "30", m.group(2).upper()) if m else (None, None)


def parse_date(name: str) -> pd.Timestamp | None:
    """The acquisition date a file or folder name holds, or ``None`` (see the module docstring)."""
    name = str(name)
    if m := _S2.search(name):
        return _ymd(m.group(1))
    if _S2_OLD.search(name):
        m = _S2_OLD_V.search(name)
        return _ymd(m.group(1)) if m else None
    if m := _LANDSAT.search(name):
        return _ymd(m.group(1))
    for pattern in (_LANDSAT_OLD, HLS_NAME):  # year + day of year
        if m := pattern.search(name):
            year, doy = int(m.group(1)), int(m.group(2))
            if year in _YEARS and 1 <= doy <= (366 if _leap(year) else 365):
                return pd.Timestamp(year=year, month=1, day=1) + pd.Timedelta(days=doy - 1)
    for pattern in (_ISO, _COMPACT):
        for m in pattern.finditer(name):
            if (t := _ymd("".join(m.groups()))) is not None:
                return t
    return None


#: Text a user may give as a date: ``YYYY-MM-DD`` (optionally with a time, ``T10:30``, and a zone, ``Z`` or
#: ``+01:00``) or ``YYYYMMDD``.
_USER_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?|\d{8}")


def to_times(dates, where=None, option: str = "--dates") -> list[pd.Timestamp]:
    """Dates given by the user (a list, or text ``"2018-04-29,2018-05-13"``) as timestamps.

    Text must read ``YYYY-MM-DD`` (``YYYYMMDD`` and a time ``YYYY-MM-DDTHH:MM[:SS]``, with a zone ``Z`` or
    ``+HH:MM`` read in UTC, are accepted too); dates and datetimes pass as they are. A bad value raises a
    one-line :class:`ConfigError` naming it, the option it came from (``option``) and the file it is for
    (``where``), never a guess at a day-first or month-first reading."""
    items = [d.strip() for d in dates.split(",")] if isinstance(dates, str) else list(dates)
    return [_to_time(item, where, option) for item in items]


def _to_time(item, where, option: str) -> pd.Timestamp:
    text = item.strip() if isinstance(item, str) else item
    ok = (
        _USER_DATE.fullmatch(text) if isinstance(text, str)
        else isinstance(text, (dt.date, np.datetime64))
    )
    t = None
    if ok:
        try:
            t = pd.Timestamp(text)
        except (ValueError, TypeError, OverflowError):
            t = None
    if t is None or pd.isna(t):
        raise ConfigError(f"{option} holds {item!r}, which is not a date: expected YYYY-MM-DD (e.g. 2018-04-29)", where)
    if t.tzinfo is not None:  # (a STAC item's datetime): in UTC, as the dates of file names are
        t = t.tz_convert("UTC").tz_localize(None)
    if not FIRST_DATE <= t <= LAST_DATE:  # (1900 and 2200 together overflowed the stores' time encoding: an internal error)
        raise ConfigError(f"{option} holds {item!r}, outside the dates an image can have here "
                          f"({FIRST_DATE:%Y} to {LAST_DATE:%Y}): a typo in the year?", where)
    return t


#: The span of dates taken from the user: satellite images are from 1960 on; nanosecond times cover about 292 years.
FIRST_DATE, LAST_DATE = pd.Timestamp("1900-01-01"), pd.Timestamp("2100-12-31 23:59:59")


def check_increasing(times, where, names: str = "the file's date blocks") -> None:
    """:class:`SourceError` unless ``times`` (user dates that name ``names`` in order) are strictly increasing;
    it shows the first pair out of order."""
    for i in range(1, len(times)):
        a, b = times[i - 1], times[i]
        if not b > a:
            how = "the same date as" if b == a else "earlier than"
            raise SourceError(
                f"--dates must be strictly increasing, since they name {names} in order: date {i + 1} "
                f"({b:%Y-%m-%d}) is {how} date {i} ({a:%Y-%m-%d})",
                where,
            )


_PLATFORMS = (
    (re.compile(r"(?<![A-Z0-9])HLS\.S30\.", re.I), lambda m: "sentinel-2"),
    (re.compile(r"(?<![A-Z0-9])HLS\.L30\.", re.I), lambda m: "landsat-8-9"),
    (re.compile(r"(?<![A-Z0-9])S2([A-D])_", re.I), lambda m: f"sentinel-2{m.group(1).lower()}"),
    (re.compile(r"SENTINEL-?2([A-D])?X?_", re.I), lambda m: "sentinel-2" + (m.group(1) or "").lower()),
    # (MSS, sensor M: other bands under other numbers than TM's, no blue: a platform of its own, no family's)
    (re.compile(r"(?<![A-Z0-9])L([COTEM])0?([1-9])(?:_L[12]|\d{6}\d{7}[A-Z]{3}\d{2})", re.I),
     lambda m: f"landsat-{m.group(2)}" + ("-mss" if m.group(1).upper() == "M" else "")),
    # a band file of a Sentinel-2 product, taken out of its folder (T31TCJ_20220301T105339_B04_10m): the tile
    # and sensing time say Sentinel-2, but neither the unit nor the processing baseline (a review: its -1000
    # offset went unsaid, as no platform was known)
    (re.compile(r"(?<![A-Z0-9])T\d{2}[A-Z]{3}_\d{8}T\d{6}(?![0-9])", re.I), lambda m: "sentinel-2"),
)

_LEVELS = (
    (re.compile(r"MSI_?(L1C|L2A)", re.I), lambda m: m.group(1).upper()),
    (re.compile(r"_(L2A|L3A|L1C)_", re.I), lambda m: m.group(1).upper()),
    (re.compile(r"L[COTEM]0\d_L([12])[A-Z]{2}_", re.I), lambda m: f"L{m.group(1)}"),
)


def parse_platform(name: str) -> str | None:
    """Platform named in a file name (``sentinel-2a``, ``landsat-5``...) or ``None``."""
    return _first(_PLATFORMS, str(name))


def parse_level(name: str) -> str | None:
    """Processing level named in a file name (``L1C``, ``L2A``, ``L3A``, Landsat ``L1``/``L2``) or ``None``."""
    return _first(_LEVELS, str(name))


#: A Sentinel-2 product name's processing baseline (``S2B_MSIL2A_20200301T105339_N0400_...``: 04.00).
S2_BASELINE = re.compile(r"S2[A-D]_MSIL(?:1C|2A)_\d{8}T\d{6}_N(\d{2})(\d{2})_", re.I)


def parse_baseline(name: str) -> tuple[int, int] | None:
    """``(major, minor)`` of the Sentinel-2 processing baseline a product name holds, or ``None``."""
    m = S2_BASELINE.search(str(name))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _first(rules, name: str) -> str | None:
    for pattern, make in rules:
        if m := pattern.search(name):
            return make(m)
    return None


def impossible_date(name: str) -> str | None:
    """A ``YYYY-MM-DD`` in ``name`` that is no day of the calendar (``2018-02-30``), where :func:`parse_date`
    finds none: what to name in the error, rather than "no date"."""
    for m in _ISO.finditer(str(name)):
        if int(m.group(1)) in _YEARS and _ymd("".join(m.groups())) is None:
            return m.group(0)
    return None


def _ymd(digits: str) -> pd.Timestamp | None:
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:8])
    if year not in _YEARS:
        return None
    try:
        return pd.Timestamp(year=year, month=month, day=day)
    except ValueError:
        return None


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
