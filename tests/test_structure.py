"""The shape of the code base: no import circles among voxgan's modules, one home for the apps' run folders,
one entry convention for the apps."""

import ast
import importlib

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF, REPO
from voxgan.apps import command_line

# The Hydra apps of experiments/ (compare_sweep.py and plot_memorisation.py take argparse options).
APPS = ("generate", "interpolate", "arithmetic", "invert", "tsne", "evaluate", "export", "train_classifier",
        "d_features_svm")
# Circles among training's modules alone are left out until its restructuring lands.


def imported_names(node: ast.AST, package: str) -> list[str]:
    """The dotted names an import statement reaches: ``from a import b`` gives ``a.b`` (a submodule or a
    name in ``a``, told apart by the caller); relative imports are made absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parent, base]).strip(".")
    return [f"{base}.{alias.name}" for alias in node.names]


def module_imports() -> dict[str, set[str]]:
    """voxgan's modules and the voxgan modules each imports, at the top or inside a function."""
    files = {}
    for path in (REPO / "voxgan").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def module_of(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        reached = (imported for node in ast.walk(ast.parse(path.read_text())) for imported in
                   imported_names(node, package))
        graph[name] = {m for m in map(module_of, reached) if m and m != name}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a circle, each sorted."""
    reach = {}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += graph[node]
        reach[start] = seen
    groups = {tuple(sorted(n for n in reach[m] if m in reach[n])) for m in graph if m in reach[m]}
    return sorted(list(group) for group in groups)


def test_no_module_of_voxgan_imports_one_that_imports_it_back() -> None:
    graph = module_imports()
    assert {"voxgan.export.generator", "voxgan.data.prepare", "voxgan.evaluation"} <= set(graph)
    assert "voxgan.data.sources" in graph["voxgan.data.prepare"]  # the walk sees imports
    assert import_circles(graph) == []


def test_the_walk_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c", "e"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert import_circles(graph) == [["a", "b", "c"], ["e", "f"]]


def test_evaluation_does_not_need_the_training_module() -> None:
    assert "voxgan.training.module" not in module_imports()["voxgan.evaluation"]


@pytest.mark.parametrize("app", APPS)
def test_every_app_keeps_its_run_folder_under_outputs_app(app: str) -> None:
    own = yaml.safe_load((CONF / f"{app}.yaml").read_text())
    assert {"hydra": "app"} in own["defaults"] and "hydra" not in own  # the shared block, no copy of it
    importlib.import_module(f"experiments.{app}")  # stores the app's schema
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(app, return_hydra_config=True)
    _, folder, date, time = cfg.hydra.run.dir.split("/")
    assert cfg.hydra.run.dir.startswith("outputs/") and folder == app
    assert len(date.split("-")) == 3 and len(time.split("-")) == 4  # <date>/<H-M-S-microseconds>
    assert cfg.hydra.sweep.dir.startswith(f"outputs/{app}/multirun/")  # each ${now:...} reads the clock anew
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"
    assert cfg.hydra.job.chdir is False


def test_an_app_ends_a_user_error_with_one_line_or_its_traceback_on_request(monkeypatch) -> None:
    def run(cfg: dict) -> int:
        if cfg["n"] < 1:
            raise ValueError(f"n={cfg['n']}: pass a positive number of shapes")
        return cfg["n"]

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert command_line(run, {"n": 3}) == 3
    with pytest.raises(SystemExit) as stopped:
        command_line(run, {"n": 0})
    assert stopped.value.code == "error: n=0: pass a positive number of shapes"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="n=0"):
        command_line(run, {"n": 0})
