"""Pixel and patch metrics against hand-computed values, pooling over items, NaN handling."""

import json
import math

import numpy as np
import pytest

from changescout.errors import ConfigError, InputError
from changescout.evaluate.metrics import (
    METRIC_KEYS,
    Item,
    MetricsRow,
    binary_change_iou,
    change_between_months,
    evaluate_items,
    otsu_threshold,
    patch_labels,
    patch_level,
    patch_scores,
    precision_at_top,
    ranking_metrics,
    spread,
)

SCORE = np.array([0.1, 0.4, 0.35, 0.8])
LABEL = np.array([False, False, True, True])


def test_ranking_metrics_match_hand_computed_values():
    m = ranking_metrics(SCORE, LABEL)
    assert m["auroc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs are ordered right
    assert m["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # precision 1 at recall 1/2, 2/3 at recall 1
    assert m["best_f1"] == pytest.approx(0.8)  # top 3: precision 2/3, recall 1
    assert m["p_at_1pct"] == 1.0  # ceil(1 % of 4) = 1 item: the 0.8, changed
    assert set(m) == set(METRIC_KEYS)


def test_nan_scores_and_invalid_entries_are_left_out():
    score = np.append(SCORE, [np.nan, 0.0])
    label = np.append(LABEL, [True, True])
    valid = np.array([True] * 5 + [False])
    assert ranking_metrics(score, label, valid) == ranking_metrics(SCORE, LABEL)


def test_one_class_gives_nan_not_an_error():
    m = ranking_metrics(SCORE, np.zeros(4, bool))
    assert math.isnan(m["auroc"]) and math.isnan(m["ap"]) and math.isnan(m["best_f1"])
    assert m["otsu_f1"] == 0.0 and m["p_at_1pct"] == 0.0
    assert math.isnan(ranking_metrics(SCORE, np.ones(4, bool))["auroc"])
    empty = ranking_metrics(np.full(3, np.nan), np.ones(3, bool))
    assert all(math.isnan(v) for v in empty.values())


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match="same shape"):
        ranking_metrics(SCORE, LABEL[:3])


def test_otsu_finds_the_valley_of_a_bimodal_histogram():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 3000), rng.normal(8, 1, 1000), [np.nan]])
    assert 2.5 < otsu_threshold(values) < 5.5
    assert otsu_threshold([0, 0, 0, 10, 10]) == pytest.approx(10 * 128 / 256, abs=10 / 256 + 1e-9)
    assert otsu_threshold([3.0, 3.0]) == 3.0
    assert math.isnan(otsu_threshold([np.nan]))


def test_otsu_f1_and_iou():
    m = ranking_metrics(np.array([0.0, 0.0, 1.0, 1.0]), np.array([False, True, True, True]))
    assert m["otsu_f1"] == pytest.approx(0.8)  # predicted {2, 3}: TP 2, FN 1
    assert m["otsu_iou"] == pytest.approx(2 / 3)


def test_precision_at_top_one_percent():
    score = np.arange(200.0)
    label = np.zeros(200, bool)
    label[199] = True  # the top 2 (1 % of 200) hold one change
    assert precision_at_top(score, label) == 0.5
    assert precision_at_top(score, label, fraction=0.005) == 1.0


def test_patch_scores_average_valid_pixels_and_drop_incomplete_patches():
    score = np.arange(25.0).reshape(5, 5)
    score[0, 0] = np.nan
    valid = np.ones((5, 5), bool)
    valid[3, 3] = False
    out = patch_scores(score, 2, valid)
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx((1 + 5 + 6) / 3)
    assert out[1, 1] == pytest.approx((12 + 13 + 17) / 3)
    score[2:4, 0:2] = np.nan
    assert math.isnan(patch_scores(score, 2)[1, 0])


def test_patch_label_needs_five_percent_changed():
    label = np.zeros((20, 40), bool)
    label[0, :20] = True  # 20 of 400 pixels: 5 %
    label[0, 20:39] = True  # 19 of 400
    assert patch_labels(label, 20).tolist() == [[True, False]]
    valid = np.ones_like(label)
    valid[10:, 20:] = False  # 19 changed of 200 valid pixels
    assert patch_labels(label, 20, valid=valid).tolist() == [[True, True]]


def test_patch_level_takes_pixel_or_patch_scores():
    label = np.zeros((40, 40), bool)
    label[16:32, 0:16] = True
    s, y = patch_level(np.where(label, 1.0, 0.0), label, 16)
    assert s.shape == y.shape == (2, 2) and y.tolist() == [[False, False], [True, False]]
    s, y = patch_level(np.arange(9.0).reshape(3, 3), label, 16, scores_are_patches=True)
    assert s.tolist() == [[0, 1], [3, 4]] and y.shape == (2, 2)


def test_evaluate_items_pools_and_lists_items():
    items = [Item("a", np.array([[0.0, 1.0]]), np.array([[False, True]])),
             Item("b", np.array([[10.0, 11.0]]), np.array([[False, True]])),
             Item("c", np.array([[5.0, 6.0]]), np.array([[False, False]]))]
    row, per = evaluate_items("cva-z", items)
    # pooled positives 1, 11 vs negatives 0, 10, 5, 6: 1 beats 0 only, 11 beats all four
    assert row.auroc == pytest.approx(5 / 8)
    assert row.n_items == 3 and row.level == "pixel" and row.patch_size is None
    assert [p["item"] for p in per] == ["a", "b", "c"]
    assert per[0]["auroc"] == per[1]["auroc"] == 1.0 and math.isnan(per[2]["auroc"])
    sp = spread(per)
    assert sp["auroc"] == {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}


def test_evaluate_items_at_patch_level():
    label = np.zeros((32, 32), bool)
    label[:16, :16] = True
    score = np.random.default_rng(0).random((32, 32)) + 2 * label
    row, per = evaluate_items("x", [Item("one", score, label)], level="patch", patch_size=16, seconds=1.5)
    assert row.level == "patch" and row.patch_size == 16 and row.auroc == 1.0 and row.seconds == 1.5
    with pytest.raises(ConfigError, match="patch_size"):
        evaluate_items("x", [Item("one", score, label)], level="patch")
    with pytest.raises(ConfigError, match="level"):
        evaluate_items("x", [Item("one", score, label)], level="scene")


def test_metrics_row_serialises_with_the_design_keys():
    row = MetricsRow("irmad", False, "patch", 16, 7, auroc=0.63, seconds=2.0)
    d = row.to_dict()
    assert list(d) == ["method", "uses_embeddings", "level", "patch_size", "n_items", "auroc", "ap", "best_f1",
                       "otsu_f1", "otsu_iou", "p_at_1pct", "seconds"]
    assert d["ap"] is None and d["auroc"] == 0.63
    json.dumps(d, allow_nan=False)
    with pytest.raises(ConfigError):
        MetricsRow("irmad", False, "patch", None, 7)


def test_binary_change_iou_pools_consecutive_pairs():
    pred = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], bool)
    true = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], bool)
    assert binary_change_iou(pred[0], true[0]) == pytest.approx(1 / 3)
    assert binary_change_iou(pred, true) == pytest.approx(3 / 5)  # (1 + 2) / (3 + 2), not the mean of 1/3 and 1
    assert math.isnan(binary_change_iou(np.zeros(4, bool), np.zeros(4, bool)))
    assert binary_change_iou(pred[0], true[0], valid=np.array([0, 1, 0, 1], bool)) == 1.0


def test_change_between_months():
    maps = np.array([[1, 2, 3], [1, 2, 4], [5, 2, 4]])
    assert change_between_months(maps[:, None, :]).tolist() == [[[False, False, True]], [[True, False, False]]]
    with pytest.raises(InputError):
        change_between_months(maps[:1])


def test_unlabelled_pixels_bad_maps_and_fractions_are_refused():
    """NaN labels read as change (NaN is true): refused, pointing to valid=False. Maps that are not 2-D, a
    valid mask of another shape and a fraction outside (0, 1] are named instead of numpy's errors."""
    from changescout.errors import InputError
    from changescout.evaluate import metrics as M

    rng = np.random.default_rng(0)
    s, y = rng.random((64, 64)), rng.random((64, 64)) < 0.1
    with pytest.raises(InputError, match="labels hold .* NaN .*valid=False"):
        M.ranking_metrics(s, np.where(y, 1.0, np.nan))
    label = y.astype(float)
    label[:4] = np.nan  # unlabelled rows, left out as the message says: measured as without them
    valid = ~np.isnan(label)
    assert M.ranking_metrics(s, label, valid) == M.ranking_metrics(s[4:], y[4:])
    np.testing.assert_array_equal(M.patch_labels(label, 16, valid=valid), M.patch_labels(np.where(valid, y, False), 16, valid=valid))
    with pytest.raises(InputError, match="valid must have the shape of the score"):
        M.patch_level(s, y, 16, valid=np.ones((3, 3), bool))
    with pytest.raises(InputError, match="score must be a 2-D map"):
        M.patch_scores(s[0], 16)
    with pytest.raises(InputError, match="fraction must be in"):
        M.precision_at_top(s, y, -1)
