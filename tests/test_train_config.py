"""train.config and the dereason-train command line: one declaration per setting for flags and recipes, and
every bad setting or input refused in one line naming what, where and what to do."""

from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import assert_one_line_error
from trainkit import build_split, invoke_train

from curate.errors import ConfigError
from train.config import GrpoConfig, SftConfig
from train.recipe import read_recipe


def write_recipe(path, **values):
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_a_recipe_gives_each_stage_the_shared_settings_it_has_and_its_own_section(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", model="base", data="split", out="runs/x", seed=3,
                          verifier="gsm8k", sft={"learning_rate": "2e-5", "max_steps": 4},
                          grpo={"num_generations": 4, "batch_size": 8, "seed": 5})
    run = read_recipe(recipe)
    (_, sft_name, sft), (_, grpo_name, grpo) = run.configs
    assert (sft_name, grpo_name, run.out) == ("sft", "grpo", "runs/x")
    assert isinstance(sft, SftConfig) and isinstance(grpo, GrpoConfig)
    assert (sft.model, sft.out, sft.learning_rate, sft.seed, sft.split) == ("base", "runs/x/sft", 2e-5, 3, "sft")
    # GRPO starts from SFT's final model; its section wins over the top level; `verifier` reached only GRPO
    assert (grpo.model, grpo.out, grpo.seed, grpo.verifier, grpo.split) == ("runs/x/sft/final", "runs/x/grpo", 5,
                                                                             "gsm8k", "rl")
    assert read_recipe(recipe, out="elsewhere").configs[1][2].model == "elsewhere/sft/final"
    only_rl = read_recipe(write_recipe(tmp_path / "rl.yaml", model="base", data="d", out="o", stages=["grpo"]))
    assert [(name, config.model) for _, name, config in only_rl.configs] == [("grpo", "base")]


@pytest.mark.parametrize(("values", "expected"), [
    ({"learning_rat": 1e-5}, "unknown setting(s) ['learning_rat']"),
    ({"sft": {"model": "other"}}, "section 'sft' sets ['model']"),
    ({"sft": {"batch_size": "many"}}, "stage sft: setting 'batch_size' must be an integer, got 'many'"),
    ({"stages": ["sft"], "grpo": {"verifier": "math"}}, "section 'grpo' is given but stages are ['sft']"),
    ({"stages": ["sft", "dpo"]}, "stages must be a list of stage names from ['sft', 'grpo', 'staged', 'eval', 'judge']"),
    ({"model": None}, "no model"),
    ({"grpo": {"batch_size": 6, "num_generations": 4}}, "must be a multiple of num_generations (4)"),
    ({"sft": {"trainer_args": {"num_train_epochs": 3}}}, "trainer_args sets ['num_train_epochs'], which are settings"),
])
def test_recipe_mistakes_are_refused_naming_the_setting(tmp_path, values, expected):
    recipe = write_recipe(tmp_path / "r.yaml", **{"model": "base", "data": "d", "out": "o", **values})
    with pytest.raises(ConfigError) as refused:
        read_recipe(recipe)
    assert expected in str(refused.value) and str(recipe) in str(refused.value)


def test_flags_are_made_from_the_config_fields():
    """Read from the click commands themselves: a help screen's layout depends on the terminal the suite runs in."""
    import typer

    from train.cli import app

    commands = typer.main.get_command(app).commands
    sft_flags = {flag for param in commands["sft"].params for flag in (*param.opts, *param.secondary_opts)}
    for flag in ("--learning-rate", "--lora", "--no-lora", "--no-assistant-only-loss",
                 "--trainer-arg", "--responses", "--config"):
        assert flag in sft_flags, flag
    (length,) = [param for param in commands["grpo"].params if "--max-completion-length" in param.opts]
    assert length.help.startswith("Most tokens a completion may have.") and "512" in length.help
    assert invoke_train("sft", "--help").exit_code == 0


def test_stage_command_mistakes_are_one_line(tmp_path):
    split = build_split(tmp_path / "split")
    base = ["--model", tmp_path / "no-model", "--out", tmp_path / "out"]
    assert_one_line_error(invoke_train("sft", *base), "missing setting(s) ['data']")
    assert_one_line_error(invoke_train("sft", *base, "--data", split, "--trainer-arg", "fast"),
                          "--trainer-arg takes KEY=VALUE, got 'fast'")
    assert_one_line_error(invoke_train("grpo", *base, "--data", split, "--num-generations", 3),
                          "batch_size x processes x gradient_accumulation_steps (8 x 1 x 1) must be a multiple of num_generations (3)")
    assert_one_line_error(invoke_train("sft", *base, "--data", split, "--split", "hard"),
                          "has no split 'hard'; it has sft, rl, unscored, random_sft, random_rl")
    assert_one_line_error(invoke_train("sft", *base, "--data", tmp_path / "nowhere"), "does not exist")
    assert_one_line_error(invoke_train("grpo", *base, "--data", split, "--verifier", "vibes"),
                          "unknown verifier 'vibes'")
    assert_one_line_error(invoke_train("sft", *base, "--data", split, "--template", "difficulty/intensity"),
                          "is a judge template; training needs a response template")
    assert_one_line_error(invoke_train("sft", *base, "--data", split, "--response-field", "answer"),
                          "has no 'answer' column (response_field)")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_config_file_mirrors_the_flags_and_flags_win(tmp_path):
    split = build_split(tmp_path / "split")
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({"data": str(split), "model": "m", "out": str(tmp_path / "o"),
                                      "learning-rate": "fast"}), encoding="utf-8")
    assert_one_line_error(invoke_train("sft", "--config", config), f"--config {config}: setting 'learning_rate' must "
                                                                   "be a number, got 'fast'")
    config.write_text(yaml.safe_dump({"data": str(split), "model": "m", "out": str(tmp_path / "o"),
                                      "split": "hard"}), encoding="utf-8")
    assert_one_line_error(invoke_train("sft", "--config", config, "--split", "harder"), "has no split 'harder'")


def test_exports_need_their_columns(tmp_path):
    base = ["--model", "m", "--out", tmp_path / "out"]
    pl.DataFrame({"question": ["What is 1+1?"]}).write_parquet(tmp_path / "plain.parquet")
    assert_one_line_error(invoke_train("sft", *base, "--data", tmp_path / "plain.parquet"),
                          "has no messages column(s), which training on messages needs")
    pl.DataFrame({"prompt": [[{"role": "user", "content": "Which gas?"}]], "reference": ["B"]}).write_parquet(
        tmp_path / "grpo.parquet")
    assert_one_line_error(invoke_train("grpo", *base, "--data", tmp_path, "--verifier", "choice"),
                          "the choice verifier needs each item's options")


RECIPES = sorted((Path(__file__).resolve().parent.parent / "train" / "recipes").glob("*.yaml"))
# SmolLM2-135M-Instruct's chat template, as its GGUF file carries it (bundled:smollm2-135m).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou "
    "are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}")


# tiny-cpu's recipes: their arms, and the quantile of their split (the curricula's sends every item to RL by τ).
TINY_CPU_ARMS = {"tiny-cpu": (["difficulty", "random", "reversed", "sft_all", "rl_all"], 0.4),
                 "tiny-cpu-curricula": (["uniform", "online_filter", "staged", "sec", "dump"], None)}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_reads(recipe):
    """Run recipes as `dereason-train run` reads them; tiny-cpu as `dereason-train tiny-cpu` does (per seed: its task,
    split and every arm's stages, each with that seed)."""
    if recipe.stem.startswith("tiny-cpu"):
        from train.tinycpu import read_tiny_cpu

        arms, quantile = TINY_CPU_ARMS[recipe.stem]
        replicates, root = read_tiny_cpu(recipe)
        assert root == Path("runs") / recipe.stem and [replicate.seed for replicate in replicates] == list(range(8))
        for seed, replicate in enumerate(replicates):
            assert replicate.root == root / f"seed-{seed}" and replicate.task.seed == replicate.split.seed == seed
            assert replicate.split.tau_rule.quantile == quantile and replicate.task.max_additions == 5
            assert list(replicate.plan.recipes) == ["base", *arms]
            stages = [config for arm in replicate.plan.recipes.values() for _, _, config in arm.configs]
            assert {config.seed for config in stages} == {seed}
        return
    assert read_recipe(recipe).configs


def test_the_dereason_recipe_has_the_papers_public_settings(monkeypatch):
    """SFT lr 1e-5 over 128 sequences per step, GRPO lr 1e-6 over 64 prompts per step and 128 per rollout, 8,192
    completion tokens, with 8 processes (accelerate's WORLD_SIZE)."""
    import trl

    monkeypatch.setenv("WORLD_SIZE", "8")
    configs = {name: config for _, name, config in read_recipe(RECIPES[0].parent / "dereason-qwen3-4b.yaml").configs}
    sft, grpo = configs["sft"], configs["grpo"]
    assert sft.learning_rate == 1e-5 and sft.batch_size * 8 * sft.gradient_accumulation_steps == 128
    assert grpo.learning_rate == 1e-6 and grpo.max_completion_length == 8192
    per_step = grpo.batch_size * 8 * grpo.gradient_accumulation_steps
    assert per_step // grpo.num_generations == 64
    generation = grpo.batch_size * 8 * grpo.trainer_args["steps_per_generation"]
    assert generation // grpo.num_generations == 128
    assert trl.GRPOConfig.__dataclass_fields__["steps_per_generation"]  # the TRL setting it relies on exists


ACCELERATE = sorted((RECIPES[0].parent / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("config", ACCELERATE, ids=[p.stem for p in ACCELERATE])
def test_the_accelerate_configs_read_as_accelerate_reads_them(config):
    from accelerate.commands.config.config_args import ClusterConfig

    cluster = ClusterConfig.from_yaml_file(str(config))
    assert (cluster.num_processes, cluster.mixed_precision) == (8, "bf16")
    stage = {"ddp": None, "zero2": 2, "zero3": 3}[config.stem]
    assert str(cluster.distributed_type) == ("DistributedType.MULTI_GPU" if stage is None else
                                             "DistributedType.DEEPSPEED")
    assert (cluster.deepspeed_config or {}).get("zero_stage") == stage


def test_the_smollm2_training_template_renders_smollm2s_own_text():
    """Only the {% generation %} markers differ: training sees exactly the text `curate solve` prompts with."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    training = (RECIPES[0].parent / "chat_templates" / "smollm2_training.jinja").read_text(encoding="utf-8")
    assert training.count("{% generation %}") == 1 and "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}" in \
        training  # the end-of-turn token is learnt too
    unmarked = training.replace("{% generation %}", "").replace("{% endgeneration %}", "").strip()
    environment = ImmutableSandboxedEnvironment()
    for messages in ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "#### 4"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]):
        for prompt in (False, True):
            ours = environment.from_string(unmarked).render(messages=messages, add_generation_prompt=prompt)
            theirs = environment.from_string(SMOLLM2_CHAT_TEMPLATE).render(messages=messages,
                                                                           add_generation_prompt=prompt)
            assert ours == theirs


def test_a_run_checks_every_stage_before_the_first_trains(tmp_path):
    """A mistake in GRPO's settings that only TRL knows of is refused before SFT writes anything."""
    recipe = write_recipe(tmp_path / "r.yaml", model="m", data=str(build_split(tmp_path / "split")),
                          out=str(tmp_path / "run"), grpo={"trainer_args": {"num_generatoins": 4}})
    assert_one_line_error(invoke_train("run", recipe), "TRL refused the grpo settings: GRPOConfig.__init__() got an "
                                                       "unexpected keyword argument 'num_generatoins'")
    assert not (tmp_path / "run" / "sft").exists()


def test_precision_on_cpu_and_on_a_gpu(monkeypatch):
    """CPU: float32, use_cpu and bf16 off (TRL refuses otherwise). A bf16 GPU: float32 weights under bf16 autocast by
    default, so small steps are not rounded away; bf16 weights only when asked."""
    import torch

    from train.model import Hardware, hardware

    config = SftConfig(model="m", data="d", out="o")
    assert hardware(SftConfig(model="m", data="d", out="o", device="cpu")).trainer_args() == {
        "use_cpu": True, "bf16": False, "fp16": False}
    with pytest.raises(ConfigError, match="dtype bfloat16 on CPU"):
        hardware(SftConfig(model="m", data="d", out="o", device="cpu", dtype="bfloat16"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert hardware(config) == Hardware("cuda", "float32", "bfloat16")
    assert hardware(config).trainer_args() == {"bf16": True, "fp16": False}
    half = hardware(SftConfig(model="m", data="d", out="o", dtype="bfloat16"))
    assert half == Hardware("cuda", "bfloat16", None) and half.trainer_args()["bf16"]
    assert hardware(SftConfig(model="m", data="d", out="o", dtype="float32")).trainer_args() == {"bf16": False,
                                                                                               "fp16": False}


def test_vllm_generates_on_a_gpu_when_installed_and_never_on_cpu(monkeypatch):
    import importlib.util

    from train.grpo import use_vllm
    from train.model import Hardware

    gpu, cpu = Hardware("cuda", "float32", "bfloat16"), Hardware("cpu", "float32", None)
    auto, on, off = (GrpoConfig(model="m", data="d", out="o", vllm=mode) for mode in ("auto", "on", "off"))
    assert not use_vllm(auto, gpu) and not use_vllm(auto, cpu)  # vllm is not installed here
    with pytest.raises(ConfigError, match="--vllm on needs vllm"):
        use_vllm(on, gpu)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    assert use_vllm(auto, gpu) and use_vllm(on, gpu) and not use_vllm(off, gpu) and not use_vllm(auto, cpu)
    with pytest.raises(ConfigError, match="--vllm on needs a GPU"):
        use_vllm(on, cpu)
