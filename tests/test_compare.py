"""Seed groups in the run comparison: one recipe under several seeds, judged by mean and spread."""

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.apps import run_app
from voxgan.analysis.compare import load_runs
from voxgan.analysis.compare_groups import (
    SEED_WARNING,
    group_rows,
    group_runs,
    markdown_groups,
    plot_groups,
    reading_points,
)
from voxgan.evaluation import EVAL_FILE, evaluate_checkpoint
from voxgan.io import append_jsonl

PNG = b"\x89PNG\r\n\x1a\n"
# Recipe A (loss=bce) under seeds 0, 1, 2: evaluations at iterations 100, 200, 300 land at wall times
# that differ by seed; mmd per evaluation. Recipe B (loss=wgan_gp) evaluates as seed 0 of A.
WALLS = {0: (100.0, 200.0, 300.0), 1: (110.0, 210.0, 310.0), 2: (95.0, 205.0, 290.0)}
A_MMD = {0: (0.5, 0.375, 0.25), 1: (0.75, 0.625, 0.5), 2: (0.875, 0.75, 0.75)}
B_MMD = {0: (0.5, 0.25, 0.125), 1: (0.5, 0.25, 0.25), 2: (0.5, 0.25, 0.375)}


def _run(folder: Path, overrides: list[str], records: list[dict]) -> None:
    """A run folder as ``train.py`` leaves it: its config (default seed 0), Hydra's overrides, records."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 0, "callbacks": {"eval_every": 100}}), folder / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    for record in records:
        append_jsonl(folder / EVAL_FILE, record)


def _records(walls: tuple[float, ...], mmd: tuple[float, ...]) -> list[dict]:
    """An evaluation at iterations 100, 200, ... at ``walls``, with ``mmd``; cov and 1nna constant."""
    return [
        {
            "iteration": 100 * i,
            "wall_s": wall,
            "eval_s": 1.0,
            "samples": 4,
            "mmd": m,
            "cov": 0.5,
            "1nna": 0.75,
        }
        for i, (wall, m) in enumerate(zip(walls, mmd, strict=True), start=1)
    ]


def _sweep(root: Path) -> Path:
    """Jobs 0-2: recipe A (job 0 without a seed override: the default seed 0; job 2 with its overrides in
    another order, resumed from a checkpoint), 3-5: recipe B, 6: A at another resolution, 7-8: A at
    another learning rate, 2 seeds."""
    jobs = [
        (["loss=bce", "data=chair"], _records(WALLS[0], A_MMD[0])),
        (["loss=bce", "data=chair", "seed=1"], _records(WALLS[1], A_MMD[1])),
        (["seed=2", "data=chair", "loss=bce", "ckpt_path=/runs/2/last.ckpt"], _records(WALLS[2], A_MMD[2])),
        *((["loss=wgan_gp", "data=chair", f"seed={s}"], _records(WALLS[0], B_MMD[s])) for s in range(3)),
        (["loss=bce", "data=chair", "data.resolution=16", "seed=0"], _records((260, 400, 500), (0, 0, 0))),
        *(
            (["loss=bce", "loss.g_lr=0.001", "data=chair", f"seed={s}"], _records(WALLS[0], (1, 1, 1)))
            for s in (3, 4)
        ),
    ]
    for job, (overrides, records) in enumerate(jobs):
        _run(root / "sweep" / str(job), overrides, records)
    return root / "sweep"


def tiny_jobs(eval_every: int) -> list[str]:
    """Common overrides of real recipes.py jobs small enough to train for seconds."""
    return [
        "data.num_shapes=48", "data.batch_size=8", "model.g_channels=8", "model.d_channels=8", "logger=csv",
        f"callbacks.eval_every={eval_every}", "callbacks.eval_samples=4",
    ]  # fmt: skip


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _row(rows: list[dict], group: str, metric: str, at: str) -> dict:
    (row,) = [r for r in rows if (r["group"], r["metric"], r["at"]) == (group, metric, at)]
    return row


def test_runs_differing_only_in_seed_are_one_group_and_other_overrides_split(tmp_path: Path) -> None:
    groups = group_runs(load_runs([_sweep(tmp_path)]))
    assert [(g.label, [r.path.name for r in g.runs], g.seeds) for g in groups] == [
        ("loss=bce", ["0", "1", "2"], ["0", "1", "2"]),  # no seed override: the config's seed 0
        ("loss=wgan_gp", ["3", "4", "5"], ["0", "1", "2"]),
        ("data.resolution=16 loss=bce", ["6"], ["0"]),
        ("loss=bce loss.g_lr=0.001", ["7", "8"], ["3", "4"]),
    ]


def test_final_values_are_summarised_by_mean_std_min_max_over_seeds(tmp_path: Path) -> None:
    groups = group_runs(load_runs([_sweep(tmp_path)]))
    rows = group_rows(groups, ["mmd", "cov"], reading_points())
    a_final = [A_MMD[seed][-1] for seed in range(3)]  # 0.25, 0.5, 0.75
    b_final = [B_MMD[seed][-1] for seed in range(3)]  # 0.125, 0.25, 0.375
    for group, values in (("loss=bce", a_final), ("loss=wgan_gp", b_final)):
        row = _row(rows, group, "mmd", "final")
        assert (row["n"], row["seeds"], row["note"]) == (3, "0 1 2", "")
        assert row["mean"] == sum(values) / 3 and row["std"] == _std(values)
        assert (row["min"], row["max"]) == (min(values), max(values))
    assert [_row(rows, "loss=bce", "mmd", "final")[key] for key in ("mean", "std")] == [0.5, 0.25]
    same = _row(rows, "loss=bce", "cov", "final")
    assert (same["mean"], same["std"], same["min"], same["max"]) == (0.5, 0.0, 0.5, 0.5)
    lone = _row(rows, "data.resolution=16 loss=bce", "mmd", "final")
    assert (lone["n"], lone["mean"], lone["std"], lone["min"]) == (1, 0, None, 0)  # no spread from one seed


def test_at_wall_s_and_at_iteration_read_the_last_evaluation_at_or_before_them(tmp_path: Path) -> None:
    groups = group_runs(load_runs([_sweep(tmp_path)]))
    rows = group_rows(groups, ["mmd"], reading_points(at_wall_s=205, at_iteration=250))
    # At 205 s: seed 0's evaluation at 200 s, seed 1's at 110 s (its next is at 210 s), seed 2's at 205 s.
    at_wall = [A_MMD[0][1], A_MMD[1][0], A_MMD[2][1]]
    row = _row(rows, "loss=bce", "mmd", "wall_s<=205")
    assert (row["n"], row["min"], row["max"]) == (3, 0.375, 0.75)
    assert row["mean"] == pytest.approx(sum(at_wall) / 3, abs=1e-15)
    assert row["std"] == pytest.approx(_std(at_wall), abs=1e-15)
    at_iteration = [A_MMD[seed][1] for seed in range(3)]  # iteration 200 for every seed
    row = _row(rows, "loss=bce", "mmd", "iteration<=250")
    assert row["mean"] == pytest.approx(sum(at_iteration) / 3, abs=1e-15) and row["max"] == 0.75
    # A run with no evaluation by then is named in the note, not counted, and does not stop the others.
    late = _row(rows, "data.resolution=16 loss=bce", "mmd", "wall_s<=205")
    assert (late["n"], late["mean"]) == (0, None)
    assert late["note"] == "seed 0: no evaluation at wall_s<=205 (first at 260)"


def test_markdown_shows_mean_std_range_and_warns_below_three_seeds(tmp_path: Path) -> None:
    groups = group_runs(load_runs([_sweep(tmp_path)]))
    markdown = markdown_groups(groups, ["mmd", "cov"], reading_points(at_wall_s=205))
    assert "| recipe | n | mmd | cov | note |" in markdown
    assert "| loss=bce | 3 | 0.5 ± 0.25 (0.25–0.75) | 0.5 ± 0 (0.5–0.5) |  |" in markdown
    late = "| data.resolution=16 loss=bce | 1 | - | - | seed 0: no evaluation at wall_s<=205 (first at 260) |"
    assert late in markdown
    warnings = [line for line in markdown.splitlines() if SEED_WARNING in line]
    assert warnings == [
        f"- warning: data.resolution=16 loss=bce has 1 seed(s); {SEED_WARNING}",
        f"- warning: loss=bce loss.g_lr=0.001 has 2 seed(s); {SEED_WARNING}",
    ]
    assert SEED_WARNING == "a recipe decision rests on at least 3 seeds"


def test_group_curves_average_runs_interpolated_onto_a_common_grid(tmp_path: Path) -> None:
    _run(tmp_path / "0", ["seed=0"], _records((100, 200, 300), (0.0, 0.5, 1.0)))
    _run(tmp_path / "1", ["seed=1"], _records((150, 250, 350), (0.5, 0.5, 0.0)))
    (group,) = group_runs(load_runs([tmp_path]))
    figure = plot_groups([group], ["mmd"], reading_points(at_wall_s=250))
    wall_axes = figure.axes[1]
    (line,) = wall_axes.get_lines()[:1]
    # Where both runs have evaluations (150-300 s), at every evaluation time of either run:
    # run 0 interpolated gives 0.25, 0.5, 0.75, 1.0 and run 1 gives 0.5, 0.5, 0.5, 0.25.
    assert list(line.get_xdata()) == [150, 200, 250, 300]
    assert list(line.get_ydata()) == [0.375, 0.5, 0.625, 0.625]
    assert line.get_label() == "(defaults) (n=2)"
    band = {tuple(v) for v in wall_axes.collections[0].get_paths()[0].vertices}
    assert {(150, 0.25), (150, 0.5), (250, 0.5), (250, 0.75), (300, 0.25), (300, 1.0)} <= band
    assert "band: min-max over seeds" in figure.get_suptitle()
    assert [ln.get_xdata()[0] for ln in wall_axes.get_lines()[1:]] == [250]  # the --at-wall-s marker


@pytest.mark.slow  # subprocess runs of the apps: ~20-100 s each on one thread
def test_compare_sweep_app_writes_group_csv_and_png_and_no_groups_leaves_them_out(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    result = run_app(tmp_path, "experiments/compare_sweep.py", str(sweep), "--at-wall-s", "205")
    assert f"loss=bce loss.g_lr=0.001 has 2 seed(s); {SEED_WARNING}" in result.stdout
    assert (sweep / "comparison.csv").is_file()  # the per-run outputs stay
    assert (sweep / "comparison-groups.png").read_bytes()[:8] == PNG
    rows = list(csv.DictReader((sweep / "comparison-groups.csv").open()))
    row = _row(rows, "loss=wgan_gp", "mmd", "final")
    assert [float(row[key]) for key in ("n", "mean", "std", "min", "max")] == [3, 0.25, 0.125, 0.125, 0.375]
    assert row["seeds"] == "0 1 2"
    assert _row(rows, "loss=bce", "mmd", "wall_s<=205")["max"] == "0.75"
    assert {r["metric"] for r in rows} == {"mmd", "cov", "1nna"}

    out = tmp_path / "runs-only"
    result = run_app(tmp_path, "experiments/compare_sweep.py", str(sweep), f"--out={out}", "--no-groups")
    assert (out / "comparison.png").is_file() and not list(out.glob("comparison-groups*"))
    assert SEED_WARNING not in result.stdout


@pytest.mark.slow  # subprocess runs of the apps: ~20-100 s each on one thread
def test_compare_sweep_app_groups_by_default_only_when_a_recipe_repeats(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    single, repeated = tmp_path / "single", tmp_path / "repeated"
    run_app(tmp_path, "experiments/compare_sweep.py", f"{sweep}/0", f"{sweep}/3", f"--out={single}")
    assert (single / "comparison.csv").is_file() and not list(single.glob("comparison-groups*"))
    run_app(tmp_path, "experiments/compare_sweep.py", f"{sweep}/0", f"{sweep}/1", f"--out={repeated}")
    rows = list(csv.DictReader((repeated / "comparison-groups.csv").open()))
    assert {(r["group"], r["at"], r["n"], r["seeds"]) for r in rows} == {
        ("data=chair loss=bce", "final", "2", "0 1")
    }


def test_recipes_table_only_tabulates_existing_runs_by_recipe(tmp_path: Path) -> None:
    out = tmp_path / "recipes"
    recipes = ["experiment=quick", "experiment=quick loss=wgan_gp"]
    # The folders the launcher makes: <out>/<recipe, "=" as "-" and " " as "_">/seed<S>.
    for recipe, folder, mmd in zip(
        recipes, ["experiment-quick", "experiment-quick_loss-wgan_gp"], [A_MMD, B_MMD]
    ):
        for seed in range(3):
            overrides = [
                *recipe.split(),
                "data.num_shapes=48",
                f"seed={seed}",
                "iterations=1000000",
                "trainer.max_time=00:00:05:00",
                "trainer.enable_progress_bar=false",
            ]
            _run(out / folder / f"seed{seed}", overrides, _records(WALLS[seed], mmd[seed]))
    options = [
        *"--seeds 0 1 2 --at-minutes 3.5 --table-only".split(),
        "--out",
        str(out),
        "--",
        "data.num_shapes=48",
    ]
    result = run_app(tmp_path, "benchmarks/recipes.py", "--recipes", *recipes, *options)
    rows = {
        line.split(" | ")[0]: line.split(" | ")[1:] for line in result.stdout.splitlines() if " | " in line
    }
    columns = [f"{name} {when}" for when in ("@3.5 min", "final") for name in ("MMD", "COV", "1-NNA")]
    assert rows["| recipe"] == ["n", *columns, "note |"]
    # At 210 s: seed 0 at 200 s, seed 1 at exactly 210 s, seed 2 at 205 s: the second evaluation of each.
    assert rows["| experiment=quick"][:2] == ["3", "0.5833 ± 0.19 (0.375–0.75)"]
    assert rows["| experiment=quick loss=wgan_gp"][:2] == ["3", "0.25 ± 0 (0.25–0.25)"]
    assert "| 0.25 ± 0.12 (0.125–0.375) | 0.5 ± 0 (0.5–0.5) | 0.75 ± 0 (0.75–0.75) |  |" in result.stdout
    assert (out / "recipes.md").read_text() in result.stdout
    assert (out / "comparison-groups.png").read_bytes()[:8] == PNG


@pytest.mark.slow  # subprocess runs of the apps: ~20-100 s each on one thread
def test_recipes_scores_last_checkpoints_on_several_z_sets(tmp_path: Path) -> None:
    out = tmp_path / "recipes"
    tiny = tiny_jobs(eval_every=20)
    options = ["--recipes", "experiment=quick", "--seeds", "0", "1", "--out", str(out)]
    result = run_app(tmp_path, "benchmarks/recipes.py", *options, "--minutes", "0.3", "--parallel", "2",
                     "--z-sets", "3", "--", *tiny)  # fmt: skip
    assert "3 z sets" in result.stdout and result.stdout.count("start  experiment=quick") == 2
    lines = (out / "recipes.md").read_text().splitlines()
    row = next(line for line in lines[::-1] if line.startswith("| experiment=quick"))
    cells = row.split(" | ")
    # Independently: each run's last checkpoint scored on z seeds 0, 1, 2 one at a time.
    per_run = []
    for seed in (0, 1):
        ckpt = out / "experiment-quick" / f"seed{seed}" / "checkpoints" / "last.ckpt"
        scores = [evaluate_checkpoint(ckpt, 4, metrics=["distribution"], seed=z)["metrics"] for z in range(3)]
        per_run.append([math.fsum(s[m] for s in scores) / 3 for m in ("mmd", "cov", "1nna")])
    for column, metric in enumerate(("mmd", "cov", "1nna")):
        mean = (per_run[0][column] + per_run[1][column]) / 2
        assert float(cells[2 + column].split(" ")[0]) == pytest.approx(mean, abs=1e-4), (metric, row)
    cached = out / "experiment-quick" / "seed0" / "evaluation-zsets.json"
    stamp = cached.stat().st_mtime_ns
    again = run_app(tmp_path, "benchmarks/recipes.py", *options, "--table-only", "--at-minutes", "0.3",
                    "--z-sets", "3", "--", *tiny)  # fmt: skip
    assert row in again.stdout and cached.stat().st_mtime_ns == stamp  # the scores were reused
    bad = run_app(tmp_path, "benchmarks/recipes.py", *options, "--table-only", "--at-minutes", "1",
                  "--z-sets", "0", expect_rc=2)  # fmt: skip
    assert "--z-sets=0" in bad.stderr
    # A damaged cache is scored again: the same row, a readable cache.
    cached.write_text('{"z_seeds": [0, 1')
    again = run_app(tmp_path, "benchmarks/recipes.py", *options, "--table-only", "--at-minutes", "0.3",
                    "--z-sets", "3", "--", *tiny)  # fmt: skip
    assert row in again.stdout and json.loads(cached.read_text())["z_seeds"] == [0, 1, 2]
    # A checkpoint that cannot be read stops the table with one line naming it.
    cached.unlink()
    (out / "experiment-quick" / "seed0" / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    gone = run_app(tmp_path, "benchmarks/recipes.py", *options, "--table-only", "--at-minutes", "0.3",
                   "--z-sets", "3", "--", *tiny, expect_rc=1)  # fmt: skip
    ckpt = out / "experiment-quick" / "seed0" / "checkpoints" / "last.ckpt"
    assert gone.stderr.strip().splitlines()[-1].startswith(f"error: scoring {ckpt} on 3 z sets: ")
    assert "Traceback" not in gone.stderr


@pytest.mark.slow  # four launches of real jobs: about 100 s on two idle cores
def test_recipes_resumes_runs_stopped_short_of_a_longer_budget(tmp_path: Path) -> None:
    out = tmp_path / "recipes"
    tiny = tiny_jobs(eval_every=10)
    options = ["--recipes", "experiment=quick", "--seeds", "0", "1", "--out", str(out), "--parallel", "2"]
    run_app(tmp_path, "benchmarks/recipes.py", *options, "--minutes", "0.2", "--", *tiny)
    seed0, seed1 = (out / "experiment-quick" / f"seed{s}" for s in (0, 1))
    first = [json.loads(line) for line in (seed0 / EVAL_FILE).read_text().splitlines()]
    # Seed 1 was launched with other common overrides: it is not this job, so it starts again.
    OmegaConf.save(OmegaConf.create([*OmegaConf.load(seed1 / ".hydra" / "overrides.yaml"), "loss.d_lr=1"]),
                   seed1 / ".hydra" / "overrides.yaml")  # fmt: skip
    longer = run_app(tmp_path, "benchmarks/recipes.py", *options, "--minutes", "0.4", "--", *tiny)
    assert f"resume experiment=quick seed 0 from {seed0 / 'checkpoints' / 'last.ckpt'}" in longer.stdout
    assert f"moved  an unfinished run to {seed1}.unfinished-1" in longer.stdout
    records = [json.loads(line) for line in (seed0 / EVAL_FILE).read_text().splitlines()]
    assert records[: len(first)] == first  # the first part's records are kept as they were
    iterations = [r["iteration"] for r in records]
    assert iterations == sorted(set(iterations)) and iterations[-1] > first[-1]["iteration"]
    assert records[-1]["wall_s"] >= 0.4 * 60 - 2.4  # wall time carried on past the first budget
    overrides = list(OmegaConf.load(seed0 / ".hydra" / "overrides.yaml"))
    assert "trainer.max_time=00:00:00:24" in overrides and any(o.startswith("ckpt_path=") for o in overrides)
    assert "| experiment=quick | 2 |" in (out / "recipes.md").read_text()  # still one recipe of 2 seeds
    again = run_app(tmp_path, "benchmarks/recipes.py", *options, "--minutes", "0.4", "--", *tiny)
    assert again.stdout.count("skip   experiment=quick") == 2
    # A damaged last.ckpt: the job stops with one line naming it, the run folder stays as it was.
    (seed0 / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    kept = (seed0 / EVAL_FILE).read_text()
    only0 = ["--recipes", "experiment=quick", "--seeds", "0", "--out", str(out)]
    broken = run_app(tmp_path, "benchmarks/recipes.py", *only0, "--minutes", "0.6", "--", *tiny, expect_rc=1)
    assert broken.stderr.strip().splitlines()[-1] == f"error: 1 job(s) failed; see {seed0 / 'launch.log'}"
    last_line = (seed0 / "launch.log").read_text().strip().splitlines()[-1]
    assert last_line.startswith(f"error: ckpt_path={seed0 / 'checkpoints' / 'last.ckpt'} is not a readable")
    assert (seed0 / EVAL_FILE).read_text() == kept
