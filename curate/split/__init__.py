"""Where each item goes: SFT or RL by the judge's score, ablation arms, RL curricula, levels, hygiene.

    rules       τ (fixed, a quantile, an RL budget, per domain), sides, arms and curriculum stages (pure Polars)
    directory   `curate split`: a score run → a split directory written whole (make_split)
    stages      what RL stages are ordered by: the score, an input field, a solve run's pass rates, an IRT fit
    levels      staged-RL difficulty levels from several solvers' pass rates (arXiv 2504.00829; `curate levels`)
    hygiene     exact and normalised duplicates, n-gram decontamination against benchmark texts
    benchmarks  reading the benchmark files that hygiene decontaminates against
"""
