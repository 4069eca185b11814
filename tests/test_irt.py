import numpy as np
import polars as pl
import pytest
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import spearmanr

from curate.errors import ConfigError, DataError
from curate.stats.irt import (
    ITEMS_SCHEMA,
    MODELS_SCHEMA,
    RaschConfig,
    fit_rasch,
    responses_from_matrix,
    responses_from_rollouts,
)


def simulate(n_items=500, n_models=20, answers_per_cell=1, difficulty_sd=1.5, seed=0):
    """Rasch answers: one row per answer, with the true difficulties (item order) and abilities (model order)."""
    rng = np.random.default_rng(seed)
    difficulty, ability = rng.normal(0, difficulty_sd, n_items), rng.normal(0, 1, n_models)
    p = expit(ability[None, :] - difficulty[:, None])
    correct = rng.random((answers_per_cell, n_items, n_models)) < p
    _, item, model = np.indices(correct.shape).reshape(3, -1)
    frame = pl.DataFrame({"item_id": [f"i{i:04d}" for i in item], "model": [f"m{j:02d}" for j in model],
                          "correct": correct.ravel()})
    return frame, difficulty, ability


def test_recovers_simulated_difficulties_500_items_20_models():
    # With one 0/1 answer per cell the item's raw score is the Rasch sufficient statistic, so no estimator ranks
    # items better than it: at difficulty sd 1 (= ability sd) that ceiling is ~0.87; LLM item pools spread wider.
    responses, difficulty, ability = simulate()
    fit = fit_rasch(responses)
    assert fit.detail["converged"] and dict(fit.items.schema) == ITEMS_SCHEMA
    fitted = fit.items["difficulty"].to_numpy()
    raw_score_rho = spearmanr(-fit.items["correct"].to_numpy(), difficulty).statistic
    assert spearmanr(fitted, difficulty).statistic >= 0.9
    assert spearmanr(fitted, difficulty).statistic >= raw_score_rho - 0.005
    # Identification: abilities sum to zero, so the truth on the fitted scale is shifted by the mean ability.
    abilities = fit.models["ability"].to_numpy()
    assert abs(abilities.sum()) < 1e-9 and np.corrcoef(abilities, ability)[0, 1] > 0.98
    measured = (fit.items["irt_status"] == "measured").to_numpy()
    error = fitted[measured] - (difficulty - ability.mean())[measured]
    assert abs(error.mean()) < 0.05
    coverage = np.mean(np.abs(error) <= 1.96 * fit.items["difficulty_se"].to_numpy()[measured])
    assert 0.9 <= coverage <= 0.99, coverage


def test_repeated_answers_per_cell_sharpen_the_estimates():
    responses, difficulty, _ = simulate(n_items=200, n_models=8, answers_per_cell=4, seed=1)
    fit = fit_rasch(responses)
    one_each = fit_rasch(responses.head(200 * 8))  # the first answer of every cell
    assert fit.items["answers"].unique().to_list() == [32]
    assert fit.items["difficulty_se"].median() < 0.6 * one_each.items["difficulty_se"].median()
    assert spearmanr(fit.items["difficulty"], difficulty).statistic > \
        spearmanr(one_each.items["difficulty"], difficulty).statistic


def test_items_with_the_same_answers_get_exactly_equal_difficulties():
    """Items with the same totals got difficulties differing by ~1e-16 (optimiser noise), which broke ties in
    rank statistics: about 50 distinct values for 33 totals here."""
    responses, _, _ = simulate(n_items=300, n_models=8, answers_per_cell=4, seed=1)
    fit = fit_rasch(responses)
    for column in ("difficulty", "difficulty_se", "difficulty_low", "difficulty_high"):
        assert fit.items[column].n_unique() == fit.items["correct"].n_unique(), column
    by_total = fit.items.group_by("correct").agg(pl.col("difficulty").first()).sort("correct")
    assert (np.diff(by_total["difficulty"].to_numpy()) < 0).all()  # more right, easier
    assert fit.detail["item_groups"] == by_total.height
    # the same total from other models is another posterior: not merged
    other = pl.DataFrame({"item_id": "z", "model": ["m00", "m01"], "correct": [1, 0]})
    refit = fit_rasch(pl.concat([responses, other.cast(responses.schema)]))
    assert refit.detail["item_groups"] == by_total.height + 1


def independent_fit(responses: pl.DataFrame, prior_sd: float):
    """MAP and inverse-Hessian variances written out here with another identification basis (θ_last = −Σ others)
    and a finite-difference Hessian."""
    items, models = sorted(set(responses["item_id"])), sorted(set(responses["model"]))
    i = np.array([items.index(v) for v in responses["item_id"]])
    j = np.array([models.index(v) for v in responses["model"]])
    y = responses["correct"].cast(pl.Float64).to_numpy()
    n_items = len(items)
    lift = np.vstack([np.eye(len(models) - 1), -np.ones(len(models) - 1)])

    def negative_log_posterior(z):
        b, theta = z[:n_items], lift @ z[n_items:]
        logit = theta[j] - b[i]
        return -(y @ logit - np.logaddexp(0, logit).sum()) + (b @ b + theta @ theta) / (2 * prior_sd ** 2)

    z = minimize(negative_log_posterior, np.zeros(n_items + len(models) - 1), method="BFGS",
                 options={"gtol": 1e-10}).x
    h, size = 1e-4, len(z)
    steps = np.eye(size) * h
    f = negative_log_posterior
    hessian = np.array([[(f(z + steps[a] + steps[c]) - f(z + steps[a] - steps[c]) - f(z - steps[a] + steps[c])
                          + f(z - steps[a] - steps[c])) / (4 * h * h) for c in range(size)] for a in range(size)])
    covariance = np.linalg.inv(hessian)
    theta_covariance = lift @ covariance[n_items:, n_items:] @ lift.T
    return z[:n_items], lift @ z[n_items:], np.sqrt(np.diag(covariance)[:n_items]), np.sqrt(np.diag(theta_covariance))


def test_estimates_and_standard_errors_match_an_independent_computation():
    # Cells missing at random, so that the abilities' uncertainty reaches the items' errors (up to ~10% here;
    # with every cell present and similar weights it nearly cancels under the sum-zero identification).
    responses, _, _ = simulate(n_items=12, n_models=4, answers_per_cell=3, seed=2)
    asked = responses.select("item_id", "model").unique(maintain_order=True)
    asked = asked.filter(pl.Series(np.random.default_rng(0).random(asked.height) < 0.6))
    responses = responses.join(asked, on=["item_id", "model"])
    fit = fit_rasch(responses, RaschConfig(prior_sd=2.0))
    difficulty, ability, difficulty_se, ability_se = independent_fit(responses, prior_sd=2.0)
    np.testing.assert_allclose(fit.items["difficulty"], difficulty, atol=1e-4)
    np.testing.assert_allclose(fit.models["ability"], ability, atol=1e-4)
    np.testing.assert_allclose(fit.items["difficulty_se"], difficulty_se, rtol=1e-5)
    np.testing.assert_allclose(fit.models["ability_se"], ability_se, rtol=1e-5)


def test_missing_cells_are_linked_through_the_common_items():
    # Two weak models and two strong ones answer 40 common items; "weak_only" is answered by the weak models
    # only and "strong_only" by the strong ones, each half right. Equal pass rates, very different difficulties.
    rng = np.random.default_rng(4)
    ability = {"weak1": -1.5, "weak2": -1.5, "strong1": 1.5, "strong2": 1.5}
    rows = [(f"c{k}", m, int(rng.random() < expit(a - b)))
            for k, b in enumerate(rng.normal(0, 1, 40)) for m, a in ability.items() for _ in range(4)]
    rows += [(item, m, s) for item, group in (("weak_only", "weak"), ("strong_only", "strong"))
             for m in (f"{group}1", f"{group}2") for s in (1, 0, 1, 0, 1, 0, 1, 0)]
    fit = fit_rasch(pl.DataFrame(rows, schema=["item_id", "model", "correct"], orient="row"))
    rate = fit.items.select("item_id", pl.col("correct") / pl.col("answers"), "difficulty").rows_by_key("item_id")
    assert rate["weak_only"][0][0] == rate["strong_only"][0][0] == 0.5
    assert rate["strong_only"][0][1] - rate["weak_only"][0][1] > 2


def test_items_and_models_all_right_or_all_wrong_get_finite_values_and_a_status():
    responses, _, _ = simulate(n_items=30, n_models=5, seed=5)
    responses = pl.concat([
        responses.filter(~pl.col("item_id").is_in(["i0000", "i0001"]) & (pl.col("model") != "m04")),
        pl.DataFrame({"item_id": ["i0000"] * 4 + ["i0001"] * 4, "model": ["m00", "m01", "m02", "m03"] * 2,
                      "correct": [True] * 4 + [False] * 4}),
        pl.DataFrame({"item_id": [f"i{k:04d}" for k in range(2, 30)], "model": "m04", "correct": False})])
    fit = fit_rasch(responses)
    status = dict(fit.items.select("item_id", "irt_status").iter_rows())
    assert status["i0000"] == "all_correct" and status["i0001"] == "all_wrong"
    assert {v for k, v in status.items() if k not in ("i0000", "i0001")} <= {"measured", "all_wrong"}
    difficulty = dict(fit.items.select("item_id", "difficulty").iter_rows())
    measured = [difficulty[k] for k, v in status.items() if v == "measured"]
    assert np.isfinite(list(difficulty.values())).all()
    assert difficulty["i0000"] < min(measured) and difficulty["i0001"] > max(measured)
    assert fit.models.filter(pl.col("model") == "m04")["irt_status"][0] == "all_wrong"
    assert fit.models["ability"].is_finite().all() and fit.models["ability"].arg_min() == 4
    assert any("item(s) all correct: the difficulty is set by the prior" in note for note in fit.detail["notes"])
    assert any("1 model(s) all wrong" in note for note in fit.detail["notes"])
    assert dict(fit.models.schema) == MODELS_SCHEMA
    # set by the prior: a wider prior pushes the all-wrong item further out, a measured one barely moves
    wide = fit_rasch(responses, RaschConfig(prior_sd=6.0)).items.select("item_id", "difficulty").rows_by_key("item_id")
    assert wide["i0001"][0][0] - difficulty["i0001"] > 1
    some = next(k for k, v in status.items() if v == "measured")
    assert abs(wide[some][0][0] - difficulty[some]) < 0.2


def test_a_matrix_with_gaps_fits_like_its_long_form():
    matrix = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "m1": [1, 0, 1, None], "m2": [1, 1, 0, 0],
                           "m3": [True, False, None, False]})
    responses = responses_from_matrix(matrix)
    assert responses.height == 10  # two nulls: not asked
    long = pl.DataFrame({"item_id": list("abcdabcdabd"), "model": ["m1"] * 4 + ["m2"] * 4 + ["m3"] * 3,
                         "correct": [1, 0, 1, None, 1, 1, 0, 0, 1, 0, 0]}).drop_nulls()
    assert fit_rasch(responses).items.equals(fit_rasch(long).items)


def test_responses_from_rollouts_leave_out_machine_failures():
    run = pl.DataFrame({"item_id": ["q"] * 5, "sample_idx": range(5),
                        "verdict": ["correct", "wrong", "no_answer", "error", "timeout"]})
    responses = responses_from_rollouts({"small": run, "large": run.head(1)})
    assert responses.sort("model", "correct").rows() == [("q", "large", 1), ("q", "small", 0), ("q", "small", 0),
                                                         ("q", "small", 1)]


@pytest.mark.parametrize(("responses", "error", "message"), [
    (pl.DataFrame({"item_id": ["a", "a"], "model": ["x", "y"], "correct": [1, 2]}), DataError,
     r"1 row\(s\) have correct outside 0/1 \(e\.g\. 2\)"),
    (pl.DataFrame({"item_id": ["a", "a"], "model": ["x", "y"], "correct": ["yes", "no"]}), DataError,
     "correct must be 0/1 or true/false"),
    (pl.DataFrame({"item_id": ["a", None], "model": ["x", "y"], "correct": [1, 0]}), DataError, "1 row.*no item_id"),
    (pl.DataFrame({"item": ["a"], "model": ["x"], "correct": [1]}), DataError, r"lack column\(s\) \['item_id'\]"),
    (pl.DataFrame({"item_id": ["a", "b"], "model": ["x", "x"], "correct": [1, 0]}), ConfigError,
     r"at least two models, got \['x'\]"),
])
def test_bad_responses_are_one_error(responses, error, message):
    with pytest.raises(error, match=message):
        fit_rasch(responses)


def test_a_matrix_column_of_text_is_refused():
    with pytest.raises(DataError, match=r"matrix column\(s\) \['m2'\] hold String"):
        responses_from_matrix(pl.DataFrame({"item_id": ["a"], "m1": [1], "m2": ["right"]}))


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="prior_sd must be > 0"):
        RaschConfig(prior_sd=0)
