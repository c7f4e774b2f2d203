"""The spectral score of patch events: how far a patch's most changed 4 px blocks moved (changescout.spectral)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from changescout.cube import Quality
from changescout.errors import ConfigError
from changescout.objects import ObjectRanker, robust_z
from changescout.spectral import block_size, spectral_scores

DATES = pd.to_datetime(["2021-05-01", "2021-06-01", "2021-07-01"])


def _cube(values, quality=None):
    t, b, h, w = values.shape
    coords = {"time": DATES[:t] if t <= len(DATES) else pd.date_range("2021-01-01", periods=t, freq="MS"), "band": [f"B{i}" for i in range(b)], "y": np.arange(h)[::-1] * 10.0, "x": np.arange(w) * 10.0}
    cube = xr.DataArray(values.astype(np.float32), dims=("time", "band", "y", "x"), coords=coords)
    if quality is not None:
        cube = cube.assign_coords(quality=(("time", "y", "x"), quality.astype(np.uint8)))
    return cube


def _events(n_rows, n_cols, t0=0, t1=1):
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    return pd.DataFrame({"row": rows.ravel(), "col": cols.ravel(), "t0": DATES[t0], "t1": DATES[t1]})


def _scene(seed=0, size=64, bands=4):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.05, 0.3, (bands, size, size))
    noise = lambda: 0.005 * rng.standard_normal((bands, size, size))  # noqa: E731
    return np.stack([base + noise(), base + noise(), base + noise()])


def test_a_thin_line_of_changed_pixels_stands_out_where_the_patch_mean_hardly_moves():
    """A road 2 px wide across a 16 px patch (12 % of its pixels) moves the patch's mean little, and its pixels
    as much as a clear-cut's: its patch scores far above the others, whose blocks changed by noise alone."""
    values = _scene()
    values[1:, :, 20:22, 16:32] = 0.35  # a bright road through patch (1, 1), from the second date on
    events = _events(4, 4)
    score = spectral_scores(_cube(values), events, 16)
    road = np.flatnonzero((events["row"] == 1) & (events["col"] == 1))[0]
    assert np.argmax(score) == road
    assert robust_z(score)[road] > 20  # (ObjectRanker's spectral_z: a candidate whatever its embedding did)
    mean_move = np.abs(values[1, :, 16:32, 16:32].mean(axis=(1, 2)) - values[0, :, 16:32, 16:32].mean(axis=(1, 2)))
    assert mean_move.max() < 0.04  # the patch's average: a change an embedding's mean pooling dilutes


def test_what_the_whole_scene_did_between_two_dates_scores_nothing():
    """Each band's difference is robust-z scored against the scene's blocks of that date pair: a scene-wide
    brightening (illumination, a season) leaves every patch where noise puts it."""
    values = _scene()
    events = _events(4, 4)
    plain = spectral_scores(_cube(values), events, 16)
    values[1] = values[1] * 1.0 + 0.08  # every pixel of the second date brighter
    np.testing.assert_allclose(spectral_scores(_cube(values), events, 16), plain, rtol=1e-4, atol=1e-4)


def test_pixels_under_a_flagged_cloud_are_left_out_and_a_patch_with_none_clear_is_unknown():
    values = _scene()
    values[1, :, 0:16, 0:16] = 0.8  # a cloud over patch (0, 0) at the second date, flagged
    values[1, :, 16:24, 0:16] = 0.8  # and over half of patch (1, 0)
    quality = np.zeros((3, 64, 64))
    quality[1, 0:24, 0:16] = Quality.CLOUD
    events = _events(4, 4)
    score = spectral_scores(_cube(values, quality), events, 16)
    assert np.isnan(score[0])  # (0, 0): no block clear at both dates
    assert np.isfinite(score[4]) and robust_z(score[np.isfinite(score)]).max() < 20  # (1, 0): its clear half, unchanged
    unflagged = spectral_scores(_cube(values), events, 16)
    assert robust_z(unflagged)[0] > 20  # the same cloud unflagged is a change


def test_a_flood_is_scored_where_a_mask_classes_its_pixels_water():
    """Water observes the surface (the embeddings take it): a field flooded at the second date, its pixels
    classed WATER by the source's mask (SCL, Fmask), stands out; only clear pixels were kept at first, and a
    flood scored NaN (a review)."""
    values = _scene()
    values[1:, :, 16:32, 32:48] = 0.02  # dark water over patch (1, 2)
    quality = np.zeros((3, 64, 64))
    quality[1:, 16:32, 32:48] = Quality.WATER
    score = spectral_scores(_cube(values, quality), _events(4, 4), 16)
    assert np.isfinite(score).all() and np.argmax(score) == 1 * 4 + 2 and robust_z(score)[6] > 20


def test_the_four_most_changed_blocks_score_a_patch_and_a_still_band_does_not_make_noise_a_change():
    """A patch scores the mean of its 4 most changed blocks: one changed block scores about a quarter of four
    changed alike. A band that most blocks leave exactly as it was (a fill, a constant band) is scaled by its
    spread, not by a MAD of 0 (a floor of 1e-6 made a change of 0.01 score 2500)."""
    values = _scene()
    values[1, :, 0:4, 0:4] += 0.2  # one block of patch (0, 0)
    values[1, :, 0:8, 32:40] += 0.2  # four blocks of patch (0, 2)
    score = spectral_scores(_cube(values), _events(4, 4), 16)
    assert 0.2 < score[0] / score[2] < 0.3
    still = _scene()
    still[:, 0] = 0.1  # band 0 the same everywhere, at every date
    still[1, 0, 40:44, 40:44] = 0.11  # but for one block
    score = spectral_scores(_cube(still), _events(4, 4), 16)
    assert np.isfinite(score).all() and score.max() < 100


def test_each_event_is_scored_between_its_own_dates():
    """A patch changed at the third date: its event from the second date scores it, the event from the first
    to the second does not, and one comparing the first and third dates (a cloud between) does."""
    values = _scene()
    values[2, :, 32:48, 32:48] += 0.2
    events = pd.concat([_events(4, 4, 0, 1), _events(4, 4, 1, 2), _events(4, 4, 0, 2)], ignore_index=True)
    score = spectral_scores(_cube(values), events, 16).reshape(3, 16)
    z = [robust_z(s)[10] for s in score]  # patch (2, 2)
    assert z[0] < 5 and z[1] > 20 and z[2] > 20


def test_dates_read_a_few_at_a_time_give_the_same_scores():
    """A date's blocks are read in batches and let go after the last pair that compares it (a whole cube's
    blocks of a long series or a large tile would not fit): batches of one date give the scores of one batch,
    pairs of consecutive dates and against a reference date alike."""
    values = np.concatenate([_scene(1), _scene(2)])  # six dates
    values[4, :, 8:10, :] += 0.2
    cube = _cube(values)
    times = cube["time"].to_index()
    events = pd.concat([_events(4, 4).assign(t0=times[t], t1=times[t + 1]) for t in range(5)]
                       + [_events(4, 4).assign(t0=times[0], t1=times[t]) for t in range(2, 6)], ignore_index=True)
    whole = spectral_scores(cube, events, 16)
    np.testing.assert_array_equal(spectral_scores(cube, events, 16, block_bytes=1), whole)
    np.testing.assert_array_equal(spectral_scores(cube, events.iloc[::-1], 16, block_bytes=1), whole[::-1])
    assert np.isfinite(whole).all()


def test_blocks_must_tile_the_patches_and_the_dates_must_be_the_cubes():
    """Patches of a size 4 px does not divide are scored by the largest smaller blocks that tile them (a run of
    --patch-size 10 stopped otherwise); blocks given that do not tile them are refused."""
    values = _scene()
    values[1:, :, 22:24, 20:40] = 0.35  # a line through patches (2, 2) and (2, 3) of 10 px
    assert [block_size(p) for p in (16, 8, 10, 6, 7, 2)] == [4, 4, 2, 3, 1, 2]
    tens = spectral_scores(_cube(values), _events(6, 6), 10)
    assert np.isfinite(tens).all() and set(np.argsort(-tens)[:2]) == {2 * 6 + 2, 2 * 6 + 3}
    with pytest.raises(ConfigError, match="do not tile"):
        spectral_scores(_cube(values), _events(6, 6), 10, fine=4)
    late = _events(4, 4).assign(t1=pd.Timestamp("2022-01-01"))
    with pytest.raises(ConfigError, match="dates that the cube does not have"):
        spectral_scores(_cube(values), late, 16)


def _road_beside_its_faint_patches():
    """A run's bulk of weak changes, a clear-cut of 4 patches, and a road of 6 patches in a line whose middle
    two patches (the road crossing their corners) changed too little, in their embeddings, to stand out."""
    rng = np.random.default_rng(3)
    rows, vecs = [], []
    for i in range(200):  # the bulk: weak scattered changes
        rows.append((40 + 2 * (i // 20), 2 * (i % 20), 0.1 + 0.05 * rng.random(), 1.0))
        vecs.append(rng.normal(size=8))
    road = np.eye(8)[0] + 0.3 * np.eye(8)[1]
    for k in range(6):  # the road: row 5, cols 0-5; patches 2 and 3 faint in their embeddings
        faint = k in (2, 3)
        rows.append((5, k, 0.16 if faint else 1.5, 40.0 if faint else 30.0))
        vecs.append(road + 0.05 * rng.normal(size=8))
    for r, c in ((20, 20), (20, 21), (21, 20), (21, 21)):
        rows.append((r, c, 1.5, 30.0))
        vecs.append(np.eye(8)[2] + 0.05 * rng.normal(size=8))
    ev = pd.DataFrame({"row": [r[0] for r in rows], "col": [r[1] for r in rows], "t0": DATES[0], "t1": DATES[1],
                       "surprise": [r[2] for r in rows], "magnitude": [r[2] for r in rows], "zscore": [10 * r[2] for r in rows],
                       "spectral": [r[3] for r in rows], "persistence": pd.array([2] * len(rows), dtype="Int32"),
                       "vec": np.arange(len(rows))})
    ev.loc[:199, "spectral"] = 1.0 + 0.2 * rng.random(200)
    return ev, np.array(vecs, np.float32)


def test_a_road_whose_middle_patches_hardly_changed_in_their_embeddings_is_one_object():
    """Its faint patches' spectral scores stand far out of the run's: they are candidates and join the road on
    either side into one object of 6 patches, a line (without them: two objects of 2 patches, too short to tell
    their shape)."""
    ev, vecs = _road_beside_its_faint_patches()
    road = np.flatnonzero(ev["row"].to_numpy() == 5)
    ranked, objects = ObjectRanker().fit_transform(ev, vecs)
    assert ranked["object_id"].iloc[road].nunique() == 1
    whole = objects.set_index("object_id").loc[ranked["object_id"].iloc[road[0]]]
    assert whole["n_patches"] == 6 and whole["elongation"] > 1 and whole["rank"] == 1
    apart, objects = ObjectRanker(spectral_z=None).fit_transform(ev, vecs)
    assert apart["object_id"].iloc[road].nunique() == 4  # two pairs, and each faint patch alone
    without = ev.assign(spectral=np.nan)  # a run of 0.3.29 or earlier: no score, the same objects as spectral_z=None
    pd.testing.assert_series_equal(ObjectRanker().fit_transform(without, vecs)[0]["object_id"], apart["object_id"])
    with pytest.raises(ConfigError, match="spectral_z"):
        ObjectRanker(spectral_z=-1).fit_transform(ev, vecs)
