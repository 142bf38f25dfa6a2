"""What successive halving saves in step 1, and what it costs: the same grid searched exhaustively and with
pruning, on the same data, seeds and proxy schedule.

Prints the two winners, whether pruning found the exhaustive winner (or one within the noise: the accuracy
gap to it at most ``--noise``), and the fraction of the exhaustive epochs the pruned search used.
Target: the same winner at <= 40 % of the epochs.

    python benchmarks/bench_search.py                         # digits, a tiny baseline (about a minute)
    python benchmarks/bench_search.py --data fashion-mnist --epochs 3 --limit-train 3000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from compscale.analysis.demo import demo_baseline
from compscale.jobs.runner import RunSettings
from compscale.search.step1 import GridSettings, run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=3, help="proxy epochs per candidate")
    parser.add_argument("--grid-step", type=float, default=0.05)
    parser.add_argument("--limit-train", type=int, default=1200)
    parser.add_argument("--limit-test", type=int, default=500)
    parser.add_argument("--holdout", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.01, help="accuracy gap counted as the same winner")
    parser.add_argument("--out", help="folder to keep the two searches (default: a temporary one)")
    args = parser.parse_args()

    root = Path(args.out or tempfile.mkdtemp(prefix="bench-search-"))
    root.mkdir(parents=True, exist_ok=True)
    results, seconds = {}, {}
    for mode in ("exhaustive", "pruned"):
        settings = RunSettings(data=args.data, out=str(root / mode), epochs=args.epochs,
                               limit_train=args.limit_train, limit_test=args.limit_test, holdout=args.holdout,
                               threads=args.threads, workers=args.workers)
        start = time.perf_counter()
        results[mode] = run_search(demo_baseline(), settings, GridSettings(step=args.grid_step),
                                   exhaustive=(mode == "exhaustive"))
        seconds[mode] = time.perf_counter() - start

    ex, pr = results["exhaustive"], results["pruned"]
    key = lambda b: (b["alpha"], b["beta"], b["gamma"])  # noqa: E731
    exhaustive_acc = {key(t): t["accuracy"] for t in ex["trials"] if t["state"] == "complete"}
    same = key(ex["best"]) == key(pr["best"])
    gap = ex["best"]["accuracy"] - exhaustive_acc.get(key(pr["best"]), float("nan"))
    fraction = pr["epochs_used"] / ex["epochs_used"]
    print(f"grid: {ex['candidates']['distinct']} distinct realized candidates, {args.epochs} proxy epochs each, "
          f"data {args.data} ({args.limit_train} train, {args.holdout} held out)")
    print(f"exhaustive winner: {key(ex['best'])} held-out top-1 {ex['best']['accuracy']:.4f} "
          f"({ex['epochs_used']} epochs, {seconds['exhaustive']:.0f} s)")
    print(f"pruned winner:     {key(pr['best'])} held-out top-1 {pr['best']['accuracy']:.4f} "
          f"({pr['epochs_used']} epochs, {seconds['pruned']:.0f} s)")
    verdict = "the same winner" if same else (f"a different winner, {gap:+.4f} below the exhaustive one"
                                               + (" (within the noise)" if gap <= args.noise else ""))
    print(f"pruning found {verdict}, using {fraction:.0%} of the exhaustive epochs "
          f"({'meets' if (same or gap <= args.noise) and fraction <= 0.40 else 'misses'} the target: same winner "
          f"at <= 40 %)")
    (root / "bench_search.json").write_text(json.dumps({"same_winner": same, "gap": gap, "epoch_fraction": fraction,
                                                        "seconds": seconds}, indent=2))


if __name__ == "__main__":
    main()
