"""Tests of voxgan.render: voxel renders, sample sheets, GIFs and mesh export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from voxgan.render import (
    BACKGROUND,
    CELL,
    grid_to_mesh,
    hstack_frames,
    occupancy_mask,
    render_grid,
    render_voxels,
    save_gif,
    save_mesh,
    save_png,
)


def _ball(resolution: int, radius: float) -> np.ndarray:
    centre = (resolution - 1) / 2
    x, y, z = np.mgrid[:resolution, :resolution, :resolution] - centre
    return x**2 + y**2 + z**2 <= radius**2


def _single_voxel(resolution: int, index: tuple[int, int, int]) -> np.ndarray:
    grid = np.zeros((resolution,) * 3, dtype=bool)
    grid[index] = True
    return grid


def _foreground(image: np.ndarray) -> np.ndarray:
    """(H, W) mask of pixels that differ from the background."""
    return np.any(image != np.array(BACKGROUND, dtype=np.uint8), axis=-1)


def _centroid(image: np.ndarray) -> np.ndarray:
    """(row, column) centre of the non-background pixels."""
    return np.argwhere(_foreground(image)).mean(0)


def test_render_shape_dtype_and_inputs():
    probabilities = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    image = render_voxels(probabilities, size=64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    # A float grid is its occupancy at the threshold; a (1, R, R, R) tensor reads as its grid.
    np.testing.assert_array_equal(image, render_voxels(probabilities >= 0.5, size=64))
    np.testing.assert_array_equal(image, render_voxels(torch.from_numpy(probabilities)[None], size=64))
    assert not np.array_equal(image, render_voxels(probabilities, size=64, threshold=0.9))
    with pytest.raises(ValueError, match=r"\(R, R, R\)"):
        render_voxels(np.zeros((4, 4)))


def test_empty_grid_is_background_only():
    image = render_voxels(np.zeros((32, 32, 32), dtype=bool), size=48)
    assert not _foreground(image).any()


def test_single_voxel_lands_where_the_axes_say():
    high, low = (render_voxels(_single_voxel(16, (8, y, 8)), size=96) for y in (13, 2))
    front, back = (render_voxels(_single_voxel(16, (8, 8, z)), size=96) for z in (13, 2))
    left, right = (render_voxels(_single_voxel(16, (x, 8, 8)), size=96) for x in (13, 2))
    assert _centroid(high)[0] < _centroid(low)[0] - 20  # y is up on the image
    # Seen from the front-left: the front (+z) comes towards the viewer's lower left, +x to the right.
    assert _centroid(front)[1] < _centroid(back)[1] - 10 and _centroid(front)[0] > _centroid(back)[0]
    assert _centroid(left)[1] > _centroid(right)[1] + 10
    # Depth cue: the same voxel is darker further from the camera (compare the shaded side faces).
    darkest = [image[_foreground(image)].astype(int).sum(-1).min() for image in (front, back)]
    assert darkest[0] > darkest[1] + 8


def test_solid_cube_shows_top_front_and_side_shades():
    size = 128
    image = render_voxels(np.ones((8, 8, 8), dtype=bool), size=size).astype(int)
    centre = size // 2
    top = image[centre - size // 5, centre]
    front = image[centre + size // 10, centre - size // 7]
    side = image[centre + size // 10, centre + size // 7]
    for a, b in ((top, front), (top, side), (front, side)):
        assert np.abs(a - b).sum() > 30
    assert top.sum() > front.sum() and top.sum() > side.sum()


def test_occupied_neighbours_darken_the_floor_around_them():
    floor = np.zeros((16, 16, 16), dtype=bool)
    floor[2:14, 2, 2:14] = True
    post = np.zeros_like(floor)
    post[8, 3:5, 8] = True
    darkening = (render_voxels(floor, 96).astype(int) - render_voxels(floor | post, 96)).sum(-1)
    # Below the post's lowest image row the post hides nothing: only its occlusion shadow differs.
    lowest = np.flatnonzero(_foreground(render_voxels(post, 96)).any(1)).max()
    assert (darkening[lowest + 1 :] > 20).sum() >= 3 and darkening[lowest + 1 :].min() >= 0


def test_whole_grid_fits_inside_the_image():
    image = render_voxels(np.ones((32, 32, 32), dtype=bool), size=64)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert (border == np.array(BACKGROUND, dtype=np.uint8)).all()
    assert _foreground(image).mean() > 0.4


def test_one_voxel_thick_leg_stays_visible():
    grid = np.zeros((64, 64, 64), dtype=bool)
    grid[32, 4:40, 32] = True
    image = render_voxels(grid, size=128)
    darkness = np.abs(image.astype(int) - np.array(BACKGROUND)).sum(-1)
    rows_with_leg = np.flatnonzero(darkness.max(1) > 60)
    # 36 voxels of a 64-grid drawn in 128 px span about 30 rows or more.
    assert len(rows_with_leg) >= 28
    assert np.all(np.diff(rows_with_leg) == 1)  # one unbroken stroke


def test_render_grid_layout_and_cells():
    grids = torch.from_numpy(np.stack([_ball(16, 3 + i) for i in range(5)]))[:, None]
    sheet = render_grid(grids, size=40)
    assert sheet.size == (3 * 40, 2 * 40)  # ceil(sqrt(5)) columns
    assert render_grid(grids, ncols=5, size=40).size == (5 * 40, 40)
    cells = np.asarray(sheet)
    np.testing.assert_array_equal(cells[:40, 40:80], render_voxels(grids[1], size=40))
    assert not _foreground(cells[40:, 80:]).any()  # the sixth cell is empty


def test_render_grid_labels_and_colors():
    grids = [_ball(16, 5), _ball(16, 6)]
    blank = render_grid(grids, size=64, labels=["", ""])
    labelled = render_grid(grids, size=64, labels=["chair", "t=0.50"])
    assert labelled.size == blank.size and labelled.height > 64
    diff = np.any(np.asarray(blank) != np.asarray(labelled), axis=-1)
    assert diff[64:].sum() > 20 and not diff[:64].any()  # text only in the band under the cells
    red = np.asarray(render_grid(grids, size=64, colors=[(220, 40, 40), (220, 40, 40)]))
    pixels = red[_foreground(red)].astype(int)
    assert (pixels[:, 0] > pixels[:, 2]).mean() > 0.9
    with pytest.raises(ValueError, match="labels"):
        render_grid(grids, labels=["only one"])


def test_long_labels_shrink_then_shorten_to_fit_their_cell():
    from voxgan.render import _label_font, fit_label

    font = _label_font(128)
    assert fit_label("chair 1.00", 128, font) == ("chair 1.00", font)  # short labels are untouched
    text, smaller = fit_label("a = attr:chair.base:swivel", 128, font)
    assert text == "a = attr:chair.base:swivel" and smaller.size < font.size
    assert smaller.getlength(text) <= 124
    text, tiny = fit_label("4d0898c7cac1199a4b0853084d4042f7/models/model_normalized.solid.binvox", 128, font)
    assert "…" in text and text.startswith("4d08") and text.endswith("binvox")
    assert tiny.getlength(text) <= 124


def test_hstack_frames_size():
    frames = [Image.new("RGB", (30, 20), "red"), Image.new("RGB", (10, 25), "blue")]
    strip = hstack_frames(frames)
    assert strip.size == (40, 25)
    assert strip.getpixel((35, 5)) == (0, 0, 255)


def test_save_png_is_atomic_and_reads_back(tmp_path):
    image = render_grid([_ball(16, 5)], size=32)
    path = save_png(image, tmp_path / "deep" / "er" / "sample.png")
    assert path.exists() and list(path.parent.iterdir()) == [path]  # no temporary file left
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(image))


def test_save_gif_keeps_every_frame(tmp_path):
    a, b = (render_grid([_ball(16, r)], size=48) for r in (4, 7))
    frames = [a, a, b, b, b, a]
    path = save_gif(frames, tmp_path / "anim" / "walk.gif", duration_ms=120)
    gif = Image.open(path)
    assert gif.n_frames == len(frames)
    for index, frame in enumerate(frames):
        gif.seek(index)
        assert gif.info["duration"] == 120
        error = np.abs(np.asarray(gif.convert("RGB")).astype(int) - np.asarray(frame))
        assert error.max() <= 12
    assert list(path.parent.iterdir()) == [path]


def test_grid_to_mesh_sphere_is_closed_and_in_unit_cube():
    radius, resolution = 12, 32
    mesh = grid_to_mesh(_ball(resolution, radius))
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert np.all(mesh.bounds >= -0.5) and np.all(mesh.bounds <= 0.5)
    np.testing.assert_allclose(mesh.bounds, [[-0.375] * 3, [0.375] * 3], atol=0.02)
    sphere_volume = 4 / 3 * np.pi * (radius / resolution) ** 3
    assert mesh.volume == pytest.approx(sphere_volume, rel=0.05)
    smooth = grid_to_mesh(torch.from_numpy(_ball(resolution, radius))[None], smooth=5)
    assert smooth.is_watertight and not np.allclose(smooth.vertices, mesh.vertices)
    assert smooth.volume == pytest.approx(mesh.volume, rel=0.05)


def test_grid_to_mesh_axes_and_full_extent():
    full = grid_to_mesh(np.ones((8, 8, 8), dtype=bool))
    np.testing.assert_allclose(full.bounds, [[-0.5] * 3, [0.5] * 3], atol=1e-6)
    corner = grid_to_mesh(_single_voxel(8, (7, 0, 0)))
    assert corner.centroid[0] > 0.3 and corner.centroid[1] < -0.3 and corner.centroid[2] < -0.3
    with pytest.raises(ValueError, match="no occupied voxel"):
        grid_to_mesh(np.zeros((8, 8, 8)))


def test_grid_to_mesh_encloses_voxels_exactly_at_the_threshold():
    """Occupied means ``>= threshold`` for the mesh as for images and metrics: a grid whose maximum is
    the threshold (bf16 sigmoid outputs of exactly 0.5) meshes every such voxel instead of raising."""
    resolution = 8
    grid = np.zeros((resolution,) * 3, dtype=np.float32)
    grid[2:5, 3:5, 3:6] = 0.5
    grid[6, 6, 1] = 0.5
    centres = (np.argwhere(occupancy_mask(grid, 0.5)) + 0.5 - resolution / 2) / resolution
    for values in (grid, torch.from_numpy(grid).to(torch.bfloat16)[None]):
        mesh = grid_to_mesh(values, threshold=0.5)
        assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 2
        assert np.all(mesh.bounds[0] <= centres.min(axis=0) + 1e-3)
        assert np.all(mesh.bounds[1] >= centres.max(axis=0) - 1e-3)
        assert render_voxels(values, size=32).std() > 0  # the picture shows the same voxels
    # Just below the threshold nothing is occupied, for the mesh as for the picture.
    below = np.nextafter(grid, np.float32(0))
    assert not occupancy_mask(below, 0.5).any()
    with pytest.raises(ValueError, match="no occupied voxel"):
        grid_to_mesh(below, threshold=0.5)


@pytest.mark.parametrize("file_format", ["obj", "ply", "glb", "stl"])
def test_save_mesh_round_trips(tmp_path, file_format):
    mesh = grid_to_mesh(_ball(16, 5))
    path = save_mesh(mesh, tmp_path / "meshes" / f"ball.{file_format}")
    loaded = trimesh.load(path)
    np.testing.assert_allclose(loaded.bounds, mesh.bounds, atol=1e-4)
    explicit = save_mesh(mesh, tmp_path / "ball.bin", file_format=file_format)
    np.testing.assert_allclose(trimesh.load(explicit, file_type=file_format).bounds, mesh.bounds, atol=1e-4)


def test_save_mesh_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="obj, ply, glb, stl"):
        save_mesh(grid_to_mesh(_ball(8, 2)), tmp_path / "ball.fbx")
    assert not list(tmp_path.iterdir())


def test_shapes_are_drawn_at_a_readable_size_by_default():
    """Grids, strips and comparisons draw each shape at >= 160 px: at 128 a 32^3 chair's slats blur."""
    grid = np.zeros((32, 32, 32), dtype=bool)
    grid[4:28, 4:6, 4:28] = True
    assert render_voxels(grid).shape[:2] == (CELL, CELL)
    assert CELL >= 160
    sheet = render_grid([grid, grid, grid], ncols=3)
    assert sheet.size == (3 * CELL, CELL)
