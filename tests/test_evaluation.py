"""Sample-quality evaluation: the training callback, the evaluate app, the sweep comparison."""

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.apps import run_app
from tests.conftest import TINY
from voxgan.analysis.compare import (
    SUMMARY_KEYS,
    CompareError,
    compare_runs,
    find_runs,
    label_runs,
    plot_runs,
    read_run,
)
from voxgan.data.datamodule import VoxelDataModule
from voxgan.evaluation import EVAL_FILE, build_sets, evaluate_checkpoint, evaluate_generator, report_markdown
from voxgan.export import VoxelGenerator
from voxgan.io import append_jsonl, read_jsonl
from voxgan.models.classifier import VoxelClassifier, save_classifier
from voxgan.training.checkpoint import load_checkpoint
from voxgan.training.train import run

# 16^3 tiny runs hold 5 val shapes (48 x 0.1): 4 samples against 4 of them.
EVAL = ["callbacks.eval_every=2", "callbacks.eval_samples=4"]
IN_UNIT_RANGE = (
    "mmd", "cov", "1nna", "1nna_gap", "nn_iou_mean", "nn_iou_gt_0.9", "occupancy_gen", "occupancy_ref",
    "stray_gen", "stray_ref",
)


def _classifier(path: Path, categories: list[str]) -> Path:
    torch.manual_seed(0)
    return save_classifier(path, VoxelClassifier(len(categories), 16, 4, 8), categories, 16, 1.0)


def _frechet_skips(caplog: pytest.LogCaptureFixture) -> int:
    return sum("Frechet) distance is skipped" in r.getMessage() for r in caplog.records)


def test_callback_records_every_evaluation_and_feeds_the_sweeper(make_cfg, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="voxgan.evaluation"):
        metrics = run(make_cfg(*EVAL, "iterations=5"))
    records = read_jsonl(tmp_path / "run" / EVAL_FILE)
    assert [r["iteration"] for r in records] == [2, 4, 5]  # the schedule, then the end of training
    assert all(r["samples"] == 4 for r in records)
    assert 0 < records[0]["wall_s"] < records[1]["wall_s"] < records[2]["wall_s"]
    for record in records:
        assert set(IN_UNIT_RANGE) <= set(record) and "frechet" not in record
        assert all(0 <= record[key] <= 1 for key in IN_UNIT_RANGE)
        assert record["1nna_gap"] == pytest.approx(abs(record["1nna"] - 0.5))
    assert _frechet_skips(caplog) == 1  # said once, not at every evaluation, and no warning: nothing to fix
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert metrics["eval/1nna_gap"] == pytest.approx(records[-1]["1nna_gap"])
    logged = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "eval/mmd" in r]
    assert [(r["step"], r["iteration"]) for r in logged] == [(2, 2), (4, 4), (5, 5)]
    assert "eval/cov" in (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]


def _train_records(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "metrics.jsonl") if "train/d_loss" in r]


def test_evaluation_leaves_training_randomness_alone(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("callbacks.eval_every=1", "callbacks.eval_samples=4", "iterations=3", out="with"))
    run(make_cfg("callbacks.eval_every=0", "iterations=3", out="without"))
    losses = [
        [(r["train/d_loss"], r["train/g_loss"]) for r in _train_records(tmp_path / out)]
        for out in ("with", "without")
    ]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    assert len(read_jsonl(tmp_path / "with" / EVAL_FILE)) == 3
    assert not (tmp_path / "without" / EVAL_FILE).exists()


def test_callback_uses_a_matching_classifier_for_the_frechet_distance(make_cfg, tmp_path: Path) -> None:
    classifier = _classifier(tmp_path / "clf.ckpt", ["airplane", "chair"])
    run(make_cfg(*EVAL, "iterations=2", f"callbacks.classifier={classifier}"))
    (record,) = read_jsonl(tmp_path / "run" / EVAL_FILE)
    assert record["frechet"] >= 0


def test_callback_stops_at_start_on_a_missing_classifier(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope.ckpt does not exist.*train_classifier.py"):
        run(make_cfg(*EVAL, "iterations=2", f"callbacks.classifier={tmp_path / 'nope.ckpt'}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluate_checkpoint_scores_every_metric(make_cfg, tmp_path: Path, caplog) -> None:
    run(make_cfg("callbacks.eval_every=0", "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    other = _classifier(tmp_path / "table.ckpt", ["airplane", "table"])
    with caplog.at_level(logging.WARNING, logger="voxgan.evaluation"):
        skipped = evaluate_checkpoint(ckpt, num_samples=4, classifier=str(other))
    assert "frechet" not in skipped["metrics"] and _frechet_skips(caplog) == 1
    assert "knows ['airplane', 'table'] at 16^3, the data has ['chair']" in caplog.text

    matching = _classifier(tmp_path / "chair.ckpt", ["chair", "airplane"])
    report = evaluate_checkpoint(ckpt, num_samples=4, classifier=str(matching))
    assert report["iteration"] == 2 and report["samples"] == 4 and report["reference_categories"] == ["chair"]
    assert set(report["metrics"]) == {*IN_UNIT_RANGE, "pieces_gen", "pieces_ref", "frechet"}
    # The same z and reference shapes every time: a second evaluation gives the same numbers.
    assert evaluate_checkpoint(ckpt, num_samples=4, classifier=str(matching))["metrics"] == report["metrics"]


def test_the_default_evaluation_warns_of_nothing_and_its_report_says_what_it_left_out(
        make_cfg, tmp_path: Path, caplog, capsys) -> None:
    """No classifier and a val split smaller than n=200 are the default, not a problem: said at INFO and in
    the report. An n of the user's own that the reference cannot meet is a warning."""
    from hydra import compose, initialize_config_dir

    from experiments import evaluate
    from tests.conftest import CONF

    run(make_cfg("callbacks.eval_every=0", "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    def evaluate_app(*overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", f"out={tmp_path / 'eval'}", "device=cpu",
                                                 "metrics=[distribution,frechet]", "clean=false", *overrides])
        caplog.clear()
        with caplog.at_level(logging.INFO):
            return evaluate.run(cfg)

    report = evaluate_app()  # n=200 (the default) against the 5 val shapes, no classifier
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert _frechet_skips(caplog) == 1 and report["samples"] == 5
    assert set(report["skipped"]) == {"frechet"} and set(report["metrics"]) >= {"mmd", "cov", "1nna"}
    markdown = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "5 shapes of the run's val split (chair), all it holds of the n=200 asked" in markdown
    assert "Not measured: frechet, as no classifier was given" in markdown
    assert "evaluating: 100% 1/1 [" in capsys.readouterr().err  # its progress: one metric, one z set
    evaluate_app("n=8", "progress=false", f"out={tmp_path / 'eval8'}")  # a folder of its own: 'eval' is taken
    assert "evaluating" not in capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ["n=8 asked, but the reference holds 5 shapes: evaluated 5 samples against them"]


def test_a_sampler_is_scored_alike_whatever_its_source(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("callbacks.eval_every=0", "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module, data_settings = load_checkpoint(ckpt)
    data = VoxelDataModule(**data_settings)
    data.setup()
    exported = VoxelGenerator.from_checkpoint(ckpt)
    metrics = ["distribution", "occupancy"]
    sets = build_sets(exported.sampler, data.val_set, data.train_set, num_samples=4, seed=3)
    assert torch.equal(sets.z, build_sets(module.sampler(), data.val_set, None, 4, seed=3).z)
    from_export = evaluate_generator(exported.sampler, sets, metrics)
    assert from_export == evaluate_generator(module.sampler(), sets, metrics)
    assert from_export == evaluate_checkpoint(ckpt, num_samples=4, metrics=metrics, seed=3)["metrics"]


def test_evaluate_checkpoint_averages_z_sets(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("callbacks.eval_every=0", "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    metrics = ["distribution", "occupancy"]
    single = [evaluate_checkpoint(ckpt, num_samples=4, metrics=metrics, seed=s)["metrics"] for s in (3, 4, 5)]
    assert single[0] != single[1]  # different z sets score differently, or the average means nothing
    report = evaluate_checkpoint(ckpt, num_samples=4, metrics=metrics, seed=3, repeats=3)
    assert report["z_seeds"] == [3, 4, 5]
    for name in single[0]:
        values = [result[name] for result in single]
        assert report["metrics"][name] == pytest.approx(np.mean(values))
        assert report["metrics"][f"{name}_sd"] == pytest.approx(np.std(values, ddof=1))
    assert "mean over 3 z sets (seeds 3-5), *_sd its std" in report_markdown(report)
    assert "| cov_sd |" in report_markdown(report)
    with pytest.raises(ValueError, match="repeats=0: .* at least 1"):
        evaluate_checkpoint(ckpt, num_samples=4, repeats=0)


@pytest.mark.slow  # subprocess runs of the apps: ~20-100 s each on one thread
def test_evaluate_app_writes_the_table_and_names_a_bad_checkpoint(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("callbacks.eval_every=0", "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    result = run_app(tmp_path, "experiments/evaluate.py", f"ckpt={ckpt}", "n=4", f"hydra.run.dir={out}")
    assert "| 1nna |" in result.stdout and "| cov |" in result.stdout
    report = json.loads((out / "evaluation.json").read_text())
    assert report["samples"] == 4 and 0 <= report["metrics"]["mmd"] <= 1
    assert "| nn_iou_gt_0.9 |" in (out / "evaluation.md").read_text()

    bad = run_app(tmp_path, "experiments/evaluate.py", f"ckpt={tmp_path / 'missing.ckpt'}", expect_rc=1)
    assert bad.stderr.strip().splitlines() == [
        f"error: ckpt={tmp_path / 'missing.ckpt'} does not exist; "
        "pass a last.ckpt or iter_*.ckpt written by train.py"
    ]


def _job(sweep: Path, name: str, overrides: list[str], every: int, records: list[dict]) -> None:
    """A job folder as ``train.py -m`` leaves it: config, Hydra's overrides, the evaluation records."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"callbacks": {"eval_every": every}}), job / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    for record in records:
        append_jsonl(job / EVAL_FILE, record)


def _record(iteration: int, gap: float) -> dict:
    return {"iteration": iteration, "wall_s": 10.0 * iteration, "eval_s": 0.1, "samples": 4,
            "mmd": 0.5, "cov": 0.5, "1nna": 0.5 + gap, "1nna_gap": gap}


def test_compare_sweep_tables_plots_and_notes_each_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, "0", ["loss.g_lr=0.001", "data=chair"], 2,
         [_record(2, 0.4), _record(4, 0.1), _record(6, 0.3)])
    _job(sweep, "2", ["loss.g_lr=0.002", "data=chair"], 2, [_record(2, 0.2), _record(4, 0.25)])
    _job(sweep, "10", ["loss.g_lr=0.003", "data=chair"], 0, [])
    written = compare_runs([sweep])
    assert {p.name for p in written.values()} == {"comparison.md", "comparison.csv", "comparison.png"}
    assert all(p.parent == sweep for p in written.values())
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader(written["csv"].open()))
    gap = {r["label"]: r for r in rows if r["metric"] == "1nna_gap"}
    # Jobs in numeric order, labelled by the swept value only.
    assert list(gap) == ["0: loss.g_lr=0.001", "2: loss.g_lr=0.002"]
    first, second = gap.values()
    assert [first[key] for key in SUMMARY_KEYS[:4]] == ["0.3", "0.1", "4", "40.0"]
    assert (second["final"], second["best"], second["best_iteration"]) == ("0.25", "0.2", "2")
    one_nna = [r for r in rows if r["metric"] == "1nna"]
    assert [r["best"] for r in one_nna] == ["0.6", "0.7"]  # nearest 0.5
    (off,) = [r for r in rows if r["label"] == "10: loss.g_lr=0.003"]
    assert "evaluation was off (callbacks.eval_every=0)" in off["note"]
    markdown = written["markdown"].read_text()
    assert "## 1nna_gap (best: nearest 0)" in markdown
    assert "| 0: loss.g_lr=0.001 | 0.3 | 0.1 | 4 | 40 |" in markdown

    runs = [read_run(path) for path in find_runs([sweep])]
    label_runs(runs)
    figure = plot_runs(runs, ["1nna", "mmd"])
    for ax in figure.axes[:4]:  # each metric against iteration and wall time
        assert [line.get_label() for line in ax.get_lines()] == ["0: loss.g_lr=0.001", "2: loss.g_lr=0.002"]
    assert list(figure.axes[1].get_lines()[0].get_xdata()) == [20.0, 40.0, 60.0]

    # The app takes any set of run folders; a folder that holds none is named.
    out = tmp_path / "cmp"
    result = run_app(tmp_path, "experiments/compare_sweep.py", f"{sweep}/0", f"{sweep}/10", f"--out={out}")
    assert "# Comparison of 2 runs" in result.stdout and (out / "comparison.png").is_file()
    with pytest.raises(CompareError, match=f"{out} holds no run folder"):
        compare_runs([out])


@pytest.mark.slow
def test_a_real_sweep_is_compared_from_the_command_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_app(tmp_path, "train.py", "-m", "loss.g_lr=0.001,0.002", *TINY, *EVAL, "iterations=4",
            f"hydra.sweep.dir={sweep}")
    result = run_app(tmp_path, "experiments/compare_sweep.py", str(sweep))
    assert "| 0: loss.g_lr=0.001 |" in result.stdout and "| 1: loss.g_lr=0.002 |" in result.stdout
    rows = [r for r in csv.DictReader((sweep / "comparison.csv").open()) if r["metric"] == "1nna"]
    assert [r["evaluations"] for r in rows] == ["2", "2"] and (sweep / "comparison.png").is_file()
