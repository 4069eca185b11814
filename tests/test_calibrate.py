import json

import numpy as np
import polars as pl
import pytest
from sklearn.isotonic import IsotonicRegression

from curate.stats.calibrate import Calibration, fit_isotonic, reliability_table


def noisy_pass_rates(n=200, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(1, 5, n) * 4) / 4  # ties, as means of a few samples have
    rates = np.clip(1 - (scores - 1) / 4 + rng.normal(0, 0.2, n), 0, 1)
    return scores, rates


def test_monotone_data_is_reproduced():
    calibration = fit_isotonic([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], target="level", score="mean", increasing=True)
    assert calibration.apply([1, 2, 3, 4, 5]).tolist() == [1, 2, 3, 4, 5]
    assert calibration.apply([1.5, 0.0, 9.0]).tolist() == [1.5, 1.0, 5.0]  # interpolated, clipped at the ends
    assert (calibration.n_fit, calibration.increasing, calibration.target, calibration.score) == \
        (5, True, "level", "mean")


def test_violations_are_pooled():
    calibration = fit_isotonic([1, 2, 3, 4, 5], [3, 1, 2, 5, 4], target="level", score="mean", increasing=True)
    # PAVA: (3, 1) → 2, 2; then 2, 2, 2; (5, 4) → 4.5, 4.5
    assert calibration.apply([1, 2, 3, 4, 5]).tolist() == pytest.approx([2, 2, 2, 4.5, 4.5])


def test_pass_rates_come_out_decreasing():
    scores, rates = noisy_pass_rates()
    calibration = fit_isotonic(scores, rates, target="acc_epoch1", score="mean")
    assert calibration.increasing is False
    predicted = calibration.apply(np.linspace(1, 5, 50))
    assert (np.diff(predicted) <= 0).all() and predicted[0] > predicted[-1]


@pytest.mark.parametrize("increasing", ["auto", True, False])
def test_apply_equals_sklearn_predict(increasing):
    scores, rates = noisy_pass_rates(seed=1)
    calibration = fit_isotonic(scores, rates, target="acc", score="mean", increasing=increasing)
    model = IsotonicRegression(increasing=increasing, out_of_bounds="clip").fit(scores, rates)
    queries = np.linspace(0, 6, 997)
    np.testing.assert_allclose(calibration.apply(queries), model.predict(queries), rtol=0, atol=1e-12)
    np.testing.assert_allclose(calibration.apply(pl.Series(scores)), model.predict(scores), rtol=0, atol=1e-12)


def test_nulls_are_dropped_and_too_few_pairs_raise():
    calibration = fit_isotonic([1, 2, None, 3, 4, 5, 6], [1, 2, 3, None, 4, 5, 6], "level", "mean", increasing=True)
    assert calibration.n_fit == 5 and calibration.x_thresholds == (1.0, 2.0, 4.0, 5.0, 6.0)
    with pytest.raises(ValueError, match="at least 5 .*got 4"):
        fit_isotonic([1, 2, None, 3, 4], [1, 2, 3, 4, 5], "level", "mean")


def test_auto_direction_needs_variation():
    with pytest.raises(ValueError, match="cannot choose a direction"):
        fit_isotonic([1, 2, 3, 4, 5], [0.5] * 5, "acc", "mean")
    constant = fit_isotonic([1, 2, 3, 4, 5], [0.5] * 5, "acc", "mean", increasing=False)
    assert constant.apply([0, 3, 9]).tolist() == [0.5, 0.5, 0.5]


def test_json_round_trip_and_atomic_save(tmp_path):
    scores, rates = noisy_pass_rates(seed=2)
    calibration = fit_isotonic(scores, rates, target="acc_epoch1", score="expected")
    assert Calibration.from_json(calibration.to_json()) == calibration
    path = tmp_path / "calibration.json"
    calibration.save(path)
    assert Calibration.load(path) == calibration
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.json"]  # no temporary file left
    stored = json.loads(path.read_text())
    assert stored["format"] == "dereason.calibration/1" and stored["target"] == "acc_epoch1"
    calibration.save(path)  # overwrites
    assert Calibration.load(path) == calibration


def test_malformed_calibrations_are_rejected():
    with pytest.raises(ValueError, match="not a calibration"):
        Calibration.from_json(json.dumps({"x_thresholds": [1]}))
    good = json.loads(fit_isotonic([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], "l", "mean").to_json())
    with pytest.raises(ValueError, match="lacks"):
        Calibration.from_json(json.dumps({k: v for k, v in good.items() if k != "n_fit"}))
    with pytest.raises(ValueError, match="not increasing"):
        Calibration((1.0, 2.0), (2.0, 1.0), "l", "mean", 5, True)
    with pytest.raises(ValueError, match="strictly increasing"):
        Calibration((2.0, 1.0), (1.0, 2.0), "l", "mean", 5, True)
    with pytest.raises(ValueError, match="as many"):
        Calibration((1.0,), (1.0, 2.0), "l", "mean", 5, True)


def test_apply_refuses_missing_scores():
    calibration = fit_isotonic([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], "l", "mean")
    with pytest.raises(ValueError, match="1 score"):
        calibration.apply([1.0, None])


def test_reliability_table_hand_computed():
    table = reliability_table([0.0, 0.1, 0.5, 0.9, 1.0], [0, 0, 1, 1, 1], n_bins=2)
    assert table.columns == ["bin", "bin_low", "bin_high", "mean_predicted", "mean_target", "n"]
    assert table.select("bin", "mean_predicted", "mean_target", "n").rows() == [
        (0, pytest.approx(0.05), 0.0, 2), (1, pytest.approx(0.8), 1.0, 3)]
    four = reliability_table([0.0, 0.1, 0.5, 0.9, 1.0], [0, 0, 1, 1, 1], n_bins=4)
    assert four["n"].to_list() == [2, 0, 1, 2]  # 0.5 opens bin 2; 1.0 closes the last bin
    assert four.row(1, named=True)["mean_predicted"] is None  # empty bin: no invented mean
    assert four["bin_low"].to_list() == [0.0, 0.25, 0.5, 0.75]


def test_reliability_table_on_a_fit_is_calibrated_per_bin():
    scores, rates = noisy_pass_rates(seed=3)
    calibration = fit_isotonic(scores, rates, target="acc", score="mean")
    table = reliability_table(calibration.apply(scores), rates, n_bins=5)
    assert table["n"].sum() == len(scores)
    # an isotonic fit is the mean target on each of its level sets, so each bin's means coincide
    filled = table.filter(pl.col("n") > 0)
    np.testing.assert_allclose(filled["mean_predicted"], filled["mean_target"], atol=1e-12)


def test_reliability_table_edge_cases():
    constant = reliability_table([0.3, 0.3, 0.3], [0, 1, 1], n_bins=3)
    assert constant["n"].to_list() == [3, 0, 0]
    assert reliability_table([None, 0.2], [1.0, None]).height == 0
    with pytest.raises(ValueError, match="n_bins"):
        reliability_table([0.1], [0.0], n_bins=0)
