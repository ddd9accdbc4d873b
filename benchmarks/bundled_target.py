"""Issue 17's target on metrics written by `lcgen evaluate --mask-days ... --baselines linear,mean,gp`:
the model's median per-window masked MSE <= the GP's in every gap-duration bin, and its pooled
masked MSE <= 0.5x linear interpolation's. Prints one table per metrics file and a verdict, and for
mock data the noise floor (the MSE of the noise-free signal itself against the observations: no
predictor gets under it, so on noise-dominated data pooled <= 0.5x linear is out of reach) and the
model's and the GP's pooled MSE against the noise-free signal, relative to linear's.

    python benchmarks/bundled_target.py RUN/metrics-days-kepler.json RUN/metrics-days-tess.json
"""

import json
import sys


def main(paths: list[str]) -> None:
    met = True
    for path in paths:
        m = json.load(open(path))
        print(f"\n{m['data']}: {m['n_samples']} windows, {m['n_masked_positions']:,} hidden points")
        print(f"{'gap':>9} {'windows':>7} | median window MSE: {'model':>8} {'gp':>8} {'linear':>8} | "
              f"pooled MSE: {'model':>8} {'gp':>8} {'linear':>8}")
        rows = [{"group": "all", "n_samples": m["n_samples"], **m["overall"]}] + m["by_gap_days"]
        for g in rows:
            med = [g[p]["masked_window_mse_median"] for p in ("model", "gp", "linear")]
            pooled = [g[p]["masked_mse"] for p in ("model", "gp", "linear")]
            print(f"{g['group']:>9} {g['n_samples']:>7} | {'':19}" + " ".join(f"{v:8.4f}" for v in med)
                  + f" | {'':12}" + " ".join(f"{v:8.4f}" for v in pooled))
            if g["group"] != "all":
                met &= med[0] <= med[1]
        ratio = m["overall"]["model"]["masked_mse"] / m["overall"]["linear"]["masked_mse"]
        beats = sum(g["model"]["masked_window_mse_median"] <= g["gp"]["masked_window_mse_median"]
                    for g in m["by_gap_days"])
        print(f"pooled model / linear = {ratio:.3f} (target <= 0.5); model median <= GP's in "
              f"{beats} of {len(m['by_gap_days'])} gap bins")
        met &= ratio <= 0.5
        if "signal" in m:  # mock data: the noise itself is the floor no predictor can go under
            noise, sig = m["signal"]["data"], m["signal"]
            lin = m["overall"]["linear"]
            print(f"noise floor (observations against the noise-free signal): pooled {noise['masked_mse']:.4f} = "
                  f"{noise['masked_mse'] / lin['masked_mse']:.3f}x linear, median window "
                  f"{noise['masked_window_mse_median']:.4f} = "
                  f"{noise['masked_window_mse_median'] / lin['masked_window_mse_median']:.3f}x linear")
            print(f"against the noise-free signal: pooled model / linear = "
                  f"{sig['model']['masked_mse'] / sig['linear']['masked_mse']:.3f}, GP / linear = "
                  f"{sig['gp']['masked_mse'] / sig['linear']['masked_mse']:.3f}")
    print("\ntarget", "MET" if met else "NOT MET")


if __name__ == "__main__":
    main(sys.argv[1:])
