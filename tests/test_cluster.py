"""ChangeClusterer: the scikit-learn estimator contract, and clusters that separate types of change."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from changescout.cluster import ChangeClusterer, cluster_table
from changescout.errors import ConfigError


def blobs(n_per=60, k=3, dim=12, sep=10.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * sep
    X = np.concatenate([c + rng.standard_normal((n_per, dim)) for c in centres])
    y = np.repeat(np.arange(k), n_per)
    return X.astype(np.float32), y


@parametrize_with_checks([ChangeClusterer(), ChangeClusterer(n_clusters=3, n_components=4)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_separates_well_separated_blobs():
    X, y = blobs()
    model = ChangeClusterer(n_clusters=3, random_state=0).fit(X)
    assert adjusted_rand_score(y, model.labels_) == pytest.approx(1.0)
    assert model.n_clusters_ == 3
    assert model.labels_.dtype == np.int32
    np.testing.assert_array_equal(model.predict(X), model.labels_)


def test_auto_finds_three_blobs():
    X, y = blobs(seed=1)
    model = ChangeClusterer(random_state=0).fit(X)
    assert model.n_clusters_ == 3
    assert min(model.bic_, key=model.bic_.get) == 3
    assert adjusted_rand_score(y, model.labels_) == pytest.approx(1.0)
    assert not hasattr(model.set_params(n_clusters=2).fit(X), "bic_")  # (the earlier fit's was kept: a review)
    assert not hasattr(ChangeClusterer(random_state=0).fit(X).fit(X[:1]), "bic_")  # (one change: no mixture either)


def test_a_single_change_is_one_type():
    """A run with one change (a tiny area, two dates) still gets its type; a mixture needs two samples."""
    X = np.random.default_rng(0).standard_normal((1, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero noise either
        model = ChangeClusterer(random_state=0).fit(X)
    assert model.n_clusters_ == 1 and model.labels_.tolist() == [0] and model.predict(X).tolist() == [0]
    assert model.transform(X).shape == (1, 1)
    with pytest.raises(ValueError, match="n_clusters must be between 1 and the number of samples"):
        ChangeClusterer(n_clusters=2).fit(X)


def test_auto_respects_max_clusters_and_sample_size():
    X, _ = blobs(n_per=200, k=6, seed=2)
    model = ChangeClusterer(max_clusters=4, sample_size=300, random_state=0).fit(X)
    assert max(model.bic_) <= 4
    assert model.n_clusters_ <= 4
    assert len(model.labels_) == len(X)  # every event is labelled, not only the sample


def test_deterministic_with_random_state():
    X, _ = blobs(n_per=100, k=5, sep=2.0, seed=3)  # overlapping: the result depends on the seed's init
    a = ChangeClusterer(n_clusters=5, random_state=7, sample_size=200).fit(X)
    b = ChangeClusterer(n_clusters=5, random_state=7, sample_size=200).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))


def test_fitted_attributes_end_in_underscore_and_params_are_untouched():
    X, _ = blobs()
    model = ChangeClusterer(n_clusters="auto", n_components=5)
    params = model.get_params()
    fitted = set(vars(model.fit(X))) - set(params)
    assert fitted and all(name.endswith("_") for name in fitted)
    assert {"labels_", "n_clusters_", "pca_", "mixture_", "n_features_in_"} <= fitted
    assert model.get_params() == params
    assert clone(model).get_params() == params
    assert model.transform(X).shape == (len(X), 5)
    # vectors of another width are named against ChangeClusterer (predict said "PCA is expecting", and with one
    # type took any width: a review)
    for fitted_model in (model, ChangeClusterer(n_clusters=1).fit(X)):
        with pytest.raises(ValueError, match=f"ChangeClusterer is expecting {X.shape[1]} features"):
            fitted_model.predict(X[:, :2])


def test_bad_n_clusters():
    X, _ = blobs(n_per=3)
    with pytest.raises(ValueError, match="n_clusters"):
        ChangeClusterer(n_clusters=50).fit(X)
    with pytest.raises(ConfigError, match="n_clusters"):
        ChangeClusterer(n_clusters=0).fit(X)


def test_cluster_table_sizes_and_order():
    ev = pd.DataFrame({
        "cluster": [0, 0, 1, 2, 2, 2],
        "magnitude": [1.0, 3.0, 5.0, 1.0, 1.0, 1.0],
        "atypicality": [0.1, 0.3, 0.9, 0.2, 0.2, 0.5],
        "t1": pd.to_datetime(["2021-01-01", "2021-03-01", "2021-02-01", "2021-01-01", "2021-05-01", "2021-02-01"]),
    })
    t = cluster_table(ev)
    assert t["cluster"].tolist() == [1, 2, 0]  # by mean atypicality, highest first
    assert t["size"].tolist() == [1, 3, 2]
    assert t.loc[t["cluster"] == 0, "mean_magnitude"].item() == 2.0
    assert t.loc[t["cluster"] == 2, "max_atypicality"].item() == 0.5
    assert t.loc[t["cluster"] == 2, "last_t1"].item() == pd.Timestamp("2021-05-01")
    assert t.loc[t["cluster"] == 2, "first_t1"].item() == pd.Timestamp("2021-01-01")


@pytest.mark.parametrize("params, message", [({"max_clusters": 0}, r"max_clusters must be a whole number in \[1, inf\]"),
                                             ({"max_clusters": 2.5}, "max_clusters must be a whole number"),
                                             ({"n_clusters": "six"}, r"n_clusters \('auto' or\) must be a whole number")])
def test_bad_clusterer_parameters_are_named(params, message):
    """One kind of error, ConfigError as every estimator's, for each parameter of ChangeClusterer."""
    with pytest.raises(ConfigError, match=message):
        ChangeClusterer(**params).fit(np.random.default_rng(0).normal(size=(50, 4)))


@pytest.mark.parametrize("n", [12, 40])
def test_a_small_run_of_one_type_is_one_type_not_one_per_change(n):
    """BIC chose the most types it was offered on small runs: components collapsed onto single changes (12
    changes of one type made 12 types, 40 made 24), and a type's rarity was noise."""
    X = np.random.default_rng(n).normal(0, 1, (n, 64))
    cl = ChangeClusterer(random_state=0).fit(X)
    assert cl.n_clusters_ == 1


def test_types_are_still_found_where_the_run_has_changes_enough():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0, 1, (300, 64)) + 8 * np.eye(64)[0], rng.normal(0, 1, (60, 64)) - 8 * np.eye(64)[0]])
    cl = ChangeClusterer(random_state=0).fit(X)
    assert cl.n_clusters_ >= 2 and len(set(cl.labels_[:300]) & set(cl.labels_[300:])) == 0


def test_identical_changes_fit_without_a_numpy_warning():
    """Two identical images: every change vector 0, and PCA's division by no variance printed numpy's
    "RuntimeWarning: invalid value encountered in divide" to the user (a review)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fitted = ChangeClusterer(random_state=0).fit(np.zeros((21, 8), np.float32))
    assert fitted.n_clusters_ == 1 and (fitted.labels_ == 0).all()


def test_float32_vectors_are_clustered_as_their_float64_copy_block_by_block():
    """Change vectors stay float32 (a float64 copy of a million 256-d vectors took 2 GB more) and are transformed
    a block of rows at a time in float64: the types and the reduced vectors are those of the float64 whole."""
    from changescout import cluster

    rng = np.random.default_rng(5)
    X = np.vstack([rng.standard_normal((700, 12)) + c for c in (0.0, 5.0, -5.0)]).astype(np.float32)
    wide = ChangeClusterer(random_state=1).fit(X.astype(np.float64))
    narrow = ChangeClusterer(random_state=1).fit(X)
    np.testing.assert_array_equal(narrow.labels_, wide.labels_)
    small = cluster._by_blocks(X, narrow.pca_.transform, np.float64, narrow.pca_.n_components_, block=100)
    np.testing.assert_allclose(small, wide.transform(X.astype(np.float64)), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(narrow.predict(X), wide.predict(X.astype(np.float64)))
