"""How far to trust a judge's scores: what `curate stats` and `curate compare` compute.

    aggregate     a score run's judgments → one row per item (mean, median, expected score) and the run's summary
    metrics       agreement statistics over item frames: Spearman, Kendall, quadratic κ with bootstrap intervals,
                  score distributions, failure rates, the notes every report carries (pure Polars/SciPy)
    consistency   self-consistency across a run's samples: Krippendorff's α, per-item spread, logprob entropy
    calibrate     isotonic calibration of the item score onto a reference scale or measured pass rates
    compare       two runs over the same items: shift matrix, agreement, SFT/RL churn per τ
    passrate      solve runs' rollouts → per-item pass rates with Wilson intervals
    crowd         several solve runs over the same items read as a crowd of solvers (for IRT and levels)
    irt           Rasch (IRT) difficulties and abilities fitted over a crowd's rollouts (pure)
    irt_dir       an IRT fit written as, and read from, an IRT directory (`curate irt`)
    frames        a table of records checked for the columns a computation reads, and for nulls in them
    bradley_terry item strengths (difficulty) with a position bias fitted over a pairs run's comparisons (pure)
    measured      a judge against measured difficulty: pass rates, IRT difficulties, their noise
    analysis      the I/O shell: reads runs, runs the above, writes calibration files (analyze_run, analyze_comparison)
    report        a self-contained HTML page of a run's statistics and figures
"""
