"""The fast forms of the MLAS emulations give the step-by-step fma32 numbers bit for bit: the softmax exp terms
(float64 sums rounded once, only double-rounding candidates redone) and the blocked Horner chains of tanh /
logistic (only elements with a float32 midpoint redone), on inputs built to hit the corner cases: clamped values,
exact zeros, integers and half-integers (exact midpoints), tiny values with subnormal results."""
import numpy as np

from qpass.reference import mlas
from qpass.reference.numerics import horner32


def _adversarial(rng) -> np.ndarray:
    parts = [rng.standard_normal(20000) * 4, rng.random(20000) * 120, np.zeros(100),
             np.exp2(-rng.integers(1, 140, 3000).astype(float)), rng.integers(0, 110, 5000).astype(float),
             rng.integers(0, 110, 5000) + 0.5, rng.random(5000) * 1e-6, np.full(50, 103.972084), np.full(50, 104.5),
             np.exp2(-rng.integers(100, 149, 3000).astype(float)) * rng.random(3000), np.full(50, 9.0)]
    v = np.concatenate(parts).astype(np.float32)
    rng.shuffle(v)
    return v


def test_exp_terms_equal_fma_steps():
    v = -_adversarial(np.random.default_rng(5))
    fast, steps = mlas._sum_exp_terms(v), mlas._sum_exp_terms_fma(v)
    assert np.array_equal(fast.view(np.int32), steps.view(np.int32))


def test_blocked_horner_equals_horner32():
    rng = np.random.default_rng(6)
    x = _adversarial(rng)
    x *= np.where(rng.random(x.size) < 0.5, -1, 1).astype(np.float32)
    for table, split in ((mlas._TANH, 9), (mlas._LOGISTIC, 7)):
        v = np.minimum(np.maximum(x, table[0]), table[1])
        v2 = v * v
        for coeffs in (table[2:split], table[split:]):
            fast = mlas._horner_large(v2, coeffs, block=1 << 12)
            assert np.array_equal(fast.view(np.int32), horner32(v2, coeffs).view(np.int32))
