"""Fit models for calibration: typed, each with ``fit``, ``predict``, ``describe`` and ``to_dict``.

A compute fit maps a block's *work* (its pairs scaled to the reference workload) to seconds. Four
candidate models, fitted on the per-size medians of the samples:

- :class:`RowsFit` ``t = a·√work + b·work`` (a, b ≥ 0): a per-row cost (loads, softmax statistics,
  the merge; √work ∝ the block's rows for a given kind) plus a per-pair cost;
- :class:`RooflineFit` ``t = overhead_s + work × seconds_per_pair``, least squares on relative
  error with both coefficients ≥ 0 (a 2-variable NNLS: :func:`fit_line_nonneg`);
- :class:`TableFit` piecewise-linear over the per-size medians, proportional (t ∝ work) outside;
- :class:`PowerFit` ``t = c × work^alpha`` through the medians in log-log (alpha in [0.3, 1.5]).

:class:`ModelChoice` fits all four, scores each by leave-one-size-out MAPE (every distinct size
predicted from the others), keeps the lowest (ties, as with exactly two sizes, go to rows, then
power, table, roofline: :data:`MODELS`) and records every score. Its ``to_dict`` is the
calibration file's entry (``chosen``, one sub-dict per model, scores); ``from_dict`` reads it
back, so a loaded calibration predicts with objects, not string keys.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["fit_line_nonneg", "mape", "medians", "RooflineFit", "RowsFit", "PowerFit", "TableFit", "ModelChoice",
           "ConstantFit", "MODELS", "fit_roofline", "fit_power", "fit_rows"]

MODELS = ("rows", "power", "table", "roofline")  # preference order when the held-out scores tie


def mape(pred, t) -> float:
    """Mean absolute percentage error over the samples with t > 0 (NaN if none)."""
    pred, t = np.asarray(pred, float), np.asarray(t, float)
    ok = t > 0
    return float(np.mean(np.abs(pred[ok] - t[ok]) / t[ok])) if ok.any() else float("nan")


def medians(x: np.ndarray, t: np.ndarray, q: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The distinct x and the q-quantile of t at each."""
    xs = np.unique(x)
    return xs, np.array([np.quantile(t[x == v], q) for v in xs])


def fit_line_nonneg(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``t ≈ a + b·x`` with a, b ≥ 0, minimising the squared *relative* error Σ((a + b·x − t)/t)².

    The 2-variable NNLS by its KKT cases: the unconstrained optimum if both are ≥ 0, else the best
    of the line through the origin (a = 0) and the constant (b = 0). One distinct x: through the
    origin (an intercept cannot be told from a slope with one size)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    ok = t > 0
    x, t = x[ok], t[ok]
    if not len(t):
        return 0.0, 0.0
    w = 1.0 / t
    A = np.stack([w, x * w], axis=1)
    y = np.ones_like(t)

    def err(a, b):
        return float(np.sum((a * w + b * x * w - 1.0) ** 2))

    cands = []
    if len(np.unique(x)) >= 2:
        sol, *_ = np.linalg.lstsq(A, y, rcond=None)
        if sol[0] >= 0 and sol[1] >= 0:
            cands.append((float(sol[0]), float(sol[1])))
    sxx = float(np.sum((x * w) ** 2))
    if sxx > 0:
        cands.append((0.0, float(np.sum(x * w) / sxx)))
    if not cands or len(np.unique(x)) >= 2:
        cands.append((float(np.sum(w) / np.sum(w * w)), 0.0))
    return min(cands, key=lambda ab: err(*ab))


@dataclass
class RooflineFit:
    overhead_s: float
    seconds_per_pair: float
    name = "roofline"

    @classmethod
    def fit(cls, x, t) -> "RooflineFit":
        xs, ts = medians(np.asarray(x, float), np.asarray(t, float))
        return cls(*fit_line_nonneg(xs, ts))

    def predict(self, x) -> np.ndarray:
        return self.overhead_s + self.seconds_per_pair * np.asarray(x, float)

    def describe(self) -> str:
        return f"{self.overhead_s * 1e6:.4g} us + {self.seconds_per_pair * 1e9:.4g} ns/pair"

    def to_dict(self) -> dict:
        return {"overhead_s": self.overhead_s, "seconds_per_pair": self.seconds_per_pair}

    @classmethod
    def from_dict(cls, d: dict) -> "RooflineFit":
        return cls(float(d["overhead_s"]), float(d["seconds_per_pair"]))


@dataclass
class RowsFit:
    seconds_per_sqrt_pair: float
    seconds_per_pair: float
    name = "rows"

    @classmethod
    def fit(cls, x, t) -> "RowsFit":
        """Solved as the non-negative line ``t/√x = a + b·√x``, whose relative error is that of t;
        one size: proportional (a = 0)."""
        xs, ts = medians(np.asarray(x, float), np.asarray(t, float))
        ok = xs > 0
        xs, ts = xs[ok], ts[ok]
        if not len(xs):
            return cls(0.0, 0.0)
        r = np.sqrt(xs)
        return cls(*fit_line_nonneg(r, ts / r))

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, float)
        return self.seconds_per_sqrt_pair * np.sqrt(np.maximum(x, 0.0)) + self.seconds_per_pair * x

    def describe(self) -> str:
        return f"{self.seconds_per_sqrt_pair * 1e6:.4g} us·√pairs + {self.seconds_per_pair * 1e9:.4g} ns/pair"

    def to_dict(self) -> dict:
        return {"seconds_per_sqrt_pair": self.seconds_per_sqrt_pair, "seconds_per_pair": self.seconds_per_pair}

    @classmethod
    def from_dict(cls, d: dict) -> "RowsFit":
        return cls(float(d["seconds_per_sqrt_pair"]), float(d["seconds_per_pair"]))


@dataclass
class PowerFit:
    coefficient_s: float
    exponent: float
    name = "power"

    @classmethod
    def fit(cls, x, t) -> "PowerFit":
        xs, ts = medians(np.asarray(x, float), np.asarray(t, float))
        ok = (xs > 0) & (ts > 0)
        xs, ts = xs[ok], ts[ok]
        if not len(xs):
            return cls(0.0, 1.0)
        lx, lt = np.log(xs), np.log(ts)
        alpha = 1.0
        if len(xs) >= 2:
            alpha = float(np.clip(np.polyfit(lx, lt, 1)[0], 0.3, 1.5))
        return cls(float(np.exp(np.mean(lt - alpha * lx))), alpha)

    def predict(self, x) -> np.ndarray:
        return self.coefficient_s * np.asarray(x, float) ** self.exponent

    def describe(self) -> str:
        return f"{self.coefficient_s:.4g} s × pairs^{self.exponent:.3f}"

    def to_dict(self) -> dict:
        return {"coefficient_s": self.coefficient_s, "exponent": self.exponent}

    @classmethod
    def from_dict(cls, d: dict) -> "PowerFit":
        return cls(float(d["coefficient_s"]), float(d["exponent"]))


class TableFit:
    """Piecewise-linear table over the per-size medians; proportional (t ∝ x) outside its range."""

    name = "table"

    def __init__(self, xs, ts):
        o = np.argsort(xs)
        self.xs = np.asarray(xs, float)[o]
        self.ts = np.asarray(ts, float)[o]

    @classmethod
    def fit(cls, x, t) -> "TableFit":
        return cls(*medians(np.asarray(x, float), np.asarray(t, float)))

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        xs, ts = self.xs, self.ts
        if len(xs) == 1:
            return ts[0] * x / xs[0] if xs[0] > 0 else np.full_like(x, ts[0])
        y = np.interp(x, xs, ts)
        lo, hi = x < xs[0], x > xs[-1]
        y = np.where(lo, ts[0] * x / xs[0] if xs[0] > 0 else ts[0], y)
        y = np.where(hi, ts[-1] * x / xs[-1], y)
        return y

    __call__ = predict

    def describe(self) -> str:
        return f"table of {len(self.xs)} sizes"

    def to_dict(self) -> dict:
        return {"pairs": self.xs.tolist(), "seconds": self.ts.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "TableFit":
        return cls(d["pairs"], d["seconds"])


_CLASSES = {"roofline": RooflineFit, "rows": RowsFit, "power": PowerFit, "table": TableFit}


def fit_roofline(x, t) -> tuple[float, float]:
    f = RooflineFit.fit(x, t)
    return f.overhead_s, f.seconds_per_pair


def fit_power(x, t) -> tuple[float, float]:
    f = PowerFit.fit(x, t)
    return f.coefficient_s, f.exponent


def fit_rows(x, t) -> tuple[float, float]:
    f = RowsFit.fit(x, t)
    return f.seconds_per_sqrt_pair, f.seconds_per_pair


@dataclass
class ConstantFit:
    """A fixed time (an empty step's overhead)."""

    seconds: float
    n_samples: int = 0
    mape: float = float("nan")
    chosen = "constant"

    def predict(self, x) -> np.ndarray:
        return np.full(np.shape(x), self.seconds)

    def describe(self) -> str:
        return f"constant {self.seconds * 1e6:.4g} us"

    def to_dict(self) -> dict:
        return {"chosen": "constant", "seconds": self.seconds, "n_samples": self.n_samples, "mape": self.mape}


class ModelChoice:
    """The four candidates fitted to one (phase, kind), their scores, the chosen one, and an
    optional ``level_scale`` (a load level's correction, see the calibration) applied to predictions."""

    def __init__(self, models: dict, chosen: str, scores: dict, n_samples: int, n_sizes: int, validation: str,
                 level_scale: float = 1.0, extra: dict | None = None):
        self.models, self.chosen, self.scores = models, chosen, scores
        self.n_samples, self.n_sizes, self.validation = n_samples, n_sizes, validation
        self.level_scale = level_scale
        self.extra = dict(extra or {})

    @property
    def model(self):
        return self.models[self.chosen]

    @property
    def mape(self) -> float:
        return self.scores[self.chosen]["mape_loo"]

    def predict_shape(self, x) -> np.ndarray:
        """The chosen model's prediction without the level scale."""
        return self.model.predict(x)

    def predict(self, x) -> np.ndarray:
        return self.predict_shape(x) * self.level_scale

    def describe(self) -> str:
        return f"{self.chosen}: {self.model.describe()} (MAPE {self.mape:.1%}, {self.validation})"

    @classmethod
    def fit(cls, x, t) -> "ModelChoice":
        """Fit the four candidates; leave-one-size-out MAPE for each; keep the lowest.

        With exactly two sizes the held-out scores coincide (each candidate predicts a size from
        the other one alone, proportionally), and the tie goes to the rows model (``MODELS``
        order): a kernel whose per-pair cost falls with block size (fixed per-row costs amortised)
        is followed by ``a·√x + b·x`` between and just beyond two sizes. With one size nothing
        can be held out: in-sample errors, and the roofline (through the origin) is kept."""
        x, t = np.asarray(x, float), np.asarray(t, float)
        xs = np.unique(x)
        models = {name: c.fit(x, t) for name, c in _CLASSES.items()}
        scores = {name: {} for name in _CLASSES}
        if len(xs) >= 2:
            pred = {name: np.empty_like(t) for name in _CLASSES}
            for v in xs:
                held = x == v
                for name, c in _CLASSES.items():
                    pred[name][held] = c.fit(x[~held], t[~held]).predict(x[held])
            for name in _CLASSES:
                scores[name]["mape_loo"] = mape(pred[name], t)
            validation = "leave-one-size-out"
            chosen = min(MODELS, key=lambda m: (round(scores[m]["mape_loo"], 9), MODELS.index(m)))
        else:
            scores["roofline"]["mape_loo"] = mape(models["roofline"].predict(x), t)
            for name in ("table", "power", "rows"):
                scores[name]["mape_loo"] = mape(models[name].predict(x), t) + 1e-12
            validation = "in-sample (one size only)"
            chosen = "roofline"
        for name, m in models.items():
            scores[name]["mape_fit"] = mape(m.predict(x), t)
        return cls(models, chosen, scores, int(len(t)), int(len(xs)), validation)

    def to_dict(self) -> dict:
        out = {"n_samples": self.n_samples, "n_sizes": self.n_sizes}
        for name, m in self.models.items():
            out[name] = {**m.to_dict(), **self.scores.get(name, {})}
        out["validation"] = self.validation
        out["chosen"] = self.chosen
        out["mape"] = self.mape
        if self.level_scale != 1.0:
            out["level_scale"] = self.level_scale
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ModelChoice":
        models = {name: c.from_dict(d[name]) for name, c in _CLASSES.items() if name in d}
        scores = {name: {k: d[name][k] for k in ("mape_loo", "mape_fit") if k in d[name]} for name in models}
        extra = {k: v for k, v in d.items() if k not in set(_CLASSES) | {"n_samples", "n_sizes", "validation", "chosen",
                                                                           "mape", "level_scale"}}
        return cls(models, str(d["chosen"]), scores, int(d.get("n_samples", 0)), int(d.get("n_sizes", 0)),
                   str(d.get("validation", "")), float(d.get("level_scale", 1.0)), extra)


def entry_from_dict(d: dict):
    """A compute entry of a calibration file as its typed object (a ModelChoice or a ConstantFit)."""
    if d.get("chosen") == "constant":
        return ConstantFit(float(d["seconds"]), int(d.get("n_samples", 0)), float(d.get("mape", float("nan"))))
    return ModelChoice.from_dict(d)
