"""Compare the runs of a sweep (or any run folders) by their sample-quality evaluations.

    python experiments/compare_sweep.py outputs/multirun/<date>/<time> [more folders...] [--out DIR]
        [--at-wall-s T] [--at-iteration I] [--no-groups]

Writes ``comparison.md`` and ``comparison.csv`` (final and best value of each metric per run, and the
iteration and wall time of the best) and ``comparison.png`` (each metric against iterations and wall
time, one line per run, labelled by the swept values) into the sweep folder or ``--out``.

Runs whose overrides differ only in ``seed`` are one recipe. When some recipe ran under several seeds
(or ``--at-wall-s``/``--at-iteration`` is given) it also writes ``comparison-groups.md``, ``.csv`` and
``.png``: per recipe and metric the mean, sample std, min and max over seeds of the final value and of
the last value at or before the wall time T (seconds) or iteration I; ``--no-groups`` leaves them out.
"""

import argparse

from voxgan.analysis.compare import (
    PLOT_METRICS,
    CompareError,
    load_runs,
    output_dir,
    plotted_metrics,
    write_comparison,
)
from voxgan.analysis.compare_groups import group_runs, has_repeats, reading_points, write_group_comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="a sweep folder (outputs/multirun/...) or run folders")
    parser.add_argument("--out", help="where the table and plot go (default: the folder the paths share)")
    parser.add_argument("--metrics", nargs="+", default=list(PLOT_METRICS), help="metrics to plot")
    parser.add_argument("--at-wall-s", type=float, help="compare seed groups also at this wall time (s)")
    parser.add_argument("--at-iteration", type=int, help="compare seed groups also at this iteration")
    parser.add_argument("--no-groups", action="store_true", help="no seed groups, only one row per run")
    args = parser.parse_args()
    points = reading_points(args.at_wall_s, args.at_iteration)
    if args.no_groups and len(points) > 1:
        parser.error("--at-wall-s and --at-iteration compare seed groups; leave out --no-groups")
    try:
        runs = load_runs(args.paths)
    except CompareError as error:
        raise SystemExit(f"error: {error}") from None
    out = output_dir(args.paths, args.out)
    written = write_comparison(runs, out, args.metrics)
    groups = group_runs(runs)
    if not args.no_groups and (has_repeats(groups) or len(points) > 1):
        written |= write_group_comparison(groups, out, plotted_metrics(runs, args.metrics), points)
    print(written["markdown"].read_text())
    if "groups_markdown" in written:
        print(written["groups_markdown"].read_text())
    print("written: " + ", ".join(str(path) for path in written.values()))


if __name__ == "__main__":
    main()
