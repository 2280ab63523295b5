"""Voxels to images, sample grids and animations; marching-cubes mesh export.

Voxels are drawn as shaded cubes in an orthographic 3/4 view from the shape's front-left and
above (``+z`` front, ``y`` up on the image). Only the faces that can be seen are rasterised: a
voxel face is drawn when its neighbour on that side is empty and it points towards the camera
(``+x``, ``+y`` and ``+z`` faces). All faces are projected to screen parallelograms at once
and resolved by a per-pixel z-buffer, so rendering costs numpy array passes, not Python loops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFont
from skimage import measure

from voxgan.io import atomic_write

BACKGROUND = (244, 244, 241)
DEFAULT_COLOR = (98, 142, 196)
AZIMUTH_DEG = 40.0
ELEVATION_DEG = 28.0
# Brightness of each visible face orientation, by grid axis: top (y) brightest, front (z), side (x).
FACE_LIGHT = np.array([0.62, 1.3, 0.9])
# How much a face corner darkens per occupied neighbour around it (0..3), a cheap ambient occlusion.
AO_STEP = 0.13
# Brightness lost from the nearest to the farthest point of the grid's cube.
DEPTH_FALLOFF = 0.2
# Empty border kept around the projected cube, as a fraction of the image side.
BORDER = 0.04
# Pixels rendered per output pixel along each side; averaging them anti-aliases edges.
SUPERSAMPLE = 2
# Side in pixels of one shape's picture in grids, strips and side-by-side comparisons: at 128 px a
# chair's legs and slats of a 32^3 grid blur into a few pixels each; 160 px shows them.
CELL = 160
MESH_FORMATS = ("obj", "ply", "glb", "stl")


def _to_numpy(array: Any) -> np.ndarray:
    """A numpy view of a numpy array, a sequence, or a torch tensor on any device."""
    if hasattr(array, "detach"):
        array = array.detach().cpu()
        if str(array.dtype) == "torch.bfloat16":  # numpy has no bfloat16; float32 holds every bf16 value
            array = array.float()
    return np.asarray(array)


def single_grid(grid: Any) -> np.ndarray:
    """(R, R, R) or (1, R, R, R) array or tensor -> (R, R, R) numpy array."""
    values = _to_numpy(grid)
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 3:
        raise ValueError(f"expected a voxel grid of shape (R, R, R) or (1, R, R, R), got {values.shape}")
    return values


def occupancy_mask(grid: Any, threshold: float) -> np.ndarray:
    """Bool occupancy of a bool grid, or of a float grid at ``threshold``."""
    values = single_grid(grid)
    return values if values.dtype == bool else values >= threshold


def _view_axes() -> np.ndarray:
    """Rows: the camera's right, up and towards-camera directions in grid coordinates."""
    az, el = math.radians(AZIMUTH_DEG), math.radians(ELEVATION_DEG)
    toward = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    right = np.array([math.cos(az), 0.0, -math.sin(az)])
    return np.stack([right, np.cross(toward, right), toward])


def _projection(shape: tuple[int, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Affine map from voxel-corner coordinates to (pixel x, pixel y, depth): matrix and offset.

    The scale fits the projection of the whole grid box in the image, whatever is occupied, so
    every shape of a resolution is drawn at the same scale and always fits.
    """
    axes = _view_axes()
    corners = np.array(np.meshgrid(*[[0, n] for n in shape], indexing="ij")).reshape(3, -1).T
    screen = corners @ axes[:2].T
    scale = size * (1 - 2 * BORDER) / (screen.max(0) - screen.min(0)).max()
    # Image rows grow downwards while the camera's up grows upwards.
    matrix = np.diag([scale, -scale, 1.0]) @ axes
    centre = np.asarray(shape, dtype=float) / 2
    offset = np.array([size / 2, size / 2, 0.0]) - matrix @ centre
    return matrix, offset


def _visible_faces(padded: np.ndarray, axis: int) -> np.ndarray:
    """(n, 3) indices (unpadded) of voxels whose face on the + side of ``axis`` is exposed."""
    inner = (slice(1, -1),) * 3
    ahead = list(inner)
    ahead[axis] = slice(2, None)
    return np.argwhere(padded[inner] & ~padded[tuple(ahead)])


def _corner_occlusion(padded: np.ndarray, voxels: np.ndarray, axis: int) -> np.ndarray:
    """(n, 2, 2) occupied-neighbour counts (0..3) at each corner of the exposed faces.

    Looks at the empty layer in front of each face: a corner next to two occupied edge cells is
    fully occluded (3), otherwise count the edge and diagonal cells, as in voxel-game lighting.
    """
    b, c = [k for k in range(3) if k != axis]
    front = voxels + 1
    front[:, axis] += 1
    counts = np.empty((len(voxels), 2, 2), dtype=np.int8)
    for i, db in enumerate((-1, 1)):
        for j, dc in enumerate((-1, 1)):
            side_b, side_c, diagonal = (front.copy() for _ in range(3))
            side_b[:, b] += db
            side_c[:, c] += dc
            diagonal[:, b] += db
            diagonal[:, c] += dc
            sb, sc, sd = (padded[tuple(p.T)] for p in (side_b, side_c, diagonal))
            counts[:, i, j] = np.where(sb & sc, 3, sb.astype(np.int8) + sc + sd)
    return counts


def _rasterise(voxels: np.ndarray, axis: int, matrix: np.ndarray, offset: np.ndarray, size: int) -> dict:
    """Pixels covered by the exposed ``+axis`` faces of ``voxels``: flat pixel index, depth,
    face index and the (u, v) position inside the face (0..1 along its two edges)."""
    b, c = [k for k in range(3) if k != axis]
    origin = (voxels + np.eye(3, dtype=int)[axis]) @ matrix.T + offset
    edges = matrix[:, [b, c]]
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) @ edges[:2].T
    low, high = corners.min(0), corners.max(0)
    # The same window of candidate pixels, shifted per face, holds every face of this orientation.
    span = np.floor(high - low).astype(int) + 1
    start = np.ceil(origin[:, :2] + low - 0.5).astype(int)
    window = np.stack(np.meshgrid(np.arange(span[0]), np.arange(span[1]), indexing="ij")).reshape(2, -1)
    # (u, v) is affine in the pixel position: a per-face term plus a per-window-pixel term.
    to_uv = np.linalg.inv(edges[:2])
    u, v = (to_uv @ (start + 0.5 - origin[:, :2]).T)[:, :, None] + (to_uv @ window)[:, None, :]
    # Closed intervals: a pixel centre exactly on a shared edge is never dropped by both faces.
    eps = 1e-6
    face, cell = np.nonzero((u > -eps) & (u < 1 + eps) & (v > -eps) & (v < 1 + eps))
    px, py = start[face, 0] + window[0, cell], start[face, 1] + window[1, cell]
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    face, cell, px, py = face[inside], cell[inside], px[inside], py[inside]
    u, v = np.clip(u[face, cell], 0, 1), np.clip(v[face, cell], 0, 1)
    depth = origin[face, 2] + u * edges[2, 0] + v * edges[2, 1]
    return {"pixel": py * size + px, "depth": depth, "face": face, "u": u, "v": v}


def _nearest(pixel: np.ndarray, depth: np.ndarray, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer: for each covered pixel, the index of its fragment nearest to the camera."""
    # Depth quantised to 2^20 levels and the fragment index packed into one int64 key make the
    # z-buffer a single unbuffered maximum, with ties broken deterministically.
    levels = np.round((depth - depth.min()) / max(np.ptp(depth), 1e-9) * (2**20 - 1)).astype(np.int64)
    keys = levels * len(depth) + np.arange(len(depth))
    zbuffer = np.full(n_pixels, -1, dtype=np.int64)
    np.maximum.at(zbuffer, pixel, keys)
    covered = np.flatnonzero(zbuffer >= 0)
    return covered, zbuffer[covered] % len(depth)


def _surface(padded: np.ndarray, matrix: np.ndarray, offset: np.ndarray,
             size: int) -> tuple[dict, np.ndarray]:
    """Fragments of all exposed camera-facing faces, and each face's brightness at its 4 corners.

    The camera sees the + side of every axis, so those are the only faces worth drawing.
    """
    fragments, corner_light, n_faces = [], [], 0
    for axis in range(3):
        voxels = _visible_faces(padded, axis)
        fragment = _rasterise(voxels, axis, matrix, offset, size)
        fragment["face"] += n_faces
        n_faces += len(voxels)
        fragments.append(fragment)
        corner_light.append(FACE_LIGHT[axis] * (1 - AO_STEP * _corner_occlusion(padded, voxels, axis)))
    merged = {key: np.concatenate([f[key] for f in fragments]) for key in fragments[0]}
    return merged, np.concatenate(corner_light)


def _brightness(fragments: dict, corner_light: np.ndarray, depth_range: float) -> np.ndarray:
    """Brightness of each fragment: its face's corner values blended bilinearly (soft shadows in
    creases), dimmed with depth."""
    u, v, corner = fragments["u"], fragments["v"], corner_light[fragments["face"]]
    light = ((1 - u) * (1 - v) * corner[:, 0, 0] + u * (1 - v) * corner[:, 1, 0]
             + (1 - u) * v * corner[:, 0, 1] + u * v * corner[:, 1, 1])
    # Depth is 0 at the grid centre (see _projection) and the grid box spans depth_range, so the
    # dimming depends on where a voxel is in the grid, not on the shape's extent.
    nearness = fragments["depth"] / depth_range + 0.5
    return light * (1 - DEPTH_FALLOFF * (1 - nearness))


def render_voxels(grid: np.ndarray, size: int = CELL, threshold: float = 0.5,
                  color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Shaded 3/4-view render of a voxel grid ((R, R, R) or (1, R, R, R)) as a (size, size, 3)
    uint8 image; a float grid is occupied where >= ``threshold``, a bool grid as it is."""
    occupied = occupancy_mask(grid, threshold)
    hires = size * SUPERSAMPLE
    matrix, offset = _projection(occupied.shape, hires)
    fragments, corner_light = _surface(np.pad(occupied, 1), matrix, offset, hires)
    image = np.empty((hires * hires, 3), dtype=np.float32)
    image[:] = BACKGROUND
    if len(fragments["pixel"]):
        covered, nearest = _nearest(fragments["pixel"], fragments["depth"], hires * hires)
        visible = {key: values[nearest] for key, values in fragments.items()}
        depth_range = float(np.abs(matrix[2]) @ np.asarray(occupied.shape))
        rgb = np.asarray(DEFAULT_COLOR if color is None else color, dtype=np.float32)
        image[covered] = np.clip(_brightness(visible, corner_light, depth_range)[:, None] * rgb, 0, 255)
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.round(image).astype(np.uint8)


def _grid_list(grids: Any) -> list[np.ndarray]:
    """(N, R, R, R) or (N, 1, R, R, R) array/tensor, or a sequence of grids -> list of grids."""
    if not hasattr(grids, "ndim"):
        return [_to_numpy(g) for g in grids]
    batch = _to_numpy(grids)
    if batch.ndim == 5 and batch.shape[1] == 1:
        batch = batch[:, 0]
    if batch.ndim != 4:
        raise ValueError(f"expected grids of shape (N, R, R, R) or (N, 1, R, R, R), got shape {batch.shape}")
    return list(batch)


def _label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at a size readable in a cell of ``size`` pixels."""
    return ImageFont.load_default(size=max(10, size // 11))


def _band_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    """Height of the label strip under a cell: one line of text plus a small margin."""
    _, top, _, bottom = font.getbbox("Ag")
    return int(bottom - top) + 6


def fit_label(text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
              ) -> tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont]:
    """``text`` and a font that fit in ``width`` pixels: a smaller font first (down to 9 px), then
    the text shortened in the middle with an ellipsis, so its start and end both stay readable."""
    room = width - 4
    if font.getlength(text) <= room:
        return text, font
    size = getattr(font, "size", None)
    while size is not None and size > 9:
        size -= 1
        font = ImageFont.load_default(size=size)
        if font.getlength(text) <= room:
            return text, font
    keep = len(text) - 1
    while keep > 1:
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2:]
        if font.getlength(f"{head}…{tail}") <= room:
            return f"{head}…{tail}", font
        keep -= 1
    return "…", font


def _label_band(text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    """A background-coloured strip with ``text`` centred on it, shrunk or shortened to fit."""
    band = Image.new("RGB", (width, _band_height(font)), BACKGROUND)
    draw = ImageDraw.Draw(band)
    top = 3 - font.getbbox("Ag")[1]
    text, font = fit_label(text, width, font)
    left = max(2.0, (width - draw.textlength(text, font=font)) / 2)
    draw.text((left, top), text, fill=(40, 40, 40), font=font)
    return band


def _check_length(name: str, values: Sequence | None, count: int) -> None:
    """One label or colour per grid, or none at all."""
    if values is not None and len(values) != count:
        raise ValueError(f"render_grid got {len(values)} {name} for {count} grids; give one per grid")


def render_grid(grids: np.ndarray | Sequence[np.ndarray], ncols: int | None = None, size: int = CELL,
                labels: Sequence[str] | None = None,
                colors: Sequence[tuple[int, int, int]] | None = None) -> Image.Image:
    """Renders of several grids laid out row by row, ``ncols`` (default ceil(sqrt(N))) per row,
    each with its label written under it when ``labels`` are given."""
    items = _grid_list(grids)
    if not items:
        raise ValueError("render_grid got no grids to render")
    _check_length("labels", labels, len(items))
    _check_length("colors", colors, len(items))
    ncols = ncols or math.ceil(math.sqrt(len(items)))
    nrows = math.ceil(len(items) / ncols)
    font = _label_font(size) if labels is not None else None
    band_height = _band_height(font) if font else 0
    sheet = Image.new("RGB", (ncols * size, nrows * (size + band_height)), BACKGROUND)
    for index, grid in enumerate(items):
        x, y = index % ncols * size, index // ncols * (size + band_height)
        color = colors[index] if colors else None
        sheet.paste(Image.fromarray(render_voxels(grid, size, color=color)), (x, y))
        if font:
            sheet.paste(_label_band(str(labels[index]), size, font), (x, y + size))
    return sheet


def hstack_frames(images: Sequence[Image.Image]) -> Image.Image:
    """Images side by side in one strip (top-aligned on the background colour), e.g. interpolation frames."""
    if not images:
        raise ValueError("hstack_frames got no images to place side by side")
    strip = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), BACKGROUND)
    x = 0
    for im in images:
        strip.paste(im.convert("RGB"), (x, 0))
        x += im.width
    return strip


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as a PNG at ``path`` atomically, creating parent folders."""
    return atomic_write(path, lambda file: image.save(file, format="PNG"))


def _shared_palette(frames: Sequence[Image.Image]) -> Image.Image:
    """A 255-colour palette image fitted to all frames at once, so colours do not flicker between frames."""
    width, height = frames[0].size
    atlas = Image.new("RGB", (width, height * len(frames)))
    for i, frame in enumerate(frames):
        atlas.paste(frame, (0, i * height))
    return atlas.quantize(colors=255, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)


def _gif_frames(frames: Sequence[Image.Image]) -> list[Image.Image]:
    """The frames as palette images over one shared palette, each frame kept distinct.

    PIL's GIF writer merges a frame identical to the previous one into it, losing a frame. In a
    run of identical frames every other one points its first pixel at palette entry 255, a twin
    of that pixel's colour: the indices differ, so the frame is kept, and it looks the same.
    """
    rgb = [frame.convert("RGB") for frame in frames]
    if len({frame.size for frame in rgb}) != 1:
        raise ValueError(f"save_gif needs frames of one size, got sizes {sorted({f.size for f in rgb})}")
    shared = _shared_palette(rgb)
    out: list[Image.Image] = []
    twinned = False
    for i, frame in enumerate(rgb):
        indexed = frame.quantize(palette=shared, dither=Image.Dither.NONE)
        palette = (indexed.getpalette() + [0] * 768)[:768]
        first = indexed.getpixel((0, 0))
        palette[765:768] = palette[3 * first : 3 * first + 3]
        indexed.putpalette(palette)
        twinned = i > 0 and not twinned and frame.tobytes() == rgb[i - 1].tobytes()
        if twinned:
            indexed.putpixel((0, 0), 255)
        out.append(indexed)
    return out


def save_gif(frames: Sequence[Image.Image], path: str | os.PathLike, duration_ms: int = 150,
             loop: int = 0) -> Path:
    """Write ``frames`` as an animated GIF (``loop=0``: forever) atomically, keeping every frame."""
    if not frames:
        raise ValueError(f"save_gif got no frames to write to {path}")
    first, *rest = _gif_frames(frames)
    return atomic_write(path, lambda file: first.save(
        file, format="GIF", save_all=True, append_images=rest, duration=duration_ms, loop=loop,
        optimize=False, disposal=1))


# How far above the level grid_to_mesh lifts occupied values that sit at (or just above) it.
LEVEL_LIFT = 1e-3


def grid_to_mesh(grid: np.ndarray, threshold: float = 0.5, smooth: int = 0) -> trimesh.Trimesh:
    """Closed marching-cubes surface of the occupancy at ``threshold``, the whole grid spanning
    [-0.5, 0.5]^3 in grid axes (x, y up, z front); ``smooth`` Taubin iterations keep the volume."""
    values = single_grid(grid)
    level = 0.5 if values.dtype == bool else threshold
    occupied = occupancy_mask(values, level)
    if not occupied.any():
        raise ValueError(f"grid_to_mesh: the grid has no occupied voxel (value >= {level}); nothing to mesh")
    values = values.astype(np.float32)
    # Marching cubes puts the surface where values cross the level, so a voxel exactly at the level
    # (bf16 sigmoid outputs of 0.5) would get none although it is occupied. Lifting occupied values
    # just above the level encloses exactly the voxels occupancy_mask counts (as a voxel a hair above
    # the level is enclosed today) and changes no other value.
    lift = np.float32(level) + np.float32(LEVEL_LIFT * max(1.0, abs(level)))
    values = np.where(occupied, np.maximum(values, lift), values)
    # One empty voxel all around closes the surface where the shape touches the grid's border.
    padded = np.pad(values, 1, constant_values=0.0 if level > 0 else level - 1.0)
    # "ascent": values grow into the shape, which orients the faces outwards (positive volume).
    vertices, faces, _, _ = measure.marching_cubes(
        padded, level=level, gradient_direction="ascent", allow_degenerate=False)
    shape = np.asarray(values.shape, dtype=float)
    # Padded index k is the centre of voxel k - 1, which sits at k - 0.5 in voxel-corner units.
    vertices = (vertices - 0.5 - shape / 2) / shape.max()
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    if smooth:
        trimesh.smoothing.filter_taubin(mesh, iterations=smooth)
    return mesh


def save_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike, file_format: str | None = None) -> Path:
    """Write ``mesh`` atomically as obj, ply, glb or stl, chosen by ``file_format`` or the suffix."""
    fmt = (file_format or Path(path).suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"cannot save a mesh to {path}: unknown format {fmt!r}; "
                         f"use one of {', '.join(MESH_FORMATS)} (as the file suffix or file_format)")
    data = mesh.export(file_type=fmt)
    return atomic_write(path, lambda file: file.write(data.encode() if isinstance(data, str) else data))
