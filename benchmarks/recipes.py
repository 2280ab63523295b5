"""Compare training recipes over seeds at fixed wall times: launch the runs, then tabulate them.

Every recipe x seed runs as a ``train.py`` job with a wall-time budget; the table gives MMD, COV and
1-NNA as mean ± std over seeds at the chosen wall times.

    OMP_NUM_THREADS=1 python benchmarks/recipes.py \\
        --recipes "experiment=real_chair32" "experiment=real_chair32 loss.r1_gamma=0" \\
        --seeds 0 1 2 --minutes 60 --at-minutes 20 60 --parallel 2 --out outputs/recipes/r1 \\
        -- data.root=data/chair32
    python benchmarks/recipes.py --recipes ... --seeds 0 1 2 --at-minutes 20 60 --out outputs/recipes/r1 \\
        --table-only

Each job runs, with OMP_NUM_THREADS=1 and WANDB_SILENT=true, at most ``--parallel`` at once:

    python train.py <recipe> <overrides after --> seed=S iterations=1000000 trainer.max_time=DD:HH:MM:SS
        trainer.enable_progress_bar=false hydra.run.dir=<out>/<recipe slug>/seed<S>

and writes its output to ``<out>/<recipe slug>/seed<S>/launch.log`` (the slug is the recipe with ``=``
as ``-`` and spaces as ``_``). A job whose folder holds a finished run (its last evaluation at the
budget, less a minute or a tenth of the budget if that is shorter) is skipped. A job whose folder holds
a run of the same command stopped short of the budget (interrupted, or launched with a smaller
``--minutes``) resumes from its ``checkpoints/last.ckpt`` (``ckpt_path=``; wall time, batches and
records carry on), so rerunning the command finishes an interrupted comparison, and a 20-minute screen
extends to an hour with ``--minutes 60``. A folder without that checkpoint, or of another command, is
moved aside to ``seed<S>.unfinished-<n>`` and the job runs from the start; a job that fails is left
out of the table. ``--minutes`` takes fractions (0.5: a 30 s budget). ``--table-only`` launches
nothing and tabulates the runs that are there.

One evaluation scores a fixed set of z: on the 90 real val chairs, the same generator reads COV 0.38
to 0.50 across z sets. ``--z-sets K`` adds a second table: each run's last checkpoint scored on K
fixed z sets (seeds 0 to K-1, the same for every run; ``experiments/evaluate.py repeats=K``), the
mean of those per run, then mean ± std over seeds. Each run keeps its scores in
``<run>/evaluation-zsets.json`` (and ``.md``), so a rerun of the table reuses them.

The table (printed, and written to ``<out>/recipes.md``) has a row per recipe and, per ``--at-minutes``
time, each metric's last evaluation at or before that wall time; "final" is the evaluation that closes
a run, stamped a little after the budget (it counts setup and its own scoring), so "@<budget> min"
shows the last periodic evaluation. Seeds are grouped by ``voxgan.analysis.compare_groups`` (runs whose
overrides differ only in ``seed``), which also writes ``comparison-groups.md``, ``.csv`` and ``.png``
(each metric's mean and min-max band over seeds against wall time and iterations) into ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from voxgan.analysis.compare import Run, is_run, read_run
from voxgan.analysis.compare_groups import (
    FINAL,
    At,
    Column,
    Group,
    Spread,
    group_runs,
    group_table,
    override_key,
    seed_warnings,
    spread_table,
    write_group_comparison,
)
from voxgan.evaluation import evaluate_checkpoint, write_report
from voxgan.io import atomic_write

REPO = Path(__file__).resolve().parents[1]
TABLE_METRICS = {"mmd": "MMD", "cov": "COV", "1nna": "1-NNA"}
# Keys every job sets from this script's own options; a recipe or common override may not set them.
SET_BY_SCRIPT = (
    "seed", "iterations", "trainer.max_time", "trainer.enable_progress_bar", "hydra.run.dir", "ckpt_path",
)  # fmt: skip
# Of a job's overrides, those a resumed run may differ in from the run it continues.
BUDGET_KEYS = ("trainer.max_time", "ckpt_path")
LOG_FILE = "launch.log"
Z_SETS_STEM = "evaluation-zsets"


@dataclass(frozen=True)
class Job:
    """One training run of the comparison: a recipe under a seed, in its own folder."""

    recipe: str
    seed: int
    folder: Path


def slug(recipe: str) -> str:
    """The recipe's folder: ``experiment=quick loss.r1_gamma=0`` -> ``experiment-quick_loss.r1_gamma-0``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", recipe.replace("=", "-")).strip("_") or "defaults"


def plan_jobs(recipes: list[str], seeds: list[int], out: Path) -> list[Job]:
    """A job per recipe and seed, recipe by recipe; recipes whose slugs collide are an error."""
    slugs = [slug(recipe) for recipe in recipes]
    for name in {s for s in slugs if slugs.count(s) > 1}:
        clashing = [r for r, s in zip(recipes, slugs, strict=True) if s == name]
        raise SystemExit(f"error: recipes {clashing} share the folder name {name!r}; make them differ")
    return [
        Job(r, seed, out / s / f"seed{seed}") for r, s in zip(recipes, slugs, strict=True) for seed in seeds
    ]


def check_overrides(recipes: list[str], common: list[str]) -> None:
    """Stop on an override of a key this script sets for every job."""
    for override in [*common, *(o for recipe in recipes for o in shlex.split(recipe))]:
        key = override_key(override)
        if key in SET_BY_SCRIPT:
            raise SystemExit(
                f"error: {override!r} sets {key}, which recipes.py sets for every job "
                "(use --seeds, --minutes and --out)"
            )


def max_time(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a budget in seconds (rounded to whole seconds)."""
    s = round(seconds)
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def job_overrides(job: Job, common: list[str], budget_s: float) -> list[str]:
    """The Hydra overrides of a job, as its run's ``.hydra/overrides.yaml`` lists them."""
    return [
        *shlex.split(job.recipe), *common, f"seed={job.seed}", "iterations=1000000",
        f"trainer.max_time={max_time(budget_s)}", "trainer.enable_progress_bar=false",
    ]  # fmt: skip


def train_command(job: Job, common: list[str], budget_s: float, resume: Path | None = None) -> list[str]:
    """The ``train.py`` command line of a job; with ``resume``, continuing from that checkpoint."""
    resumed = [f"ckpt_path={resume}"] if resume else []
    overrides = [*job_overrides(job, common, budget_s), *resumed, f"hydra.run.dir={job.folder}"]
    return [sys.executable, str(REPO / "train.py"), *overrides]


def without_budget(overrides: list[str]) -> list[str]:
    """Overrides less those a resumed run may change (its budget and the checkpoint it resumes)."""
    return [o for o in overrides if override_key(o) not in BUDGET_KEYS]


def resumable(job: Job, run: Run | None, common: list[str], budget_s: float) -> Path | None:
    """The last checkpoint of ``run``, the earlier run in the job's folder, if it ran this very job."""
    last = job.folder / "checkpoints" / "last.ckpt"
    if run is None or not last.is_file():
        return None
    same_job = without_budget(run.overrides) == without_budget(job_overrides(job, common, budget_s))
    return last if same_job else None


def is_finished(run: Run | None, budget_s: float) -> bool:
    """Whether ``run`` (None: no run) evaluated for the last time at the end of the budget."""
    records = run.records if run else []
    return bool(records) and records[-1].get("wall_s", 0) >= budget_s - min(60.0, budget_s / 10)


def set_aside(folder: Path) -> Path:
    """Move an unfinished run out of the way: a new run in its folder would append to its records."""
    number = 1
    while (target := folder.with_name(f"{folder.name}.unfinished-{number}")).exists():
        number += 1
    return folder.rename(target)


def run_job(job: Job, command: list[str]) -> int:
    """Run one job to its end, its output appended to ``<folder>/launch.log``; its exit status."""
    job.folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    print(f"start  {job.recipe} seed {job.seed}: {job.folder}", flush=True)
    start = time.monotonic()
    with open(job.folder / LOG_FILE, "a") as log:  # a resumed run's output follows its first part
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    status = "done" if rc == 0 else f"FAILED (exit {rc}, see {job.folder / LOG_FILE})"
    print(f"{status}  {job.recipe} seed {job.seed} after {time.monotonic() - start:.0f} s", flush=True)
    return rc


def launch(jobs: list[Job], common: list[str], budget_s: float, parallel: int) -> list[Job]:
    """Run the jobs without a finished run, ``parallel`` at a time; the jobs that failed."""
    todo = []
    for job in jobs:
        run = read_run(job.folder) if is_run(job.folder) else None
        if is_finished(run, budget_s):
            print(f"skip   {job.recipe} seed {job.seed}: finished run in {job.folder}")
            continue
        resume = resumable(job, run, common, budget_s)
        if resume:
            print(f"resume {job.recipe} seed {job.seed} from {resume}")
        elif job.folder.exists():
            print(f"moved  an unfinished run to {set_aside(job.folder)}")
        todo.append((job, train_command(job, common, budget_s, resume)))
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        codes = list(pool.map(lambda task: run_job(*task), todo))
    return [job for (job, _), rc in zip(todo, codes, strict=True) if rc != 0]


def recipe_groups(jobs: list[Job]) -> list[Group]:
    """The jobs' runs grouped by their overrides less ``seed``, each group labelled by its recipe."""
    runs = [read_run(job.folder) for job in jobs if is_run(job.folder)]
    groups = group_runs(runs)
    recipe_of_folder = {job.folder: job.recipe for job in jobs}
    recipes = [recipe_of_folder[group.runs[0].path] for group in groups]
    for group, recipe in zip(groups, recipes, strict=True):
        # Runs of one recipe launched with other common overrides or budgets are not pooled.
        group.label = recipe if recipes.count(recipe) == 1 else f"{recipe} [{group.label}]"
    return groups


def table_points(at_minutes: list[float]) -> list[tuple[str, At]]:
    """The table's reading points, named: each wall time, then the final evaluation."""
    return [*((f"@{m:g} min", At("wall_s", m * 60)) for m in at_minutes), ("final", FINAL)]


def recipe_table(groups: list[Group], at_minutes: list[float]) -> str:
    """The markdown table: a row per recipe, MMD / COV / 1-NNA per reading point, then seed warnings."""
    columns = [
        Column(f"{name} {when}", metric, at)
        for when, at in table_points(at_minutes)
        for metric, name in TABLE_METRICS.items()
    ]
    lines = ["Cells: mean ± sample std over seeds (min–max); n: seeds.", "", *group_table(groups, columns)]
    return "\n".join([*lines, "", *seed_warnings(groups)]) + "\n"


def z_set_scores(run: Run, z_sets: int) -> dict[str, float] | None:
    """The run's last checkpoint scored on ``z_sets`` fixed z sets (seeds 0 to z_sets - 1) with as many
    samples as its evaluations used; read from ``<run>/evaluation-zsets.json`` when that holds the
    same z sets and the iteration of the run's last evaluation. None where the run left no
    ``checkpoints/last.ckpt``."""
    ckpt = run.path / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return None
    cached = run.path / f"{Z_SETS_STEM}.json"
    try:  # a cache that cannot be read (a damaged file) is scored again and rewritten
        report = json.loads(cached.read_text())
        last_iteration = run.records[-1].get("iteration") if run.records else None
        if report.get("z_seeds") == list(range(z_sets)) and report.get("iteration") == last_iteration:
            return report["metrics"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    samples = int(OmegaConf.load(run.path / "config.yaml").callbacks.eval_samples)
    try:
        report = evaluate_checkpoint(ckpt, samples, metrics=["distribution"], repeats=z_sets)
    except ValueError as error:  # voxgan's errors about files and settings
        raise SystemExit(f"error: scoring {ckpt} on {z_sets} z sets: {error}") from None
    write_report(report, run.path, Z_SETS_STEM)
    return report["metrics"]


def z_set_spreads(group: Group, z_sets: int) -> list[Spread]:
    """A Spread per table metric of the group's last checkpoints over ``z_sets`` z sets."""
    spreads = {metric: Spread() for metric in TABLE_METRICS}
    for run, seed in zip(group.runs, group.seeds, strict=True):
        scores = z_set_scores(run, z_sets)
        for metric, s in spreads.items():
            if scores is None:
                s.notes.append(f"seed {seed}: no checkpoints/last.ckpt")
            else:
                s.values.append(scores[metric])
                s.seeds.append(seed)
    return list(spreads.values())


def z_set_table(groups: list[Group], z_sets: int) -> str:
    """The second table: per recipe, each metric of the runs' last checkpoints over ``z_sets`` z sets."""
    headers = [f"{name} final, {z_sets} z sets" for name in TABLE_METRICS.values()]
    lines = [
        f"Last checkpoints, each run scored on {z_sets} fixed z sets (seeds 0-{z_sets - 1}, the same for "
        "every run) and averaged; cells: mean ± sample std over seeds (min–max).",
        "",
        *spread_table(groups, headers, lambda group: z_set_spreads(group, z_sets)),
    ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes", nargs="+", required=True, help='each a quoted string of overrides: "a=1 b=2"'
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of every recipe")
    parser.add_argument("--minutes", type=float, help="wall-time budget of each job (fractions allowed)")
    parser.add_argument("--at-minutes", nargs="+", type=float, help="table columns (default: the budget)")
    parser.add_argument("--parallel", type=int, default=1, help="jobs at once")
    parser.add_argument("--out", type=Path, required=True, help="folder of the comparison")
    parser.add_argument("--table-only", action="store_true", help="launch nothing; tabulate the runs there")
    parser.add_argument(
        "--z-sets", type=int, default=1, help="K > 1: a second table, last checkpoints scored on K z sets"
    )
    parser.add_argument("common", nargs="*", help="overrides for every job, after --")
    args = parser.parse_args()
    if not args.table_only and (args.minutes is None or args.minutes <= 0):
        parser.error(f"--minutes={args.minutes}; give each job a budget > 0 minutes, or pass --table-only")
    if args.z_sets < 1:
        parser.error(f"--z-sets={args.z_sets}; score on at least 1 z set (1: no second table)")
    if args.parallel < 1:
        parser.error(f"--parallel={args.parallel}; run at least 1 job at once")
    args.at_minutes = args.at_minutes or ([args.minutes] if args.minutes else None)
    if not args.at_minutes:
        parser.error("--table-only needs --at-minutes (the wall times of the table's columns)")
    return args


def main() -> None:
    args = parse_args()
    out = args.out.resolve()
    check_overrides(args.recipes, args.common)
    jobs = plan_jobs(args.recipes, list(dict.fromkeys(args.seeds)), out)
    failed = [] if args.table_only else launch(jobs, args.common, args.minutes * 60, args.parallel)
    groups = recipe_groups([job for job in jobs if job not in failed])  # a failed run ends early
    logs = ", ".join(str(job.folder / LOG_FILE) for job in failed)
    failure = f"error: {len(failed)} job(s) failed; see {logs}" if failed else None
    if not groups:  # every job failed, or --table-only found nothing to tabulate
        raise SystemExit(failure or f"error: no runs under {out}; launch them without --table-only")
    table = recipe_table(groups, args.at_minutes)
    if args.z_sets > 1:
        table += "\n" + z_set_table(groups, args.z_sets)
    points = [at for _, at in table_points(args.at_minutes)]
    written = [
        atomic_write(out / "recipes.md", lambda f: f.write(table), mode="w"),
        *write_group_comparison(groups, out, list(TABLE_METRICS), points).values(),
    ]
    print(table + "written: " + ", ".join(map(str, written)))
    if failure:
        raise SystemExit(failure)


if __name__ == "__main__":
    main()
