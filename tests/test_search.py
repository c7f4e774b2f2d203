"""SimilarChangeIndex: exact cosine neighbours keyed by vec, exclusions, persistence, run compatibility."""

from pathlib import Path

import faiss
import numpy as np
import pytest
from sklearn.base import clone

from changescout.errors import IncompatibleRunsError
from changescout.search import (SHAPE_WEIGHT, SimilarChangeIndex, check_compatible, compatibility, feedback_query, rank_augmented,
                                trajectory_distance)


def data(n=300, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32) * rng.uniform(0.1, 5, (n, 1)).astype(np.float32)
    keys = rng.permutation(np.arange(1000, 1000 + n)).astype(np.int64)  # keys are not positions
    return X, keys


def brute_force(X, keys, q, k):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q)
    sims = Xn @ qn
    order = np.argsort(-sims, kind="stable")[:k]
    return keys[order], sims[order]


def test_exact_cosine_neighbours_match_brute_force():
    X, keys = data()
    index = SimilarChangeIndex().fit(X, keys)
    Q = np.random.default_rng(1).standard_normal((5, X.shape[1])).astype(np.float32)
    res = index.search(Q, k=10)
    assert len(res.keys) == len(res.similarities) == 5
    for q, got_k, got_s in zip(Q, res.keys, res.similarities):
        exp_k, exp_s = brute_force(X, keys, q, 10)
        np.testing.assert_array_equal(got_k, exp_k)
        np.testing.assert_allclose(got_s, exp_s, atol=1e-5)
        assert np.all(np.diff(got_s) <= 1e-7)  # best first


def test_cosine_ignores_vector_length():
    X, keys = data()
    index = SimilarChangeIndex().fit(X, keys)
    r1 = index.search(X[3], k=5)
    r2 = index.search(X[3] * 100.0, k=5)
    np.testing.assert_array_equal(r1.keys[0], r2.keys[0])
    assert r1.keys[0][0] == keys[3] and r1.similarities[0][0] == pytest.approx(1.0, abs=1e-5)


def test_exclude_keys():
    X, keys = data()
    index = SimilarChangeIndex().fit(X, keys)
    full = index.search(X[3], k=12).keys[0]
    excluded = {int(full[0]), int(full[4])}
    res = index.search(X[3], k=10, exclude=excluded)
    assert len(res.keys[0]) == 10
    assert not excluded & set(res.keys[0].tolist())
    assert res.keys[0].tolist() == [k for k in full.tolist() if k not in excluded][:10]


def test_k_larger_than_the_index_returns_everything_without_minus_one():
    X, keys = data(n=7)
    index = SimilarChangeIndex().fit(X, keys)
    res = index.search(X[0], k=50, exclude=[keys[0]])
    assert len(res.keys[0]) == 6
    assert -1 not in res.keys[0].tolist()
    assert set(res.keys[0].tolist()) == set(keys.tolist()) - {int(keys[0])}
    assert np.isfinite(res.similarities[0]).all()


def test_save_load_roundtrip(tmp_path):
    X, keys = data()
    index = SimilarChangeIndex().fit(X, keys)
    index.save(tmp_path / "index.faiss")
    again = SimilarChangeIndex.load(tmp_path / "index.faiss")
    a, b = index.search(X[:3], k=8), again.search(X[:3], k=8)
    for ka, kb, sa, sb in zip(a.keys, b.keys, a.similarities, b.similarities):
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(sa, sb)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]
    assert again.factory == "Flat"
    for factory in ("HNSW8", "IVF2,Flat"):  # (it read "Flat" whatever it was); a clone fits the same kind again
        SimilarChangeIndex(factory).fit(X, keys).save(tmp_path / "index.faiss")
        loaded = SimilarChangeIndex.load(tmp_path / "index.faiss")
        assert loaded.factory == factory and clone(loaded).fit(X, keys).search(X[0], k=1).keys[0].tolist() == [keys[0]]


def test_approximate_factory_has_high_recall():
    X, keys = data(n=2000, dim=16)
    index = SimilarChangeIndex("IVF16,Flat").fit(X, keys)
    faiss.extract_index_ivf(index.index_).nprobe = 16  # all lists: exhaustive
    res = index.search(X[:20], k=5)
    for q, got in zip(X[:20], res.keys):
        np.testing.assert_array_equal(got, brute_force(X, keys, q, 5)[0])


def test_feedback_query_moves_away_from_negatives():
    pos = np.array([[1.0, 0.0, 0.0]], np.float32)
    neg = np.array([[0.0, 2.0, 0.0]], np.float32)
    q = feedback_query(pos, neg, beta=0.5)
    np.testing.assert_allclose(q, [[1.0, -0.5, 0.0]])
    np.testing.assert_allclose(feedback_query(pos * 3), [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(feedback_query(np.array([[2.0, 0, 0], [0, 4.0, 0]], np.float32)), [[0.5, 0.5, 0.0]])


# -- compatibility -----------------------------------------------------------------------------------
ATTRS = {"encoder": "rcf", "encoder_version": "1", "weights_sha256": "a" * 64, "patch_size": 16,
         "normalisation": '{"method": "per-date", "centre_scale": [], "shared": true}'}


def test_compatibility_reads_the_normalisation_method():
    c = compatibility(ATTRS)
    assert c == {"encoder": "rcf", "encoder_version": "1", "weights_sha256": "a" * 64, "patch_size": 16,
                 "normalisation_method": "per-date", "shared_space": True, "search_vector": "vector",
                 "new_state_weight": 0.0, "encoder_options": ""}  # (not recorded before 0.3.12: the defaults)
    assert compatibility({**ATTRS, "patch_size": "16"})["patch_size"] == 16
    assert compatibility({**ATTRS, "search_vector": "residual"})["search_vector"] == "residual"
    del_norm = {k: v for k, v in ATTRS.items() if k != "normalisation"}
    assert compatibility({**del_norm, "normalisation_method": "x"})["normalisation_method"] == "x"


def test_runs_that_search_other_vectors_are_refused():
    """Runs of earlier versions searched their raw change vectors (before 0.3.2) or their residuals alone
    (0.3.2 to 0.3.8); their index cannot answer a query of residual and new state."""
    a = compatibility({**ATTRS, "search_vector": "search"})
    with pytest.raises(IncompatibleRunsError, match="search_vector: 'search' vs 'vector'") as exc:
        check_compatible(a, compatibility(ATTRS), "runA", "runB")
    assert "runB was made by changescout before 0.3.2" in str(exc.value) and "--overwrite" in str(exc.value)
    with pytest.raises(IncompatibleRunsError, match="search_vector: 'residual' vs 'search'") as exc:
        check_compatible(compatibility({**ATTRS, "search_vector": "residual"}), a, "old", "new")
    assert "old was made by changescout from 0.3.2 to 0.3.8" in str(exc.value) and "new was" not in str(exc.value)


def test_runs_whose_search_vectors_weigh_the_new_state_otherwise_are_refused():
    """Search vectors of another new-state weight have other dimensions or another balance: refused by name
    (embeddings without the attribute read as 0), not failed inside faiss."""
    a = compatibility({**ATTRS, "search_vector": "search", "new_state_weight": 0.5})
    b = compatibility({**ATTRS, "search_vector": "search"})
    assert b["new_state_weight"] == 0.0
    with pytest.raises(IncompatibleRunsError, match="new_state_weight: 0.5 vs 0.0"):
        check_compatible(a, b, "runA", "runB")


def test_check_compatible_accepts_same_and_refuses_other_weights_with_a_hint():
    a = compatibility(ATTRS)
    check_compatible(a, dict(a), "runA", "runB")
    b = {**a, "weights_sha256": "b" * 64}
    with pytest.raises(IncompatibleRunsError) as exc:
        check_compatible(a, b, "runA", "runB")
    msg = str(exc.value)
    assert "--weights runA/rcf_weights.npz" in msg and "weights_sha256" in msg and "runB" in msg
    assert exc.value.exit_code == 2
    # other weights and another patch size: the advice names both (the weights alone are refused again)
    with pytest.raises(IncompatibleRunsError, match=r"--weights runA/rcf_weights.npz and --patch-size 16 to share"):
        check_compatible(a, {**b, "patch_size": 8}, "runA", "runB")


@pytest.mark.parametrize("key, value", [("patch_size", 8), ("encoder", "other"), ("normalisation_method", "none"),
                                        ("encoder_options", '{"token_size": 4}')])  # galileo-nano's other space
def test_check_compatible_refuses_other_settings(key, value):
    a = compatibility(ATTRS)
    with pytest.raises(IncompatibleRunsError, match=key):
        check_compatible(a, {**a, key: value}, "runA", "runB")


def test_runs_whose_rcf_input_was_normalised_on_their_own_area_are_refused():
    """rcf runs made before the weights carried their input normalisation (no ``shared`` flag) each normalised
    on their own area: the same weights do not make their change vectors comparable. Pretrained encoders,
    which normalise their input themselves, are comparable without the flag."""
    old = {**ATTRS, "normalisation": '{"method": "per-date", "centre_scale": []}'}
    assert compatibility(old)["shared_space"] is False
    assert compatibility({**old, "shared_space": 1})["shared_space"] is True  # the changes store's own flag
    with pytest.raises(IncompatibleRunsError, match="runB normalised the encoder's input on its own area") as exc:
        check_compatible(compatibility(ATTRS), compatibility(old), "runA", "runB")
    assert "--weights runA/rcf_weights.npz" in str(exc.value)
    galileo = {**old, "encoder": "galileo-nano"}
    check_compatible(compatibility(galileo), compatibility(galileo), "runA", "runB")
    # a plugin fed the stage's per-date z-scores (embed.shares_space: shared false) is told as such, not as old rcf
    plugin = compatibility({**ATTRS, "encoder": "myenc", "normalisation": '{"method": "per-date", "shared": false}'})
    with pytest.raises(IncompatibleRunsError, match="encoder 'myenc' reads the embedding stage's per-date z-scores") as exc:
        check_compatible(plugin, plugin, "runA", "runB")
    assert "rcf" not in str(exc.value) and "--weights" not in str(exc.value)


def test_the_rcf_weights_hint_is_only_given_between_rcf_runs():
    a = compatibility(ATTRS)
    with pytest.raises(IncompatibleRunsError) as exc:
        check_compatible(a, {**a, "encoder": "galileo-nano", "weights_sha256": "b" * 64}, "runA", "runB")
    assert "--weights" not in str(exc.value)


def test_saving_an_index_never_fitted_is_refused_and_leaves_the_file(tmp_path):
    """``save`` before ``fit`` was an AttributeError (``index_``) from inside the atomic write."""
    from changescout.errors import ConfigError

    path = tmp_path / "index.faiss"
    path.write_bytes(b"an earlier index")
    with pytest.raises(ConfigError, match="fit it on vectors, or load one, before saving it to .*index.faiss"):
        SimilarChangeIndex().save(path)
    assert path.read_bytes() == b"an earlier index" and [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_the_index_refuses_what_it_cannot_answer_with_changescout_errors():
    """A library user's mistakes (searching before fitting, a query of other dimensions, k = 0, fewer keys than
    vectors, a NaN vector, a faiss index that cannot be trained on so few vectors) are ConfigErrors that name
    the problem, not faiss assertions or AttributeErrors."""
    from changescout.errors import ConfigError

    v = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    keys = np.arange(100)
    with pytest.raises(ConfigError, match="fit it on vectors, or load one"):
        SimilarChangeIndex().search(v[:1])
    index = SimilarChangeIndex().fit(v, keys)
    with pytest.raises(ConfigError, match="the index's 16 dimensions; got shape \\(1, 8\\)"):
        index.search(v[:1, :8])
    with pytest.raises(ConfigError, match="k must be a whole number >= 1, got 0"):
        index.search(v[:1], k=0)
    with pytest.raises(ConfigError, match="one key per vector"):
        SimilarChangeIndex().fit(v, keys[:10])
    bad = v.copy()
    bad[5] = np.nan
    with pytest.raises(ConfigError, match="1 of the 100 vectors to index hold NaN"):
        SimilarChangeIndex().fit(bad, keys)
    with pytest.raises(ConfigError, match="'IVF1024,Flat' cannot be built on 100 vectors"):
        SimilarChangeIndex("IVF1024,Flat").fit(v, keys)
    assert list(index.search(v[3], k=1).keys[0]) == [3]  # one query as a 1-D vector still works
    # a notebook's numpy integer k (faiss refused it with a TypeError of its overloads), float or repeated keys
    # (400.5 was indexed as 400; two vectors under one key), an index file missing or not one (faiss' RuntimeError)
    assert list(index.search(v[3], k=np.int64(2)).keys[0])[:1] == [3]
    with pytest.raises(ConfigError, match="keys must be integers .*got float64"):
        SimilarChangeIndex().fit(v, keys + 0.5)
    with pytest.raises(ConfigError, match="keys must be unique: 1 of the 100 repeat"):
        SimilarChangeIndex().fit(v, np.r_[keys[:99], 0])
    with pytest.raises(ConfigError, match="missing.faiss does not exist"):
        SimilarChangeIndex.load(Path("missing.faiss"))
    with pytest.raises(ConfigError, match="pyproject.toml is no faiss index"):
        SimilarChangeIndex.load(Path(__file__).parents[1] / "pyproject.toml")


def test_augmentation_draws_each_row_toward_its_nearest_other_row():
    """DBA: each unit row plus its nearest *other* row weighted by their cosine squared; a row is not its own
    neighbour, and a query given with its database row is augmented as that row is."""
    from changescout.search import augment_neighbours

    db = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 0.6, 0.8]], np.float32)
    aug = augment_neighbours(db)
    expect = db[0] + 0.8 ** 2 * db[1]  # row 0's nearest other is row 1 (cosine 0.8)
    np.testing.assert_allclose(aug[0], expect / np.linalg.norm(expect), atol=1e-6)
    expect = db[2] + 0.8 ** 2 * db[3]
    np.testing.assert_allclose(aug[2], expect / np.linalg.norm(expect), atol=1e-6)
    np.testing.assert_allclose(augment_neighbours(db, db[[1]], own=np.array([1])), aug[[1]], atol=1e-6)
    # a query that is no row of the database takes its nearest row: row 1 (cosine 0.96; row 0 0.6, row 3 0.48)
    q = np.array([[0.6, 0.8, 0.0]], np.float32)
    expect = q[0] + 0.96 ** 2 * db[1]
    np.testing.assert_allclose(augment_neighbours(db, q)[0], expect / np.linalg.norm(expect), atol=1e-6)
    # a neighbour pointing away (negative cosine) adds nothing
    lone = np.array([[1.0, 0.0], [-1.0, 0.1]], np.float32)
    np.testing.assert_allclose(augment_neighbours(lone)[0], [1.0, 0.0], atol=1e-6)


def test_ranking_after_augmentation_is_the_same_with_a_shortlist():
    """A large database is first cut to the rows nearest the query; on clustered data its top results are
    those of the exact ranking, and the query's own row and excluded rows never come back."""
    from changescout.search import rank_augmented

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 16))
    db = (centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    exact_rows, exact_sims = rank_augmented(db, db[7], own=7, exclude={7, 11}, shortlist=10_000)
    short_rows, short_sims = rank_augmented(db, db[7], own=7, exclude={7, 11}, shortlist=300)
    assert len(exact_rows) == 2998 and not {7, 11} & set(exact_rows.tolist())
    np.testing.assert_array_equal(short_rows[:20], exact_rows[:20])
    np.testing.assert_allclose(short_sims[:20], exact_sims[:20], atol=1e-6)
    assert (np.diff(exact_sims) <= 1e-9).all()


def test_objects_are_also_compared_by_how_they_unfold_and_an_unknown_trajectory_is_no_perfect_match():
    """A planted harvest (bare in one step, kept) and a crop field browning over months end alike; their
    trajectories differ. Review: a row sharing no known date with the query had distance 0, a perfect match,
    so changes at the series' ends, under clouds or of old runs came before near-identical ones."""
    query = np.array([0, 0, 1, 1, 1.0])
    profiles = np.array([[0, 0, 1, 1, 1.05], [-1, -0.5, 1.5, 2, 2.5], [np.nan] * 5, [0.1, 0, np.nan, np.nan, np.nan],
                         [0.2, 0.1, 1, 1, 1]])
    d = trajectory_distance(profiles, query)
    np.testing.assert_allclose(d[[0, 1, 3, 4]], [0.0025 / 5, (1 + 0.25 + 0.25 + 1 + 2.25) / 5, 0.01 / 2, 0.05 / 5])
    assert d[2] == pytest.approx(np.median(d[[0, 1, 3, 4]]))  # unknown: the others' median, not 0
    rng = np.random.default_rng(0)
    db = np.tile(rng.normal(size=8), (5, 1)) + rng.normal(0, 1e-3, (5, 8))  # five look-alike objects
    rows, sims = rank_augmented(db, db[0], profiles=profiles, query_profile=query)
    assert rows[0] == 0 and rows[-1] == 1  # the one that unfolds alike first, the slow browning last
    plain = rank_augmented(db, db[0])
    base = dict(zip(*plain))
    np.testing.assert_allclose(sims, [base[r] - 1.5 * d[r] for r in rows])
    # a query whose own trajectory is unknown (a run of 0.3.15 or earlier) is compared without the term
    rows_q, sims_q = rank_augmented(db, db[0], profiles=profiles, query_profile=np.full(5, np.nan))
    assert rows_q.tolist() == plain[0].tolist() and np.allclose(sims_q, plain[1])


def test_an_elongated_object_finds_the_lines_before_the_compact_clearings_that_change_alike():
    """A road is a thin clearing at 16 px: its descriptor is nearer a clear-cut's than the other road's (on the
    planted Bouconne series the other road came 12th, behind clear-cuts and harvests). The elongation it lacks
    against the query's costs a candidate similarity; a compact query takes no notice of shape, and an unknown
    shape (a run without the column) costs what the others' cost in the median: nothing would put an old run's
    objects before the same objects of a new one (a review)."""
    rng = np.random.default_rng(1)
    e = np.eye(16)
    # rows 0-3: clearings; 4: the query road; 5: the other road, a clearing too, and further from the query
    db = np.stack([e[0] + 0.3 * e[1] + rng.normal(0, 0.03, 16) for _ in range(4)]
                  + [e[0] + 0.3 * e[1], e[0] + 0.3 * e[1] + 0.5 * e[2]])
    shapes = np.array([0.0, 0.1, 0.2, 0.0, 1.3, 1.2])
    plain_rows, plain_sims = rank_augmented(db, db[4], own=4, exclude={4})
    assert plain_rows[-1] == 5  # by their change alone, the other road comes last
    rows, sims = rank_augmented(db, db[4], own=4, exclude={4}, shapes=shapes, query_shape=shapes[4])
    assert rows[0] == 5 and set(rows[1:]) == {0, 1, 2, 3}
    base = dict(zip(plain_rows.tolist(), plain_sims))
    np.testing.assert_allclose(sims, [base[r] - SHAPE_WEIGHT * max(0.0, 1.3 - shapes[r]) for r in rows])
    # a compact query (a clearing) ranks as without shapes, elongated candidates included
    compact = rank_augmented(db, db[0], own=0, exclude={0}, shapes=shapes, query_shape=shapes[0])
    alike = rank_augmented(db, db[0], own=0, exclude={0})
    np.testing.assert_array_equal(compact[0], alike[0])
    np.testing.assert_allclose(compact[1], alike[1])
    # a candidate of unknown shape costs the others' median; unknown everywhere, or the query's, nothing
    unknown = shapes.copy()
    unknown[0] = np.nan
    rows_u, sims_u = rank_augmented(db, db[4], own=4, exclude={4}, shapes=unknown, query_shape=1.3)
    lost = {r: base[r] - s for r, s in zip(rows_u.tolist(), sims_u)}
    assert lost[0] == pytest.approx(np.median([lost[r] for r in (1, 2, 3, 5)]))
    unknown[:4] = np.nan
    unknown[5] = np.nan
    assert rank_augmented(db, db[4], own=4, exclude={4}, shapes=unknown, query_shape=1.3)[0].tolist() == plain_rows.tolist()
    assert rank_augmented(db, db[4], own=4, exclude={4}, shapes=shapes, query_shape=np.nan)[0].tolist() == plain_rows.tolist()
