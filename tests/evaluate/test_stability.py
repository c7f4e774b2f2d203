"""Stability of the ranking across pipeline seeds: the same seed gives the same ranking, other seeds keep most of it."""

import numpy as np
import pandas as pd
import pytest

from changescout.errors import ConfigError
from changescout.evaluate.stability import SeedRuns, compare_runs, match_objects, object_overlap, stability, top_overlap
from changescout.sources.synthetic import make_series

D = pd.date_range("2021-01-15", periods=4, freq="MS")


def _run(objects: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, objects) from ``{object_id: (rank, t0 index, t1 index, [(row, col), ...])}``."""
    events = pd.DataFrame([{"object_id": o, "row": r, "col": c, "t0": D[a], "t1": D[b]}
                           for o, (_, a, b, patches) in objects.items() for r, c in patches])
    table = pd.DataFrame([{"object_id": o, "rank": k, "t0": D[a], "t1": D[b]} for o, (k, a, b, _) in objects.items()])
    return events, table


def test_match_objects_on_a_hand_made_table():
    ea, oa = _run({1: (1, 0, 1, [(0, 0), (0, 1)]),
                   2: (2, 1, 2, [(2, 2)]),
                   3: (3, 0, 1, [(5, 5), (5, 6), (6, 5)]),
                   4: (4, 1, 2, [(8, 8), (8, 9)])})
    eb, ob = _run({10: (1, 0, 1, [(0, 0), (0, 1), (1, 1)]),  # IoU 2/3 with 1: match
                   11: (2, 0, 1, [(2, 2)]),  # the patch of 2 but another date pair: no match
                   12: (3, 0, 1, [(5, 5)]),  # IoU 1/3 with 3: no match
                   14: (4, 1, 2, [(8, 8)]),  # IoU 1/2 with 4 ...
                   15: (5, 1, 2, [(8, 9)]),  # ... and so is this one: 4 matches one of them only
                   13: (6, 1, 2, [(2, 2)])})  # the same as 2, but ranked 6th
    m = match_objects(ea, oa, eb, ob, top=10)
    assert sorted(zip(m["object_id_a"], m["object_id_b"])) in ([(1, 10), (2, 13), (4, 14)], [(1, 10), (2, 13), (4, 15)])
    assert m.set_index("object_id_a")["iou"].to_dict() == pytest.approx({1: 2 / 3, 2: 1.0, 4: 0.5})
    top5 = match_objects(ea, oa, eb, ob, top=5)  # 13 is out of b's top 5
    assert sorted(top5["object_id_a"]) == [1, 4]
    assert list(match_objects(ea, oa, eb, ob, top=10, min_iou=0.6)["object_id_b"]) in ([10, 13], [13, 10])
    assert object_overlap(ea, oa, eb, ob, top=4) == 0.5  # 1-10 and 4-14 among the top 4 of each
    assert object_overlap(ea, oa, ea, oa, top=4) == 1.0


def test_top_overlap_matches_events_by_patch_and_dates():
    a = pd.DataFrame({"row": [0, 1, 2, 3], "col": 0, "t0": D[0], "t1": D[1], "rank": [1, 2, 3, 4]})
    b = a.assign(rank=[2, 1, 4, 3])
    assert top_overlap(a, b, 2) == 1.0 and top_overlap(a, b.assign(t1=D[2]), 2) == 0.0
    assert top_overlap(a, a.assign(rank=[4, 3, 2, 1]), 2) == 0.0


@pytest.fixture(scope="module")
def small():
    """A 128 px, 6-date synthetic series (8x8 patches, 320 events), its runs with pipeline seeds 0, 1, 2."""
    cube, truth = make_series(seed=0, size=128, n_dates=6)
    runs = SeedRuns(cube, truth)
    return cube, truth, runs, stability(cube, truth, [0, 1, 2], runs=runs)


def test_the_same_seed_gives_the_same_ranking(small):
    cube, truth, runs, _ = small
    again = SeedRuns(cube, truth).run(1, 1)  # embedded and ranked anew, not taken from the cache
    first = runs.run(1, 1)
    pd.testing.assert_frame_equal(again["ranked"], first["ranked"])
    pd.testing.assert_frame_equal(again["objects"], first["objects"])
    same = compare_runs((again["ranked"], again["objects"]), (first["ranked"], first["objects"]))
    assert same["events_top10_overlap"] == same["events_top20_overlap"] == same["objects_top10_overlap"] == 1.0
    assert same["atypicality_spearman"] == pytest.approx(1.0)


def test_other_seeds_keep_most_of_the_top(small):
    *_, r = small
    assert r["vary"] == "all" and len(r["pairs"]) == 3
    s = r["summary"]
    # Measured on this series (seeds 0, 1, 2; commit e65f5c9): objects top-10 overlap mean 0.87 (min 0.8),
    # Spearman min 0.95, events top-20 overlap mean 0.73, top-10 mean 0.77. Patch events move more than objects
    # (on the series of seed 1 the events top-10 overlap is 0.4): the top-10 of events is not asserted.
    assert s["objects_top10_overlap"]["mean"] >= 0.6
    assert s["atypicality_spearman"]["min"] >= 0.8
    assert s["events_top20_overlap"]["mean"] >= 0.45
    # Measured: AUROC 0.971-0.977, rare planted objects in the top 10 objects 5-6 of 8.
    assert r["spread"]["auroc"]["min"] >= 0.9
    assert r["spread"]["objects_rare_in_top10"]["min"] >= 3


def test_stability_refuses_bad_arguments(small):
    cube, truth, runs, _ = small
    with pytest.raises(ConfigError, match="vary"):
        stability(cube, truth, [0, 1], vary="everything", runs=runs)
    with pytest.raises(ConfigError, match="two distinct seeds"):
        stability(cube, truth, [0, 0], runs=runs)
    assert np.isfinite([p["atypicality_spearman"] for p in small[3]["pairs"]]).all()
