"""Labelling events against planted truth, and the ranking scores built on it."""

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid
from changescout.errors import ConfigError
from changescout.evaluate.planted import label_events, planted_scores
from changescout.sources.synthetic import PlantedTruth, make_series

D = pd.date_range("2021-01-15", periods=8, freq="MS") + pd.Timedelta(days=14)


@pytest.fixture(scope="module")
def truth():
    """64x64 px (4x4 patches of 16): a harvest, a flood grazing a second patch, a cloud, a road."""
    masks = np.zeros((4, 64, 64), bool)
    masks[0, 0:16, 0:16] = True  # harvest fills patch (0, 0), onset D[3]
    masks[1, 16:32, 16:32] = True  # flood fills patch (1, 1) ...
    masks[1, 16:20, 32:38] = True  # ... and 24 px (~9 %) of patch (1, 2); onset D[2], recedes at D[4]
    masks[2, 32:48, 32:48] = True  # cloud over patch (2, 2) on D[5] only
    masks[3, 56:59, 0:64] = True  # a 3 px road along patch row 3 (19 % of each patch), onset D[6]
    objects = pd.DataFrame(
        {
            "object_id": [10, 11, 12, 13],
            "type": ["harvest", "flood", "cloud", "road"],
            "kind": ["common", "rare", "cloud", "rare"],
            "onset": [D[3], D[2], D[5], D[6]],
            "end": [pd.NaT, D[4], D[6], pd.NaT],
            "pixels": masks.sum(axis=(1, 2)),
        }
    )
    grid = OutputGrid("EPSG:32631", (10.0, 0.0, 372000.0, 0.0, -10.0, 4836000.0), (64, 64))
    return PlantedTruth(objects=objects, masks=masks, grid=grid)


CASES = [  # row, col, t0, t1, label, object, kind
    (0, 0, 2, 3, 1, 10, "common"),  # harvest onset
    (0, 0, 1, 2, 0, -1, "none"),  # before it
    (0, 0, 3, 4, 0, -1, "none"),  # after it: the state does not change again
    (0, 0, 0, 3, 1, 10, "common"),  # t0 several dates before the onset
    (0, 0, 3, 0, 1, 10, "common"),  # dates given the other way round
    (1, 1, 1, 2, 1, 11, "rare"),  # flood onset
    (1, 1, 2, 3, 0, -1, "none"),  # still flooded
    (1, 1, 3, 4, 1, 11, "rare"),  # recession
    (1, 1, 1, 4, 1, 11, "rare"),  # flooded and receded within (t0, t1]: it changed (twice), so it is active
    (1, 2, 1, 2, -1, 11, "rare"),  # marginal coverage: ignored
    (2, 2, 4, 5, 0, 12, "cloud"),  # cloud appears
    (2, 2, 5, 6, 0, 12, "cloud"),  # cloud goes
    (2, 2, 3, 4, 0, -1, "none"),
    (2, 2, 4, 6, 0, -1, "none"),  # compares the clear dates around the cloud: not a cloud event
    (3, 1, 5, 6, 1, 13, "rare"),  # a thin road is active where it covers half its best patch
    (3, 1, 6, 7, 0, -1, "none"),
]


def test_label_events_hand_built_cases(truth):
    rows = [dict(row=r, col=c, t0=D[a], t1=D[b]) for r, c, a, b, *_ in CASES]
    events = pd.DataFrame(rows).assign(extra=np.arange(len(rows)))
    out = label_events(events, truth, patch_size=16)
    assert list(out["extra"]) == list(range(len(rows))) and "label" not in events
    assert list(zip(out["label"], out["truth_object"], out["truth_kind"])) == [case[4:] for case in CASES]
    assert out.loc[10, "truth_type"] == "cloud" and out.loc[0, "truth_type"] == "harvest" and out.loc[1, "truth_type"] == "none"


def test_min_cover_decides_what_is_ignored(truth):
    events = pd.DataFrame({"row": [1], "col": [2], "t0": [D[1]], "t1": [D[2]]})
    assert label_events(events, truth, 16, min_cover=0.05)["label"].item() == 1
    assert label_events(events, truth, 16, min_cover=0.5)["label"].item() == -1


def test_an_object_under_twice_min_cover_everywhere_counts_where_it_covers_half_its_best(truth):
    """The threshold goes down with the best cover (the module docstring): a shape covering 0.31 of one patch
    and 0.20 of the next is the change in both, one covering 0.56 of a patch is not in a patch it covers 0.20 of."""
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 0:10, 0:8] = True  # 80 px: 0.31 of patch (0, 0) ...
    masks[0, 0:4, 16:29] = True  # ... 52 px: 0.20 of patch (0, 1)
    masks[1, 32:41, 32:48] = True  # 144 px: 0.56 of patch (2, 2) ...
    masks[1, 32:36, 48:61] = True  # ... 52 px: 0.20 of patch (2, 3)
    objects = pd.DataFrame({"object_id": [0, 1], "type": ["harvest", "harvest"], "kind": ["common", "common"],
                            "onset": [D[3], D[3]], "end": [pd.NaT, pd.NaT], "pixels": masks.sum(axis=(1, 2))})
    small = PlantedTruth(objects=objects, masks=masks, grid=truth.grid)
    events = pd.DataFrame({"row": [0, 0, 2, 2], "col": [0, 1, 2, 3], "t0": D[2], "t1": D[3]})
    assert list(label_events(events, small, 16)["label"]) == [1, 1, 1, -1]


def test_label_events_refuses_bad_input(truth):
    with pytest.raises(ConfigError, match="missing"):
        label_events(pd.DataFrame({"row": [0], "col": [0]}), truth, 16)
    with pytest.raises(ConfigError, match="outside"):
        label_events(pd.DataFrame({"row": [4], "col": [0], "t0": [D[0]], "t1": [D[1]]}), truth, 16)


def test_planted_scores(truth):
    rows = [dict(row=r, col=c, t0=D[a], t1=D[b]) for r, c, a, b, *_ in CASES]
    out = label_events(pd.DataFrame(rows), truth, patch_size=16)
    perfect = out.assign(atypicality=out["label"].clip(lower=0) + 0.01 * np.arange(len(out)))
    s = planted_scores(perfect)
    assert s["auroc"] == 1.0 and s["ap"] == pytest.approx(1.0)
    assert s["n_pos"] == 7 and s["n_neg"] == 8
    assert s["rare_in_top10"] == [11, 13] and s["rare_missing_top10"] == []
    assert s["clouds_in_top20"] == 2
    worst = out.assign(atypicality=-out["label"].clip(lower=0).astype(float), rank=out["label"].eq(1) * 10 + np.arange(len(out)) + 1)
    s = planted_scores(worst, truth=truth)
    assert s["auroc"] == 0.0 and s["rare_missing_top10"] == [11, 13]
    with pytest.raises(ConfigError, match="no score column"):
        planted_scores(out)


def test_every_planted_object_is_found_by_consecutive_events():
    cube, truth = make_series(seed=2, size=128, n_dates=12)
    times = pd.DatetimeIndex(cube["time"].values)
    r, c, t = np.meshgrid(np.arange(8), np.arange(8), np.arange(1, len(times)), indexing="ij")
    events = pd.DataFrame({"row": r.ravel(), "col": c.ravel(), "t0": times[t.ravel() - 1], "t1": times[t.ravel()]})
    out = label_events(events, truth, patch_size=16)
    found = set(out.loc[out["label"] == 1, "truth_object"])
    changes = truth.objects.loc[truth.objects["kind"] != "cloud", "object_id"]
    assert found == set(changes)
    clouds = out[out["truth_kind"] == "cloud"]
    assert len(clouds) and (clouds["label"] == 0).all()
    assert 0.02 < out["label"].eq(1).mean() < 0.3


def test_label_objects_names_objects_by_their_positive_patches_and_clouds_by_their_onset():
    from changescout.evaluate.planted import label_objects

    ev = pd.DataFrame({
        "object_id": [0, 0, 0, 1, 1, 2, 2],
        "t1": pd.to_datetime(["2021-03-01", "2021-03-01", "2021-03-01", "2021-04-01", "2021-04-01",
                              "2021-04-01", "2021-09-01"]),
        "label": [1, 1, 1, 0, 0, 0, 0],
        "truth_object": [5, 5, 7, -1, 12, -1, 12],
        "truth_type": ["harvest", "harvest", "road", "none", "cloud", "none", "cloud"],
        "truth_kind": ["common", "common", "rare", "none", "cloud", "none", "cloud"],
    })
    objects = pd.DataFrame({"object_id": [0, 1, 2], "rank": [1, 2, 3]})
    out = label_objects(ev, objects).set_index("object_id")
    assert (out.loc[0, "truth_object"], out.loc[0, "truth_type"], out.loc[0, "truth_kind"]) == (5, "harvest", "common")
    assert out.loc[1, "truth_kind"] == "cloud"  # a cloud at its onset
    assert out.loc[2, "truth_kind"] == "none"  # a background change whose end a cloud crosses


def test_an_object_of_two_planted_changes_as_large_is_named_after_the_one_that_scores_it():
    """A construction site beside a clear-cut, two positive patches each: the object is named after the planted
    change whose patches carry the more surprise (its score's), whichever the table lists first."""
    from changescout.evaluate.planted import label_objects

    ev = pd.DataFrame({
        "object_id": [0, 0, 0, 0], "t1": pd.to_datetime(["2022-06-15"] * 4), "label": [1, 1, 1, 1],
        "truth_object": [23, 23, 0, 0], "truth_type": ["clearcut", "clearcut", "construction", "construction"],
        "truth_kind": ["common", "common", "rare", "rare"], "surprise": [1.3, 1.8, 1.9, 2.7],
    })
    objects = pd.DataFrame({"object_id": [0], "rank": [7]})
    for order in (ev, ev.iloc[::-1]):
        out = label_objects(order, objects).iloc[0]
        assert (out["truth_object"], out["truth_type"], out["truth_kind"]) == (0, "construction", "rare")
    # more positive patches still name it, whatever their surprise
    more = pd.concat([ev, ev.iloc[[0]].assign(surprise=0.1)], ignore_index=True)
    assert label_objects(more, objects).iloc[0]["truth_type"] == "clearcut"


def test_search_scores_say_where_the_neighbours_of_common_queries_come_from():
    """Two planted harvests, two planted clear-cuts, a rare pair and unplanted rows, on hand-placed directions:
    precision@5 per type, the neighbours' origin, and the rare type's sibling found."""
    from changescout.evaluate.synthetic import search_scores

    e = np.eye(4)
    rows = [  # truth_object, type, kind, descriptor
        (1, "harvest", "common", e[0]), (2, "harvest", "common", e[0] + 0.1 * e[1]),
        (3, "clearcut", "common", e[1]), (4, "clearcut", "common", e[1] + 0.1 * e[0]),
        (5, "road", "rare", e[2]), (6, "road", "rare", e[2] + 0.1 * e[3]),
        *[(-1, "none", "none", e[0] + 0.05 * k * e[3]) for k in range(4)],  # background that looks like a harvest
    ]
    table = pd.DataFrame({"truth_object": [r[0] for r in rows], "truth_type": [r[1] for r in rows],
                          "truth_kind": [r[2] for r in rows], "label": [int(r[0] >= 0) for r in rows],
                          "rank": np.arange(1, len(rows) + 1)})
    desc = np.array([r[3] for r in rows], np.float32)
    p5, rare, detail = search_scores(table, np.arange(100, 100 + len(rows)), desc)
    # harvest: the other harvest and 4 background rows; clear-cut: the other clear-cut, both harvests, 2 more
    assert detail["p_at_5_by_type"] == {"clearcut": 0.2, "harvest": 0.2}
    assert p5 == 0.2
    assert detail["neighbours"]["same type"] == 0.2
    assert detail["neighbours"]["unplanted"] + detail["neighbours"]["other planted type"] == pytest.approx(0.8)
    assert detail["neighbours"]["unplanted"] >= 0.4  # the harvests' background look-alikes
    assert rare == {5: True, 6: True}
    # a rare object with no row to query from (it made no candidate object) is not found, not left out of the count
    _, rare, _ = search_scores(table, np.arange(100, 100 + len(rows)), desc, rare_objects=[5, 6, 7])
    assert rare == {5: True, 6: True, 7: False}


def test_the_backgrounds_own_harvests_are_named_and_stay_negatives(truth):
    """A synthetic scene's crop fields go bare in their season; the planted truth did not list them, so a
    planted harvest whose nearest neighbours were such fields scored 0 on them. Where the truth knows the crops'
    phenology, a field green at t0 (weight above 0.3) with at most half of it left at t1 is the background's own
    harvest: a negative for the ranking, of type harvest for similar search."""
    from dataclasses import replace

    from changescout.evaluate.planted import label_objects

    green = np.full((len(D), 64, 64), np.nan, np.float32)
    green[:, 16:32, 0:16] = np.array([0.2, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1])[:, None, None]  # patch (1, 0): cut at D[3]
    green[:, 32:48, 0:16] = np.array([0.2, 0.8, 0.8, 0.6, 0.45, 0.35, 0.3, 0.3])[:, None, None]  # (2, 0): senesces slowly
    green[:, 0:16, 0:16] = 0.9  # under the planted harvest (patch (0, 0)): the planted one names it
    green[:, 0:16, 0:16][3:] = 0.0
    known = replace(truth, green=green, times=pd.DatetimeIndex(D))
    events = pd.DataFrame({"row": [1, 1, 2, 2, 0, 1], "col": [0, 0, 0, 0, 0, 0],
                           "t0": [D[2], D[1], D[2], D[3], D[2], D[0]], "t1": [D[3], D[3], D[3], D[4], D[3], D[1]]})
    out = label_events(events, known, 16)
    assert list(out["truth_kind"]) == ["seasonal", "seasonal", "none", "none", "common", "none"]  # (2, 0): 0.8 -> 0.6
    assert (out["label"].to_numpy() == [0, 0, 0, 0, 1, 0]).all()  # negatives all the same: the ranking's measures hold
    assert out.loc[0, "truth_type"] == "harvest" and out.loc[0, "truth_object"] == -1
    assert (label_events(events, truth, 16)["truth_kind"].to_numpy()[:4] == "none").all()  # (no phenology: as before)
    objs = label_objects(out.assign(object_id=[0, 0, 1, 2, 3, 4]), pd.DataFrame({"object_id": [0, 1, 2, 3, 4]}))
    assert list(objs["truth_kind"]) == ["seasonal", "none", "none", "common", "none"]
    assert objs.loc[0, "truth_type"] == "harvest"


def test_precision_with_the_background_counts_its_harvests_for_harvest_queries_only():
    from changescout.evaluate.synthetic import search_scores

    e = np.eye(4)
    rows = [(1, "harvest", "common", e[0]), (2, "harvest", "common", e[0] + 0.1 * e[1]),
            (3, "clearcut", "common", e[1]), (4, "clearcut", "common", e[1] + 0.1 * e[2]),
            *[(-1, "harvest", "seasonal", e[0] + 0.05 * k * e[3]) for k in range(4)],
            *[(-1, "none", "none", e[1] + 0.05 * k * e[3]) for k in range(4)]]
    table = pd.DataFrame({"truth_object": [r[0] for r in rows], "truth_type": [r[1] for r in rows],
                          "truth_kind": [r[2] for r in rows], "label": [int(r[0] >= 0) for r in rows],
                          "rank": np.arange(1, len(rows) + 1)})
    p5, _, detail = search_scores(table, np.arange(len(rows)), np.array([r[3] for r in rows], np.float32))
    assert detail["p_at_5_by_type"] == {"clearcut": 0.2, "harvest": 0.2} and p5 == 0.2  # planted only
    assert detail["p_at_5_with_background_by_type"] == {"clearcut": 0.2, "harvest": 1.0}
    assert detail["p_at_5_with_background"] == 0.6
    assert detail["neighbours"]["background of the same type"] == 0.4


def test_synthetic_truth_knows_the_crops_phenology():
    """The patches the truth calls the background's own harvests are green fields going bare in the series
    itself: NDVI about 0.5 or more before (what a planted harvest needs), and falling by more than 0.15."""
    cube, truth = make_series(seed=2, size=128, n_dates=12)
    assert truth.green.shape == (12, 128, 128) and list(truth.times) == list(pd.DatetimeIndex(cube["time"].values))
    bands = list(cube["band"].values)
    nir, red = (cube.values[:, bands.index(b)] for b in ("B08", "B04"))
    ndvi = ((nir - red) / (nir + red)).reshape(12, 8, 16, 8, 16).mean(axis=(2, 4))  # per 16 px patch
    before, after = [], []
    for i, (a, b) in enumerate(zip(truth.times[:-1], truth.times[1:])):
        cut = truth.harvested(16, a, b) >= 0.5
        before += list(ndvi[i][cut])
        after += list(ndvi[i + 1][cut])
    before, after = np.array(before), np.array(after)
    assert len(before) >= 4  # some fields are harvested in their season, in half a patch or more
    assert (before > 0.45).all() and (before - after > 0.15).all()


def test_the_planted_benchmark_prepares_the_series_as_a_run_does(tmp_path):
    """embed_changes (benchmarks/planted.py, `changescout benchmark synthetic`, stability) measured a pipeline without
    co-registration, which a run applies: on the planted Bouconne series it moves a date 0.14 px, and the rare objects
    in the top 10 went 35 -> 34 of 40 once the benchmark did it too. Its events are those of a run of the same files."""
    import rasterio

    from changescout.evaluate.synthetic import embed_changes
    from changescout.pipeline import RunConfig, open_source, run_pipeline
    from changescout.radiometry import apply_offsets
    from changescout.sources.synthetic import write_geotiffs

    folder = write_geotiffs(tmp_path / "series", size=128, n_dates=5)
    moved = sorted(folder.iterdir())[2]
    with rasterio.open(moved, "r+") as dst:  # the third date 2 px off, as a misregistered image is
        dst.write(np.roll(dst.read(), 2, axis=2))
    config = RunConfig(source=str(folder)).validate()
    run = run_pipeline(config, tmp_path / "run", log=lambda line: None)
    state = pd.read_json(run / "state.json", typ="series")
    assert moved.stem in state["coregister"]["applied"]
    events = embed_changes(apply_offsets(open_source(config), config.radiometry)[0], config)[0]
    from changescout.change import read_changes

    ran = read_changes(run)[0]
    assert len(events) == len(ran)
    np.testing.assert_allclose(events["magnitude"], ran["magnitude"], rtol=1e-4)
