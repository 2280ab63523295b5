"""Compare the runs of a sweep (or any run folders) by their sample-quality evaluations.

    python experiments/compare_sweep.py outputs/multirun/<date>/<time> [more folders...] [--out DIR]

Writes ``comparison.md`` and ``comparison.csv`` (final and best value of each metric per run, and the
iteration and wall time of the best) and ``comparison.png`` (each metric against iterations and wall
time, one line per run, labelled by the swept values) into the sweep folder or ``--out``.
"""

import argparse

from voxgan.compare import PLOT_METRICS, CompareError, compare_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="a sweep folder (outputs/multirun/...) or run folders")
    parser.add_argument("--out", help="where the table and plot go (default: the folder the paths share)")
    parser.add_argument("--metrics", nargs="+", default=list(PLOT_METRICS), help="metrics to plot")
    args = parser.parse_args()
    try:
        written = compare_runs(args.paths, args.out, args.metrics)
    except CompareError as error:
        raise SystemExit(f"error: {error}") from None
    print(written["markdown"].read_text())
    print("written: " + ", ".join(str(path) for path in written.values()))


if __name__ == "__main__":
    main()
