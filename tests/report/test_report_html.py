"""The HTML report: self-contained, escaped, top events in rank order, written atomically."""

import base64
import pathlib
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid
from changescout.report import plots, write_report
from changescout.tiling import PatchGrid, event_ids

EVIL = "<script>alert('x')</script>"


def make_events(n=40, seed=0):
    pg = PatchGrid(OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999360, 500640, 5000000)), 8)
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, 8, n), rng.integers(0, 8, n)
    t1 = pd.to_datetime(rng.choice(["2021-02-01", "2021-03-01", "2021-04-01"], n))
    t0 = t1 - pd.DateOffset(months=1)
    atyp = rng.uniform(0, 1, n).astype("float32")
    rank = np.empty(n, "int32")
    rank[np.argsort(-atyp)] = np.arange(1, n + 1)
    return gpd.GeoDataFrame({
        "event_id": event_ids("demo_1a2b3c4d", t0, t1, rows, cols), "series": "demo_1a2b3c4d",
        "row": rows.astype("int32"), "col": cols.astype("int32"), "t0": t0, "t1": t1,
        "magnitude": rng.gamma(2, 1, n).astype("float32"), "zscore": rng.normal(0, 2, n).astype("float32"),
        "persistence": pd.array([None] + [2] * (n - 1), dtype="Int32"),
        "clear_fraction": np.ones(n, "float32"), "cluster": (np.arange(n) % 4).astype("int32"),
        "cluster_size": np.full(n, n // 4, "int32"), "rarity": atyp, "atypicality": atyp, "rank": rank,
        "vec": np.arange(n, dtype="int64"),
    }, geometry=pg.polygons(rows, cols), crs=pg.grid.crs)


def make_clusters(events):
    g = events.groupby("cluster")
    return pd.DataFrame({"cluster": list(g.groups), "size": g.size().to_numpy(),
                         "mean_magnitude": g["magnitude"].mean().to_numpy(),
                         "mean_atypicality": g["atypicality"].mean().to_numpy(),
                         "note": [EVIL, "b", "c", "d"]})


CONFIG = {"label": EVIL, "source": {"path": "/data/s2/" + EVIL}, "encoder": {"name": "rcf"}, "patch_size": 8,
          "grid": {"crs": "EPSG:32631", "transform": [10, 0, 500000, 0, -10, 5000000], "shape": [64, 64]}}
STATE = {"stages": {"ingest": {"seconds": 1.5, "status": "done"}, "embed": {"seconds": 12.0}, "rank": {"status": "done"}}}


def test_report_lists_the_top_events_in_rank_order_with_their_chips(tmp_path):
    ev = make_events()
    ql = tmp_path / "quicklooks"
    ql.mkdir()
    top = ev.sort_values("rank").head(3)
    chips = {eid: ql / f"event_{r}.png" for eid, r in zip(top["event_id"], top["rank"])}
    dates = [ql / "date_20210201.png"]
    path = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE, {"dates": dates, "events": chips}, top=5)
    assert path == tmp_path / "report.html"
    html = path.read_text()
    ordered = ev.sort_values("rank")["event_id"]
    positions = [html.index(eid) for eid in ordered.head(5)]
    assert positions == sorted(positions)
    assert all(eid not in html for eid in ordered.iloc[5:])
    assert "src='quicklooks/event_1.png'" in html and "src='quicklooks/date_20210201.png'" in html
    assert re.search(r"src='quicklooks/date_20210201.png'[^>]* loading='lazy'", html)  # hundreds on a long series
    assert "EPSG:32631, 10 x 10 metre pixels, 64 x 64 px" in html
    assert "rcf" in html and "mean_atypicality" in html
    assert "the outputs stage, which writes this report, is timed in state.json" in html  # absent from the plot
    assert "4 dates, 2021-01-01 to 2021-04-01" in html and "in a change" not in html
    n_used = len(ev[["row", "col"]].drop_duplicates())  # an analyst could not tell how much of the scene was analysed
    assert f"{n_used} of the 64 in the grid have a change ({n_used / 64:.0%})" in html


def test_report_counts_the_series_dates_not_only_those_in_a_change(tmp_path):
    """A 105-date series whose cloudy dates are in no change read "66 dates", as if dates were lost."""
    dates = [f"2021-{m:02d}-01" for m in range(1, 8)]
    ev = make_events()
    html = write_report(tmp_path, ev, make_clusters(ev), {**CONFIG, "dates": dates}, STATE).read_text()
    assert "7 dates, 2021-01-01 to 2021-07-01 (4 in a change)" in html
    assert "placeholders" not in html
    html = write_report(tmp_path, ev, make_clusters(ev), {**CONFIG, "dates": dates, "dates_placeholder": True}, STATE).read_text()
    assert "(placeholders: the images have no dates; run with --dates for the real ones)" in html  # an image pair (UAT)


def test_report_is_self_contained_and_escaped(tmp_path):
    ev = make_events()
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE).read_text()
    assert html.count("<script") == 1 and "<script>\nfunction cellKey" in html  # the table sorting, no other
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert not re.search(r"(src|href)=['\"](https?:)?//", html)
    pngs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(pngs) == 5  # histogram, scatter, events per date, map, stage timings
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)


def test_report_is_lenient_with_a_sparse_config_and_no_events(tmp_path):
    ev = make_events().iloc[:0]
    html = write_report(tmp_path, ev, pd.DataFrame(columns=["cluster", "size"]), {}, {}).read_text()
    assert "no changes" in html and "nothing to plot" in html and "EPSG:32631" in html


def test_plots_return_png_or_nothing():
    ev = make_events()
    for png in (plots.magnitude_histogram(ev), plots.atypicality_scatter(ev), plots.events_per_date(ev),
                plots.atypicality_map(ev), plots.stage_timings(STATE)):
        assert png.startswith(b"\x89PNG")
    assert plots.stage_timings({}) is None and plots.atypicality_map(ev.iloc[:0]) is None
    assert plots.stage_timings({"prepare": {"seconds": 3.0}}).startswith(b"\x89PNG")  # the preparation alone


def test_the_patch_map_covers_the_whole_grid_as_the_change_maps_do():
    """The map was sized from the events: on Bouconne it drew 15 x 14 patches of a 16 x 15 grid whose last row
    and column held no event."""
    ev = make_events()
    n_rows, n_cols = int(ev["row"].max()) + 3, int(ev["col"].max()) + 2
    grid = plots.best_per_patch(ev, (n_rows, n_cols))
    assert grid.shape == (n_rows, n_cols) and np.isnan(grid[-2:]).all()
    r, c = int(ev["row"].iloc[0]), int(ev["col"].iloc[0])
    assert grid[r, c] == ev.loc[(ev["row"] == r) & (ev["col"] == c), "atypicality"].max()


def test_failure_while_writing_keeps_the_previous_report(tmp_path, monkeypatch):
    ev = make_events()
    path = write_report(tmp_path, ev, make_clusters(ev), {"label": "first"}, STATE)
    before = path.read_text()
    real_write_text = pathlib.Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path, ev, make_clusters(ev), {"label": "second"}, STATE)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert path.read_text() == before


def test_the_events_per_date_plot_fits_the_page_on_a_long_series():
    """A quarter inch a date drew an 11 000 px wide plot for 584 dates, far off the 1200 px page."""
    import struct

    n = 584
    t1 = pd.date_range("2021-01-05", periods=n, freq="5D")
    ev = pd.DataFrame({"t1": t1.repeat(3), "rank": np.arange(1, 3 * n + 1)})
    png = plots.events_per_date(ev)
    width = struct.unpack(">I", png[16:20])[0]  # the IHDR chunk
    assert 900 <= width <= 1200
    short = struct.unpack(">I", plots.events_per_date(ev.head(3 * 12))[16:20])[0]
    assert short < width  # a short series keeps its narrower plot


@pytest.mark.parametrize("screen, shown", [
    ("HOT > 0.08, dilated 3 px; bands read: B02, B04, B08", "screened: HOT &gt; 0.08, dilated 3 px; bands read: B02, B04, B08"),
    ("none: the source gave a quality mask", "none: the source gave a quality mask"),
])
def test_report_says_how_clouds_were_handled(tmp_path, screen, shown):
    ev = make_events()
    html = write_report(tmp_path, ev, make_clusters(ev), {**CONFIG, "cloud_screen": screen}, STATE).read_text()
    assert f"<tr><th>clouds</th><td class='text'>{shown}</td></tr>" in html
    assert "<th>clouds</th>" not in write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE).read_text()  # an old run


def test_report_counts_objects_that_stand_out_explains_its_columns_and_dates_read_as_dates(tmp_path):
    """An analyst read "1237 changes" as 1237 detections (they were every patch compared at every date pair),
    "vegetation gain" on a forest that browned less than the scene, an empty change column without a reason,
    and date captions as 20210201."""
    ev = make_events().assign(object_id=np.arange(40, dtype="int64"))
    objects = pd.DataFrame({"object_id": ev["object_id"], "t0": ev["t0"], "t1": ev["t1"], "n_patches": 1,
                            "candidate": ev["rank"].to_numpy() <= 6, "rank": ev["rank"], "change": ""})
    ql = tmp_path / "quicklooks"
    ql.mkdir()
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE, {"dates": [ql / "date_20210201.png"]},
                        objects=objects).read_text()
    text = re.sub(r"\s+", " ", html)
    assert "40 patch changes (every patch compared at every date pair it was clear), 6 change objects that stand out" in text
    assert "less what the whole scene did between the same dates" in text
    assert "empty here: no band of this series is named as red (B04, SR_B4..., or red), which every word needs" in text
    assert "brightness alone where the series has no near-infrared band, as an RGB image pair" in text
    assert "<figcaption>2021-02-01</figcaption>" in html
    # the list says where the objects that stand out end: one separator, after the 6th row
    table = html[html.index("<h2>Top 20 change objects"):html.index("<h2>Top 20 most atypical")]
    rows = table.split("<tr>")[2:]
    assert [i for i, r in enumerate(rows) if "do not stand out" in r] == [6]
    objects.loc[0, "change"] = "vegetation loss"
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE, objects=objects).read_text()
    assert "empty here" not in html


def test_report_says_where_each_change_is_and_the_grid_bounds(tmp_path):
    """An analyst must be able to go to a change: the tables give each object's and event's centre in the grid's
    CRS and in WGS 84, the header the grid's bounds, and the object's own chip (its rank) is shown."""
    ev = make_events()
    ev["object_id"] = np.arange(len(ev))
    ql = tmp_path / "quicklooks"
    ql.mkdir()
    objects = gpd.GeoDataFrame({"object_id": ev["object_id"], "t0": ev["t0"], "t1": ev["t1"], "n_patches": 1,
                                "candidate": True, "atypicality": ev["atypicality"], "rank": ev["rank"]},
                               geometry=ev.geometry, crs=ev.crs)
    first = objects.sort_values("rank").iloc[0]
    chips = {int(first["object_id"]): ql / "object_1.png"}
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE, {"object_chips": chips}, objects=objects).read_text()
    centre = first.geometry.centroid
    lonlat = gpd.GeoSeries([centre], crs=ev.crs).to_crs("EPSG:4326").iloc[0]
    row = html[html.index("<h2>Top 20 change objects"):].split("<tr>")[2]  # the first row of the objects table
    assert f"{centre.x:.0f}, {centre.y:.0f}" in row and f"{lonlat.x:.5f}, {lonlat.y:.5f}" in row
    assert "src='quicklooks/object_1.png'" in row
    assert "bounds 500000, 4999360, 500640, 5000000 (left, bottom, right, top)" in html
    ev_row = html[html.index("<h2>Top 20 most atypical patch changes"):].split("<tr>")[2]
    top_event = ev.sort_values("rank").iloc[0].geometry.centroid
    assert f"{top_event.x:.0f}, {top_event.y:.0f}" in ev_row


def test_an_image_pair_without_georeference_names_its_grid_as_image_pixels(tmp_path):
    """UAT: the grid row of a pair's report read 'ENGCRS["changescout pixel grid",...], 1 x 1 pixel pixels, 256 x
    256 px' where the console says "image pixels": the report says it as the console does."""
    from changescout.sources.pairs import PIXEL_CRS

    ev = make_events().set_crs(PIXEL_CRS, allow_override=True)  # (as a pair's tables are)
    grid = {"crs": PIXEL_CRS, "transform": [1, 0, 0, 0, -1, 64], "shape": [64, 64]}
    html = write_report(tmp_path, ev, make_clusters(ev), {**CONFIG, "grid": grid}, STATE).read_text()
    assert "<th>grid</th><td class='text'>image pixels (the images are not georeferenced), 64 x 64 px; x, y count from " \
        "the image&#x27;s bottom-left corner, y upwards (the image&#x27;s row is its height less y); areas are not " \
        "known</td>" in html  # (an analyst looked for a y of 248 at the top of the image, at row 248)
    assert "ENGCRS" not in html and "pixel pixels" not in html


def test_the_scatter_keys_every_change_type_in_its_own_colour(monkeypatch):
    """A run has up to 24 change types by default: the key was dropped above 15 and tab20's colours repeated, so
    no colour could be matched with the cluster table."""
    ev = make_events(n=96)
    ev["cluster"] = np.arange(96) % 24
    monkeypatch.setattr(plots, "_png", lambda fig: fig)
    fig = plots.atypicality_scatter(ev)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(k) for k in range(24)]
    colours = {tuple(np.round(c.get_facecolor()[0], 3)) for c in ax.collections}
    assert len(colours) == 24


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if pathlib.Path(p).exists()), None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium to run the report's script")
def test_the_report_tables_sort_in_a_browser(session_run, copy_run):
    """A click on a header sorts a table by that column (numbers as numbers, blanks last), here through the
    address the page opens at (#sort=objects:atypicality:asc), run by a headless chromium."""
    import subprocess

    run = copy_run(session_run)
    page = (run / "report.html").resolve().as_uri()

    def column(hash_: str, table: str, name: str) -> list[str]:
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                              "--dump-dom", page + hash_], capture_output=True, text=True, timeout=120).stdout
        body = dom.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
        head = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", body.split("</thead>")[0])
        i = head.index(name)
        shown = re.findall(r"<tr(?![^>]*display: none)(?:\s[^>]*)?>(.*?)</tr>", body.split("<tbody>")[1])
        cells = [re.findall(r"<td(?:\s[^>]*)?>(.*?)</td>", row) for row in shown]
        return [c[i] for c in cells if len(c) == len(head)]

    plain = column("", "objects", "rank")
    assert [int(r) for r in plain] == sorted(int(r) for r in plain)  # as written: by rank
    up = [float(v) for v in column("#sort=objects:atypicality:asc", "objects", "atypicality")]
    assert len(up) == len(plain) and up == sorted(up) and up[0] < up[-1]
    down = column("#sort=events:magnitude:desc", "events", "magnitude")
    assert [float(v) for v in down] == sorted((float(v) for v in down), reverse=True)


def test_the_report_shows_scores_before_places_and_rates_in_percent(tmp_path):
    """Review in a browser at 1280 px: the objects' false_alarm_rate and atypicality were off-screen behind the
    places and ids; the rate read 0.0008264 where the console says 0.08%; "4946 of the 4958 patches (100%); the
    others ..." (:func:`_share`, below); and a run without any object that stands out said its words were empty for want of a red band."""
    ev = make_events().assign(object_id=np.arange(40, dtype="int64"), false_alarm_rate=np.float32(0.0008264))
    ev = ev[~((ev["row"] == 7) & (ev["col"] == 7))]  # one patch of the 64 never changes
    objects = gpd.GeoDataFrame({"object_id": ev["object_id"], "t0": ev["t0"], "t1": ev["t1"], "n_patches": 1,
                                "candidate": False, "rank": ev["rank"], "atypicality": ev["atypicality"],
                                "false_alarm_rate": ev["false_alarm_rate"], "change": ""},
                               geometry=ev.geometry.to_numpy(), crs=ev.crs)
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE, objects=objects).read_text()
    for table in ("objects", "events"):
        body = html.split(f"id='{table}'", 1)[1].split("</table>", 1)[0]
        head = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", body.split("</thead>")[0])
        assert head.index("false_alarm_rate") < head.index("x, y") and head.index("atypicality") < head.index("x, y")
        assert head[-1] == "event_id" and ">0.0826%</td>" in body
    assert "no object stands out" in html and "no band of this series is named as red" not in html


def test_a_share_that_is_not_all_never_reads_100_percent():
    from changescout.report.html import _share

    assert (_share(4946, 4958), _share(4958, 4958), _share(1, 4958), _share(0, 10), _share(1, 2)) == \
        ("99.8%", "100%", "0.02%", "0%", "50%")


def test_headings_count_the_rows_shown_and_large_areas_read_in_full(tmp_path):
    """A run of 21 objects under report_top 50 was headed "Top 50 change objects"; an area of 12 345.6 ha read
    "1.235e+04" (the console prints it in full)."""
    from changescout.report.html import _cell

    ev = make_events(n=12).assign(object_id=np.arange(12, dtype="int64"))
    objects = pd.DataFrame({"object_id": ev["object_id"][:7], "t0": ev["t0"][:7], "t1": ev["t1"][:7], "n_patches": 1,
                            "candidate": True, "rank": np.arange(1, 8), "change": ""})
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE, objects=objects, top=50).read_text()
    assert "<h2>Top 7 change objects</h2>" in html and "<h2>Top 12 most atypical patch changes</h2>" in html
    assert "Top 50" not in html
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, STATE, objects=objects, top=5).read_text()
    assert "<h2>Top 5 change objects</h2>" in html and "<h2>Top 5 most atypical patch changes</h2>" in html
    assert [_cell(v) for v in (np.float64(12345.6), 102400.0, 2.56, np.float32(0.12345), np.nan)] == [
        "12346", "102400", "2.56", "0.1235", "&ndash;"]


def test_the_events_per_date_legend_leaves_the_bars_readable(monkeypatch):
    """The legend sat over the last date's bar when it was the tallest (its height could not be read)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    drawn = []
    monkeypatch.setattr(plots, "_png", lambda fig: drawn.append(fig) or b"png")
    for counts in ([3, 5, 40], [40, 5, 3], [10, 40, 10], [20, 20, 20]):
        t1 = pd.to_datetime(np.repeat(["2021-01-01", "2021-02-01", "2021-03-01"], counts))
        plots.events_per_date(pd.DataFrame({"t1": t1, "rank": np.arange(1, len(t1) + 1)}), top=10)
        fig = drawn[-1]
        FigureCanvasAgg(fig).draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        bars = [b.get_window_extent() for b in ax.patches]
        assert len(bars) == 6 and not any(legend.overlaps(b) for b in bars), counts


def test_the_report_says_which_sensor_each_date_is(tmp_path):
    """A Landsat series of TM and ETM+ dates: the run knew each date's sensor (state.json) but the report named
    none, and an analyst could not tell a TM -> ETM+ pair (their calibrations differ) from a change (a review)."""
    ev = make_events()
    days = ["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01"]
    platforms = ["landsat-5", "landsat-7", "landsat-5", "landsat-7"]
    state = {**STATE, "radiometry": {"offsets": {"dates": {d: {"platform": p, "sensor": "TM" if p == "landsat-5" else "ETM+"}
                                                          for d, p in zip(days, platforms)}}}}
    ql = tmp_path / "quicklooks"
    ql.mkdir()
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, state, {"dates": [ql / "date_20210201.png"]}).read_text()
    assert "<tr><th>sensors</th><td class='text'>Landsat 5 TM: 2 dates; Landsat 7 ETM+: 2 dates</td></tr>" in html
    assert "<figcaption>2021-02-01, Landsat 7 ETM+</figcaption>" in html
    table = html[html.index("<h2>Top 20 most atypical"):]
    assert "<th>t1</th><th class='text'>sensors</th>" in table
    top = ev.sort_values("rank").iloc[0]
    pair = f"{'Landsat 5 TM' if pd.Timestamp(top['t0']).month % 2 else 'Landsat 7 ETM+'} | " \
           f"{'Landsat 5 TM' if pd.Timestamp(top['t1']).month % 2 else 'Landsat 7 ETM+'}"
    assert pair in table
    partly = {**state, "radiometry": {"offsets": {"dates": {**state["radiometry"]["offsets"]["dates"], days[3]: {"platform": None}}}}}
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, partly).read_text()  # the counts add up to the dates
    assert "<td class='text'>Landsat 5 TM: 2 dates; Landsat 7 ETM+: 1 date; unknown: 1 date</td>" in html
    one = {**state, "radiometry": {"offsets": {"dates": {d: {"platform": "landsat-5", "sensor": "TM"} for d in days}}}}
    html = write_report(tmp_path, ev, make_clusters(ev), CONFIG, one).read_text()
    assert "Landsat 5 TM: 4 dates" in html and "<th>t1</th><th class='text'>sensors</th>" not in html  # one sensor: no column of it
    from changescout.report.html import date_sensors

    named = date_sensors({"radiometry": {"offsets": {"dates": {"a": {"platform": "sentinel-2a", "sensor": "MSI"},
                                                               "b": {"platform": "sentinel-2", "sensor": None}}}}})
    assert named == {"a": "Sentinel-2A MSI", "b": "Sentinel-2"}
