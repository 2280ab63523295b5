"""Interactive 3D viewers of voxel shapes in one self-contained HTML file, and binary glTF meshes.

A viewer shows one or more frames (a row of samples, or the steps of an interpolation); each frame
holds shapes drawn side by side as marching-cubes meshes, one 3D scene per shape, rotated and
zoomed by mouse. Several frames get a slider and a play button. plotly's JS bundle is inlined, so
the file opens without a network, unlike a W&B Object3D that shows only after a sync.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from voxgan.io import atomic_write
from voxgan.render import AZIMUTH_DEG, DEFAULT_COLOR, ELEVATION_DEG, grid_to_mesh, occupancy_mask, single_grid

# Browsers keep about 16 WebGL contexts per page and plotly opens one per 3D scene: past that the
# oldest scenes go blank, so a frame holds at most this many shapes.
MAX_SHAPES = 16
# Square cells, so that the camera frames a shape the same in every layout; a row is at least ROW_PX wide.
CELL_PX = 300
ROW_PX = 640
MESH_COLOR = "rgb({}, {}, {})".format(*DEFAULT_COLOR)
# Flat shading with a strong directional light from above and in front, so facets read as a surface.
LIGHTING = {"ambient": 0.45, "diffuse": 0.75, "specular": 0.05, "roughness": 0.9, "fresnel": 0.05}
LIGHT_POSITION = {"x": 3e4, "y": -7e4, "z": 1e5}
# Grid axes (x, y up, z front) to plotly's (x, y, z up), a rotation: plotly turns the scene about its z
# axis when dragged, whatever the camera's up vector says.
GRID_TO_PLOTLY = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float32)
# Pans and rotates of one scene are copied to the others when the mouse is released.
LINK_CAMERAS_JS = """
var gd = document.getElementById('{plot_id}');
var syncing = false;
gd.on('plotly_relayout', function (event) {
  if (syncing) { return; }
  var moved = Object.keys(event).filter(function (k) { return /^scene\\d*\\.camera$/.test(k); });
  if (moved.length !== 1) { return; }
  var update = {};
  Object.keys(gd._fullLayout).forEach(function (key) {
    if (/^scene\\d*$/.test(key) && key + '.camera' !== moved[0]) {
      update[key + '.camera'] = event[moved[0]];
    }
  });
  syncing = true;
  Plotly.relayout(gd, update).then(function () { syncing = false; }, function () { syncing = false; });
});
"""


class ViewerError(ValueError):
    """Frames, labels or titles that do not fit together into a viewer."""


def _camera() -> dict:
    """The render module's 3/4 view (front-left, above) as a plotly scene camera, in plotly axes."""
    az, el = math.radians(AZIMUTH_DEG), math.radians(ELEVATION_DEG)
    toward = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    eye = 1.8 * toward @ GRID_TO_PLOTLY.T
    return {"eye": dict(zip("xyz", eye.tolist())), "up": {"x": 0, "y": 0, "z": 1},
            "center": {"x": 0, "y": 0, "z": 0}}


def _mesh_trace(grid: np.ndarray, threshold: float, smooth: int) -> tuple[go.Mesh3d, bool]:
    """A flat-shaded Mesh3d of the shape's surface, and whether it has one (an empty grid has none).

    Vertices are float32 and face indices the smallest unsigned type that holds them: plotly writes
    numpy arrays as typed binary, so this sets the file size.
    """
    style = {"color": MESH_COLOR, "flatshading": True, "lighting": LIGHTING,
             "lightposition": LIGHT_POSITION, "hoverinfo": "skip", "showscale": False}
    if not occupancy_mask(grid, threshold).any():
        empty = np.zeros(0, dtype=np.float32)
        # Hidden, not just empty: plotly's WebGL code fails on a mesh without vertices.
        return go.Mesh3d(x=empty, y=empty, z=empty, visible=False, **style), False
    mesh = grid_to_mesh(grid, threshold=threshold, smooth=smooth)
    vertices = np.asarray(mesh.vertices, dtype=np.float32) @ GRID_TO_PLOTLY.T
    index = np.uint16 if len(vertices) <= np.iinfo(np.uint16).max else np.uint32
    faces = np.asarray(mesh.faces).astype(index)
    return go.Mesh3d(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], i=faces[:, 0], j=faces[:, 1],
                     k=faces[:, 2], visible=True, **style), True


def _checked(path: Path, frames: Sequence[Sequence[Any]], labels: Sequence[Sequence[str]] | None,
             titles: Sequence[str] | None) -> list[list[np.ndarray]]:
    """The frames as lists of (R, R, R) arrays, after checking that frames, labels and titles agree."""
    if len(frames) == 0:
        raise ViewerError(f"write_viewer({path}): no frames given; pass a list of frames, each a list of "
                          "grids")
    count = len(frames[0])
    if count == 0 or any(len(frame) != count for frame in frames):
        sizes = sorted({len(frame) for frame in frames})
        raise ViewerError(f"write_viewer({path}): frames hold {sizes} shapes; every frame must hold the same "
                          "number of grids, at least one")
    if count > MAX_SHAPES:
        raise ViewerError(f"write_viewer({path}): {count} shapes per frame, but a page shows at most "
                          f"{MAX_SHAPES} 3D scenes (a WebGL context each); pass fewer or write several "
                          "viewers")
    if labels is not None and (len(labels) != len(frames) or any(len(row) != count for row in labels)):
        raise ViewerError(f"write_viewer({path}): labels must have the frames' nesting, one per shape per "
                          f"frame ({len(frames)} frames of {count}); got {[len(row) for row in labels]}")
    if titles is not None and len(titles) != len(frames):
        raise ViewerError(f"write_viewer({path}): {len(titles)} titles for {len(frames)} frames; "
                          "give one title per frame")
    try:
        return [[single_grid(grid) for grid in frame] for frame in frames]
    except ValueError as error:
        raise ViewerError(f"write_viewer({path}): {error}") from error


def _cell_text(label: str | None, has_surface: bool, threshold: float) -> str:
    """A shape's caption: its label, and a note when there is no surface to draw."""
    note = "" if has_surface else f"empty: no voxel >= {threshold:g}"
    return " · ".join(text for text in (label, note) if text)


def _captions(fig: go.Figure, texts: Sequence[str]) -> list[go.layout.Annotation]:
    """One caption above each scene, always one per shape so that frames can replace them all."""
    captions = []
    for index, text in enumerate(texts):
        domain = fig.layout[f"scene{index + 1 if index else ''}"].domain
        captions.append(go.layout.Annotation(
            text=text, x=sum(domain.x) / 2, y=domain.y[1], xref="paper", yref="paper", xanchor="center",
            yanchor="bottom", showarrow=False, font={"size": 14}))
    return captions


def _player(frame_names: Sequence[str], titles: Sequence[str]) -> dict:
    """A slider over the frames and a play/pause button: layout entries ``sliders`` and ``updatemenus``."""
    def step(names: list[str | None], duration: int) -> list:
        return [names, {"mode": "immediate", "frame": {"duration": duration, "redraw": True},
                        "transition": {"duration": 0}, "fromcurrent": True}]

    steps = [{"label": title, "method": "animate", "args": step([name], 0)}
             for name, title in zip(frame_names, titles)]
    buttons = [{"label": "Play", "method": "animate", "args": step(list(frame_names), 400)},
               {"label": "Pause", "method": "animate", "args": step([None], 0)}]
    return {
        "sliders": [{"steps": steps, "active": 0, "x": 0, "len": 1, "y": 0, "yanchor": "top",
                     "currentvalue": {"prefix": "frame: "}, "pad": {"t": 10, "l": 140}}],
        "updatemenus": [{"type": "buttons", "buttons": buttons, "direction": "left", "showactive": False,
                         "x": 0.0, "y": 0, "xanchor": "left", "yanchor": "top", "pad": {"t": 10}}],
    }


def _figure(path: Path, frames: Sequence[Sequence[Any]], labels: Sequence[Sequence[str]] | None,
            titles: Sequence[str] | None, title: str, threshold: float, smooth: int) -> go.Figure:
    """The plotly figure of :func:`write_viewer`: one scene per shape, one animation frame per frame."""
    grids = _checked(path, frames, labels, titles)
    count = len(grids[0])
    ncols = min(count, math.ceil(math.sqrt(count)))
    nrows = math.ceil(count / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, specs=[[{"type": "scene"}] * ncols] * nrows,
                        horizontal_spacing=0.01, vertical_spacing=0.06 / nrows)
    fig.update_scenes(
        xaxis={"range": [-0.5, 0.5], "visible": False}, yaxis={"range": [-0.5, 0.5], "visible": False},
        zaxis={"range": [-0.5, 0.5], "visible": False}, aspectmode="cube", camera=_camera(),
        dragmode="turntable")
    titles = list(titles) if titles is not None else [str(k + 1) for k in range(len(grids))]
    animation = []
    for number, frame in enumerate(grids):
        traces, texts = [], []
        for index, grid in enumerate(frame):
            trace, has_surface = _mesh_trace(grid, threshold, smooth)
            trace.scene = f"scene{index + 1 if index else ''}"
            traces.append(trace)
            texts.append(_cell_text(str(labels[number][index]) if labels is not None else None, has_surface,
                                    threshold))
        captions = _captions(fig, texts)
        if number == 0:
            fig.add_traces(traces)
            fig.update_layout(annotations=captions)
        if len(grids) > 1:
            animation.append(go.Frame(name=str(number), data=traces, traces=list(range(count)),
                                      layout={"annotations": captions}))
    slider_room = 90 if len(grids) > 1 else 0
    cell = max(CELL_PX, ROW_PX // ncols)
    fig.update_layout(title={"text": title, "x": 0.5}, template="none", showlegend=False,
                      width=ncols * cell + 20, height=nrows * cell + 60 + slider_room,
                      margin={"l": 10, "r": 10, "t": 60, "b": 10 + slider_room})
    if animation:
        fig.frames = animation
        fig.update_layout(**_player([frame.name for frame in animation], titles))
    return fig


def write_viewer(path: str | os.PathLike, frames: Sequence[Sequence[Any]],
                 labels: Sequence[Sequence[str]] | None = None, titles: Sequence[str] | None = None,
                 title: str = "voxel shapes", threshold: float = 0.5, smooth: int = 0) -> Path:
    """Write a self-contained interactive HTML viewer of voxel shapes at ``path`` (atomically).

    ``frames``: a list of frames, each a list of at most 16 occupancy grids ((R, R, R) float or bool,
    numpy or torch) shown side by side; more than one frame adds a slider and a play button.
    ``labels`` (one string per shape per frame) caption the shapes, ``titles`` (one per frame) name
    the slider's steps. Float grids are occupied where >= ``threshold``; ``smooth`` Taubin iterations
    soften the marching-cubes surfaces. Cameras follow the last scene rotated when the mouse is released.
    """
    fig = _figure(Path(path), frames, labels, titles, title, threshold, smooth)
    html = pio.to_html(fig, include_plotlyjs=True, full_html=True, auto_play=False,
                       post_script=LINK_CAMERAS_JS, config={"displaylogo": False})
    return atomic_write(path, lambda file: file.write(html.encode("utf-8")))


def glb_bytes(grid: Any, threshold: float = 0.5, smooth: int = 0) -> bytes:
    """The grid's marching-cubes surface as binary glTF (.glb), e.g. for ``wandb.Object3D``."""
    buffer = io.BytesIO()
    grid_to_mesh(grid, threshold=threshold, smooth=smooth).export(buffer, file_type="glb")
    return buffer.getvalue()


def write_glb(path: str | os.PathLike, grid: Any, threshold: float = 0.5, smooth: int = 0) -> Path:
    """Write :func:`glb_bytes` to ``path`` atomically.

    ``wandb.Object3D`` needs a .glb path: given a file object it writes the content as text.
    """
    data = glb_bytes(grid, threshold, smooth)
    return atomic_write(path, lambda file: file.write(data))

