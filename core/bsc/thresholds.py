"""What a cosine threshold means for binary codes.

Two unit vectors at angle θ disagree on each sign-random-projection bit with probability θ/π
(Charikar's SimHash), so the Hamming distance h between their n-bit codes has E[h/n] = θ/π. A cosine
threshold t therefore maps to the radius ``h <= floor(n * acos(t) / pi)``, and a distance h estimates the
cosine as ``cos(pi * h / n)``. Comparing ``1 - h/n`` to t directly (as the original binary-semantic-cache
did) is miscalibrated: ``1 - h/n = 0.90`` means cosine ≈ 0.95.

The estimate is noisy: h is Binomial(n, θ/π), so the cosine estimated from h has standard deviation
≈ ``sin(θ) * pi * sqrt(p (1 - p) / n)`` with p = θ/π — about 0.03 at cosine 0.9 with 256 bits, 0.021 with
512, 0.06 with 64. That spread is why the two-stage mode shortlists by Hamming distance and decides by
an exact cosine.

Example:
    >>> radius_for(0.90, 256)
    36
    >>> round(similarity_from_distance(36, 256), 3)
    0.904
"""

from __future__ import annotations

import math
import numbers

__all__ = ["cosine_spread", "radius_for", "shortlist_radius", "similarity_from_distance"]


def _check(threshold: float, code_bits: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a number (a cosine similarity), got {type(threshold).__name__}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}")
    if code_bits <= 0:
        raise ValueError(f"code_bits must be positive, got {code_bits}")


def radius_for(threshold: float, code_bits: int) -> int:
    """Largest Hamming distance whose estimated cosine is still >= ``threshold``."""
    _check(threshold, code_bits)
    return math.floor(code_bits * math.acos(threshold) / math.pi + 1e-9)


def similarity_from_distance(distance: int, code_bits: int) -> float:
    """The cosine that a Hamming distance estimates: ``cos(pi * h / n)``."""
    return math.cos(math.pi * distance / code_bits)


def cosine_spread(cosine: float, code_bits: int) -> float:
    """Standard deviation of the cosine estimated from an n-bit code, at true cosine ``cosine``."""
    _check(cosine, code_bits)
    theta = math.acos(cosine)
    p = theta / math.pi
    return math.sin(theta) * math.pi * math.sqrt(p * (1.0 - p) / code_bits)


def shortlist_radius(threshold: float, code_bits: int, z: float = 2.0) -> int:
    """The radius widened by ``z`` standard deviations of h, so that a pair truly at the threshold falls
    inside it with probability ≈ Φ(z) (97.7 % for z = 2); candidates are then decided by exact cosine."""
    _check(threshold, code_bits)
    p = math.acos(threshold) / math.pi
    return min(code_bits, math.floor(code_bits * p + z * math.sqrt(code_bits * p * (1.0 - p)) + 1e-9))
