"""The latent-space apps end to end on a tiny trained chair + airplane model: real Hydra configs, real
files, an offline W&B run read back, and one launch of each kind through ``python experiments/<app>.py``."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hydra import compose, initialize_config_dir
from PIL import Image

from experiments import arithmetic, generate, interpolate, invert, tsne
from tests.conftest import CONF, REPO, TINY
from voxgan.data.formats import read_binvox, write_binvox
from voxgan.data.procedural import make_shape
from voxgan.render import CELL
from voxgan.study import load_real
from voxgan.training.train import run

APPS = {app.__name__.split(".")[-1]: app for app in (arithmetic, generate, interpolate, invert, tsne)}


def run_app(app: str, cfg) -> dict:
    """Run ``experiments/<app>.py`` on a composed config, errors raised."""
    return APPS[app].run(cfg)

# Few restarts and steps: the apps' wiring is under test here, inversion quality in test_latent.py.
QUICK_INVERSION = ["inversion.restarts=2", "inversion.steps=30", "inversion.encoder_steps=20"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chair + airplane GAN, once per test module. High learning rates make its outputs confident
    (near 0 or 1) within 30 iterations, as a trained generator's are; barely trained ones hover at 0.5."""
    root = tmp_path_factory.mktemp("tiny_gan")
    overrides = [*TINY, "data=chair_airplane", "data.resolution=16", "iterations=30", "loss.g_lr=1e-2",
                 "loss.d_lr=1e-2", "loss.d_gate_accuracy=null", "logger=none", f"paths.output_dir={root}",
                 f"paths.cache_dir={root / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run(compose("train", overrides=overrides))
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def tiny_classifier(tiny_checkpoint: Path) -> Path:
    """A chair / airplane classifier at 16^3, trained for one epoch on the tiny run's shapes."""
    from voxgan.analysis.classification import train_classifier
    from voxgan.data.datamodule import synthetic_set
    from voxgan.models.classifier import save_classifier

    train = synthetic_set(["chair", "airplane"], 16, 0, 48, None)
    val = synthetic_set(["chair", "airplane"], 16, 48, 16, None)
    model, accuracy = train_classifier(train, val, epochs=2, channels=4, feature_dim=16, device="cpu")
    return save_classifier(tiny_checkpoint.parent / "classifier.ckpt", model, train.categories, 16, accuracy)


def app_cfg(app: str, ckpt: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(app, overrides=[f"ckpt={ckpt}", f"out={out}", "device=cpu", "logger=none", *overrides])


def offline_run(out: Path) -> dict:
    from tests.wandb_runs import read_summary

    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return read_summary(runs[0])


def test_generate_writes_png_npz_meshes_and_a_wandb_run(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = app_cfg("generate", tiny_checkpoint, tmp_path, "n=4", "seed=3", "logger=wandb")
    report = run_app("generate", cfg)
    samples = np.load(tmp_path / "samples.npz")
    assert samples["grids"].shape == (4, 16, 16, 16) and samples["grids"].dtype == bool
    assert samples["z"].shape == (4, 200) and samples["seeds"].tolist() == [3, 4, 5, 6]
    assert Image.open(tmp_path / "samples.png").size[0] >= 2 * CELL
    occupied = [i for i in range(4) if samples["grids"][i].any()]
    assert report["shape_files"] == len(occupied) > 0
    i = occupied[0]
    mesh = trimesh.load(tmp_path / "shapes" / f"seed_{i + 3:04d}.obj", force="mesh")
    # the mesh spans the occupied voxels' box in a grid spanning [-0.5, 0.5]^3 (cell size 1/16)
    cells = np.argwhere(samples["grids"][i])
    expected_lo, expected_hi = cells.min(0) / 16 - 0.5, (cells.max(0) + 1) / 16 - 0.5
    assert np.allclose(mesh.bounds[0], expected_lo, atol=1 / 16)
    assert np.allclose(mesh.bounds[1], expected_hi, atol=1 / 16)
    assert json.loads((tmp_path / "generate.json").read_text())["n"] == 4
    summary = offline_run(tmp_path)
    assert summary["state"] == "finished" and summary["summary"]["n"] == 4
    assert summary["summary"]["samples"]["_type"] == "image-file"
    assert "object3D" in json.dumps(summary["summary"]["shapes"])
    # W&B gets marching-cubes meshes (glb), one per occupied sample of the first four
    logged = list((tmp_path / "wandb").glob("offline-run-*/files/media/object3D/*.glb"))
    assert len(logged) == len(occupied)
    assert all(len(trimesh.load(p, force="mesh").faces) > 0 for p in logged)


def _viewer_figure(path: Path) -> dict:
    """The plotly figure a viewer page holds."""
    html = path.read_text()
    start = html.index("Plotly.newPlot(")
    args = json.JSONDecoder().raw_decode(html[html.index("[", start):])[0]  # the data traces
    return {"data": args, "html": html}


def test_generate_and_interpolate_write_a_3d_viewer_page(tiny_checkpoint: Path, tmp_path: Path) -> None:
    run_app("generate", app_cfg("generate", tiny_checkpoint, tmp_path / "g", "n=18", "format=html"))
    page = _viewer_figure(tmp_path / "g" / "samples.html")
    assert sum(trace["type"] == "mesh3d" for trace in page["data"]) == 16  # the first 16 of 18
    assert '<script src="http' not in page["html"] and "seed 15" in page["html"]
    cfg = app_cfg("interpolate", tiny_checkpoint, tmp_path / "i", "a=seed:1", "b=seed:2", "steps=5",
                  "format=html")
    run_app("interpolate", cfg)
    html = (tmp_path / "i" / "interpolation.html").read_text()
    assert all(f"t={t:.2f}" in html for t in (0, 0.25, 0.5, 0.75, 1.0)) and '"sliders"' in html


def test_generate_binvox_reads_back_as_the_samples(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Written in ShapeNet's pose (front -z), as binvox readers expect: the study apps' reader (which
    takes binvox files as ShapeNet's) gets each sample back facing forward, re-fitted to the grid."""
    from voxgan.data.formats import load_grids
    from voxgan.data.grid import normalize_grid

    run_app("generate", app_cfg("generate", tiny_checkpoint, tmp_path, "n=2", "format=binvox"))
    grids = np.load(tmp_path / "samples.npz")["grids"]
    for i, grid in enumerate(grids):
        if grid.any():
            path = tmp_path / "shapes" / f"seed_{i:04d}.binvox"
            assert np.array_equal(read_binvox(path).grid, grid[::-1, :, ::-1])
            assert np.array_equal(load_grids(path, 16)[0], normalize_grid(grid, 16))


def test_interpolate_writes_steps_frames_and_labels_them(tiny_checkpoint: Path, tiny_classifier: Path,
                                                         tmp_path: Path) -> None:
    cfg = app_cfg("interpolate", tiny_checkpoint, tmp_path, "a=seed:1", "b=seed:2", "steps=5", "format=ply",
                  f"classifier={tiny_classifier}", "logger=wandb")
    report = run_app("interpolate", cfg)
    gif = Image.open(tmp_path / "interpolation.gif")
    assert gif.n_frames == 5
    strip = Image.open(tmp_path / "interpolation.png")
    assert strip.size[0] == 5 * gif.size[0] and strip.size[1] == gif.size[1]
    assert report["method"] == "slerp"
    assert all(label.split()[0] in ("chair", "airplane") for label in report["labels"])
    data = np.load(tmp_path / "interpolation.npz")
    generated = np.load(run_generate_seeds(tiny_checkpoint, tmp_path / "gen", 3))["grids"]
    # a=seed:1 is sample 1 of `generate seed=0`: the same z, the same shape
    assert np.array_equal(data["grids"][0], generated[1]) and np.array_equal(data["grids"][-1], generated[2])
    assert len(list((tmp_path / "shapes").glob("frame_*.ply"))) == sum(g.any() for g in data["grids"])
    summary = offline_run(tmp_path)
    assert summary["summary"]["animation"]["_type"] == "video-file"


def run_generate_seeds(ckpt: Path, out: Path, n: int) -> Path:
    run_app("generate", app_cfg("generate", ckpt, out, f"n={n}", "format=none"))
    return out / "samples.npz"


def test_interpolate_inverts_file_endpoints(tiny_checkpoint: Path, tmp_path: Path) -> None:
    chair = write_binvox(tmp_path / "chair.binvox", make_shape("chair", 5, 16))
    cfg = app_cfg("interpolate", tiny_checkpoint, tmp_path / "out", f"a={chair}", "b=airplane:3", "steps=3",
                  "method=lerp", "format=none", *QUICK_INVERSION)
    report = run_app("interpolate", cfg)
    assert set(report["inversion_iou"]) == {"a", "b"}
    assert all(0 < v <= 1 for v in report["inversion_iou"].values())
    assert report["labels"] == ["t=0.00", "t=0.50", "t=1.00"]


def test_arithmetic_combines_the_operands(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = app_cfg("arithmetic", tiny_checkpoint, tmp_path, "expr='a - b + 0.5 * c'", "a=seed:1", "b=2",
                  "c=seed:3")
    report = run_app("arithmetic", cfg)
    data = np.load(tmp_path / "arithmetic.npz")
    z = data["z"]
    assert data["names"].tolist() == ["a", "b", "c", "result"]
    assert np.allclose(z[3], z[0] - z[1] + 0.5 * z[2], atol=1e-6)
    assert data["grids"].shape == (4, 16, 16, 16)
    assert report["coefficients"] == {"a": 1.0, "b": -1.0, "c": 0.5}
    assert Image.open(tmp_path / "arithmetic.png").size[0] == 4 * CELL


def test_arithmetic_with_attribute_and_category_means(tiny_checkpoint: Path, tiny_classifier: Path,
                                                      tmp_path: Path) -> None:
    cfg = app_cfg("arithmetic", tiny_checkpoint, tmp_path, "expr=a - b + c", "a=attr:chair.arms:true",
                  "b=attr:arms:false", "c=mean:airplane", "attr_shapes=2", "mean_samples=32",
                  f"classifier={tiny_classifier}", *QUICK_INVERSION)
    report = run_app("arithmetic", cfg)
    assert report["result_label"].split()[0] in ("chair", "airplane")
    # attribute means report the mean IoU of their inverted shapes; a category mean inverts nothing
    assert set(report["inversion_iou"]) == {"a", "b"}
    assert np.load(tmp_path / "arithmetic.npz")["z"].shape == (4, 200)


def test_an_export_of_procedural_data_rebuilds_its_val_split(tmp_path: Path) -> None:
    """target=val / real=val name the model's own split: an export records its data, and procedural data
    is rebuilt from it (the shipped chair was trained on 1000 chairs: val is seeds 1000 onwards)."""
    from voxgan.data.procedural import make_shapes

    cfg = app_cfg("invert", "chair", tmp_path, "target=val", "n=2", "inversion.refine_steps=2")
    run_app("invert", cfg)
    saved = np.load(tmp_path / "inversion.npz")
    targets = saved["targets"].reshape(2, -1)
    val = make_shapes("chair", range(1000, 1100), 32).reshape(100, -1)
    assert all((val == target).all(1).any() for target in targets)  # each target is a val chair


def test_category_means_of_a_shipped_model_need_no_classifier(tmp_path: Path) -> None:
    """The shipped chairplane was trained on the procedural library: its samples are labelled by their
    nearest training shape, so mean:chair and mean:airplane work as the README writes them, and each
    mean z draws a shape of its category."""
    from voxgan.data.procedural import make_shapes

    cfg = app_cfg("arithmetic", "chairplane", tmp_path, "expr=a - b + c", "a=seed:0", "b=mean:chair",
                  "c=mean:airplane", "mean_samples=64", "format=none")
    report = run_app("arithmetic", cfg)
    assert report["coefficients"] == {"a": 1.0, "b": -1.0, "c": 1.0}
    data = np.load(tmp_path / "arithmetic.npz")
    names, grids = data["names"].tolist(), data["grids"].reshape(-1, 32**3).astype(np.float32)
    references = {c: make_shapes(c, range(32, 64), 32).reshape(32, -1).astype(np.float32)
                  for c in ("chair", "airplane")}

    def nearest(grid: np.ndarray) -> str:
        iou = {c: ((r @ grid) / (r.sum(1) + grid.sum() - r @ grid)).max() for c, r in references.items()}
        return max(iou, key=iou.get)

    assert nearest(grids[names.index("b")]) == "chair"
    assert nearest(grids[names.index("c")]) == "airplane"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["expr=a + e", "a=1"], r"names \['e'\]"),
        (["expr=a - b", "a=1"], r"uses \['b'\] but they are not set"),
        (["expr=a", "a=no_such_thing"], "is not a shape spec"),
        (["expr=a", "a=mean:sofa"], r"trained on \['chair', 'airplane'\], not 'sofa'"),
        (["expr=a", "a=attr:chair.wings:true"], "has the attribute 'wings'"),
        (["expr=a * 2 + 1", "a=1"], "cannot add a number"),
    ],
)
def test_arithmetic_errors_name_the_problem(tiny_checkpoint: Path, tmp_path: Path, overrides: list[str],
                                            message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_app("arithmetic", app_cfg("arithmetic", tiny_checkpoint, tmp_path, *overrides))


@pytest.mark.parametrize(
    ("app", "override", "message"),
    [
        ("generate", "format=fbx", "format='fbx' is invalid"),
        ("interpolate", "method=cubic", "method='cubic' is invalid"),
        ("arithmetic", "space=codes", "space='codes' is invalid"),
        ("invert", "inversion.loss=l2", "inversion.loss='l2' is invalid"),
        ("tsne", "n=0", "n=0 is invalid"),
        ("generate", "clean_share=0", "clean_share=0.0 is invalid"),
        ("invert", "target=???", "target not set: pass target=<value>"),
    ],
)
def test_bad_values_stop_before_any_output(tiny_checkpoint: Path, tmp_path: Path, app: str, override: str,
                                           message: str) -> None:
    with pytest.raises(ValueError, match=message):
        target = ["target=val"] if app == "invert" and "target" not in override else []
        run_app(app, app_cfg(app, tiny_checkpoint, tmp_path / "out", *target, override))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("app", ["interpolate", "arithmetic"])
def test_code_space_on_a_3d_gan_is_one_line_before_any_work(tiny_checkpoint: Path, tmp_path: Path,
                                                            app: str, monkeypatch) -> None:
    from voxgan.study import session

    monkeypatch.setattr(session.Study, "invert", lambda *a, **k: pytest.fail("inverted before the check"))
    operands = ["a=chair:0", "b=chair:1"] + (["expr=a - b"] if app == "arithmetic" else [])
    with pytest.raises(ValueError, match=r"space=code needs a latent GAN .* use space=z"):
        run_app(app, app_cfg(app, tiny_checkpoint, tmp_path, "space=code", *operands))


def test_invert_reports_iou_per_shape(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = app_cfg("invert", tiny_checkpoint, tmp_path, "target=chair:0-2", *QUICK_INVERSION,
                  "inversion.init=encoder")
    report = run_app("invert", cfg)
    assert list(report["iou"]) == ["chair:0", "chair:1", "chair:2"]
    assert report["iou_median"] == pytest.approx(np.median(list(report["iou"].values())))
    data = np.load(tmp_path / "inversion.npz")
    assert data["targets"].shape == data["reconstructions"].shape == (3, 16, 16, 16)
    assert (tmp_path / "encoder.pt").is_file()
    assert Image.open(tmp_path / "inversion.png").size[0] == 6 * CELL


def test_real_shapes_from_splits_folders_and_files(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from voxgan.study import Study

    study = Study(app_cfg("invert", tiny_checkpoint, tmp_path, "target=val"), tmp_path)
    val = load_real("val", study, 6)
    assert val.grids.shape == (6, 16, 16, 16) and set(val.categories) == {"chair", "airplane"}
    for i in range(2):
        write_binvox(tmp_path / "folder" / f"s{i}.binvox", make_shape("airplane", i, 16))
    files = load_real(str(tmp_path / "folder"), study)
    assert files.names == ["s0.binvox", "s1.binvox"]
    assert files.grids[1].sum() == make_shape("airplane", 1, 16).sum()
    with pytest.raises(ValueError, match="names no real shapes"):
        load_real(str(tmp_path / "missing"), study)
    # a glob picks some files of a tree, e.g. only the solid voxelisations of ShapeNet
    for i in range(3):
        kind = "solid" if i < 2 else "surface"
        write_binvox(tmp_path / "tree" / f"id{i}" / "models" / f"m.{kind}.binvox", make_shape("chair", i, 16))
    solid = load_real(str(tmp_path / "tree" / "*" / "models" / "*.solid.binvox"), study)
    assert solid.names == ["id0", "id1"]  # the part of the paths that differs
    with pytest.raises(ValueError, match="matches no file"):
        load_real(str(tmp_path / "tree" / "*.obj"), study)


def test_a_shapenet_file_is_an_operand(tiny_checkpoint: Path, shared_data: Path, tmp_path: Path) -> None:
    from voxgan.study import Study, resolve_operands

    chair = next((shared_data / "shapenet_mini" / "chair").rglob("*.solid.binvox"))
    study = Study(app_cfg("interpolate", tiny_checkpoint, tmp_path, *QUICK_INVERSION), tmp_path)
    operand = resolve_operands({"a": str(chair)}, study)["a"]
    assert operand.z.shape == (200,) and operand.shape.shape == (16, 16, 16) and operand.shape.any()
    assert 0 < operand.iou <= 1


def test_tsne_writes_plots_and_numbers(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    cfg = app_cfg("tsne", tiny_checkpoint, tmp_path, "n=40", "real=chair:0-3", "real_n=4", *QUICK_INVERSION)
    report = run_app("tsne", cfg)
    assert report["coloring"].startswith("k-means (2) of D features")
    stats = json.loads((tmp_path / "tsne.json").read_text())["spaces"]
    assert list(stats) == ["z", "G first block", "D features"]
    assert all(-1 <= space["silhouette"] <= 1 for space in stats.values())
    # the clusters are D's: a probe on D would read them back from where they were found, so none
    assert stats["D features"]["probe_accuracy"] is None
    assert all(0 <= stats[space]["probe_accuracy"] <= 1 for space in ("z", "G first block"))
    printed = capsys.readouterr()
    assert "tsne: 3 panels: z, G first block, D features\n" in printed.out
    assert "no probe on D features: its clusters are the labels" in printed.out
    # each long wait shows progress: sampling, each feature space, the inversion, the fits
    for stage in ("sampling 40 shapes", "G features", "D features", "inverting 4 real shapes (chair:0-3)",
                  "t-SNE and probes: 100% 3/3"):
        assert stage in printed.err, stage
    assert stats["z"]["dims"] == 200
    image = Image.open(tmp_path / "tsne.png")
    assert image.size[0] > 2 * image.size[1]  # three panels side by side
    embedded = np.load(tmp_path / "tsne.npz")
    assert embedded["z"].shape == (44, 2)  # 40 samples and 4 inverted real shapes


def test_tsne_colours_by_the_classifier(tiny_checkpoint: Path, tiny_classifier: Path, tmp_path: Path) -> None:
    cfg = app_cfg("tsne", tiny_checkpoint, tmp_path, "n=30", f"classifier={tiny_classifier}")
    report = run_app("tsne", cfg)
    assert report["coloring"] == "classifier's categories"
    assert set(report["counts"]) == {"chair", "airplane"} and sum(report["counts"].values()) == 30
    # labels from a classifier come from no space embedded here: every space gets its probe (NaN where a
    # category has too few samples for two folds)
    probes = [space["probe_accuracy"] for space in report["spaces"].values()]
    assert len(probes) == 3 and all(p is not None and (0 <= p <= 1 or np.isnan(p)) for p in probes), probes


def test_tsne_of_an_export_says_which_panel_it_lacks_and_why(tiny_checkpoint: Path, tmp_path: Path,
                                                             capsys) -> None:
    from voxgan.export import export_generator

    exported = export_generator(tiny_checkpoint, tmp_path / "export")
    report = run_app("tsne", app_cfg("tsne", exported, tmp_path / "tsne", "n=8", "perplexity=2"))
    assert list(report["spaces"]) == ["z", "G first block"]
    (why,) = json.loads((tmp_path / "tsne" / "tsne.json").read_text())["missing_panels"].values()
    assert why.startswith(f"ckpt={exported} is an exported generator, which holds no discriminator")
    assert f"tsne: 2 panels: z, G first block; no D features panel: {why}\n" in capsys.readouterr().out


def test_a_long_wait_shows_progress_on_stderr_unless_turned_off(tiny_checkpoint: Path, tmp_path: Path,
                                                                capsys) -> None:
    done = _launch("invert", tmp_path, f"ckpt={tiny_checkpoint}", "target=chair:0-1", "logger=none",
                   "device=cpu", *QUICK_INVERSION)
    assert done.returncode == 0, done.stderr
    # a log, not a terminal: whole lines, the first and the last of the bar
    assert "inverting chair:0-1 (2 shapes), 2 restarts each:   0% 0/30" in done.stderr
    assert "inverting chair:0-1 (2 shapes), 2 restarts each: 100% 30/30" in done.stderr
    assert "step/s, shapes=2/2, best_iou=0." in done.stderr and "\r" not in done.stderr
    capsys.readouterr()
    cfg = app_cfg("invert", tiny_checkpoint, tmp_path / "quiet", "target=chair:0", "progress=false",
                  *QUICK_INVERSION)
    run_app("invert", cfg)
    assert "inverting" not in capsys.readouterr().err


def _launch(app: str, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "experiments" / f"{app}.py"), *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_apps_launch_through_hydra(tiny_checkpoint: Path, tmp_path: Path) -> None:
    done = _launch("generate", tmp_path, f"ckpt={tiny_checkpoint}", "n=4", "format=stl", "logger=none",
                   "device=cpu")
    assert done.returncode == 0, done.stderr
    runs = list((tmp_path / "outputs" / "generate").glob("*/*"))
    assert len(runs) == 1
    assert (runs[0] / "samples.png").is_file() and (runs[0] / ".hydra" / "config.yaml").is_file()
    occupied = sum(grid.any() for grid in np.load(runs[0] / "samples.npz")["grids"])
    assert len(list((runs[0] / "shapes").glob("*.stl"))) == occupied


def test_a_bad_value_ends_the_app_with_one_message(tmp_path: Path) -> None:
    cfg = app_cfg("invert", tmp_path / "nope.ckpt", tmp_path, "target=val")
    with pytest.raises(SystemExit, match=r"^error: ckpt=.*nope\.ckpt does not exist"):
        invert.cli(cfg)


def test_generate_cleans_samples_to_their_largest_piece_by_default(tiny_checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    """The tiny model's samples are fragmented: clean keeps one piece each (share 1), clean=false all."""
    from voxgan.metrics.fragments import fragment_stats

    pieces = {}
    for clean in ("true", "false"):
        out = tmp_path / clean
        cfg = app_cfg("generate", tiny_checkpoint, out, "n=12", "format=none", f"clean={clean}",
                      "clean_share=1.0")
        run_app("generate", cfg)
        grids = np.load(out / "samples.npz")["grids"].astype(bool)
        pieces[clean] = fragment_stats(grids.reshape(-1, *grids.shape[-3:]))[0]
    assert pieces["false"] > 1.0  # the check below means something only on fragmented samples
    assert pieces["true"] == 1.0
