"""dereason's training half: SFT, then GRPO from its final model, on the splits `curate split` writes, rewarded by
curate's verifiers, and evaluated as `curate solve` runs of the trained model.

    split dir (+ a respond run) → train.data → SFT (train.sft) → final model → GRPO (train.grpo, rewards:
    curate.rewards) → final model → eval (train.eval: pass@1 over k samples, a curate solve run per held-out set)

Each stage drives TRL through train.trainer and writes a stage directory that resumes after a kill
(train.stage); `dereason-train run RECIPE` runs stages in order from one YAML recipe (train.recipe) and records
them in a run manifest (train.run). GRPO may draw its prompts by a bandit curriculum (train.curriculum, which
also feeds verl and other trainers) and keep only the groups of a band of accuracy (train.online_filter); the
staged stage (train.staged) trains GRPO over a split's stages in order, each measured again first. The command
line is train.cli.
"""
