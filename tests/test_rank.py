"""Rarity and atypicality: higher means more, rank 1 is the most atypical, transient changes are demoted."""

import faiss
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.utils.estimator_checks import parametrize_with_checks

from changescout.cluster import ChangeClusterer
from changescout.errors import ConfigError
from changescout.events import check_directions
from changescout.objects import ObjectRanker
from changescout.rank import RANK_BY, AtypicalityRanker, RarityScorer, magnitude_score, percentile

@parametrize_with_checks([RarityScorer(), RarityScorer(n_neighbors=3, contamination=0.1)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def cloud(seed=0, n=200, dim=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    X[0] = 25.0  # isolated
    return X


def test_score_samples_lower_for_isolated_point():
    X = cloud()
    s = RarityScorer(n_neighbors=5).fit(X)
    scores = s.score_samples(np.array([[25.0] * 4, [0.0] * 4], np.float32))
    assert scores[0] < scores[1]
    assert np.argmin(s.train_scores_) == 0
    # training scores leave the point itself out: the mean distance to its 5 true neighbours
    d = np.sqrt(((X[1:] - X[0]) ** 2).sum(axis=1))
    assert s.train_scores_[0] == pytest.approx(-np.sort(d)[:5].mean(), rel=1e-4)
    assert s.predict(np.array([[25.0] * 4], np.float32)).tolist() == [-1]
    assert s.decision_function(np.array([[0.0] * 4], np.float32))[0] > 0


def test_a_large_run_is_scored_by_an_inverted_file_that_ranks_like_the_exact_search():
    """Beyond ``max_exact`` changes the neighbours come from an inverted file (its cost grows as n^1.5, the
    exact search's as n^2): the same order of rarity, the isolated change still the rarest, and the same
    scores twice over."""
    rng = np.random.default_rng(2)
    X = np.vstack([rng.standard_normal((1500, 6)) + c for c in (0.0, 6.0)]).astype(np.float32)
    X[7] = 40.0
    exact = RarityScorer(max_exact=len(X)).fit(X)
    approx = RarityScorer(max_exact=1000).fit(X)
    assert isinstance(exact.index_, faiss.IndexFlatL2) and isinstance(approx.index_, faiss.IndexIVFFlat)
    assert np.argmin(approx.train_scores_) == 7
    assert spearmanr(exact.train_scores_, approx.train_scores_).statistic > 0.99
    np.testing.assert_array_equal(approx.train_scores_, RarityScorer(max_exact=1000).fit(X).train_scores_)
    assert approx.predict(np.array([[40.0] * 6, [0.0] * 6], np.float32)).tolist() == [-1, 1]


@pytest.mark.parametrize("max_exact", [10_000, 0])
def test_identical_changes_count_as_many_times_as_they_occur(max_exact):
    """Identical vectors (areas a gap-filled composite repeats) are indexed once with their count, so that an
    inverted file does not scan one list holding all of them for each (200 000 changes, half identical: 47 s
    against 3 s; a review): each copy still counts as a neighbour at distance 0, the scores as a brute force
    gives them, for the changes and for new queries; a random_state of None seeds the inverted file too."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((600, 4)).astype(np.float32)
    X[:200] = X[0]  # 200 copies
    X[300:303] = X[599]  # 4 copies: fewer than k
    scorer = RarityScorer(n_neighbors=10, max_exact=max_exact, n_probe=10_000, random_state=None).fit(X)
    d = np.sort(np.sqrt(((X[:, None].astype(np.float64) - X[None]) ** 2).sum(-1)), axis=1)
    np.testing.assert_allclose(scorer.train_scores_, -d[:, 1:11].mean(axis=1), rtol=0, atol=1e-12)
    assert scorer.train_scores_[0] == 0 and scorer.train_scores_[599] < 0
    q = np.vstack([X[:1], X[599:], rng.standard_normal((5, 4))]).astype(np.float32)
    dq = np.sort(np.sqrt(((q[:, None].astype(np.float64) - X[None]) ** 2).sum(-1)), axis=1)
    np.testing.assert_allclose(scorer.score_samples(q), -dq[:, :10].mean(axis=1), rtol=0, atol=1e-12)


def test_distances_measured_in_blocks_are_those_measured_at_once():
    """The float64 distances to the neighbours are measured a memory-bounded block of rows at a time (4096 rows
    of 768-dim descriptors and their 9 neighbours held 0.3 GB twice over; a scale review): the same scores."""
    X = np.random.default_rng(5).standard_normal((500, 32)).astype(np.float32)
    scorer = RarityScorer(n_neighbors=8).fit(X)
    whole = scorer._distances(X, 8, block_bytes=1 << 40)
    for block_bytes in (1, 8 * 8 * 32 * 7):  # one row at a time; seven
        np.testing.assert_array_equal(scorer._distances(X, 8, block_bytes=block_bytes), whole)


def test_neighbours_an_inverted_file_misses_count_as_far_as_the_farthest_found():
    """Probing one list of a sparse inverted file finds fewer than k neighbours (faiss pads with the largest
    float): no score goes beyond the widest distance in the data."""
    X = np.random.default_rng(3).standard_normal((200, 3)).astype(np.float32)
    s = RarityScorer(n_neighbors=10, max_exact=0, n_probe=1).fit(X)
    _, ids = s.index_.search(X, 11)
    assert (ids < 0).any()  # the case this test is about
    widest = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1)).max()
    assert (-s.train_scores_ <= widest).all() and -s.offset_ <= widest


def test_predict_on_training_data_flags_contamination():
    X = np.random.default_rng(1).standard_normal((200, 3)).astype(np.float32)
    s = RarityScorer(n_neighbors=5, contamination=0.1).fit(X)
    assert (s.predict(X) == -1).sum() == pytest.approx(20, abs=2)


def test_percentile_ties_averaged_and_higher_is_higher():
    np.testing.assert_allclose(percentile([3.0, 1.0, 2.0, 2.0]), [1.0, 0.25, 0.625, 0.625])


# -- AtypicalityRanker ---------------------------------------------------------------------------------
def events_table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    reduced = rng.standard_normal((n, 3)).astype(np.float32)
    ev = pd.DataFrame({
        "vec": np.arange(n, dtype=np.int64),
        "magnitude": rng.uniform(0.1, 1.0, n),
        "zscore": rng.uniform(-1, 3, n),
        "persistence": pd.array(rng.integers(1, 4, n), dtype="Int32"),
        "cluster": np.where(np.arange(n) < n - 2, np.arange(n) % 3, 3),  # a rare type of 2 events
    })
    ev["surprise"] = ev["magnitude"]
    return ev, reduced


def test_rank_one_is_the_highest_atypicality_and_scores_are_0_1():
    ev, red = events_table()
    out = AtypicalityRanker().rank(ev, red)
    assert sorted(out["rank"]) == list(range(1, len(ev) + 1))
    best = out.loc[out["rank"] == 1, "atypicality"].item()
    assert best == out["atypicality"].max()
    check_directions(out)
    for c in ("rarity", "atypicality"):
        assert out[c].between(0, 1).all()
    assert out["cluster_size"].tolist() == ev.groupby("cluster")["cluster"].transform("size").tolist()
    # the input is not modified
    assert "rank" not in ev


def test_rare_type_and_isolated_vector_are_rarer():
    ev, red = events_table()
    red[-1] = 30.0  # one event of the rare type, far from everything
    out = AtypicalityRanker(by="rarity").rank(ev, red)
    assert out["rarity"].idxmax() == len(ev) - 1
    assert out.loc[len(ev) - 1, "rank"] == 1


def test_a_small_change_type_is_rarer_where_the_vectors_say_nothing():
    """The type's size counts on its own: with every reduced vector alike, the 2 events of the rare type are the
    rarest (a mutation that dropped the type term survived the test above, whose isolated vector won alone)."""
    ev, red = events_table()
    red[:] = 0
    out = AtypicalityRanker(by="rarity").rank(ev, red)
    assert out.loc[out["cluster"] == 3, "rarity"].min() > out.loc[out["cluster"] != 3, "rarity"].max()


def test_transient_events_are_demoted_by_transient_weight():
    ev, red = events_table()
    ev.loc[5, "persistence"] = 0
    ev.loc[6, :] = ev.loc[5, :]  # a twin of event 5 that holds...
    ev.loc[6, "vec"] = 6
    ev.loc[6, "persistence"] = 2
    red[6] = red[5]
    out = AtypicalityRanker(transient_weight=0.2).rank(ev, red)
    assert out.loc[5, "atypicality"] == pytest.approx(0.2 * out.loc[6, "atypicality"], rel=1e-5)
    assert out.loc[5, "rank"] > out.loc[6, "rank"]
    # unknown persistence (last date) is not demoted
    ev.loc[6, "persistence"] = pd.NA
    out2 = AtypicalityRanker(transient_weight=0.2).rank(ev, red)
    assert out2.loc[6, "atypicality"] == pytest.approx(out.loc[6, "atypicality"])
    # weight 1: no demotion
    out3 = AtypicalityRanker(transient_weight=1.0).rank(ev, red)
    assert out3.loc[5, "atypicality"] == pytest.approx(out3.loc[6, "atypicality"])


def test_by_options():
    ev, red = events_table()
    by_mag = AtypicalityRanker(by="magnitude").rank(ev, red)
    expected = np.sqrt(percentile(ev["surprise"]) * percentile(ev["zscore"]))
    np.testing.assert_allclose(by_mag["atypicality"], expected, rtol=1e-6)
    by_rar = AtypicalityRanker(by="rarity").rank(ev, red)
    np.testing.assert_allclose(by_rar["atypicality"], by_rar["rarity"], rtol=1e-6)
    comb = AtypicalityRanker(by="combined").rank(ev, red)
    np.testing.assert_allclose(comb["atypicality"], np.sqrt(by_rar["rarity"] * expected), rtol=1e-5)
    assert RANK_BY == ("combined", "rarity", "magnitude")


def test_unknown_zscores_count_as_the_middle_and_leave_the_order_to_surprise():
    ev, red = events_table()
    pair = ev.assign(zscore=np.nan)  # an image pair: no patch has a history
    by_mag = AtypicalityRanker(by="magnitude").rank(pair, red)
    np.testing.assert_allclose(by_mag["atypicality"], np.sqrt(0.5 * percentile(ev["surprise"])), rtol=1e-6)
    assert by_mag.sort_values("rank")["surprise"].is_monotonic_decreasing
    # where some are known, those take their percentile among the known ones, the others 0.5
    some = ev.copy()
    some.loc[:4, "zscore"] = np.nan
    z = some["zscore"].to_numpy()
    expected = np.where(np.isnan(z), 0.5, 0.0)
    expected[~np.isnan(z)] = percentile(z[~np.isnan(z)])
    np.testing.assert_allclose(magnitude_score(some["surprise"], z), np.sqrt(percentile(some["surprise"]) * expected))


def test_ties_are_broken_by_vector_key_deterministically():
    n = 8
    ev = pd.DataFrame({"vec": np.array([7, 3, 5, 1, 0, 2, 6, 4], np.int64), "magnitude": 1.0, "zscore": 1.0,
                       "persistence": pd.array([1] * n, dtype="Int32"), "cluster": 0})
    red = np.zeros((n, 2), np.float32)  # all alike: every score ties
    out = AtypicalityRanker().rank(ev, red)
    assert out["atypicality"].nunique() == 1
    assert out.sort_values("rank")["vec"].tolist() == list(range(n))
    again = AtypicalityRanker().rank(ev.iloc[::-1], red[::-1])
    assert again.set_index("vec")["rank"].sort_index().tolist() == out.set_index("vec")["rank"].sort_index().tolist()


def test_empty_events():
    ev, red = events_table()
    out = AtypicalityRanker().rank(ev.iloc[:0], red[:0])
    assert len(out) == 0 and {"rarity", "atypicality", "rank"} <= set(out.columns)


def test_false_alarm_rate_counts_quiet_scores_at_least_as_high():
    from changescout.rank import false_alarm_rate

    background = [0.1, 0.2, 0.3, 0.4]
    far = false_alarm_rate([0.05, 0.2, 0.35, 0.9], background)
    assert far.tolist() == pytest.approx([1.0, 0.75, 0.25, 0.0])
    assert false_alarm_rate([0.5], []).tolist() == [0.0]


def test_rank_names_missing_columns_and_vectors_that_do_not_match_the_events():
    rng = np.random.default_rng(0)
    ev = pd.DataFrame({"magnitude": rng.random(20), "zscore": rng.normal(size=20),
                       "persistence": pd.array([1] * 20, dtype="Int32"), "cluster": rng.integers(0, 3, 20)})
    with pytest.raises(ConfigError, match="needs the columns .*; missing: vec"):
        AtypicalityRanker().rank(ev, rng.normal(size=(20, 4)))
    with pytest.raises(ConfigError, match="reduced has 10 rows for 20 events"):
        AtypicalityRanker().rank(ev.assign(vec=np.arange(20)), rng.normal(size=(10, 4)))


def test_the_rankers_and_the_index_are_scikit_learn_estimators():
    """get_params / set_params / clone, as STYLE.md promises for every stage an ML user composes."""
    from sklearn.base import clone

    from changescout.objects import ObjectRanker
    from changescout.search import SimilarChangeIndex

    r = AtypicalityRanker(by="rarity", n_neighbors=5)
    assert clone(r).get_params() == {"by": "rarity", "transient_weight": 0.2, "n_neighbors": 5}
    o = clone(ObjectRanker(min_z=4.0).set_params(shape_weight=0.5))
    assert o.get_params()["min_z"] == 4.0 and o.get_params()["shape_weight"] == 0.5
    assert clone(SimilarChangeIndex("HNSW32")).factory == "HNSW32"


def test_rarity_does_not_depend_on_the_number_of_threads():
    """Invariance review: faiss's float32 distance sums depend on its thread count; between 1 and 2 threads 2491
    of 11 000 scores moved (by up to 3e-6), and in a run 4 events and 4 objects swapped ranks (a dask
    LocalCluster's client runs faiss on one thread)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(24, 16)) * 3
    X = (centres[rng.integers(0, 24, 11000)] + rng.normal(size=(11000, 16))).astype(np.float32)
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = RarityScorer().fit(X)
        faiss.omp_set_num_threads(2)
        two = RarityScorer().fit(X)
    finally:
        faiss.omp_set_num_threads(before)
    np.testing.assert_array_equal(one.train_scores_, two.train_scores_)
    np.testing.assert_array_equal(one.score_samples(X[:500] + 0.1), two.score_samples(X[:500] + 0.1))


@pytest.mark.parametrize("make, call, named", [
    (lambda: RarityScorer(n_neighbors=0), "fit", "RarityScorer: n_neighbors must be a whole number in [1, inf]"),
    (lambda: ChangeClusterer(n_components=0), "fit", "ChangeClusterer: n_components must be a whole number"),
    (lambda: AtypicalityRanker(transient_weight=5), "rank", "AtypicalityRanker: transient_weight must be a number in [0, 1]"),
    (lambda: AtypicalityRanker().set_params(by="bogus"), "rank", "AtypicalityRanker: by must be one of ('combined'"),
    (lambda: ObjectRanker().set_params(transient_weight=-1), "objects", "ObjectRanker: transient_weight must be"),
    (lambda: ObjectRanker(event_top=5), "objects", "ObjectRanker: event_top must be a number in [0, 1], got 5"),
    (lambda: ObjectRanker(seasonal_weight=2), "objects", "ObjectRanker: seasonal_weight must be"),
])
def test_estimators_name_a_parameter_out_of_range_when_used(make, call, named):
    """Out-of-range parameters gave scores the schema does not allow (atypicality 3.61 with transient_weight 5,
    -0.81 with -1), all-zero rarity (n_neighbors 0), a silent single component, or a bare KeyError after
    set_params: each is now named when the estimator is used (review of the library API)."""
    est = make()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    events = pd.DataFrame({"row": np.arange(40) // 8, "col": np.arange(40) % 8, "t0": pd.Timestamp("2020-01-01"),
                           "t1": pd.Timestamp("2020-02-01"), "vec": np.arange(40), "magnitude": 1.0, "surprise": 1.0,
                           "zscore": 1.0, "persistence": 1.0, "cluster": 0})
    with pytest.raises(ConfigError) as err:
        if call == "fit":
            est.fit(X)
        elif call == "rank":
            est.rank(events, X)
        else:
            est.fit_transform(events, X)
    assert err.value.message.startswith(named)
