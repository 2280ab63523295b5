"""Seed groups: runs whose overrides differ only in ``seed`` are one recipe, judged by the mean and
spread of each metric over its seeds, at the final evaluation and at a fixed wall time or iteration.

Two seeds of one recipe can differ more than two recipes do, so a recipe decision rests on at least
3 seeds. Seeds evaluate at different wall times: each run's curve is interpolated onto a common grid
(inside the range every seed covers) before the mean and band are taken.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from voxgan.analysis.compare import (
    X_AXES,
    Run,
    csv_text,
    differing_overrides,
    format_number,
    has_values,
    metric_names,
)
from voxgan.io import atomic_write

MIN_SEEDS = 3
SEED_WARNING = f"a recipe decision rests on at least {MIN_SEEDS} seeds"
GROUP_CSV_COLUMNS = ("group", "metric", "at", "n", "mean", "std", "min", "max", "seeds", "note")
BAND = "mean over seeds, band: min-max over seeds (each run interpolated onto a common grid)"


@dataclass(frozen=True)
class At:
    """Where a run's value is read: its final evaluation (no ``x_key``), or its last evaluation with
    ``x_key`` (``wall_s`` or ``iteration``) at or before ``limit``."""

    x_key: str | None = None
    limit: float | None = None

    @property
    def name(self) -> str:
        return "final" if self.x_key is None else f"{self.x_key}<={self.limit:g}"


FINAL = At()


def reading_points(at_wall_s: float | None = None, at_iteration: int | None = None) -> list[At]:
    """The final evaluation, then the fixed wall time and iteration that were given."""
    fixed = [At("wall_s", at_wall_s), At("iteration", at_iteration)]
    return [FINAL, *(at for at in fixed if at.limit is not None)]


@dataclass
class Group:
    """Runs whose overrides are the same once ``seed`` is left out: one recipe under several seeds."""

    recipe: tuple[str, ...]
    runs: list[Run] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    label: str = ""


# Keys a run may set without being another recipe: its seed, and the checkpoint it resumed from.
NOT_RECIPE_KEYS = ("seed", "ckpt_path")


def override_key(override: str) -> str:
    """The key a Hydra override sets, adds (``+``) or deletes (``~``): ``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def is_seed_override(override: str) -> bool:
    """Whether a Hydra override sets (or adds, or deletes) ``seed``."""
    return override_key(override) == "seed"


def recipe_of(overrides: list[str]) -> tuple[str, ...]:
    """The overrides without ``seed`` and ``ckpt_path``, sorted: the order of command-line overrides
    does not matter, and a run resumed from its checkpoint stays in its recipe's group."""
    return tuple(sorted(o for o in overrides if override_key(o) not in NOT_RECIPE_KEYS))


def seed_of(run: Run) -> str:
    """The run's seed: its ``seed=`` override, else the config's default that its ``config.yaml`` holds."""
    for override in run.overrides:
        if is_seed_override(override) and "=" in override:
            return override.split("=", 1)[1]
    config_file = run.path / "config.yaml"
    seed = OmegaConf.select(OmegaConf.load(config_file), "seed") if config_file.is_file() else None
    return "default" if seed is None else str(seed)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by their overrides without ``seed``, in first-seen order, labelled by what differs."""
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        recipe = recipe_of(run.overrides)
        group = groups.setdefault(recipe, Group(recipe))
        group.runs.append(run)
        group.seeds.append(seed_of(run))
    label_groups(list(groups.values()))
    return list(groups.values())


def label_groups(groups: list[Group]) -> None:
    """Label each group by its overrides that differ between the groups (all of them for a lone group)."""
    for group, values in zip(groups, differing_overrides([list(g.recipe) for g in groups]), strict=True):
        group.label = values or " ".join(group.recipe) or "(defaults)"


def has_repeats(groups: list[Group]) -> bool:
    """Whether some recipe ran under more than one seed."""
    return any(len(group.runs) > 1 for group in groups)


@dataclass
class Spread:
    """One metric of a group at one point: the values over seeds, and why a seed has none."""

    values: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (divided by n - 1); None below two values."""
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def min(self) -> float | None:
        return min(self.values, default=None)

    @property
    def max(self) -> float | None:
        return max(self.values, default=None)


def value_at(run: Run, metric: str, at: At) -> float | None:
    """``metric`` of the run's last evaluation that has it, at or before ``at``'s limit (None: none is)."""
    points = [r for r in run.records if has_values(r, metric)]
    if at.x_key is not None:
        points = [r for r in points if has_values(r, at.x_key) and r[at.x_key] <= at.limit]
    return points[-1][metric] if points else None


def spread(group: Group, metric: str, at: At) -> Spread:
    """``metric`` at ``at`` over the group's seeds; a seed without a value gets a note saying why."""
    result = Spread()
    for run, seed in zip(group.runs, group.seeds, strict=True):
        value = value_at(run, metric, at)
        if value is None:
            result.notes.append(f"seed {seed}: {_missing(run, metric, at)}")
        else:
            result.values.append(value)
            result.seeds.append(seed)
    return result


def _missing(run: Run, metric: str, at: At) -> str:
    if not run.records:
        return run.note
    if not any(has_values(r, metric) for r in run.records):
        return f"no {metric} recorded"
    xs = [r[at.x_key] for r in run.records if has_values(r, metric, at.x_key)]
    if not xs:
        return f"no {metric} with {at.x_key} recorded"
    return f"no evaluation at {at.name} (first at {min(xs):g})"


def group_rows(groups: list[Group], metrics: list[str], points: list[At]) -> list[dict]:
    """One CSV row per (group, metric, point): n, mean, std, min, max and the seeds behind them."""
    rows = []
    for group, metric, at in itertools.product(groups, metrics, points):
        s = spread(group, metric, at)
        where = {"group": group.label, "metric": metric, "at": at.name}
        summary = {"n": s.n, "mean": s.mean, "std": s.std, "min": s.min, "max": s.max}
        rows.append({**where, **summary, "seeds": " ".join(s.seeds), "note": "; ".join(s.notes)})
    return rows


class Column(NamedTuple):
    """A column of a group table: a metric read at a point."""

    header: str
    metric: str
    at: At


def spread_cell(s: Spread, seeds: int) -> str:
    """``mean ± std (min–max)``, with ``n=`` where fewer than the group's ``seeds`` have a value."""
    if not s.n:
        return "-"
    text = format_number(s.mean) if s.std is None else f"{format_number(s.mean)} ± {s.std:.2g}"
    if s.n > 1:
        text += f" ({format_number(s.min)}–{format_number(s.max)})"
    return text + (f" n={s.n}" if s.n < seeds else "")


def group_table(groups: list[Group], columns: list[Column]) -> list[str]:
    """A markdown table: per group its label, n seeds, a ``spread_cell`` per column and the notes."""
    headers = [c.header for c in columns]
    return spread_table(groups, headers, lambda group: [spread(group, c.metric, c.at) for c in columns])


def spread_table(
    groups: list[Group], headers: list[str], spreads_of: Callable[[Group], list[Spread]]
) -> list[str]:
    """The markdown table of :func:`group_table` for any ``spreads_of(group)``, a Spread per header."""
    lines = [
        "| recipe | n | " + " | ".join(headers) + " | note |",
        "|---|---|" + "---|" * len(headers) + "---|",
    ]
    for group in groups:
        spreads = spreads_of(group)
        notes = dict.fromkeys(note for s in spreads for note in s.notes)
        cells = [group.label, str(len(group.runs)), *(spread_cell(s, len(group.runs)) for s in spreads)]
        lines.append("| " + " | ".join([*cells, "; ".join(notes)]) + " |")
    return lines


def seed_warnings(groups: list[Group]) -> list[str]:
    """A line per group with fewer than MIN_SEEDS distinct seeds, and per group that repeats a seed."""
    lines = []
    for group in groups:
        distinct = list(dict.fromkeys(group.seeds))
        if len(distinct) < MIN_SEEDS:
            lines.append(f"- warning: {group.label} has {len(distinct)} seed(s); {SEED_WARNING}")
        repeated = [seed for seed in distinct if group.seeds.count(seed) > 1]
        if repeated:
            lines.append(
                f"- warning: {group.label} ran seed {', '.join(repeated)} more than once; "
                "a repeated seed is no independent evidence"
            )
    return lines


def markdown_groups(groups: list[Group], metrics: list[str], points: list[At]) -> str:
    """A table per point (final, at a wall time, at an iteration), then the seed warnings."""
    runs = sum(len(group.runs) for group in groups)
    lines = [
        f"# Seed groups: {len(groups)} recipe(s), {runs} run(s)",
        "",
        "Cells: mean ± sample std over seeds (min–max).",
        "",
    ]
    for at in points:
        lines += [f"## {at.name}", "", *group_table(groups, [Column(m, m, at) for m in metrics]), ""]
    return "\n".join(lines + seed_warnings(groups)) + "\n"


def run_curve(run: Run, metric: str, x_key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's ``metric`` against ``x_key``, sorted by ``x_key`` (None: no such evaluation)."""
    points = sorted((r[x_key], r[metric]) for r in run.records if has_values(r, metric, x_key))
    if not points:
        return None
    x, y = zip(*points, strict=True)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def common_grid(xs: list[np.ndarray]) -> np.ndarray | None:
    """The evaluation points of all runs inside the range that every run covers (None: no such range)."""
    if not xs:
        return None
    low, high = max(x[0] for x in xs), min(x[-1] for x in xs)
    if low > high:
        return None
    every = np.concatenate(xs)
    return np.unique(np.concatenate([[low, high], every[(every >= low) & (every <= high)]]))


def _plot_band(ax: Axes, group: Group, metric: str, x_key: str) -> None:
    curves = [c for c in (run_curve(run, metric, x_key) for run in group.runs) if c is not None]
    grid = common_grid([x for x, _ in curves])
    if grid is None:
        return
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    marker = "o" if grid.size == 1 else None
    (line,) = ax.plot(grid, ys.mean(axis=0), marker=marker, label=f"{group.label} (n={len(curves)})")
    ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.2)


def plot_groups(groups: list[Group], metrics: list[str], points: list[At]) -> Figure:
    """Each metric (a row) against iteration and wall time: per group the mean and min-max band."""
    fig = Figure(figsize=(11, 2.8 * max(1, len(metrics)) + 0.4), layout="constrained")
    axes = fig.subplots(max(1, len(metrics)), 2, squeeze=False)
    for row, metric in enumerate(metrics):
        for col, (x_key, x_label) in enumerate(X_AXES):
            ax = axes[row][col]
            for group in groups:
                _plot_band(ax, group, metric, x_key)
            for at in points:
                if at.x_key == x_key:
                    ax.axvline(at.limit, color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    fig.suptitle(BAND, fontsize="medium")
    if axes[0][1].get_legend_handles_labels()[0]:
        axes[0][1].legend(fontsize="small", loc="best")
    return fig


def write_group_comparison(
    groups: list[Group], out_dir: Path, metrics: list[str], points: list[At]
) -> dict[str, Path]:
    """Write ``comparison-groups.md`` (tables of ``metrics``), ``.csv`` (every metric) and ``.png``."""
    rows = group_rows(groups, metric_names([run for group in groups for run in group.runs]), points)
    table, text = markdown_groups(groups, metrics, points), csv_text(rows, GROUP_CSV_COLUMNS)
    figure = plot_groups(groups, metrics, points)
    return {
        "groups_markdown": atomic_write(out_dir / "comparison-groups.md", lambda f: f.write(table), mode="w"),
        "groups_csv": atomic_write(out_dir / "comparison-groups.csv", lambda f: f.write(text), mode="w"),
        "groups_png": atomic_write(
            out_dir / "comparison-groups.png", lambda f: figure.savefig(f, format="png", dpi=100)
        ),
    }
