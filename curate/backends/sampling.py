"""Token sampling on the device, each row from its own counter-based stream.

`model.generate` samples every row from the process-wide RNG, so a row's tokens depend on which
rows share its batch. Here the draw of a row at decode step t is inverse-CDF sampling with one
uniform that is a pure function of the row's `sample_seed` and t: the t-th output of SplitMix64
seeded with it. A batch's uniforms are computed once, on the host, in one vectorised numpy call
(uint64 arithmetic wraps by definition there, so every machine gets the same draws) and sent to
the device once. Each step then costs a softmax, a cumulative sum and a binary search per row on
the device; the vocabulary's probabilities never leave it.

The uniforms have 24 bits, exactly representable in float32, the precision of the cumulative sum
they are compared with: a token is drawn with its probability to within 2^-24.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_UNIFORM_BITS = 24


def _mix64(state: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea and Flood 2014)."""
    state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state ^ (state >> np.uint64(31))


def uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """[len(seeds), steps] float32 uniforms in [0, 1): row r, column t depends only on seeds[r] and t."""
    counters = np.arange(1, steps + 1, dtype=np.uint64)[None, :] * _GOLDEN_GAMMA
    bits = _mix64(np.asarray(seeds, dtype=np.uint64)[:, None] + counters) >> np.uint64(64 - _UNIFORM_BITS)
    return torch.from_numpy(bits.astype(np.float32) * np.float32(2.0 ** -_UNIFORM_BITS))


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor | None) -> torch.Tensor:
    """One token per row of `logits` [rows, vocab]: the argmax at temperature 0, else the token whose
    cumulative probability interval (within the top_p nucleus) holds `uniform` [rows] times the mass.

    The intervals lie in vocabulary order, the nucleus only masks tokens out: sorted by probability, two
    near-equal tokens would swap places whenever a batch's arithmetic rounds them the other way, and every
    draw between them would change token with them."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:  # the nucleus: the most likely tokens, those reached before top_p of the mass
        ranked, order = probs.sort(dim=-1, descending=True)
        probs = probs * torch.zeros_like(probs).scatter(-1, order, (ranked.cumsum(dim=-1) - ranked <= top_p).float())
    cumulative = probs.cumsum(dim=-1)
    mass = cumulative[:, -1:]
    # Strictly below the mass, the first cumulative sum above the target is a token of positive probability.
    target = torch.minimum(uniform[:, None] * mass, torch.nextafter(mass, torch.zeros_like(mass)))
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1)
