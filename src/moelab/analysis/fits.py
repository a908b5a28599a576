"""Fits the report and the advisor rest on: a monotone (isotonic) fit, a quadratic in log TPP with
a bootstrap interval on its optimum, rank correlation and small least squares.

    iso = isotonic(task_loss, accuracy, increasing=False); iso.predict(task_loss)
    opt = bootstrap_optimum(np.log10(tpp), accuracy, maximize=True, seed=0)
    opt.x, opt.lo, opt.hi, opt.interior   # the optimum's location, its percentile interval, inside the range?

All functions take plain sequences and are pure (the bootstrap's randomness comes from ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["IsotonicFit", "isotonic", "pava", "QuadFit", "fit_quadratic", "optimum_location", "Optimum",
           "bootstrap_optimum", "is_monotone", "interp_clamped"]


# ---------------------------------------------------------------- isotonic regression


def pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing sequence closest to ``y`` in weighted least squares.

    Written here rather than taken from scikit-learn because scikit-learn is not a moelab dependency
    (it arrives only through the optional lm-eval extra) and the algorithm is a dozen lines; the tests
    check it against ``sklearn.isotonic.IsotonicRegression`` when that is installed.
    """
    values: list[float] = []
    weights: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(np.asarray(y, float), np.asarray(w, float)):
        values.append(yi)
        weights.append(wi)
        counts.append(1)
        while len(values) > 1 and values[-2] > values[-1]:  # merge the violating pair into one block
            v2, w2, c2 = values.pop(), weights.pop(), counts.pop()
            v1, w1, c1 = values.pop(), weights.pop(), counts.pop()
            values.append((v1 * w1 + v2 * w2) / (w1 + w2))
            weights.append(w1 + w2)
            counts.append(c1 + c2)
    return np.repeat(values, counts)


@dataclass
class IsotonicFit:
    """A monotone step function through (x, y): fitted values at the distinct sorted ``x``."""

    x: np.ndarray
    y: np.ndarray
    increasing: bool

    def predict(self, xq) -> np.ndarray:
        """Linear interpolation between the fitted points, constant beyond them."""
        xq = np.asarray(xq, float)
        if len(self.x) == 1:
            return np.full_like(xq, self.y[0])
        return np.interp(xq, self.x, self.y)


def isotonic(x, y, *, increasing: bool = True, weights=None) -> IsotonicFit:
    """Least-squares monotone fit of ``y`` against ``x``; tied ``x`` values are pooled first
    (their weighted mean), as scikit-learn does."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, float)
    assert x.shape == y.shape == w.shape and x.size > 0, "isotonic: x, y, weights must be equal-length, non-empty"
    xs, inverse = np.unique(x, return_inverse=True)
    wsum = np.bincount(inverse, weights=w)
    ymean = np.bincount(inverse, weights=w * y) / wsum
    sign = 1.0 if increasing else -1.0
    fitted = sign * pava(sign * ymean, wsum)
    return IsotonicFit(xs, fitted, increasing)


# ---------------------------------------------------------------- quadratic in log TPP and its optimum


@dataclass
class QuadFit:
    """``y = a·x² + b·x + c`` fitted on x in [lo, hi]."""

    coef: tuple[float, float, float]
    lo: float
    hi: float

    def predict(self, x) -> np.ndarray:
        return np.polyval(self.coef, np.asarray(x, float))

    def optimum(self, *, maximize: bool) -> tuple[float, bool]:
        return optimum_location(self.coef, self.lo, self.hi, maximize=maximize)


def fit_quadratic(x, y) -> QuadFit | None:
    """Least-squares quadratic; None with fewer than 3 distinct x (the curve is not determined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.unique(x).size < 3:
        return None
    a, b, c = np.polyfit(x, y, 2)
    return QuadFit((float(a), float(b), float(c)), float(x.min()), float(x.max()))


def optimum_location(coef, lo: float, hi: float, *, maximize: bool) -> tuple[float, bool]:
    """Where the quadratic is best on [lo, hi], and whether that is strictly inside (a turning point)
    rather than at an edge of the measured range (then the curve is monotone there)."""
    a, b, _ = coef
    s = 1.0 if maximize else -1.0  # maximise s·f
    if s * a < 0 and a != 0:
        v = -b / (2 * a)
        if lo < v < hi:
            return float(v), True
    f_lo, f_hi = s * np.polyval(coef, lo), s * np.polyval(coef, hi)
    return (float(lo), False) if f_lo >= f_hi else (float(hi), False)


@dataclass
class Optimum:
    """The fitted optimum of y against x (x is log10 TPP in the report) with its bootstrap interval."""

    x: float  # location of the fitted optimum (point estimate, from all models)
    interior: bool  # a turning point strictly inside the measured x range
    fit: QuadFit
    lo: float | None  # percentile interval of the location over bootstrap refits
    hi: float | None
    level: float
    n_models: int
    n_boot: int  # bootstrap refits that could be made (≥3 distinct x in the resample)
    interior_share: float  # share of those refits whose optimum is a turning point inside the range
    boot_x: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))


def bootstrap_optimum(x, y, *, maximize: bool, n_boot: int = 1000, level: float = 0.9,
                      seed: int = 0) -> Optimum | None:
    """Quadratic fit of y on x, its optimum on the measured range, and a percentile interval for the
    optimum's location from refits on models resampled with replacement. None when the quadratic
    is not determined (fewer than 3 distinct x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    fit = fit_quadratic(x, y)
    if fit is None:
        return None
    x_opt, interior = fit.optimum(maximize=maximize)
    boot, inner = _bootstrap_locations(x, y, fit.lo, fit.hi, maximize=maximize, n_boot=n_boot, seed=seed)
    if boot.size:
        tail = (1 - level) / 2 * 100
        lo, hi = (float(v) for v in np.percentile(boot, [tail, 100 - tail]))
    else:
        lo = hi = None
    return Optimum(x_opt, interior, fit, lo, hi, level, int(x.size), int(boot.size),
                   float(inner.mean()) if boot.size else 0.0, boot)


def _bootstrap_locations(x: np.ndarray, y: np.ndarray, lo: float, hi: float, *, maximize: bool, n_boot: int,
                         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Optimum locations (and interior flags) of quadratic refits on ``n_boot`` resamples of the points.

    All refits at once: a resample is a vector of counts per point (multinomial), so its normal
    equations are count-weighted sums of per-point terms, solved as one batch. x is standardised
    first for conditioning; resamples with fewer than 3 distinct x cannot determine a quadratic
    and are dropped.
    """
    n = x.size
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # [B, n]
    _, group = np.unique(x, return_inverse=True)
    distinct = (np.stack([counts[:, group == g].sum(1) for g in range(group.max() + 1)], 1) > 0).sum(1)
    counts = counts[distinct >= 3]
    if not counts.size:
        return np.empty(0), np.empty(0, bool)
    m, s = x.mean(), x.std() or 1.0
    u = (x - m) / s
    basis = np.stack([u * u, u, np.ones_like(u)], 1)  # [n, 3]
    xtx = np.einsum("bn,ni,nj->bij", counts, basis, basis)
    xty = np.einsum("bn,ni,n->bi", counts, basis, y)
    coef = np.linalg.solve(xtx, xty[..., None])[..., 0]  # [B, 3] in u
    ulo, uhi = (lo - m) / s, (hi - m) / s
    locs, inner = zip(*(optimum_location(c, ulo, uhi, maximize=maximize) for c in coef))
    return m + s * np.asarray(locs), np.asarray(inner, bool)


# ---------------------------------------------------------------- small statistics


def is_monotone(values, *, increasing: bool, tol: float = 0.0) -> bool:
    """Every step moves the given way (a step back of at most ``tol`` is forgiven)."""
    d = np.diff(np.asarray(values, float))
    return bool(np.all(d >= -tol)) if increasing else bool(np.all(d <= tol))


def interp_clamped(xq: float, xs, ys) -> tuple[float, bool]:
    """Linear interpolation of (xs, ys) at xq, constant beyond the ends; the flag says xq lies
    outside [min xs, max xs]."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    outside = bool(xq < xs[0] or xq > xs[-1])
    return float(np.interp(xq, xs, ys)), outside
