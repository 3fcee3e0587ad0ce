"""Scaling-law fit speed: the batched 4,500-start Chinchilla fit against a plain scipy loop.

Targets (2-core CPU): the full 4,500-start fit on Epoch AI's 240 Chinchilla points ≤ 10 s;
a 1,000-resample bootstrap of the power law on 20 points ≤ 30 s. The plain loop is what the
published procedure runs: `scipy.optimize.minimize(method="L-BFGS-B")` from each grid start
with the analytic gradient and default tolerances, keeping the best converged start. Both run
here, on the same data, in one process, and the ratio is printed. With --loop-starts N the
loop times an evenly spaced subset of N starts and extrapolates to 4,500 (stated in the output).

    python benchmarks/fit_speed.py [--data CSV] [--loop-starts N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import write_result
from scipy.optimize import minimize
from scipy.special import logsumexp

from languini import scaling

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla_svg_extracted_data.csv"
TARGET_FIT_S, TARGET_BOOTSTRAP_S = 10.0, 30.0


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray):
    """Σ huber(LSE(a − α log N, b − β log D, e) − log L) and its gradient: the loop's objective."""
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    pred = logsumexp(u, axis=0)
    p = np.exp(u - pred)
    r = pred - log_loss
    delta = scaling.HUBER_DELTA
    f = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum()
    psi = np.clip(r, -delta, delta)
    return f, np.array([psi @ p[0], psi @ p[1], psi @ p[2], -psi @ (p[0] * log_n), -psi @ (p[1] * log_d)])


def plain_loop(points: list[scaling.Point], starts: np.ndarray) -> tuple[dict[str, float], float]:
    log_n = np.log([p.params for p in points])
    log_d = np.log([p.tokens for p in points])
    log_loss = np.log([p.loss for p in points])
    best = None
    for x0 in starts:
        r = minimize(huber_objective, x0, args=(log_n, log_d, log_loss), jac=True, method="L-BFGS-B")
        if r.success and (best is None or r.fun < best.fun):
            best = r
    a, b, e, alpha, beta = best.x
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha), "B": float(np.exp(b)),
            "beta": float(beta)}, float(best.fun)


def timed(fn, repeats: int) -> tuple[object, list[float]]:
    seconds, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t)
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="Epoch AI's svg_extracted_data.csv")
    ap.add_argument("--loop-starts", type=int, default=4500, help="starts the plain loop runs (4500: all)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast fit and the bootstrap")
    args = ap.parse_args()
    load_before = os.getloadavg()
    law = scaling.LAWS["chinchilla"]
    points = scaling.read_epoch_chinchilla(args.data)

    fast, fast_s = timed(lambda: scaling.fit_group(law, "chinchilla", points), args.repeats)
    grid = scaling.Design.of(law, points).starts()
    subset = grid[np.linspace(0, len(grid) - 1, min(args.loop_starts, len(grid))).round().astype(int)]
    t = time.perf_counter()
    loop_params, loop_objective = plain_loop(points, subset)
    loop_s = (time.perf_counter() - t) * len(grid) / len(subset)

    rng = np.random.default_rng(0)
    compute = np.geomspace(0.01, 10, 20)
    power_points = [scaling.Point("a", float((1.5 + 2 * c ** -0.4) * np.exp(rng.normal(0, 0.01))), compute=float(c))
                    for c in compute]
    inputs = scaling.Inputs(power_points, "reference-hours", "loss")
    _, boot_s = timed(lambda: scaling.fit(inputs, "power", bootstrap=1000), args.repeats)
    load_after = os.getloadavg()

    fit_s, boot_best = min(fast_s), min(boot_s)
    print(f"Chinchilla fit, {len(points)} points, {len(grid)} starts")
    print(f"  batched (this harness)  {fit_s:7.2f} s  (runs: {', '.join(f'{s:.2f}' for s in fast_s)})"
          f"  target ≤ {TARGET_FIT_S:g} s: {'ok' if fit_s <= TARGET_FIT_S else 'MISSED'}")
    note = "" if len(subset) == len(grid) else f"  ({len(subset)} starts timed, scaled to {len(grid)})"
    print(f"  plain scipy loop        {loop_s:7.2f} s{note}")
    print(f"  ratio                   {loop_s / fit_s:7.1f}×")
    print(f"  objective (Σ Huber): batched {fast.objective:.12g}, loop {loop_objective:.12g}")
    for name in law.param_names:
        print(f"  {name:<6} batched {fast.params[name]:12.6g}   loop {loop_params[name]:12.6g}")
    print(f"Power-law bootstrap, 20 points, 1000 resamples: {boot_best:.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in boot_s)})  target ≤ {TARGET_BOOTSTRAP_S:g} s: "
          f"{'ok' if boot_best <= TARGET_BOOTSTRAP_S else 'MISSED'}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    path = write_result("fit_speed-cpu", {
        "benchmark": "fit_speed",
        "data": str(args.data), "points": len(points), "starts": len(grid),
        "batched_seconds": fast_s, "batched_params": fast.params, "batched_objective": fast.objective,
        "loop_seconds": loop_s, "loop_starts_timed": len(subset), "loop_params": loop_params,
        "loop_objective": loop_objective, "ratio": loop_s / fit_s,
        "bootstrap_seconds": boot_s, "bootstrap_resamples": 1000, "bootstrap_points": 20,
        "targets": {"fit_seconds": TARGET_FIT_S, "bootstrap_seconds": TARGET_BOOTSTRAP_S},
        "load_average": {"before": load_before, "after": load_after},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
