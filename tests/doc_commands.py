"""Every command line of the ```bash blocks in README.md and docs/*.md, and how tests/test_doc_commands.py
runs it.

``line`` is the command as the docs write it (comment stripped, continuation lines joined, runs of
spaces as one). The test runs ``line`` with each ``subs`` key replaced by its value, then ``extra``
appended (small sizes, and the output folder under the test's tmp folder); ``{name}`` tokens in the
result are artifacts the test makes (see ``ARTIFACTS`` and tests/test_doc_commands.py). A command
with ``why_not`` is not run, for the reason it gives. A new documented command must be added here:
the fast test fails naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Artifacts the test makes without a documented command ({name} in a run):
#   {out}         this command's own output folder (under tmp)
#   {volumetric}  a 3D ShapeNets-style folder with 24 of the shared real chairs (needs ../shared/data)
#   {shapenet}    a ShapeNetCore-style folder (synset ids) of the shared shapenet_mini chairs and airplanes
#   {modelnet}    the shared ModelNet airplane meshes
#   {arrays}      a folder of a few .npy occupancy arrays
#   {mat_a} {mat_b} {mat_c}  three shared 3D ShapeNets chair files
#   {binvox}      a shared ShapeNet chair (.solid.binvox)
# Artifacts a catalogue entry makes (its ``provides``), each at {name} under tmp, made once per module:
#   {run}  a tiny 3D-GAN training run (W&B offline)     {sweep}  a tiny sweep of 4 jobs
#   {shards}  the real chairs prepared into shards       {classifier}  a tiny chair/airplane classifier
#   {latent_run}  a tiny latent-GAN run                  {real_run}  a tiny run on the real-chair shards
#   {between_run}  a tiny latent-GAN run on the real-chair shards (docs/real-chairs.md's screen)
SHARED_ARTIFACTS = ("volumetric", "shapenet", "modelnet", "mat_a", "mat_b", "mat_c", "binvox", "shards",
                    "real_run", "between_run")

# A few generator iterations at 16^3 with narrow networks: seconds, with every callback exercised.
SMALL_NETS = "model.g_channels=8 model.d_channels=8"
SMALL_DATA = "data.num_shapes=24 data.batch_size=4"
SMALL_CALLBACKS = "callbacks.eval_samples=4 callbacks.num_samples=4 trainer.enable_progress_bar=false"
TRAIN = f"iterations=2 data.resolution=16 {SMALL_DATA} {SMALL_NETS} {SMALL_CALLBACKS}"
LATENT = f"iterations=3 model.latent.ae_iterations=2 model.latent.width=16 {SMALL_CALLBACKS}"
# a real-chair latent recipe shrunk: small batches and networks, csv logs
REAL_LATENT = f"data.batch_size=4 {SMALL_NETS} model.latent.width=16 {SMALL_CALLBACKS} logger=csv"
# docs/real-chairs.md's short screen of a latent lever on the real chairs (600 + 6000 iterations)
SCREEN = ("OMP_NUM_THREADS=1 python train.py experiment=real_chair32_latent data.root=data/chair32 "
          "trainer.precision=32-true model.latent.ae_iterations=600 iterations=6600 trainer.max_time=null "
          "callbacks.eval_every=0")
RUN_DIR = "hydra.run.dir={out}"
SWEEP_DIR = "hydra.sweep.dir={out}"
INVERSION = ("inversion.steps=3 inversion.restarts=1 inversion.candidates=2 inversion.encoder_steps=5 "
             "inversion.refine_steps=3")
CODE_STEPS = "inversion.code_steps=2"

# shell variables of the chairplane study's blocks
CK_SHIPPED = {"$CK": "chairplane"}
CLF = {"$CLF": "{classifier}/classifier.ckpt"}
CK_LATENT = {"$CK": "{latent_run}/checkpoints/last.ckpt"}
# the README / studying.md study lines name no checkpoint: a shipped model where one fits
ANY = "ckpt=..."


@dataclass(frozen=True)
class DocCommand:
    """A documented command line and how the test runs it (or why it does not)."""

    line: str
    subs: dict[str, str] = field(default_factory=dict)
    extra: str = ""
    writes: tuple[str, ...] = ()  # paths the run must leave, {name} tokens allowed; globs allowed
    prints: str = ""  # text the run must print (stdout or stderr)
    provides: str = ""  # the artifact {name} this run makes for others (its output folder is {name})
    why_not: str = ""  # set: not run, for this reason


def screen_subs(run_dir: str, out: str, iterations: int) -> dict[str, str]:
    """The substitutions that shrink a ``SCREEN`` command: the prepared chairs, a few iterations, and the
    run folder ``run_dir`` as ``out``."""
    return {"data/chair32": "{shards}", "model.latent.ae_iterations=600 iterations=6600":
            f"model.latent.ae_iterations=2 iterations={iterations}", run_dir: out}


COMMANDS: list[DocCommand] = [
    # ---- README.md: set up
    DocCommand(
        'pip install -e . && python train.py model=dcgan3d data=chair',
        why_not="pip install changes the environment the tests run in; its training command is "
        "docs/training.md's `python train.py model=dcgan3d data=chair`, run below",
    ),
    DocCommand('pip install -e ".[dev]" && pytest', why_not="pip install, and pytest itself"),
    # ---- README.md: without training
    DocCommand(
        "python experiments/generate.py ckpt=real_chair32 n=16 format=html",
        extra=f"n=2 {RUN_DIR}",
        writes=("{out}/samples.png", "{out}/samples.html"),
    ),
    # ---- README.md: a short tour
    DocCommand(
        "python train.py model=resgan3d loss=wgan_gp data=airplane",
        extra=f"{TRAIN} logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt", "{out}/metrics.jsonl"),
    ),
    DocCommand(
        "python train.py data=chair_airplane",
        extra=f"{TRAIN} logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python train.py experiment=chairplane",
        extra=f"{TRAIN} logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python train.py experiment=paper64",
        # the paper's 64^3 at batch 100 needs a GPU's memory; shrunk, on the CPU, it still runs
        extra=f"trainer=cpu {TRAIN} logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python train.py experiment=quick",
        # the tiny run the study commands use, with the default logger (W&B offline)
        extra=f"{TRAIN} hydra.run.dir={{run}}",
        provides="run",
        writes=("{run}/checkpoints/last.ckpt", "{run}/samples", "{run}/wandb"),
    ),
    DocCommand(
        "python train.py data.resolution=64 data.batch_size=16",
        extra=f"iterations=2 data.num_shapes=20 data.batch_size=2 model.g_channels=4 model.d_channels=4 "
        f"{SMALL_CALLBACKS} logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python train.py -m loss=bce,wgan_gp data=chair,airplane",
        extra=f"{TRAIN} logger=csv hydra.sweep.dir={{sweep}}",
        provides="sweep",
        writes=("{sweep}/0/checkpoints/last.ckpt", "{sweep}/3/checkpoints/last.ckpt"),
    ),
    DocCommand(
        "python train.py -m hparams_search=optuna",
        extra=f"{TRAIN} callbacks.eval_every=2 hydra.sweeper.n_trials=2 logger=csv {SWEEP_DIR}",
        writes=("{out}/1/checkpoints/last.ckpt", "{out}/optimization_results.yaml"),
    ),
    DocCommand(
        "python experiments/compare_sweep.py outputs/multirun/<date>/<time>",
        subs={"outputs/multirun/<date>/<time>": "{sweep}"},
        writes=("{sweep}/comparison*",),
    ),
    DocCommand(
        "python train.py <same overrides> ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt",
        # the tiny run's own overrides, two more iterations
        subs={"<same overrides>": f"experiment=quick {TRAIN}", "outputs/<date>/<time>": "{run}"},
        extra=f"iterations=4 {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python -m voxgan.data.prepare source=volumetric root=/path/to/volumetric_data categories=[chair] "
        "resolution=32 out=data/chair32",
        subs={"/path/to/volumetric_data": "{volumetric}", "data/chair32": "{shards}"},
        extra="progress=false",
        provides="shards",
        writes=("{shards}/manifest*",),
    ),
    DocCommand(
        "python train.py data=shards data.root=data/chair32",
        subs={"data/chair32": "{shards}"},
        extra=f"iterations=2 data.batch_size=4 {SMALL_NETS} {SMALL_CALLBACKS} logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python train.py experiment=real_chair32_latent data.root=data/chair32",
        subs={"data/chair32": "{shards}"},
        extra=f"{LATENT} data.batch_size=4 logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    # ---- README.md and docs/studying.md: measure and study a model
    DocCommand(
        "python experiments/evaluate.py ckpt=outputs/<run>/checkpoints/last.ckpt",
        subs={"outputs/<run>": "{run}"},
        extra=f"n=4 {RUN_DIR}",
        writes=("{out}/evaluation.json",),
        prints="1-NNA",
    ),
    DocCommand(
        "python experiments/generate.py ckpt=... n=64 format=obj",
        subs={ANY: "ckpt=chairplane"},
        extra=f"n=2 {RUN_DIR}",
        writes=("{out}/samples.png", "{out}/samples.npz", "{out}/shapes/seed_0000.obj"),
    ),
    DocCommand(
        "python experiments/interpolate.py ckpt=... a=seed:0 b=airplane:7 steps=10",
        subs={ANY: "ckpt=chairplane"},
        extra=f"steps=3 {INVERSION} {RUN_DIR}",
        writes=("{out}/*.png", "{out}/*.gif"),
    ),
    DocCommand(
        # the shipped chairplane: mean:<category> labels its samples by their nearest training shape
        'python experiments/arithmetic.py ckpt=... expr="a - b + c" a=seed:0 b=mean:chair c=mean:airplane',
        subs={ANY: "ckpt=chairplane"},
        extra=f"mean_samples=16 {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "python experiments/invert.py ckpt=... target=path/to/shape.binvox",
        subs={ANY: "ckpt=chairplane", "path/to/shape.binvox": "{binvox}"},
        extra=f"{INVERSION} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "python experiments/tsne.py ckpt=... n=2000",
        subs={ANY: "ckpt={run}/checkpoints/last.ckpt"},
        extra=f"n=12 {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "python experiments/generate.py ckpt=... n=16 format=html",
        subs={ANY: "ckpt=chairplane"},
        extra=f"n=2 {RUN_DIR}",
        writes=("{out}/samples.html",),
    ),
    DocCommand(
        "python experiments/export.py ckpt=... out=exports/chair32 [push_to_hub=user/name]",
        # [push_to_hub=...] is optional (and needs a Hub account): the test leaves it out
        subs={ANY: "ckpt={run}/checkpoints/last.ckpt", "exports/chair32": "{out}/chair32",
              " [push_to_hub=user/name]": ""},
        extra="hydra.run.dir={out}/app",
        writes=("{out}/chair32/README.md",),
    ),
    DocCommand(
        "python experiments/export.py ckpt=<run>/checkpoints/last.ckpt out=exports/chair32 "
        "encoder_steps=1500",
        subs={"<run>": "{run}", "exports/chair32": "{out}/chair32", "encoder_steps=1500": "encoder_steps=5"},
        extra="hydra.run.dir={out}/app",
        writes=("{out}/chair32/model.safetensors",),
        prints="median IoU",
    ),
    DocCommand(
        "python experiments/export.py ckpt=exports/chair32 out=exports/chair32 encoder_steps=1500",
        # an export to add the encoder to first, then the documented command on it
        subs={"python experiments/export.py ckpt=exports/chair32 out=exports/chair32 encoder_steps=1500":
              "python experiments/export.py ckpt={run}/checkpoints/last.ckpt out={out}/chair32 "
              "hydra.run.dir={out}/app0 && "
              "python experiments/export.py ckpt={out}/chair32 out={out}/chair32 encoder_steps=5"},
        extra="hydra.run.dir={out}/app",
        writes=("{out}/chair32/model.safetensors",),
        prints="median IoU",
    ),
    DocCommand("wandb leet outputs/", why_not="an interactive terminal UI"),
    DocCommand(
        "wandb leet inspect --summary outputs/<date>/<time>/wandb/offline-run-*",
        subs={"outputs/<date>/<time>": "{run}"},
        prints="1",
    ),
    DocCommand("wandb sync outputs/<date>/<time>/wandb/offline-run-*",
               why_not="uploads to wandb.ai: needs an account and the network"),
    # ---- docs/training.md
    DocCommand(
        "python train.py model=dcgan3d data=chair",
        extra=f"{TRAIN} {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt", "{out}/wandb"),
    ),
    DocCommand(
        "python train.py -m data.resolution=16,32 model=dcgan3d,resgan3d",
        extra=f"iterations=2 {SMALL_DATA} {SMALL_NETS} {SMALL_CALLBACKS} logger=csv {SWEEP_DIR}",
        writes=("{out}/3/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python experiments/compare_sweep.py outputs/multirun/<date>/<time> --at-wall-s 1200",
        subs={"outputs/multirun/<date>/<time>": "{sweep}"},
        writes=("{sweep}/comparison*",),
    ),
    DocCommand(
        'OMP_NUM_THREADS=1 python benchmarks/recipes.py --recipes "experiment=real_chair32" '
        '"experiment=real_chair32 loss.d_gate_accuracy=null" --seeds 0 1 2 --minutes 60 --at-minutes 20 60 '
        "--parallel 2 --z-sets 5 --out outputs/recipes/real_chair32 -- data.root=data/chair32",
        why_not="two recipes x 3 seeds x an hour; the same script runs shrunk in docs/real-chairs.md's "
        "recipes line",
    ),
    # ---- docs/chairplane.md
    DocCommand(
        "python experiments/train_classifier.py data=chair_airplane data.num_shapes=1500",
        extra="data.num_shapes=64 data.batch_size=8 epochs=3 hydra.run.dir={classifier}",
        provides="classifier",
        writes=("{classifier}/classifier.ckpt",),
    ),
    DocCommand(
        "python train.py experiment=chairplane iterations=100000 trainer.max_time=00:01:05:00",
        extra=f"{TRAIN} logger=csv {RUN_DIR}",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "CK=chairplane; CLF=outputs/train_classifier/<date>/<time>/classifier.ckpt",
        why_not="sets the shell variables the next lines use; the test puts their values in those lines",
    ),
    DocCommand(
        "SN=path/to/ShapeNetCore.v2",
        why_not="sets the shell variable the inversion line uses; the test puts its value in that line",
    ),
    DocCommand(
        "python experiments/generate.py ckpt=$CK n=25 classifier=$CLF format=none",
        subs=CK_SHIPPED | CLF,
        extra=f"n=2 {RUN_DIR}",
        writes=("{out}/samples.png",),
    ),
    DocCommand(
        "python experiments/interpolate.py ckpt=$CK a=seed:21 b=seed:10 steps=8 classifier=$CLF",
        subs=CK_SHIPPED | CLF,
        extra=f"steps=3 {RUN_DIR}",
        writes=("{out}/*.png", "{out}/*.gif"),
    ),
    DocCommand(
        "python experiments/interpolate.py ckpt=$CK a=seed:21 b=seed:13 steps=12 classifier=$CLF",
        subs=CK_SHIPPED | CLF,
        extra=f"steps=3 {RUN_DIR}",
        writes=("{out}/*.png", "{out}/*.gif"),
    ),
    DocCommand(
        'python experiments/invert.py ckpt=$CK "target=$SN/03001627/*/models/model_normalized.solid.binvox" '
        "n=7",
        subs=CK_SHIPPED | {"$SN": "{shapenet}"},
        extra=f"n=1 {INVERSION} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        'python experiments/arithmetic.py ckpt=$CK expr="a - b + c" a=attr:chair.base:swivel '
        "b=attr:chair.base:legs c=seed:21",
        subs=CK_SHIPPED,
        extra=f"attr_shapes=1 {INVERSION} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "python experiments/tsne.py ckpt=$CK n=2000 classifier=$CLF real=val real_n=100",
        subs=CK_SHIPPED | CLF,
        extra=f"n=12 real_n=2 {INVERSION} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "OMP_NUM_THREADS=1 python train.py experiment=chairplane_latent seed=0",
        extra=f"{LATENT} data.resolution=16 {SMALL_DATA} logger=csv hydra.run.dir={{latent_run}}",
        provides="latent_run",
        writes=("{latent_run}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "CK=outputs/<run>/checkpoints/last.ckpt",
        why_not="sets the shell variable the next lines use; the test puts its value in those lines",
    ),
    DocCommand(
        "python experiments/evaluate.py ckpt=$CK n=200 repeats=3",
        subs=CK_LATENT,
        extra=f"n=4 repeats=2 {RUN_DIR}",
        writes=("{out}/evaluation.json",),
        prints="1-NNA",
    ),
    DocCommand(
        "python experiments/tsne.py ckpt=$CK n=600 real=val real_n=200 inversion.init=encoder "
        "inversion.refine_steps=50",
        subs=CK_LATENT,
        extra=f"n=12 real_n=2 inversion.refine_steps=2 {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "python experiments/interpolate.py ckpt=$CK a=chair:3 b=airplane:7 steps=8 space=code",
        subs=CK_LATENT,
        extra=f"steps=3 {CODE_STEPS} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    # ---- docs/data.md
    DocCommand(
        "python -m voxgan.data.prepare source=shapenet root=/path/to/ShapeNetCore.v2 "
        "categories=[chair,airplane] resolution=64 out=data/sn64",
        subs={"/path/to/ShapeNetCore.v2": "{shapenet}", "data/sn64": "{out}/sn64"},
        extra="progress=false",
        writes=("{out}/sn64/manifest*",),
    ),
    DocCommand(
        "python -m voxgan.data.prepare source=mesh root=/path/to/ModelNet10 resolution=32 out=data/mn10",
        subs={"/path/to/ModelNet10": "{modelnet}", "data/mn10": "{out}/mn10"},
        extra="progress=false",
        writes=("{out}/mn10/manifest*",),
    ),
    DocCommand(
        "python -m voxgan.data.prepare source=arrays root=/path/to/npy_or_npz resolution=32 out=data/arrays",
        subs={"/path/to/npy_or_npz": "{arrays}", "data/arrays": "{out}/arrays"},
        extra="progress=false",
        writes=("{out}/arrays/manifest*",),
    ),
    DocCommand(
        "python -m voxgan.data.show root=data/chair32 n=16 out=preview.png",
        subs={"data/chair32": "{shards}", "out=preview.png": "out={out}/preview.png"},
        writes=("{out}/preview.png",),
    ),
    # ---- docs/real-chairs.md
    DocCommand(
        "OMP_NUM_THREADS=1 python train.py experiment=real_chair32 data.root=data/chair32 seed=0",
        subs={"data/chair32": "{shards}"},
        extra=f"iterations=2 data.batch_size=4 {SMALL_NETS} {SMALL_CALLBACKS} callbacks.eval_every=1 "
        "callbacks.log_every=1 hydra.run.dir={real_run}",
        provides="real_run",
        writes=("{real_run}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "python experiments/plot_memorisation.py outputs/<run>",
        subs={"outputs/<run>": "{real_run}"},
        writes=("{real_run}/*memorisation*.png",),
    ),
    DocCommand(
        'OMP_NUM_THREADS=1 python benchmarks/recipes.py --recipes "experiment=real_chair32_latent '
        'trainer.precision=32-true" "experiment=real_chair32 trainer.precision=32-true" --seeds 0 1 2 '
        "--minutes 60 --at-minutes 10 20 60 --parallel 2 --z-sets 5 --out outputs/recipes/families_fp32 -- "
        "data.root=data/chair32",
        subs={"--seeds 0 1 2 --minutes 60 --at-minutes 10 20 60 --parallel 2 --z-sets 5":
              "--seeds 0 --minutes 0.3 --parallel 1 --z-sets 1",
              "outputs/recipes/families_fp32": "{out}", "data/chair32": "{shards}"},
        extra=f"data.batch_size=4 {SMALL_NETS} model.latent.ae_iterations=2 model.latent.width=16 "
        "callbacks.eval_samples=4 callbacks.eval_every=2",
        writes=("{out}/recipes.md",),
    ),
    DocCommand(
        "python experiments/evaluate.py "
        "ckpt=outputs/recipes/families_fp32/<recipe>/seed0/checkpoints/last.ckpt n=90 repeats=5",
        subs={"outputs/recipes/families_fp32/<recipe>/seed0": "{real_run}"},
        extra=f"n=4 repeats=2 {RUN_DIR}",
        writes=("{out}/evaluation.json",),
    ),
    DocCommand(
        f"{SCREEN} model.latent.kl_weight=0.001 seed=0 hydra.run.dir=outputs/between/kl/seed0",
        subs=screen_subs("outputs/between/kl/seed0", "{between_run}", iterations=3),
        extra=REAL_LATENT,
        provides="between_run",
        writes=("{between_run}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        f"{SCREEN} model.latent.voxel_d_weight=0.1 seed=0 hydra.run.dir=outputs/between/voxel/seed0",
        subs=screen_subs("outputs/between/voxel/seed0", "{out}", iterations=4),
        extra=REAL_LATENT,
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        f"{SCREEN} model.latent.pieces_weight=1 seed=0 hydra.run.dir=outputs/between/pieces/seed0",
        subs=screen_subs("outputs/between/pieces/seed0", "{out}", iterations=4),
        extra=f"{REAL_LATENT} model.latent.voxel_d_every=1",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "OMP_NUM_THREADS=1 python train.py experiment=real_chair32_latent data.root=data/chair32 "
        "trainer.precision=32-true model.latent.ae_iterations=1000 seed=1 "
        "hydra.run.dir=outputs/hour_ae1000/seed1",
        subs={"data/chair32": "{shards}", "model.latent.ae_iterations=1000":
              "model.latent.ae_iterations=2 iterations=3", "outputs/hour_ae1000/seed1": "{out}"},
        extra=REAL_LATENT,
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "OMP_NUM_THREADS=1 python benchmarks/code_samplers.py real_chair32 --data-root data/chair32 "
        "--samplers \"code GAN\" \"bank + noise 0.5\" \"training codes\" --surfaces --z-sets 2",
        subs={"data/chair32": "{shards}", "--z-sets 2": "--z-sets 1 --n 4"},
        prints="1nna_cd",
    ),
    DocCommand(
        "python experiments/evaluate.py ckpt=outputs/between/kl/seed0/checkpoints/last.ckpt n=90 repeats=5",
        subs={"outputs/between/kl/seed0": "{between_run}"},
        extra=f"n=4 repeats=2 {RUN_DIR}",
        writes=("{out}/evaluation.json",),
    ),
    DocCommand(
        "OMP_NUM_THREADS=1 python benchmarks/code_samplers.py outputs/between/kl/seed0/checkpoints/last.ckpt "
        "real_chair32_latent --data-root data/chair32 --z-sets 5",
        subs={"outputs/between/kl/seed0": "{between_run}", "data/chair32": "{shards}",
              "--z-sets 5": "--z-sets 1 --n 4"},
        prints="mean over 2 checkpoints",
    ),
    DocCommand(
        "OMP_NUM_THREADS=1 python train.py experiment=real_chair32_latent data.root=data/chair32 "
        "trainer.precision=32-true seed=0 hydra.run.dir=outputs/hour/seed0",
        subs={"data/chair32": "{shards}", "outputs/hour/seed0": "{out}"},
        extra=f"{LATENT} data.batch_size=4 logger=csv",
        writes=("{out}/checkpoints/last.ckpt",),
    ),
    DocCommand(
        "OMP_NUM_THREADS=1 python benchmarks/code_samplers.py outputs/hour/seed0/checkpoints/last.ckpt "
        "--z-sets 5",
        subs={"outputs/hour/seed0": "{between_run}", "--z-sets 5": "--z-sets 1 --n 4"},
        prints="| training codes |",
    ),
    DocCommand(
        "python experiments/generate.py ckpt=real_chair32 sampler=bank n=16",
        extra=f"n=2 format=none {RUN_DIR}",
        writes=("{out}/samples.png", "{out}/samples.npz"),
    ),
    # ---- docs/studying.md
    DocCommand(
        "python experiments/evaluate.py ckpt=... metrics=[distribution,surface]",
        subs={ANY: "ckpt={run}/checkpoints/last.ckpt"},
        extra=f"n=4 {RUN_DIR}",
        writes=("{out}/evaluation.json",),
    ),
    DocCommand(
        "python experiments/evaluate.py ckpt=... metrics=[surface_cd]",
        subs={ANY: "ckpt={run}/checkpoints/last.ckpt"},
        extra=f"n=4 {RUN_DIR}",
        writes=("{out}/evaluation.json",),
    ),
    DocCommand(
        "python experiments/plot_memorisation.py outputs/<run> [outputs/<run> ...]",
        # [...]: more runs, optionally; the test passes two
        subs={"outputs/<run> [outputs/<run> ...]": "{real_run} {real_run}"},
        writes=("{real_run}/*memorisation*.png",),
    ),
    DocCommand(
        "python experiments/train_classifier.py data=chair_airplane",
        extra=f"data.num_shapes=8 data.resolution=16 data.batch_size=4 epochs=1 {RUN_DIR}",
        writes=("{out}/classifier.ckpt",),
    ),
    DocCommand(
        "python experiments/d_features_svm.py ckpt=...",
        subs={ANY: "ckpt={run}/checkpoints/last.ckpt"},
        extra=f"num_shapes=8 categories=[chair,airplane] {RUN_DIR}",
        prints="accuracy",
    ),
    DocCommand(
        "python experiments/invert.py ckpt=real_chair32 target=... space=code",
        subs={"target=...": "target={binvox}"},
        extra=f"{CODE_STEPS} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "python experiments/invert.py ckpt=<latent run>/checkpoints/last.ckpt target=val n=90 space=code",
        subs={"<latent run>": "{latent_run}"},
        extra=f"n=2 {CODE_STEPS} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        "python experiments/interpolate.py ckpt=real_chair32 a=chair_a.mat b=chair_b.mat steps=8 space=code",
        subs={"chair_a.mat": "{mat_a}", "chair_b.mat": "{mat_b}"},
        extra=f"steps=3 {CODE_STEPS} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
    DocCommand(
        'python experiments/arithmetic.py ckpt=real_chair32 expr="a - b + c" a=... b=... c=... space=code',
        subs={"a=...": "a={mat_a}", "b=...": "b={mat_b}", "c=...": "c={mat_c}"},
        extra=f"{CODE_STEPS} {RUN_DIR}",
        writes=("{out}/*.png",),
    ),
]
