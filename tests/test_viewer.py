"""Tests of voxgan.viewer: the HTML viewer read back as plotly's own JSON, in a real headless browser,
and glTF meshes read back with trimesh."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from voxgan.render import grid_to_mesh
from voxgan.viewer import MAX_SHAPES, ViewerError, glb_bytes, write_glb, write_viewer

R = 16


def _ball(radius: float = 5.0) -> np.ndarray:
    x, y, z = np.mgrid[:R, :R, :R] - (R - 1) / 2
    return x**2 + y**2 + z**2 <= radius**2


def _pole() -> np.ndarray:
    """A bar 4 voxels thick and 14 tall along the grid's y (up) axis, as probabilities."""
    grid = np.zeros((R, R, R), dtype=np.float32)
    grid[6:10, 1:15, 6:10] = 0.9
    return grid


def _empty() -> np.ndarray:
    return np.zeros((R, R, R), dtype=np.float32)


def _plotly_call(html: str, function: str) -> list:
    """The JSON arguments after the div id of the page's ``Plotly.<function>('<id>', ...)`` call."""
    match = re.search(rf"Plotly\.{function}\(\s*['\"][^'\"]+['\"],\s*", html)
    if match is None:
        return []
    decoder, position, values = json.JSONDecoder(), match.end(), []
    while html[position] != ")":
        value, position = decoder.raw_decode(html, position)
        values.append(value)
        position = re.compile(r"\s*,?\s*").match(html, position).end()
    return values


def _array(values: dict | list) -> np.ndarray:
    """A plotly array: a plain JSON list or a base64 typed array ({"dtype": "f4", "bdata": ...})."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def _read(path: Path) -> tuple[str, list, dict, list]:
    html = path.read_text()
    data, layout, *_ = _plotly_call(html, "newPlot")
    frames = _plotly_call(html, "addFrames")
    return html, data, layout, frames[0] if frames else []


def test_single_frame_is_self_contained_with_one_mesh_per_shape(tmp_path: Path) -> None:
    grids = [_ball(), _pole(), _ball(3.0)]
    path = write_viewer(tmp_path / "out" / "samples.html", [grids], labels=[["chair", "airplane", "chair"]],
                        title="three shapes")
    html, data, layout, frames = _read(path)
    assert not re.search(r"<script[^>]*\ssrc=", html), "the page must not load scripts from elsewhere"
    assert re.search(r"plotly\.js v\d", html) and len(html) > 3_000_000, "plotly's JS bundle is inlined"
    assert [trace["type"] for trace in data] == ["mesh3d"] * 3
    assert [trace["scene"] for trace in data] == ["scene", "scene2", "scene3"]
    assert all(trace["flatshading"] for trace in data)
    for trace, grid in zip(data, grids):
        assert len(_array(trace["x"])) == len(grid_to_mesh(grid).vertices)
        assert len(_array(trace["i"])) == len(grid_to_mesh(grid).faces)
    assert frames == [] and "sliders" not in layout and "updatemenus" not in layout
    assert [a["text"] for a in layout["annotations"]] == ["chair", "airplane", "chair"]
    assert layout["title"]["text"] == "three shapes"
    assert [p.name for p in path.parent.iterdir()] == ["samples.html"], "no temporary file is left behind"


def test_grid_up_axis_is_the_scenes_vertical_axis(tmp_path: Path) -> None:
    """The pole stands along the grid's y; plotly turns scenes about z, so y must become z."""
    _, data, layout, _ = _read(write_viewer(tmp_path / "pole.html", [[_pole()]]))
    extent = {axis: np.ptp(_array(data[0][axis])) for axis in "xyz"}
    assert extent["z"] == pytest.approx(14 / R, abs=1.5 / R)
    assert extent["x"] == pytest.approx(4 / R, abs=1.5 / R)
    assert extent["y"] == pytest.approx(4 / R, abs=1.5 / R)
    camera = layout["scene"]["camera"]
    assert camera["up"] == {"x": 0, "y": 0, "z": 1} and camera["eye"]["z"] > 0


def test_frames_get_a_slider_and_their_own_labels(tmp_path: Path) -> None:
    frames_in = [[_ball(), _pole()], [_pole(), _ball(3.0)], [_ball(4.0), _ball(2.0)]]
    labels = [["a0", "b0"], ["a1", "b1"], ["a2", "b2"]]
    path = write_viewer(tmp_path / "interp.html", frames_in, labels=labels, titles=["t=0", "t=0.5", "t=1"])
    _, data, layout, frames = _read(path)
    assert len(data) == 2
    assert len(frames) == 3
    for frame, grids, texts in zip(frames, frames_in, labels):
        assert [trace["type"] for trace in frame["data"]] == ["mesh3d", "mesh3d"]
        assert [len(_array(t["x"])) for t in frame["data"]] == [len(grid_to_mesh(g).vertices) for g in grids]
        assert [a["text"] for a in frame["layout"]["annotations"]] == texts
    steps = layout["sliders"][0]["steps"]
    assert [step["label"] for step in steps] == ["t=0", "t=0.5", "t=1"]
    assert [step["args"][0] for step in steps] == [[frame["name"]] for frame in frames]
    assert [button["label"] for button in layout["updatemenus"][0]["buttons"]] == ["Play", "Pause"]


def test_empty_grid_shows_an_empty_scene_with_a_note(tmp_path: Path) -> None:
    path = write_viewer(tmp_path / "empty.html", [[_empty(), _ball()]], labels=[["chair", "chair"]])
    _, data, layout, _ = _read(path)
    assert data[0]["visible"] is False and len(_array(data[0]["x"])) == 0
    assert data[1]["visible"] is True
    texts = [a["text"] for a in layout["annotations"]]
    assert texts[0].startswith("chair") and "empty" in texts[0]
    assert texts[1] == "chair"


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        ([], {}, "no frames"),
        ([[_ball()], [_ball(), _ball()]], {}, "same number"),
        ([[_ball()] * (MAX_SHAPES + 1)], {}, "at most 16"),
        ([[_ball(), _ball()]], {"labels": [["chair"]]}, "labels"),
        ([[_ball()], [_ball()]], {"titles": ["t=0"]}, "one title per frame"),
        ([[np.zeros((4, 4))]], {}, "shape"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, frames: list, kwargs: dict, message: str) -> None:
    target = tmp_path / "bad.html"
    with pytest.raises(ViewerError, match=message) as error:
        write_viewer(target, frames, **kwargs)
    assert str(target) in str(error.value)
    assert not target.exists()


def test_glb_round_trips_through_trimesh(tmp_path: Path) -> None:
    expected = grid_to_mesh(_pole())
    mesh = trimesh.load(io.BytesIO(glb_bytes(_pole())), file_type="glb", force="mesh")
    assert len(mesh.vertices) == len(expected.vertices)
    assert len(mesh.faces) == len(expected.faces)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(expected.volume, rel=1e-4)

    path = write_glb(tmp_path / "pole.glb", _pole())
    assert path.read_bytes()[:4] == b"glTF"
    wandb = pytest.importorskip("wandb")
    assert wandb.Object3D(str(path))._path.endswith(".glb")


def test_glb_of_an_empty_grid_says_so() -> None:
    with pytest.raises(ValueError, match="no occupied voxel"):
        glb_bytes(_empty())


def _browser():
    """A headless Chromium driven by selenium with software WebGL, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(browser, script: str, timeout: float = 30.0):
    """Poll ``script`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (value := browser.execute_script(script)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page did not reach: {script}")
        time.sleep(0.2)
    return value


def _errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def _mesh_pixels(png: bytes) -> tuple[int, float]:
    """Distinct colours of a screenshot, and the fraction of its pixels in the mesh's blue."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    blue = (pixels[:, 2] > pixels[:, 0] + 40) & (pixels[:, 2] > pixels[:, 1] + 15)
    return len(np.unique(pixels, axis=0)), float(blue.mean())


GRAPH = "document.querySelector('.js-plotly-plot')"


def test_viewer_draws_in_a_headless_browser(tmp_path: Path) -> None:
    """The real page in Chromium: no console errors, shapes drawn in the mesh colour, the slider moves
    to a frame with an empty grid, and rotating one scene turns the others."""
    path = write_viewer(tmp_path / "view.html", [[_ball(), _pole()], [_empty(), _ball(3.0)]],
                        labels=[["ball", "pole"], ["nothing", "small"]], titles=["first", "second"])
    browser = _browser()
    try:
        browser.get(path.as_uri())
        _wait(browser, f"var g = {GRAPH}; return g && g._fullLayout && "
                       "document.querySelectorAll('.gl-container canvas').length === 2")
        time.sleep(1.0)
        colours, blue = _mesh_pixels(browser.get_screenshot_as_png())
        assert colours > 50 and blue > 0.01, (colours, blue)
        assert browser.execute_script("return document.querySelectorAll('.slider-container').length") == 1
        assert browser.execute_script(f"return {GRAPH}._transitionData._frames.length") == 2

        browser.execute_script(f"var g = {GRAPH}; window.moved = false; var args = g.layout.sliders[0]"
                               ".steps[1].args; Plotly.animate(g, args[0], args[1]).then(function () "
                               "{ window.moved = true; });")
        _wait(browser, "return window.moved")
        texts = browser.execute_script(f"return {GRAPH}.layout.annotations.map(a => a.text)")
        assert texts[0].startswith("nothing") and "empty" in texts[0] and texts[1] == "small"

        browser.execute_script(f"Plotly.relayout({GRAPH}, {{'scene.camera': {{eye: {{x: 0, y: -2, z: 0.5}}, "
                               "up: {x: 0, y: 0, z: 1}, center: {x: 0, y: 0, z: 0}}});")
        eye = _wait(browser, f"var c = {GRAPH}.layout.scene2.camera; return c.eye.y === -2 && c.eye")
        assert eye == {"x": 0, "y": -2, "z": 0.5}
        assert _errors(browser) == []
    finally:
        browser.quit()
