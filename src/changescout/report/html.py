"""The run's HTML report: one self-contained page (inline CSS, plots embedded as PNG, one inline
script that sorts the tables; nothing loaded from elsewhere).

Quicklooks are referenced by paths relative to the run directory, so the page works opened from disk as long
as it stays beside ``quicklooks/``. Every piece of text is escaped.
"""

from __future__ import annotations

import base64
import math
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ..atomic import write_text
from ..cube import OutputGrid, crs_unit, on_earth
from ..tiling import PatchGrid
from . import plots

EVENT_COLUMNS = ["rank", "event_id", "t0", "t1", "atypicality", "false_alarm_rate", "rarity", "magnitude", "zscore",
                 "persistence", "recurrence", "cluster"]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>changescout: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: .2em; }}
table {{ border-collapse: collapse; font-size: 13px; margin: .5em 0 1.5em; }}
.wide {{ overflow-x: auto; max-width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: middle; }}
th {{ background: #f3f3f3; }}
td.text, th.text {{ text-align: left; }}
td {{ white-space: nowrap; }}
td.words {{ white-space: normal; min-width: 12em; }}
table.facts th {{ text-align: left; }}
table.facts td {{ white-space: normal; }}
.plots, .gallery {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; }}
figure img {{ max-width: 100%; }}
figcaption {{ font-size: 12px; color: #555; text-align: center; }}
img.chip {{ max-height: 160px; max-width: 280px; }}  /* the dates written on a chip stay readable */
img.date {{ width: 220px; }}
.empty {{ color: #777; font-style: italic; }}
td.sep {{ color: #555; font-style: italic; background: #fafafa; }}
table.sortable th {{ cursor: pointer; }}
th[data-dir=asc]::after {{ content: " \\25B2"; }}
th[data-dir=desc]::after {{ content: " \\25BC"; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>changescout report: {n_events} patch changes (every patch compared at every date pair it was clear),
{n_candidates} change objects that stand out from them, {n_clusters} change types.</p>
<table class="facts">{facts}</table>
<h2>Top {top_objects} change objects</h2>
{overview}
<p>Touching patches of one date pair that change alike form one object (a patch that a cloud hid at that date joins with the next date it was seen); the list an analyst goes down. Objects whose patches stand out from the run's bulk (candidates) are ranked by atypicality (rarity among them and magnitude); the single patches after them (atypicality 0) follow in their patch's order. x, y: the centre of the object in the grid's CRS (lon, lat in WGS 84 beside it); area_ha: the area of its patches (whole patches of the grid, so at least the changed area; at the images' edges, the part of each patch that the images cover); t0 | t1: the object's dates around its whole outline (the file opens at full size). false_alarm_rate: the calibrated score of the object's most atypical onset patch among the run's patch changes (see below). It does not follow the object rank, which also weighs how rare the object is among objects and its shape: use it to leave out objects above the rate you accept, not to stop going down this list; persistence: the median over its onset patches, weighted by their surprise, of the later clear dates over which the new state held (0: gone at the next date, like a cloud, or with nothing after it partly under a flagged cloud and beside it, its fringe; blank: nothing after); cluster: the change type (table below); change: what the object did, read from the pixels of its patches that changed (NDVI, brightness, NDWI and, with a SWIR1 band, MNDWI for open water, NDSI for snow or ice where the snow screen is off; brightness alone where the series has no near-infrared band, as an RGB image pair: "brightness unchanged" where it held, the change being in colour or texture), less what the whole scene did between the same dates, and never against the object's own change (a forest that browned, but less than the scene in autumn, reads "vegetation loss (less than the scene)", one that held "vegetation gain relative to the scene"; a patch that brightened, but less than the scene, reads "brighter (less than the scene)", one that barely moved "darker relative to the scene"; empty for the single patches that are not candidates){words_note}.</p>
<p>rarity (0..1): how few change objects of the run changed alike (1: none); elongation: how much longer than wide its patches lie (about 2 for a road across 10 patches); recurrence: how much the same change happened at the same place a year apart (near 1: a seasonal cycle, demoted; blank: the series has no date a year apart, or --compare is anniversary or reference, where it is not computed); t_end: the date a later change undid it (a flood receding).</p>
{objects}
<h2>Top {top_events} most atypical patch changes</h2>
<p>false_alarm_rate (in percent, like the console; a fraction in the tables' files): the share of the run's unchanged-looking patch changes that score at least as high; going
down this list, stop where it passes the rate you accept. magnitude: the size of the change of the patch's
embedding; zscore: that size against the patch's own other changes (high: unusual for this place; blank: the patch
has fewer than two other changes, as in an image pair); sensors (a series of several): the platform and sensor of
t0 | t1, whose calibrations may differ (Landsat TM and ETM+).</p>
{events}
<h2>Change types (clusters)</h2>
{clusters}
<h2>Plots</h2>
<div class="plots">{plots}</div>
<h2>Dates</h2>
<div class="gallery">{dates}</div>
<script>{script}</script>
</body>
</html>
"""


#: Sorting of the report's tables: a click on a header sorts by that column (again: the other way), numbers as
#: numbers, blanks last; the separator row before the single patches is hidden while sorted. The page opened
#: at ``#sort=<table>:<column>:<asc|desc>`` (``objects``, ``events``, ``clusters``) opens sorted.
SORT_SCRIPT = """
function cellKey(row, i) {
  var t = row.cells[i] ? row.cells[i].textContent.trim() : "";
  var n = /^[-+]?[0-9]*[.]?[0-9]+(e[-+]?[0-9]+)?%?$/i.test(t) ? parseFloat(t) : NaN;
  return {text: t, num: n, blank: t === "" || t === "\u2013"};
}
function sortTable(table, i, dir) {
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var data = rows.filter(function (r) { return !r.querySelector("td.sep"); });
  rows.forEach(function (r) { if (r.querySelector("td.sep")) { r.style.display = "none"; } });
  var sign = dir === "desc" ? -1 : 1;
  data.sort(function (a, b) {
    var x = cellKey(a, i), y = cellKey(b, i);
    if (x.blank !== y.blank) { return x.blank ? 1 : -1; }
    if (!isNaN(x.num) && !isNaN(y.num)) { return sign * (x.num - y.num); }
    return sign * x.text.localeCompare(y.text);
  });
  data.forEach(function (r) { body.appendChild(r); });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, j) {
    if (j === i) { th.dataset.dir = dir; } else { delete th.dataset.dir; }
  });
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.title = "sort by " + th.textContent;
    th.addEventListener("click", function () { sortTable(table, i, th.dataset.dir === "asc" ? "desc" : "asc"); });
  });
});
var wanted = decodeURIComponent(location.hash).match(/^#sort=([^:]+):(.+):(asc|desc)$/);
if (wanted && document.getElementById(wanted[1])) {
  var table = document.getElementById(wanted[1]);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    if (th.textContent === wanted[2]) { sortTable(table, i, wanted[3]); }
  });
}
"""


def _patch_shape(config: dict) -> tuple[int, int] | None:
    """Patch rows and columns of the run's grid (None where config.json does not say)."""
    if not isinstance(config.get("grid"), dict) or not config.get("patch_size"):
        return None
    return PatchGrid(OutputGrid.from_dict(config["grid"]), int(config["patch_size"])).shape


def write_report(run_dir: str | Path, events: gpd.GeoDataFrame, clusters: pd.DataFrame, config: dict, state: dict,
                 quicklooks: dict | None = None, top: int = 20, objects: pd.DataFrame | None = None) -> Path:
    """Render the report and write ``<run_dir>/report.html`` atomically; return its path."""
    run_dir = Path(run_dir)
    config, state, quicklooks = config or {}, state or {}, quicklooks or {}
    # a run's config.json: the options under "config", what they resolved to (grid, dates) beside them
    config = {**(config.get("config") or {}), **{k: v for k, v in config.items() if k != "config"}}
    events = events.sort_values("rank")
    sensors = date_sensors(state)
    n_shown = min(int(top), len(objects)) if objects is not None else int(top)
    if objects is not None and "candidate" in objects:  # the overview outlines the candidates among them
        n_shown = int(objects.sort_values("rank").head(int(top))["candidate"].sum())
    figures = [
        ("Change magnitude", plots.magnitude_histogram(events)),
        ("Atypicality vs magnitude, coloured by change type", plots.atypicality_scatter(events)),
        ("Events per date, top 50 highlighted", plots.events_per_date(events, top=50)),
        ("Highest atypicality per patch over all dates", plots.atypicality_map(events, _patch_shape(config))),
        ("Stage timings (the outputs stage, which writes this report, is timed in state.json)", plots.stage_timings(state)),
    ]
    doc = PAGE.format(
        title=escape(_label(config, events)),
        n_events=len(events),
        n_candidates=int(objects["candidate"].sum()) if objects is not None and "candidate" in objects else "no",
        words_note=_words_note(objects),
        n_clusters=events["cluster"].nunique(),
        facts="".join(f"<tr><th>{escape(k)}</th><td class='text'>{escape(v)}</td></tr>" for k, v in _facts(config, events, sensors)),
        top_objects=min(int(top), len(objects)) if objects is not None else int(top),  # (a small run has fewer)
        top_events=min(int(top), len(events)),
        events=_events_table(events.head(top), quicklooks.get("events", {}), run_dir,
                             sensors if len(set(sensors.values())) > 1 else None),
        objects=_objects_table(objects, events, top, quicklooks.get("events", {}), run_dir, quicklooks.get("object_chips")),
        overview=_figure(_href(quicklooks["objects"], run_dir), f"the top {n_shown} objects that stand out (candidates), outlined and numbered by rank, "
                         "over the median of the dates", "overview") if quicklooks.get("objects") else "",
        clusters=(_table(list(clusters.columns), clusters.itertuples(index=False), "clusters") if len(clusters)
                  else _empty("no clusters")),
        plots="".join(_figure(f"data:image/png;base64,{base64.b64encode(png).decode()}", cap) for cap, png in figures if png)
        or _empty("nothing to plot"),
        dates="".join(_figure(_href(p, run_dir), _date_caption(p, sensors), "date", lazy=True)
                      for p in quicklooks.get("dates", [])) or _empty("no quicklooks"),
        script=SORT_SCRIPT,
    )
    path = run_dir / "report.html"
    write_text(path, doc)
    return path


def _words_note(objects: pd.DataFrame | None) -> str:
    """Why the ``change`` column is empty, when it is empty for every object."""
    if objects is None or "change" not in objects or (objects["change"].fillna("") != "").any():
        return ""
    if "candidate" in objects and not objects["candidate"].astype(bool).any():
        return "; empty here: no object stands out, and only those that do are described"
    return "; empty here: no band of this series is named as red (B04, SR_B4..., or red), which every word needs"


def _date_caption(path, sensors: dict | None = None) -> str:
    """``2018-04-29`` for a quicklook ``date_20180429.png``, as dates read everywhere else, and its sensor when
    known (``sensors``: :func:`date_sensors`)."""
    stem = Path(path).stem.removeprefix("date_")
    text = f"{stem[:4]}-{stem[4:6]}-{stem[6:8]}{stem[8:]}" if len(stem) >= 8 and stem[:8].isdigit() else stem
    return f"{text}, {sensors[text]}" if sensors and text in sensors else text


def date_sensors(state: dict) -> dict[str, str]:
    """Per date ``YYYY-MM-DD``, the platform and sensor the run read it from (``Landsat 7 ETM+``), where its
    radiometry record (state.json) knows them: an analyst could not tell a TM date from an ETM+ one, whose
    calibrations differ (a review)."""
    dates = (((state or {}).get("radiometry") or {}).get("offsets") or {}).get("dates") or {}
    out = {}
    for day, info in dates.items():
        platform, sensor = (info or {}).get("platform"), (info or {}).get("sensor")
        if not platform:
            continue
        name = str(platform).replace("-", " ").title().replace("Sentinel 2", "Sentinel-2")  # Landsat 7, Sentinel-2A
        out[day] = f"{name} {sensor}" if sensor and sensor not in name else name
    return out


def _label(config: dict, events: pd.DataFrame) -> str:
    label = config.get("label") or config.get("series")
    if not label and len(events):
        label = str(events["series"].iloc[0])
    return str(label or "changescout run")


def _facts(config: dict, events: gpd.GeoDataFrame, sensors: dict | None = None) -> list[tuple[str, str]]:
    """(name, value) lines of the run header, taken leniently from the configuration (``sensors``: each date's,
    :func:`date_sensors`)."""
    facts = []
    source = config.get("source")
    if isinstance(source, dict):
        source = source.get("path") or source.get("uri") or source
    if source:
        facts.append(("source", str(source)))
    used = pd.to_datetime(pd.concat([events["t0"], events["t1"]])).drop_duplicates().sort_values()
    dates = pd.to_datetime(pd.Series(config.get("dates") or used)).sort_values()  # the series' own, when known
    if len(dates):
        text = f"{len(dates)} dates, {dates.iloc[0]:%Y-%m-%d} to {dates.iloc[-1]:%Y-%m-%d}"
        if len(used) < len(dates):  # cloudy dates, or those a comparison cannot pair
            text += f" ({len(used)} in a change)"
        if config.get("dates_placeholder"):
            text += " (placeholders: the images have no dates; run with --dates for the real ones)"
        facts.append(("dates", text))
    if sensors:
        counts = pd.Series(list(sensors.values())).value_counts(sort=False)
        if len(dates) > len(sensors):  # (the counts add up to the dates above)
            counts["unknown"] = len(dates) - len(sensors)
        facts.append(("sensors", "; ".join(f"{name}: {n} date{'s' if n > 1 else ''}" for name, n in counts.items())))
    facts.append(("grid", _grid_text(config.get("grid"), events)))
    if (shape := _patch_shape(config)) is not None and {"row", "col"} <= set(events.columns):
        n_grid = math.prod(shape)
        n_used = len(events[["row", "col"]].drop_duplicates())
        facts.append(("patches", f"{n_used} of the {n_grid} in the grid have a change ({_share(n_used, n_grid)}); the "
                                 "others never had --min-clear of usable pixels at two dates (outside the images, "
                                 "masked or nodata)" if n_used < n_grid else f"all {n_grid} of the grid have a change"))
    encoder = config.get("encoder")
    if isinstance(encoder, dict):
        encoder = encoder.get("name") or encoder
    if encoder:
        facts.append(("encoder", str(encoder)))
    for key in ("patch_size", "compare"):
        if config.get(key) is not None:
            facts.append((key.replace("_", " "), str(config[key])))
    screen = config.get("cloud_screen")  # the rule the run used (config.json), not the option ("auto")
    if screen and screen not in ("auto", "hot", "off"):
        facts.append(("clouds", "screened: " + screen if not str(screen).startswith("none") else str(screen)))
    snow = config.get("snow_screen")
    if snow and snow not in ("auto", "off"):
        facts.append(("snow", "screened: " + snow if not str(snow).startswith("none") else str(snow)))
    return facts


def _share(part: int, whole: int) -> str:
    """``part`` of ``whole`` in percent, never rounded to 100 % (or 0 %) when it is not all (or none): "4946 of
    the 4958 ... (100%); the others ..." read as a contradiction."""
    share = part / max(whole, 1)
    digits = 0
    while digits < 6 and 0 < part < whole and round(share * 100, digits) in (0, 100):
        digits += 1
    return f"{share:.{digits}%}"


def _grid_text(grid, events: gpd.GeoDataFrame) -> str:
    """The grid's row of the facts: CRS, pixel size, size and bounds; for an image pair without georeferencing
    (the pixel CRS, not on Earth) its size in image pixels, as the console names it, not the pixel CRS's WKT."""
    if not isinstance(grid, dict):
        return str(events.crs.to_string()) if events.crs is not None else "unknown"
    shape = grid.get("shape")
    if grid.get("crs") is not None and not on_earth(grid["crs"]):
        size = f", {shape[1]} x {shape[0]} px" if shape and len(shape) == 2 else ""
        return (f"image pixels (the images are not georeferenced){size}; x, y count from the image's bottom-left "
                "corner, y upwards (the image's row is its height less y); areas are not known")
    parts = [str(grid.get("crs", "CRS unknown"))]
    transform = grid.get("transform")
    if transform and len(transform) >= 5:
        parts.append(f"{abs(transform[0]):g} x {abs(transform[4]):g} {crs_unit(grid.get('crs'))} pixels")
    if shape and len(shape) == 2:
        parts.append(f"{shape[1]} x {shape[0]} px")
        if transform and len(transform) >= 6:
            a, _, c, _, e, f = transform[:6]
            digits = 6 if crs_unit(grid.get("crs")) == "degree" else 0
            bounds = (c, f + e * shape[0], c + a * shape[1], f)
            parts.append("bounds " + ", ".join(f"{v:.{digits}f}" for v in bounds) + " (left, bottom, right, top)")
    return ", ".join(parts)


def _events_table(events: pd.DataFrame, chips: dict, run_dir: Path, sensors: dict | None = None) -> str:
    """The top patch events; with ``sensors`` (a series of several), each one's sensors at ``t0`` and ``t1``."""
    if not len(events):
        return _empty("no changes")
    columns = [c for c in EVENT_COLUMNS if c in events.columns]
    where = _where(events)
    rows = []
    for i, rec in enumerate(events[columns].itertuples(index=False)):
        row = dict(zip(columns, rec))
        event_id = row.pop("event_id")
        t0, t1 = row.pop("t0"), row.pop("t1")
        seen = [f"{sensors.get(f'{pd.Timestamp(t0):%Y-%m-%d}', '?')} | {sensors.get(f'{pd.Timestamp(t1):%Y-%m-%d}', '?')}"] if sensors else []
        rows.append([row.pop("rank"), _chip(chips.get(event_id), run_dir), t0, t1, *seen,
                     *_percents(row).values(), *where[i], event_id])
    head = [c for c in columns if c not in ("rank", "t0", "t1", "event_id")]
    # the scores first, the places and the long id last: at 1280 px the scores were off-screen
    return _table(["rank", "t0 | t1", "t0", "t1", *(["sensors"] if sensors else []), *head, "x, y", "lon, lat", "event_id"],
                  rows, "events")


def _percents(row: dict) -> dict:
    """``row`` with its ``false_alarm_rate`` in percent (3 significant digits), like the console."""
    if "false_alarm_rate" in row and not pd.isna(row["false_alarm_rate"]):
        row["false_alarm_rate"] = _Raw(f"{100 * float(row['false_alarm_rate']):.3g}%")
    return row


OBJECT_COLUMNS = ["rank", "t0", "t1", "t_end", "area_ha", "n_patches", "false_alarm_rate", "atypicality",
                  "rarity", "persistence", "recurrence", "elongation", "cluster", "object_id"]


def _objects_table(objects: pd.DataFrame | None, events: pd.DataFrame, top: int, chips: dict, run_dir: Path,
                   object_chips: dict | None = None) -> str:
    if objects is None or not len(objects):
        return _empty("no change objects")
    from ..objects import lead_events

    lead = lead_events(events, objects)["event_id"]
    shown = objects.sort_values("rank").head(top)
    columns = [c for c in OBJECT_COLUMNS if c in shown.columns]  # runs of earlier versions lack some
    where = _where(shown)
    words = shown["change"].tolist() if "change" in shown else [""] * len(shown)
    candidate = shown["candidate"].to_numpy(bool) if "candidate" in shown else np.ones(len(shown), bool)
    rows = []
    for i, rec in enumerate(shown[columns].itertuples(index=False)):
        if not candidate[i] and (i == 0 or candidate[i - 1]):
            rows.append(_Separator("below: single patch changes that do not stand out from the run's bulk (not "
                                   "candidates), in their patch's order"))
        row = dict(zip(columns, rec))
        event_id = lead.get(row.get("object_id"), "")
        chip = (object_chips or {}).get(row.get("object_id")) or chips.get(event_id)
        rows.append([row.pop("rank"), _chip(chip, run_dir), words[i], row.pop("t0"), row.pop("t1"),
                     *_percents(row).values(), *where[i], event_id])
    head = [c for c in columns if c not in ("rank", "t0", "t1")]
    return _table(["rank", "t0 | t1", "change", "t0", "t1", *head, "x, y", "lon, lat", "event_id"], rows, "objects")


def _chip(path, run_dir: Path) -> "_Raw":
    if not path:
        return _Raw("")
    return _Raw(f"<a href='{_href(path, run_dir)}'><img class='chip' src='{_href(path, run_dir)}' alt='chip'></a>")


def _where(table) -> list[tuple[str, str]]:
    """Per row of a (geo) table: its centre in the grid's CRS and in WGS 84 lon, lat, as text; blanks without
    geometry or CRS (pairs in pixel coordinates get x, y only)."""
    if not isinstance(table, gpd.GeoDataFrame) or "geometry" not in table or table.geometry.isna().all():
        return [("", "")] * len(table)
    centres = shapely.centroid(np.asarray(table.geometry.values))  # (shapely's: no warning in a geographic CRS)
    crs = table.crs
    geographic = crs is not None and crs.is_geographic
    xy = [f"{p.x:.6f}, {p.y:.6f}" if geographic else f"{p.x:.0f}, {p.y:.0f}" for p in centres]
    if not on_earth(crs):  # a pixel grid (image pairs)
        return [(t, "") for t in xy]
    lonlat = gpd.GeoSeries(centres, crs=crs).to_crs("EPSG:4326")
    return list(zip(xy, (f"{p.x:.5f}, {p.y:.5f}" for p in lonlat)))


class _Raw(str):
    """Markup that is already safe (built here from escaped parts)."""


class _Separator(str):
    """A row of text across the whole table."""


def _table(columns: list, rows, name: str) -> str:
    """A table the reader sorts by a click on a column's header (:data:`SORT_SCRIPT`), ``id`` ``name``."""
    head = "".join(f"<th{_cls(c)}>{escape(str(c))}</th>" for c in columns)
    body = "".join(f"<tr><td colspan='{len(columns)}' class='text sep'>{escape(row)}</td></tr>" if isinstance(row, _Separator)
                   else "<tr>" + "".join(f"<td{_cls(c)}>{_cell(v)}</td>" for c, v in zip(columns, row)) + "</tr>"
                   for row in rows)
    return (f"<div class='wide'><table class='sortable' id='{escape(name)}'><thead><tr>{head}</tr></thead><tbody>{body}"
            "</tbody></table></div>")  # scrolls, not the page


def _cls(column) -> str:
    return (" class='text words'" if column == "change" else
            " class='text'" if column in ("event_id", "t0 | t1", "x, y", "lon, lat", "sensors") else "")


def _cell(v) -> str:
    if isinstance(v, _Raw):
        return v
    if pd.api.types.is_scalar(v) and pd.isna(v):
        return "&ndash;"
    if isinstance(v, pd.Timestamp | np.datetime64):
        return escape(f"{pd.Timestamp(v):%Y-%m-%d}")
    if isinstance(v, float | np.floating):  # (a tile's flood of 12 345.6 ha in full, not 1.235e+04)
        return f"{v:.4g}" if abs(v) < 1e4 or not np.isfinite(v) else f"{v:.0f}"
    return escape(str(v))


def _figure(src: str, caption: str, cls: str = "", lazy: bool = False) -> str:
    """A captioned image; ``lazy``: the browser loads it when it scrolls into view (a long series has a
    quicklook per date: hundreds of files)."""
    load = " loading='lazy'" if lazy else ""
    return (f"<figure><img class='{cls}' src='{escape(src)}' alt='{escape(caption)}'{load}>"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _href(path, run_dir: Path) -> str:
    """URL of ``path`` relative to the run directory; percent-quoting leaves no HTML-special character."""
    return quote(Path(os.path.relpath(Path(path), run_dir)).as_posix())


def _empty(text: str) -> str:
    return f"<p class='empty'>{escape(text)}</p>"
