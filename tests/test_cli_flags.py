"""Every command's flags are made from its config dataclass (curate.cli.flags): each setting is a flag, with its
field's help and default, help shows each default whole, and a command lists only the settings it takes."""

import re
from dataclasses import MISSING

import pytest
import typer
from conftest import assert_one_line_error, invoke
from typer.testing import CliRunner

from curate.cli import app as curate_app
from curate.cli.flags import command_settings
from train.cli import app as train_app

COMMANDS = [(name, command) for app in (curate_app, train_app)
            for name, command in typer.main.get_command(app).commands.items()]
RECIPE_COMMANDS = {"run", "arms", "tiny-cpu"}  # dereason-train's: their settings are a recipe file's


def test_every_command_but_the_recipe_runners_is_made_from_a_config():
    made = {name for name, command in COMMANDS if hasattr(command.callback, "settings")}
    assert {name for name, _ in COMMANDS} - made == RECIPE_COMMANDS
    assert {"score", "solve", "respond", "reparse", "stats", "compare", "split", "export", "templates", "levels",
            "irt", "sft", "grpo", "eval"} <= made


@pytest.mark.parametrize(("name", "command"), [c for c in COMMANDS if c[0] not in RECIPE_COMMANDS],
                         ids=[name for name, _ in COMMANDS if name not in RECIPE_COMMANDS])
def test_every_setting_is_a_flag_with_the_fields_help_and_default(name, command):
    cls, of = command.callback.settings
    params = {param.name: param for param in command.params}
    assert "config" in params
    for key, setting in command_settings(cls, of).items():
        assert key in params, f"{name}: setting {key!r} has no flag"
        param, default = params[key], setting.default(of)
        expected = None if default is MISSING else [f"{k}={v}" for k, v in default.items()] \
            if isinstance(default, dict) else default
        assert param.default == expected, f"{name} --{key}: default {param.default!r}, the field's {expected!r}"
        if param.param_type_name == "option":
            assert param.help.startswith(setting.help) and re.search(r"  \[(default: .+|required)\]$", param.help), key


def test_score_help_shows_only_scores_flags_with_every_default_whole(monkeypatch):
    """`curate score --help` showed no default, cut the template to "difficulty/intensity_score_onl…", listed solve's
    --verify flags and <bool> beside every flag, --help included."""
    monkeypatch.setenv("COLUMNS", "80")
    shown = CliRunner().invoke(curate_app, ["score", "--help"]).output
    flat = " ".join(shown.split())
    assert "[default: difficulty/intensity_score_only]" in flat
    assert re.search(r"--max-tokens <int> +Most tokens a judgment may generate; longer ones are stored as truncated\. "
                     r"+\[default: 512\]", flat)
    assert "--constrain-score / --no-constrain-score" in shown and "[default: bundled:tiny-judge]" in flat
    assert "[default: runs/DATA__TEMPLATE__MODEL]" in flat and "--id-field <str>" in shown
    assert "--verify" not in shown and "<bool>" not in shown and "…" not in shown


def test_solve_and_respond_show_their_own_defaults_and_not_scores_flags():
    for name in ("solve", "respond"):
        flat = " ".join(invoke(name, "--help").output.split())
        assert "--verify <str>" in flat and "--verify-model <str>" in flat and "--constrain-score" not in flat
        assert re.search(r"--template <str> [^[]*\[default: solve/step_by_step\]", flat)
        assert re.search(r"--model <str> [^[]*\[required\]", flat)


def test_a_config_file_serves_every_command_and_flags_win(tmp_path):
    """`--config` takes the flags' keys for split too: a τ from the file and a quantile from the flags are two
    ways to choose it, refused before the run is read; a key no flag has is refused naming the valid ones."""
    job = tmp_path / "split.yaml"
    job.write_text("tau: 2\n", encoding="utf-8")
    assert_one_line_error(invoke("split", tmp_path / "no-run", "--out", tmp_path / "s", "--config", job,
                                 "--quantile", 0.3), "choose τ one way, not with --tau and --quantile")
    job.write_text("quantil: 0.3\n", encoding="utf-8")
    assert_one_line_error(invoke("split", tmp_path / "no-run", "--out", tmp_path / "s", "--config", job),
                          f"--config {job}: unknown setting(s) ['quantil']; valid settings: ['arms', ")
