"""Comparing training runs by their evaluation records (``metrics-eval.jsonl``): a table of final and
best values per run, and plots of each metric against iterations and wall time, one line per run.

A run is labelled by the overrides that differ between the compared runs (``.hydra/overrides.yaml``),
so the jobs of a sweep read as the values swept. Runs of one recipe under several seeds are compared
as groups (mean and spread over seeds) by ``voxgan.analysis.compare_groups``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from voxgan.evaluation import EVAL_FILE, METRIC_TARGETS, RECORD_FIELDS
from voxgan.io import atomic_write, read_jsonl

PLOT_METRICS = ("1nna", "mmd", "cov", "frechet", "nn_iou_mean", "occupancy_gen", "stray_gen")
RUN_MARKERS = ("config.yaml", ".hydra", EVAL_FILE)
TABLE_HEADER = "| run | final | best | at iteration | at wall s |"
SUMMARY_KEYS = ("final", "best", "best_iteration", "best_wall_s", "evaluations")
CSV_COLUMNS = ("run", "label", "metric", *SUMMARY_KEYS, "note")
X_AXES = (("iteration", "iteration"), ("wall_s", "wall time (s)"))  # (record key, axis label)


class CompareError(ValueError):
    """A path that holds no run folder."""


@dataclass
class Run:
    """One run folder: its overrides, evaluation records and, when it has none, why."""

    path: Path
    overrides: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    note: str = ""
    label: str = ""


def is_run(path: Path) -> bool:
    """Whether ``path`` looks like a training run folder."""
    return any((path / marker).exists() for marker in RUN_MARKERS)


def find_runs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run folders among ``paths``: each is a run folder or a sweep folder of run folders (jobs in order)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise CompareError(f"{path} is not a folder; pass run folders or a sweep folder")
        jobs = [path] if is_run(path) else sorted((p for p in path.iterdir() if is_run(p)), key=_job_order)
        if not jobs:
            raise CompareError(f"{path} holds no run folder (one with {', '.join(RUN_MARKERS)})")
        runs += jobs
    return runs


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 62, path.name)


def read_run(path: Path) -> Run:
    """A run's overrides and evaluation records; a run without records gets a note saying why."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    eval_file = path / EVAL_FILE
    records = read_jsonl(eval_file) if eval_file.is_file() else []
    run = Run(path, overrides, records)
    if not records:
        run.note = _missing_records_note(path, eval_file)
    return run


def _missing_records_note(path: Path, eval_file: Path) -> str:
    config_file = path / "config.yaml"
    config = OmegaConf.load(config_file) if config_file.is_file() else OmegaConf.create()
    if OmegaConf.select(config, "callbacks.eval_every") == 0:
        return "no evaluation records: evaluation was off (callbacks.eval_every=0)"
    if eval_file.is_file():
        return f"no evaluation records: {EVAL_FILE} is empty"
    return f"no evaluation records: no {EVAL_FILE} (the run may have stopped before its first evaluation)"


def label_runs(runs: list[Run]) -> None:
    """Label each run ``<folder>: <overrides that differ between the runs>``."""
    for run, values in zip(runs, differing_overrides([run.overrides for run in runs]), strict=True):
        run.label = f"{run.path.name}: {values}" if values else run.path.name


def differing_overrides(override_lists: list[list[str]]) -> list[str]:
    """Per list of overrides: its ``key=value`` settings of the keys whose values differ between lists."""
    settings = [dict(o.split("=", 1) if "=" in o else (o, "") for o in lst) for lst in override_lists]
    keys = sorted({key for s in settings for key in s})
    swept = [key for key in keys if len({s.get(key) for s in settings}) > 1]
    return [" ".join(f"{key}={s[key]}" for key in swept if key in s) for s in settings]


def metric_names(runs: list[Run]) -> list[str]:
    """Metrics found in any record, in first-seen order."""
    names: dict[str, None] = {}
    for run in runs:
        for record in run.records:
            names.update((key, None) for key in record if key not in RECORD_FIELDS)
    return list(names)


def summarise(run: Run, metric: str) -> dict[str, float | int | None]:
    """Final value of ``metric``, and for comparable metrics its best value and when it was reached."""
    points = [r for r in run.records if has_values(r, metric)]
    summary = dict.fromkeys(SUMMARY_KEYS)
    summary.update(final=points[-1][metric] if points else None, evaluations=len(points))
    if points and metric in METRIC_TARGETS:
        best = min(points, key=lambda r: abs(r[metric] - METRIC_TARGETS[metric]))
        summary.update(best=best[metric], best_iteration=best["iteration"], best_wall_s=best.get("wall_s"))
    return summary


def summary_rows(runs: list[Run]) -> list[dict]:
    """One row per (run, metric), and one per run without records (with its note)."""
    names = metric_names(runs)
    rows = []
    for run in runs:
        if not run.records:
            rows.append({"run": str(run.path), "label": run.label, "metric": "", "note": run.note})
            continue
        rows += [{"run": str(run.path), "label": run.label, "metric": m, **summarise(run, m)} for m in names]
    return rows


def markdown_tables(runs: list[Run], rows: list[dict]) -> str:
    """One table per metric (a row per run), then the runs without records."""
    lines = [f"# Comparison of {len(runs)} runs", ""]
    for metric in metric_names(runs):
        goal = f" (best: nearest {METRIC_TARGETS[metric]:g})" if metric in METRIC_TARGETS else ""
        lines += [f"## {metric}{goal}", "", TABLE_HEADER, "|---|---|---|---|---|"]
        for row in (r for r in rows if r["metric"] == metric):
            cells = [format_number(row[key]) for key in SUMMARY_KEYS[:4]]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    notes = [r for r in rows if not r["metric"]]
    if notes:
        lines += ["## Runs without evaluation records", ""]
        lines += [f"- {r['label']} ({r['run']}): {r['note']}" for r in notes]
    return "\n".join(lines) + "\n"


def has_values(record: dict, *keys: str) -> bool:
    """Whether ``record`` holds a value for every one of ``keys``."""
    return all(record.get(key) is not None for key in keys)


def format_number(value: float | int | None) -> str:
    """A table cell: floats to 4 significant digits, ``-`` for no value."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_runs(runs: list[Run], metrics: list[str]) -> Figure:
    """Each metric (a row of axes) against iteration (left) and wall time (right), one line per run."""
    fig = Figure(figsize=(11, 2.8 * max(1, len(metrics))), layout="constrained")
    axes = fig.subplots(max(1, len(metrics)), 2, squeeze=False)
    for row, metric in enumerate(metrics):
        for col, (x_key, x_label) in enumerate(X_AXES):
            ax = axes[row][col]
            for run in runs:
                points = [(r[x_key], r[metric]) for r in run.records if has_values(r, metric, x_key)]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", label=run.label)
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    if any(run.records for run in runs):
        axes[0][1].legend(fontsize="small", loc="best")
    return fig


def load_runs(paths: list[str | os.PathLike]) -> list[Run]:
    """The labelled runs under ``paths`` (run folders or sweep folders)."""
    runs = [read_run(path) for path in find_runs(paths)]
    label_runs(runs)
    return runs


def output_dir(paths: list[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """``out``, or by default the folder the given paths share (the sweep folder of a sweep)."""
    return Path(out) if out is not None else Path(os.path.commonpath([Path(p).resolve() for p in paths]))


def plotted_metrics(runs: list[Run], metrics: list[str] | None = None) -> list[str]:
    """Those of ``metrics`` (default: PLOT_METRICS) that some run recorded."""
    recorded = metric_names(runs)
    return [m for m in (metrics or PLOT_METRICS) if m in recorded]


def compare_runs(
    paths: list[str | os.PathLike], out: str | os.PathLike | None = None, metrics: list[str] | None = None
) -> dict[str, Path]:
    """Read the runs under ``paths``; write ``comparison.md``, ``.csv`` and ``.png`` into ``out``.

    ``out`` defaults to the folder the given paths share (the sweep folder of a sweep);
    ``metrics`` picks the plotted metrics (default: those of PLOT_METRICS that were recorded).
    """
    return write_comparison(load_runs(paths), output_dir(paths, out), metrics)


def write_comparison(runs: list[Run], out_dir: Path, metrics: list[str] | None = None) -> dict[str, Path]:
    """Write the per-run tables (``comparison.md``, ``.csv``) and plot (``.png``) into ``out_dir``."""
    rows = summary_rows(runs)
    table, text = markdown_tables(runs, rows), csv_text(rows, CSV_COLUMNS)
    figure = plot_runs(runs, plotted_metrics(runs, metrics))
    return {
        "markdown": atomic_write(out_dir / "comparison.md", lambda f: f.write(table), mode="w"),
        "csv": atomic_write(out_dir / "comparison.csv", lambda f: f.write(text), mode="w"),
        "png": atomic_write(out_dir / "comparison.png", lambda f: figure.savefig(f, format="png", dpi=100)),
    }


def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    """``rows`` as CSV text with a header of ``columns`` (a missing value is an empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
