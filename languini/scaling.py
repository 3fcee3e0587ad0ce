"""Scaling laws: fit, bootstrap, extrapolate, and find where two groups' curves cross.

Two laws, both fitted the way Chinchilla (Hoffmann et al. 2022, approach 3) fitted theirs: a
Huber loss (δ = 1e-3) on log L − log L̂, with log L̂ written as a log-sum-exp so that every
coefficient stays positive without bounds:

    power        L(C)    = E + A·C^(−α)           log L̂ = LSE(a − α·log C, e)
    chinchilla   L(N, D) = E + A/N^α + B/D^β      log L̂ = LSE(a − α·log N, b − β·log D, e)

with A = e^a, B = e^b, E = e^e. `power` is fitted per group to the frontier (the best loss at
each compute level); `chinchilla` to every point of a group, and its compute is C = 6·N·D FLOPs.

Why the 4,500-start grid takes seconds, not minutes: a loop of scipy calls spends its time in
per-call overhead, so here all starts move together in numpy by Levenberg–Marquardt steps on
the iteratively reweighted Huber problem (one batched P×P solve per step), and only the best
few distinct end points are polished one by one with scipy's L-BFGS-B; the best converged one
is kept. A bootstrap resample is a vector of point counts, i.e. weights on the Huber terms, so
resamples are rows of the same batch.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy.optimize import minimize

from languini import __version__
from languini.compute import FLOPS, trained_compute
from languini.data.identity import identify_run
from languini.errors import UserError
from languini.run import RunResult

HUBER_DELTA = 1e-3
CONFIDENCE = 0.95
FIELDS = ("compute", "params", "tokens", "loss")
GROUP_BY = ("family", "mix", "config")
METRICS: dict[str, tuple[str, Callable[[dict[str, Any]], float]]] = {  # a run's loss: (axis label, getter)
    "bits_per_byte": ("test bits per byte", lambda test: test["bits_per_byte"]),
    "token_loss": ("test loss (nats per token)", lambda test: math.log(test["token_perplexity"])),
}
LM_ITERATIONS = 40     # batched steps before polishing; enough to reach every basin's floor
POLISH_ITERATIONS = 5000  # float64 steps for a resample; the Huber kinks make a few converge slowly
POLISHED_STARTS = 8    # distinct end points polished by L-BFGS-B in a full fit
BATCH_ELEMENTS = 2_000_000  # rows × points per batched step: bounds memory, keeps numpy fast
CURVE_POINTS = 100
CROSSING_GRID = 4001


# --- laws -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Law:
    """A law E + Σ_k coef_k · X_k^(−exp_k) over the point fields in `variables`."""

    name: str
    variables: tuple[str, ...]
    coefs: tuple[str, ...]
    exponents: tuple[str, ...]
    formula: str

    @property
    def param_names(self) -> tuple[str, ...]:
        """The order fit.json uses: E, then each coefficient with its exponent."""
        return ("E", *itertools.chain.from_iterable(zip(self.coefs, self.exponents)))

    @property
    def free(self) -> int:
        return 1 + 2 * len(self.variables)


LAWS = {
    "power": Law("power", ("compute",), ("A",), ("alpha",), "L(C) = E + A·C^(−α)"),
    "chinchilla": Law("chinchilla", ("params", "tokens"), ("A", "B"), ("alpha", "beta"),
                      "L(N, D) = E + A/N^α + B/D^β"),
}


def get_law(name: str) -> Law:
    if name not in LAWS:
        raise UserError(f"Unknown law '{name}'; choose one of {', '.join(LAWS)}.")
    return LAWS[name]


def predict(law: Law, params: dict[str, Any], *variables: Any) -> Any:
    """L̂ at the given variables (compute; or parameters and tokens); broadcasts over arrays."""
    total = params["E"]
    for coef, exponent, x in zip(law.coefs, law.exponents, variables):
        total = total + params[coef] * np.power(x, -params[exponent])
    return total


def compute_optimal(params: dict[str, Any], compute: Any) -> tuple[Any, Any]:
    """N_opt(C), D_opt(C): minimise A/N^α + B/D^β on the iso-FLOP line 6·N·D = C.

    Setting the derivative along the line to zero gives α·A/N^α = β·B/D^β, hence
    N_opt = G·(C/6)^(β/(α+β)) and D_opt = (C/6)/N_opt with G = (αA/(βB))^(1/(α+β)).
    Exponents that are not positive have no interior optimum: NaN.
    """
    a, b = np.asarray(params["alpha"], float), np.asarray(params["beta"], float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ok = (a > 0) & (b > 0)
        g = np.where(ok, (a * params["A"] / (b * params["B"])) ** (1 / (a + b)), np.nan)
        n_opt = g * (np.asarray(compute) / 6) ** (b / (a + b))
    return n_opt, np.asarray(compute) / 6 / n_opt


def loss_at_compute(law: Law, params: dict[str, Any], compute: Any) -> Any:
    """The loss a group reaches at compute C: L(C), or for chinchilla L at the optimal N, D."""
    if law.name == "power":
        return predict(law, params, compute)
    return predict(law, params, *compute_optimal(params, compute))


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One (compute or parameters and tokens, loss) observation of one group.

    `level` names the compute level a point competes at for the frontier (a run's compute
    class); without one, points compete when their compute is equal. `reference` is the
    accelerator a run's reference-hours are counted on.
    """

    group: str
    loss: float
    compute: float | None = None
    params: float | None = None
    tokens: float | None = None
    level: str | None = None
    reference: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Inputs:
    points: list[Point]
    compute_unit: str
    loss_name: str


def read_inputs(paths: Sequence[Path], group_by: str = "family", metric: str = "bits_per_byte",
                compute_unit: str | None = None, columns: dict[str, str] | None = None) -> Inputs:
    """Points from run directories (any folder with a result.json) and CSV/JSONL tables;
    `columns` names a table's column for a field whose column is named otherwise
    ({"params": "Model Size"})."""
    columns = check_columns(columns or {})
    if group_by not in GROUP_BY:
        raise UserError(f"--group-by takes one of {', '.join(GROUP_BY)}, got '{group_by}'.")
    if metric not in METRICS:
        raise UserError(f"--metric takes one of {', '.join(METRICS)}, got '{metric}'.")
    check_one_evaluation([Path(p) for p in paths if (Path(p) / "result.json").is_file()])
    points: list[Point] = []
    runs = 0
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"Input not found: {path}")
        if path.is_dir():
            points.append(_run_point(path, group_by, metric))
            runs += 1
        elif path.suffix.lower() in (".csv", ".jsonl"):
            points.extend(_table_points(path, columns))
        else:
            raise UserError(f"Cannot read {path}: give a run directory, a .csv or a .jsonl file.")
    if not points:
        raise UserError("No points to fit: give run directories or CSV/JSONL files with rows.")
    _check_one_unit(points)
    references = sorted({p.reference for p in points if p.reference})
    if len(references) > 1:
        raise UserError(f"The runs count reference-hours on different references ({', '.join(references)}); "
                        "fit them separately.")
    unit = compute_unit or _unit(references)
    return Inputs(points, unit, METRICS[metric][0] if runs else "loss")


def check_one_evaluation(runs: Sequence[Path]) -> None:
    """Refuse runs scored on different test text or protocol (different evaluation
    identities): their losses do not lie on one curve. Runs none of whose identities can be
    found are let through, as tables are; one that cannot be found among ones that can is not."""
    found = {run: identify_run(run) for run in runs}
    by_identity: dict[str | None, list[str]] = {}
    for run, ident in found.items():
        by_identity.setdefault(ident.digest, []).append(f"{run.name} ({ident.dataset})")
    if len(by_identity) > 1:
        named = "; ".join(f"{digest[:10] if digest else 'unknown'}: {', '.join(names)}"
                          for digest, names in by_identity.items())
        raise UserError(f"The runs were scored on different test sets or protocols (evaluation identities "
                        f"{named}); fit runs of one evaluation identity together.")


def _unit(references: list[str]) -> str:
    if not references:
        return "reference-hours"
    return "FLOPs" if references[0] == FLOPS else f"reference-hours ({references[0]})"


def _check_one_unit(points: Sequence[Point]) -> None:
    """FLOP-class runs (compute in FLOPs) and hour-class runs (reference-hours) share no axis."""
    runs = [p for p in points if p.reference]
    flops = [p.source for p in runs if p.reference == FLOPS]
    hours = [p.source for p in runs if p.reference != FLOPS]
    if flops and hours:
        raise UserError(f"Cannot fit FLOP-denominated runs ({', '.join(flops)}) together with hour-denominated ones "
                        f"({', '.join(hours)}): their compute has no common axis; fit them separately.")


def _run_point(folder: Path, group_by: str, metric: str) -> Point:
    result_path = folder / "result.json"
    if not result_path.is_file():
        raise UserError(f"{folder} holds no result.json: it is not a finished run or a submission.")
    r = RunResult.read(result_path)
    try:
        group = f"{r.family}/{r.config}" if group_by == "config" else getattr(r, group_by)
        return Point(group=str(group), loss=float(METRICS[metric][1](r.test)), compute=_run_compute(r),
                     params=float(r.params), tokens=float(r.tokens_trained), level=r.compute_class,
                     reference=r.reference, source=str(folder))
    except (KeyError, TypeError) as e:
        raise UserError(f"{result_path} lacks the field {e}; it is not a finished run's result.") from None
    except ValueError as e:
        raise UserError(f"{result_path} holds a value a fit cannot use ({e}).") from None


def _run_compute(r: RunResult) -> float:
    """A run's compute in its class's unit (reference-hours or FLOPs): what it trained, plus a
    data selection's charged to its budget (a charged run spent its whole class; an uncharged
    one only what it trained)."""
    charge = r.budget_charge or {}
    return trained_compute(r.to_dict())[0] + (float(charge["charged"]) if "charged" in charge else 0.0)


def check_columns(columns: dict[str, str]) -> dict[str, str]:
    known = ("group", "level", *FIELDS)
    unknown = [f for f in columns if f not in known]
    if unknown:
        raise UserError(f"--columns maps the fields {', '.join(known)}; {', '.join(unknown)} is not one of them.")
    return columns


def _table_rows(path: Path, loss_column: str = "loss") -> Iterable[tuple[str, dict[str, Any]]]:
    """(where, row) for each row of a CSV with a header or of a JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"Cannot read {path}: {e}.") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if loss_column not in (reader.fieldnames or []):
            raise UserError(f"{path} has no '{loss_column}' column; columns are named group, compute, params, tokens, "
                            "loss, or mapped with --columns FIELD=COLUMN.")
        for i, row in enumerate(reader, start=2):
            yield f"{path} line {i}", row
        return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {i} is not valid JSON ({e.msg}).") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {i} is not a JSON object.")
        yield f"{path} line {i}", row


def _number(value: Any, where: str, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {name} '{value}' is not a number.") from None


def _table_points(path: Path, columns: dict[str, str]) -> list[Point]:
    """A table's rows as points. A row with compute and params but no tokens gets
    tokens = compute / (6 · params): compute in FLOPs, as in the Chinchilla paper's data."""
    column = {name: columns.get(name, name) for name in ("group", "level", *FIELDS)}
    points = []
    for where, row in _table_rows(path, column["loss"]):
        values = {name: _number(row.get(column[name]), where, column[name]) for name in FIELDS}
        if values["loss"] is None:
            raise UserError(f"{where} has no loss.")
        if values["tokens"] is None and values["compute"] and values["params"]:
            values["tokens"] = values["compute"] / (6 * values["params"])
        level = row.get(column["level"])
        points.append(Point(group=str(row.get(column["group"]) or path.stem),
                            level=None if level in (None, "") else str(level), source=where, **values))
    return points


def read_epoch_chinchilla(path: Path, drop_highest: int = 5) -> list[Point]:
    """Epoch AI's points extracted from the Chinchilla paper (Besiroglu et al. 2024).

    Columns `Model Size` (N), `Training FLOP` (C) and `loss`; D = C/(6N). Like Epoch, the
    `drop_highest` highest-loss points are dropped before fitting.
    """
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    points = [Point(group="chinchilla", loss=float(r["loss"]), compute=float(r["Training FLOP"]),
                    params=float(r["Model Size"]), tokens=float(r["Training FLOP"]) / (6 * float(r["Model Size"])),
                    source=f"{path} row {i}") for i, r in enumerate(rows, start=1)]
    return sorted(points, key=lambda p: p.loss)[:len(points) - drop_highest]


def check_points(points: Sequence[Point], law: Law) -> None:
    """Every value the law reads is present, finite and positive, or one sentence says which is not."""
    for p in points:
        for name in (*law.variables, "loss"):
            value = getattr(p, name)
            if value is None:
                raise UserError(f"{p.source} has no {name}, which the {law.name} law needs.")
            if not math.isfinite(value):
                raise UserError(f"{p.source}: {name} is {value}; a fit needs finite numbers.")
            if value <= 0:
                raise UserError(f"{p.source}: {name} must be positive, got {value:g}.")


def frontier(points: Sequence[Point]) -> tuple[list[Point], list[Point]]:
    """(the best-loss point of each compute level ordered by compute, the points it beat)."""
    best: dict[Any, Point] = {}
    for p in points:
        key = p.level if p.level is not None else p.compute
        if key not in best or p.loss < best[key].loss:
            best[key] = p
    kept = sorted(best.values(), key=lambda p: p.compute)
    chosen = {id(p) for p in kept}
    return kept, [p for p in points if id(p) not in chosen]


def shortfall(law: Law, points: Sequence[Point]) -> str | None:
    """Why these points cannot pin the law down, or None: the check used on inputs and resamples."""
    if law.name == "power":
        levels = len({p.compute for p in points})
        if levels < law.free:
            return (f"has {levels} compute level{'s' if levels != 1 else ''}, fewer than the {law.free} "
                    f"free parameters of the power law")
        return None
    distinct = len({(p.params, p.tokens) for p in points})
    if distinct < law.free:
        return f"has {distinct} distinct points, fewer than the {law.free} free parameters of the chinchilla law"
    if len({p.params for p in points}) < 2 or len({p.tokens for p in points}) < 2:
        return "needs at least two model sizes and two token counts to separate A/N^α from B/D^β"
    return None


# --- the batched minimiser --------------------------------------------------------------------


def _forward(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, derivatives: bool):
    """Objective Σ w·huber(log L̂ − log L)/δ for each row of theta, with gradient and IRLS Hessian.

    theta rows are [a_1..a_K, e, α_1..α_K]; x is (K, n) centred log-variables. The objective is
    divided by δ so that it is of order one, where L-BFGS-B's stopping tolerances mean something.
    The Hessian is the iteratively-reweighted one, Σ w·min(1/δ, 1/|r|)·J Jᵀ: a majoriser of the
    Huber terms, so Levenberg–Marquardt steps on it descend reliably.
    """
    k = x.shape[0]
    u = np.concatenate([theta[:, :k, None] - theta[:, k + 1:, None] * x,
                        np.broadcast_to(theta[:, k, None, None], (len(theta), 1, x.shape[1]))], axis=1)
    top = u.max(axis=1, keepdims=True)
    ex = np.exp(u - top)
    total = ex.sum(axis=1, keepdims=True)
    r = (top + np.log(total))[:, 0] - y
    ar = np.abs(r)
    inside = ar <= HUBER_DELTA
    f = (w * np.where(inside, 0.5 * r * r / HUBER_DELTA, ar - 0.5 * HUBER_DELTA)).sum(axis=1)
    if not derivatives:
        return f
    p = ex / total
    jac = np.concatenate([p[:, :k], p[:, k:], -p[:, :k] * x], axis=1)  # (rows, P, n)
    g = np.einsum("spn,sn->sp", jac, w * np.clip(r / HUBER_DELTA, -1, 1))
    irls = w / np.maximum(ar, HUBER_DELTA)
    h = np.einsum("spn,sqn->spq", jac * irls[:, None, :], jac)
    return f, g, h


def _levenberg_marquardt(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, iterations: int,
                         dt: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped Gauss–Newton steps for every row at once: (theta, objective, converged) per row.

    A row's damping shrinks after a step that lowers its objective and grows after one that
    does not; a row has converged when its steps stop helping (a relative gain below the
    precision of `dt`, or no helpful step at any damping). float32 is for the many-start
    phase, whose end points are polished in float64 afterwards.
    """
    tolerance = 1e-7 if dt == np.float32 else 1e-12
    theta, x, y, w = theta.astype(dt), x.astype(dt), y.astype(dt), np.broadcast_to(w, (len(theta), len(y))).astype(dt)
    eye = np.eye(theta.shape[1], dtype=dt)
    damping = np.full(len(theta), 1e-3, dtype=dt)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        f, g, h = _forward(theta, x, y, w, True)
        active = np.isfinite(f)
        for _ in range(iterations):
            rows = np.flatnonzero(active)
            if not len(rows):
                break
            diag = np.diagonal(h[rows], axis1=1, axis2=2)
            lhs = h[rows] + (damping[rows, None] * (diag + 1e-9 * diag.sum(1, keepdims=True)))[:, :, None] * eye
            try:
                step = np.linalg.solve(lhs, -g[rows][..., None])[..., 0]
            except np.linalg.LinAlgError:  # an exactly singular row: fall back to least squares
                step = (np.linalg.pinv(lhs) @ -g[rows][..., None])[..., 0]
            candidate = theta[rows] + step
            fc, gc, hc = _forward(candidate, x, y, w[rows], True)
            better = np.isfinite(fc) & (fc < f[rows])
            moved = rows[better]
            gain = (f[moved] - fc[better]) / f[moved]
            theta[moved], f[moved], g[moved], h[moved] = candidate[better], fc[better], gc[better], hc[better]
            damping[rows] = np.where(better, np.maximum(damping[rows] / 3, 1e-7), damping[rows] * 4)
            active[moved[gain < tolerance]] = False
            active[rows[damping[rows] > 1e8]] = False
    return theta.astype(float), f.astype(float), ~active & np.isfinite(f)


def _polish(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """L-BFGS-B in float64 from one start, with the analytic gradient."""
    def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
        f, g, _ = _forward(t[None], x, y, w[None], True)
        return float(f[0]), g[0]

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return minimize(objective, theta, jac=True, method="L-BFGS-B", options={"ftol": 1e-12, "gtol": 1e-10})


def _converged(result: Any) -> bool:
    """L-BFGS-B's own verdict, or an 'abnormal' line-search stop at a point whose gradient is
    already zero to float64 precision (it found nothing better because there is nothing)."""
    return bool(np.isfinite(result.fun) and (result.success or np.abs(result.jac).max() < 1e-5))


def _distinct_best(theta: np.ndarray, f: np.ndarray, count: int) -> list[int]:
    """Indices of the `count` lowest objectives whose parameters differ from each other."""
    chosen: list[int] = []
    for i in np.argsort(f):
        if not np.isfinite(f[i]) or len(chosen) == count:
            break
        if all(np.abs(theta[i] - theta[j]).max() > 1e-3 for j in chosen):
            chosen.append(int(i))
    return chosen


def _descend_from_grid(starts: np.ndarray, x: np.ndarray, y: np.ndarray,
                       weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The many-start phase for every (weighting, start) pair: theta (W, S, P), objective (W, S)."""
    s, p = starts.shape
    per_chunk = max(1, BATCH_ELEMENTS // (s * len(y)))
    thetas, objectives = [], []
    for lo in range(0, len(weights), per_chunk):
        w = weights[lo:lo + per_chunk]
        theta, f, _ = _levenberg_marquardt(np.tile(starts, (len(w), 1)), x, y, np.repeat(w, s, axis=0),
                                           LM_ITERATIONS)
        thetas.append(theta.reshape(len(w), s, p))
        objectives.append(f.reshape(len(w), s))
    return np.concatenate(thetas), np.concatenate(objectives)


@dataclass
class Minimum:
    theta: np.ndarray | None     # None: no start converged
    objective: float
    candidates: list[np.ndarray]  # the polished distinct minima, best first


def _best_converged(starts: np.ndarray, x: np.ndarray, y: np.ndarray) -> Minimum:
    """All starts descend together; the best distinct end points are polished by L-BFGS-B."""
    ones = np.ones((1, len(y)))
    theta, f = _descend_from_grid(starts, x, y, ones)
    results = [_polish(theta[0, i], x, y, ones[0]) for i in _distinct_best(theta[0], f[0], POLISHED_STARTS)]
    results = [r for r in results if _converged(r)]
    if not results:
        return Minimum(None, math.inf, [])
    polished, objectives = np.array([r.x for r in results]), np.array([r.fun for r in results])
    distinct = _distinct_best(polished, objectives, len(results))
    return Minimum(polished[distinct[0]], float(objectives[distinct[0]]), [polished[i] for i in distinct])


# --- fitting one group ------------------------------------------------------------------------


@dataclass
class Design:
    """A group's points in the fit's coordinates: x = log(variable) − shift, y = log(loss)."""

    law: Law
    x: np.ndarray
    y: np.ndarray
    shift: np.ndarray

    @classmethod
    def of(cls, law: Law, points: Sequence[Point]) -> "Design":
        logs = np.log([[getattr(p, v) for p in points] for v in law.variables])
        # The Chinchilla grid is stated for raw log N and log D; compute (hours or FLOPs) is
        # centred so that one grid suits any unit.
        shift = logs.mean(axis=1) if law.name == "power" else np.zeros(len(law.variables))
        return cls(law, logs - shift[:, None], np.log([p.loss for p in points]), shift)

    def starts(self) -> np.ndarray:
        """The start grid: Chinchilla's for chinchilla; for power one scaled to the losses."""
        if self.law.name == "chinchilla":
            grid = itertools.product(np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5), np.arange(-1, 1.5, 0.5),
                                     np.arange(0, 30, 5), np.arange(0, 30, 5))
            return np.array([[a, b, e, alpha, beta] for alpha, beta, e, a, b in grid])
        low = self.y.min()  # E below the best loss; A·C^(−α) at the centre from e^-5 to e times it
        grid = itertools.product(low + np.log([0.1, 0.3, 0.5, 0.7, 0.9]), low + np.arange(-5.0, 2.0),
                                 np.arange(0, 2.5, 0.5))
        return np.array([[a, e, alpha] for e, a, alpha in grid])

    def natural(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """E, A, α (, B, β) from rows of theta, undoing the centring: A = e^a · exp(α·shift)."""
        theta = np.atleast_2d(theta)
        k = len(self.law.variables)
        out = {"E": np.exp(theta[:, k])}
        for i, (coef, exponent) in enumerate(zip(self.law.coefs, self.law.exponents)):
            out[coef] = np.exp(theta[:, i] + theta[:, k + 1 + i] * self.shift[i])
            out[exponent] = theta[:, k + 1 + i]
        return {name: out[name] for name in self.law.param_names}


@dataclass
class GroupFit:
    name: str
    design: Design
    used: list[Point]
    excluded: list[Point]
    params: dict[str, float]
    objective: float
    starts: int
    candidates: list[np.ndarray]                   # the full fit's distinct minima, best first
    samples: dict[str, np.ndarray] | None = None   # bootstrap parameter draws
    bootstrap: dict[str, Any] = field(default_factory=dict)


def fit_group(law: Law, name: str, points: Sequence[Point]) -> GroupFit:
    """The best converged fit from the whole start grid."""
    used, excluded = frontier(points) if law.name == "power" else (list(points), [])
    problem = shortfall(law, used)
    if problem:
        raise UserError(f"Group '{name}' {problem}.")
    design = Design.of(law, used)
    starts = design.starts()
    best = _best_converged(starts, design.x, design.y)
    if best.theta is None:
        raise UserError(f"The {law.name} fit of group '{name}' converged from none of its {len(starts)} starts.")
    params = {k: float(v[0]) for k, v in design.natural(best.theta).items()}
    # Reported unscaled, as Σ huber(log L̂ − log L): the figure the Chinchilla replications quote.
    return GroupFit(name, design, used, excluded, params, best.objective * HUBER_DELTA, len(starts), best.candidates)


def _resample_counts(rng: np.random.Generator, law: Law, points: Sequence[Point],
                     resamples: int) -> tuple[np.ndarray, int]:
    """Point counts of `resamples` draws with replacement that can still pin the law down.

    A draw that repeats too few distinct points leaves the law underdetermined; such draws are
    redrawn (and counted), which conditions the bootstrap on identifiable resamples.
    """
    n, kept, redrawn = len(points), [], 0
    for _ in range(200):
        for c in rng.multinomial(n, np.full(n, 1 / n), size=resamples):
            if len(kept) == resamples:
                break
            if shortfall(law, [p for p, k in zip(points, c) if k]):
                redrawn += 1
            else:
                kept.append(c)
        if len(kept) == resamples:
            break
    return np.array(kept, dtype=float).reshape(-1, n), redrawn


def bootstrap_group(fit: GroupFit, resamples: int, rng: np.random.Generator) -> None:
    """Refit resampled points from the full fit's distinct minima; keep the converged draws.

    A resample's best end point is polished by float64 Levenberg–Marquardt steps batched over
    all resamples: a thousand scipy calls would cost more than all the fits together.
    """
    law, design = fit.design.law, fit.design
    if len(fit.used) <= law.free:
        fit.bootstrap = {"resamples": resamples, "converged": 0, "skipped": (
            f"{len(fit.used)} points for {law.free} free parameters: every resample that pins the law down "
            "is the data itself, so resampling says nothing about uncertainty")}
        return
    counts, redrawn = _resample_counts(rng, law, fit.used, resamples)
    theta, f = _descend_from_grid(np.array(fit.candidates), design.x, design.y, counts)
    best = theta[np.arange(len(theta)), np.where(np.isfinite(f), f, np.inf).argmin(axis=1)]
    theta, _, converged = _levenberg_marquardt(best, design.x, design.y, counts, POLISH_ITERATIONS, np.float64)
    fit.samples = design.natural(theta[converged])
    fit.bootstrap = {"resamples": resamples, "converged": int(converged.sum()), "redrawn": redrawn}


# --- the whole fit ----------------------------------------------------------------------------


def _interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def _column(samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Bootstrap draws shaped to broadcast against a row of compute values."""
    return {k: v[:, None] for k, v in samples.items()}


def _compute_of(law: Law, p: Point) -> float:
    return p.compute if law.name == "power" else 6 * p.params * p.tokens


def _sign_changes(diff: np.ndarray) -> np.ndarray:
    """Where each row of `diff` changes sign between grid point i and i + 1 (a boolean per gap)."""
    sign = np.sign(diff)
    return (sign[:, :-1] * sign[:, 1:] < 0) | (sign[:, :-1] == 0) & (sign[:, 1:] != 0)


def _at_gap(diff: np.ndarray, grid: np.ndarray, rows: np.ndarray, i: np.ndarray) -> np.ndarray:
    """The zero of `diff[rows]` in gap i, interpolated linearly in log compute."""
    d0, d1 = diff[rows, i], diff[rows, i + 1]
    lg = np.log(grid)
    t = np.where(d0 == d1, 0.0, d0 / (d0 - d1))
    return np.exp(lg[i] + t * (lg[i + 1] - lg[i]))


def crossings(diff: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The compute at which each row of `diff` (curve 1 − curve 2 on `grid`) changes sign for the
    last time: from there to the end of the grid one curve stays below the other, so it is where
    the order that extrapolation predicts is settled. NaN where the sign never changes.
    """
    change = _sign_changes(diff)
    last = np.where(change.any(axis=1), change.shape[1] - 1 - change[:, ::-1].argmax(axis=1), -1)
    out = np.full(len(diff), np.nan)
    rows = np.flatnonzero(last >= 0)
    out[rows] = _at_gap(diff, grid, rows, last[rows])
    return out


def every_crossing(diff: np.ndarray, grid: np.ndarray) -> list[float]:
    """All the computes at which one row of differences changes sign, in order."""
    gaps = np.flatnonzero(_sign_changes(diff[None])[0])
    return [float(c) for c in _at_gap(diff[None], grid, np.zeros(len(gaps), dtype=int), gaps)]


def intersect(law: Law, a: GroupFit, b: GroupFit, searched: tuple[float, float], unit: str) -> dict[str, Any]:
    """Where a's and b's loss-vs-compute curves cross for the last time in `searched` (the
    crossing after which the group ahead at its top stays ahead), with its bootstrap spread.

    The spread is over the resamples that cross into the same order (the same group ahead at
    the top of the range); `fraction_crossing` is their share. Earlier crossings of the fitted
    curves are listed in `all_crossings` and named in the statement.
    """
    grid = np.geomspace(*searched, CROSSING_GRID)
    with np.errstate(all="ignore"):
        diff = loss_at_compute(law, a.params, grid) - loss_at_compute(law, b.params, grid)
        every = every_crossing(diff, grid)
        point = every[-1] if every else math.nan
        draws, ends = None, None
        if a.samples is not None and b.samples is not None:
            m = min(len(a.samples["E"]), len(b.samples["E"]))
            sa = {k: v[:m] for k, v in a.samples.items()}
            sb = {k: v[:m] for k, v in b.samples.items()}
            diffs = loss_at_compute(law, _column(sa), grid) - loss_at_compute(law, _column(sb), grid)
            draws, ends = crossings(diffs, grid), np.sign(diffs[:, -1])
    range_text = f"between {searched[0]:.3g} and {searched[1]:.3g} {unit}"
    entry: dict[str, Any] = {"groups": [a.name, b.name], "searched": list(searched), "point_estimate": None,
                             "compute": None, "interval": None, "fraction_crossing": None, "all_crossings": []}
    if not math.isfinite(point):
        share = ""
        if draws is not None and len(draws):
            entry["fraction_crossing"] = float(np.isfinite(draws).mean())
            share = f"; {entry['fraction_crossing']:.0%} of {len(draws)} resamples do"
        entry["statement"] = f"{a.name} and {b.name} do not cross {range_text}{share}."
        return entry
    ahead = a.name if diff[-1] < 0 else b.name
    entry.update(point_estimate=float(point), loss=float(loss_at_compute(law, a.params, point)), all_crossings=every,
                 ahead=ahead)
    earlier = ("; the fitted curves also cross earlier, at " + ", ".join(f"{c:.3g}" for c in every[:-1])
               if len(every) > 1 else "")
    crossed = None
    if draws is not None and len(draws):
        crossed = draws[np.isfinite(draws) & (ends == np.sign(diff[-1]))]
        entry["fraction_crossing"] = float(len(crossed) / len(draws))
        share = f"{entry['fraction_crossing']:.0%} of {len(draws)} resamples"
    if crossed is not None and len(crossed):
        entry["compute"] = float(np.median(crossed))
        entry["interval"] = _interval(crossed)
        lo, hi = entry["interval"]
        entry["statement"] = (f"{a.name} and {b.name} cross at {entry['compute']:.3g} {unit}, {ahead} ahead beyond "
                              f"(median over the {share} in which {ahead} ends ahead after a crossing {range_text}; "
                              f"{CONFIDENCE:.0%} interval {lo:.3g}–{hi:.3g}){earlier}.")
    else:
        entry["compute"] = float(point)
        why = f"{share} agree" if crossed is not None else "no bootstrap"
        entry["statement"] = (f"{a.name} and {b.name} cross at {point:.3g} {unit}, {ahead} ahead beyond ({why}, no "
                              f"interval){earlier}.")
    return entry


def _finite(values: Any) -> Any:
    """JSON has no NaN: a non-finite number (a law with no optimum there) becomes null."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        return float(arr) if np.isfinite(arr) else None
    return [float(v) if np.isfinite(v) else None for v in arr]


def _prediction(law: Law, g: GroupFit, c: float) -> dict[str, Any]:
    """The loss (and for chinchilla the optimal N, D) at compute c, with bootstrap intervals."""
    with np.errstate(all="ignore"):
        out: dict[str, Any] = {"compute": c, "loss": _finite(loss_at_compute(law, g.params, c)), "interval": None}
        if g.samples is not None:
            out["interval"] = _interval(loss_at_compute(law, g.samples, c))
        if law.name == "chinchilla":
            n_opt, d_opt = compute_optimal(g.params, c)
            out.update(params=_finite(n_opt), tokens=_finite(d_opt), params_interval=None, tokens_interval=None)
            if g.samples is not None:
                n_s, d_s = compute_optimal(g.samples, c)
                out.update(params_interval=_interval(n_s), tokens_interval=_interval(d_s))
    return out


def _curve(law: Law, g: GroupFit, span: tuple[float, float]) -> dict[str, Any]:
    """The fitted loss-vs-compute curve on a grid over `span`, with its pointwise bootstrap band."""
    grid = np.geomspace(*span, CURVE_POINTS)
    with np.errstate(all="ignore"):
        curve: dict[str, Any] = {"compute": grid.tolist(), "loss": _finite(loss_at_compute(law, g.params, grid))}
        if g.samples is not None and len(g.samples["E"]):
            draws = loss_at_compute(law, _column(g.samples), grid)
            tail = (1 - CONFIDENCE) / 2 * 100
            curve["low"] = _finite(np.nanpercentile(draws, tail, axis=0))
            curve["high"] = _finite(np.nanpercentile(draws, 100 - tail, axis=0))
        if law.name == "chinchilla":
            n_opt, d_opt = compute_optimal(g.params, grid)
            curve.update(params=_finite(n_opt), tokens=_finite(d_opt))
    return curve


def versions() -> dict[str, str]:
    import scipy

    return {"languini": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def fit(inputs: Inputs, law_name: str, bootstrap: int = 1000, extrapolate: Sequence[float] = (),
        crossing_range: tuple[float, float] | None = None, seed: int = 0) -> dict[str, Any]:
    """Fit every group, bootstrap, predict, intersect: the content of fit.json."""
    law = get_law(law_name)
    if bootstrap < 0:
        raise UserError(f"--bootstrap takes a number of resamples >= 0, got {bootstrap}.")
    if any(not (math.isfinite(c) and c > 0) for c in extrapolate):
        raise UserError("--extrapolate takes positive compute values.")
    if crossing_range is not None and not 0 < crossing_range[0] < crossing_range[1]:
        raise UserError("--crossing-range takes LOW HIGH with 0 < LOW < HIGH.")
    check_points(inputs.points, law)
    unit = inputs.compute_unit if law.name == "power" else "FLOPs"
    groups: dict[str, list[Point]] = {}
    for p in inputs.points:
        groups.setdefault(p.group, []).append(p)
    rng = np.random.default_rng(seed)
    fits = []
    for name in sorted(groups):
        g = fit_group(law, name, groups[name])
        if bootstrap:
            bootstrap_group(g, bootstrap, rng)
        fits.append(g)

    observed = [_compute_of(law, p) for g in fits for p in g.used]
    lo, hi = min(observed), max(observed)
    searched = tuple(crossing_range) if crossing_range else (lo, max(1000 * hi, *extrapolate, hi))
    intersections = [intersect(law, a, b, searched, unit) for a, b in itertools.combinations(fits, 2)]
    shown = [hi, *extrapolate] + [x["interval"][1] if x["interval"] else x["compute"] or hi for x in intersections]
    span = (lo, max(shown))

    out_groups = {}
    for g in fits:
        samples = g.samples if g.samples is not None and len(g.samples["E"]) else None
        compute = [_compute_of(law, p) for p in g.used]
        out_groups[g.name] = {
            "params": g.params,
            "intervals": {k: _interval(v) for k, v in samples.items()} if samples else None,
            "objective": g.objective,
            "starts": g.starts,
            "bootstrap": g.bootstrap or None,
            "points": [dict(p.to_dict(), compute=c) for p, c in zip(g.used, compute)],
            "excluded": [p.to_dict() for p in g.excluded],
            "observed_compute": [min(compute), max(compute)],
            "predictions": [_prediction(law, g, c) for c in extrapolate],
            "curve": _curve(law, g, span),
        }
    return {
        "law": law.name,
        "formula": law.formula,
        "objective": {"loss": "huber", "delta": HUBER_DELTA, "on": "log L - log L_hat", "optimizer":
                      "batched Levenberg-Marquardt from every start, best distinct end points polished by L-BFGS-B"},
        "compute_unit": unit,
        "loss_name": inputs.loss_name,
        "confidence": CONFIDENCE,
        "bootstrap": bootstrap,
        "seed": seed,
        "groups": out_groups,
        "intersections": intersections,
        "versions": versions(),
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _with_interval(value: float, interval: list[float] | None) -> str:
    return _fmt(value) + (f" [{_fmt(interval[0])}, {_fmt(interval[1])}]" if interval else "")


def markdown(result: dict[str, Any]) -> str:
    """fit.json as Markdown tables: parameters, predictions, crossings."""
    names = get_law(result["law"]).param_names
    lines = [f"{result['formula']}, fitted to {result['loss_name']} against {result['compute_unit']}"
             + (f"; in brackets: {result['confidence']:.0%} bootstrap intervals ({result['bootstrap']} resamples)"
                if result["bootstrap"] else ""),
             "", "| group | points | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for name, g in result["groups"].items():
        iv = g["intervals"] or {}
        lines.append(f"| {name} | {len(g['points'])} | "
                     + " | ".join(_with_interval(g["params"][k], iv.get(k)) for k in names) + " |")
    lines += [f"\n{name}: no intervals, {g['bootstrap']['skipped']}." for name, g in result["groups"].items()
              if g["bootstrap"] and "skipped" in g["bootstrap"]]
    rows = [(name, p) for name, g in result["groups"].items() for p in g["predictions"]]
    if rows:
        extra = result["law"] == "chinchilla"
        lines += ["", f"| group | compute ({result['compute_unit']}) | predicted loss |"
                  + (" N_opt | D_opt |" if extra else ""), "|---|---|---|" + ("---|---|" if extra else "")]
        for name, p in rows:
            lines.append(f"| {name} | {_fmt(p['compute'])} | {_with_interval(p['loss'], p['interval'])} |"
                         + (f" {_with_interval(p['params'], p['params_interval'])} |"
                            f" {_with_interval(p['tokens'], p['tokens_interval'])} |" if extra else ""))
    if result["intersections"]:
        lines += [""] + [x["statement"] for x in result["intersections"]]
    return "\n".join(lines)
