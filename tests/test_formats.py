"""Readers and writers: round trips, axis conventions, corrupt inputs, and the shared real files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import trimesh

from voxgan.data.formats import (
    POSES,
    VoxelFileError,
    count_grids,
    load_grids,
    parse_pose,
    read_arrays,
    read_binvox,
    read_mat,
    read_mesh,
    to_canonical,
    voxelize_mesh,
    write_binvox,
)
from voxgan.data.grid import fit_extent, normalize_grid

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VOLUMETRIC = SHARED / "volumetric_data" / "chair" / "30" / "train"
SHAPENET = SHARED / "shapenet_mini"


def shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def blob(resolution: int, seed: int) -> np.ndarray:
    """A random lumpy bool grid: unions of boxes."""
    rng = np.random.default_rng(seed)
    grid = np.zeros((resolution,) * 3, dtype=bool)
    for _ in range(4):
        lo = rng.integers(0, resolution - 4, 3)
        hi = lo + rng.integers(2, resolution // 2, 3)
        grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return grid


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- binvox ---------------------------------------------------------------------------------------


def test_binvox_round_trip_keeps_grid_and_header(tmp_path: Path) -> None:
    grid = blob(40, 0)
    grid[:, :, :] |= np.arange(40)[None, None, :] < 1  # a full slab: runs longer than 255
    path = write_binvox(tmp_path / "a.binvox", grid, translate=(-0.25, 0.5, 1.0), scale=0.75)
    back = read_binvox(path)
    assert np.array_equal(back.grid, grid)
    assert back.translate == (-0.25, 0.5, 1.0)
    assert back.scale == 0.75
    header = b"#binvox 1\ndim 40 40 40\ntranslate -0.25 0.5 1.0\nscale 0.75\ndata\n"
    assert path.read_bytes().startswith(header)


def test_binvox_reads_x_z_y_order_with_y_fastest(tmp_path: Path) -> None:
    # One voxel at x=1, y=2, z=3 of a 4^3 grid: stored index x * 16 + z * 4 + y = 30.
    body = bytes([0, 30, 1, 1, 0, 33])
    (tmp_path / "one.binvox").write_bytes(b"#binvox 1\ndim 4 4 4\ntranslate 0 0 0\nscale 1\ndata\n" + body)
    grid = read_binvox(tmp_path / "one.binvox").grid
    assert grid.sum() == 1 and grid[1, 2, 3]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"#binvox 2\ndim 4 4 4\ndata\n\x00\x40", "not a binvox file"),
        (b"#binvox 1\ndim 4 4 4\ntranslate 0 0 0\nscale 1\ndata\n\x00\x20\x01", "truncated"),
        (b"#binvox 1\ndim 4 4 4\ntranslate 0 0 0\nscale 1\ndata\n\x00\x20\x01\x10", "truncated"),
        (b"#binvox 1\ndim 4 4\ndata\n\x00\x40", "bad header"),
        (b"#binvox 1\ndim 4 4 4\ntranslate 0 0 0\n", "bad header"),
    ],
)
def test_corrupt_binvox_names_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.binvox"
    path.write_bytes(content)
    with pytest.raises(VoxelFileError, match=problem) as caught:
        read_binvox(path)
    assert str(path) in str(caught.value)


# --- .mat -----------------------------------------------------------------------------------------


def test_mat_reads_instance_and_converts_z_up_to_y_up(tmp_path: Path) -> None:
    # A post standing up along the file's z axis, with a foot pointing to the file's -x: its front.
    mat = np.zeros((30, 30, 30), dtype=np.int8)
    mat[15, 15, 3:27] = 1
    mat[4:15, 15, 3] = 1
    scipy.io.savemat(tmp_path / "post_1.mat", {"instance": mat})
    assert np.array_equal(read_mat(tmp_path / "post_1.mat"), mat.astype(bool))
    grid = load_grids(tmp_path / "post_1.mat", 32)[0]
    occupied = np.argwhere(grid)
    spans = np.ptp(occupied, axis=0)
    assert spans[1] == fit_extent(32) - 1  # the post is vertical: y is the longest axis
    foot = occupied[occupied[:, 1] == occupied[:, 1].min()]
    assert foot[:, 2].max() > occupied[:, 2].mean() + 5  # the foot points to +z, the front
    assert np.ptp(foot[:, 0]) <= 1


def test_mat_without_the_key_or_not_a_mat_names_the_file(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "other.mat", {"voxels": np.ones((4, 4, 4))})
    with pytest.raises(VoxelFileError, match=r"no variable 'instance'.*voxels") as caught:
        read_mat(tmp_path / "other.mat")
    assert "other.mat" in str(caught.value)
    (tmp_path / "junk.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(20))
    with pytest.raises(VoxelFileError, match="junk.mat"):
        read_mat(tmp_path / "junk.mat")
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(VoxelFileError, match="empty file"):
        read_mat(tmp_path / "empty.mat")


# --- meshes ---------------------------------------------------------------------------------------


def test_box_mesh_voxelises_solid_and_full_inside() -> None:
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    grid = voxelize_mesh(box, 32)
    occupied = np.argwhere(grid)
    lo, hi = occupied.min(0), occupied.max(0) + 1
    assert hi[0] - lo[0] == fit_extent(32)
    assert grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].all()
    assert grid.sum() == np.prod(hi - lo)


def test_mesh_with_a_hole_still_fills() -> None:
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).subdivide().subdivide().subdivide()
    holed = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)  # one small face missing
    assert not holed.is_watertight
    grid = voxelize_mesh(holed, 32)
    occupied = np.argwhere(grid)
    lo, hi = occupied.min(0), occupied.max(0) + 1
    assert grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].mean() > 0.95


def test_open_cup_stays_hollow() -> None:
    # A box without its top: the inside is open along y, so it must not be filled.
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    keep = box.face_normals[:, 1] < 0.5
    cup = trimesh.Trimesh(box.vertices, box.faces[keep], process=False)
    grid = voxelize_mesh(cup, 32)
    assert not grid[16, 16, 16]
    assert grid[16, 0, 16]


def test_off_counts_on_the_header_line_or_the_next(tmp_path: Path) -> None:
    body = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
    (tmp_path / "one_line.off").write_text("OFF 4 4 0\n" + body)
    (tmp_path / "two_lines.off").write_text("OFF\n4 4 0\n" + body)
    a, b = read_mesh(tmp_path / "one_line.off"), read_mesh(tmp_path / "two_lines.off")
    assert len(a.faces) == len(b.faces) == 4
    assert np.array_equal(a.vertices, b.vertices)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("nan.obj", "v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n", "NaN or infinite"),
        ("nofaces.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
        ("point.obj", "v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n", "degenerate"),
        ("empty.off", "", "empty file"),
    ],
)
def test_bad_meshes_name_the_file(tmp_path: Path, name: str, content: str, problem: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(VoxelFileError, match=problem) as caught:
        read_mesh(tmp_path / name)
    assert name in str(caught.value)


# --- arrays ---------------------------------------------------------------------------------------


def test_arrays_npy_npz_single_and_stacks(tmp_path: Path) -> None:
    stack = np.stack([blob(16, s) for s in range(5)])
    np.save(tmp_path / "one.npy", stack[0].astype(np.uint8))
    np.save(tmp_path / "stack.npy", stack[:, None].astype(np.float32))  # (N, 1, R, R, R) probabilities
    np.savez_compressed(tmp_path / "two.npz", voxels=stack, other=np.zeros(3))
    assert count_grids(tmp_path / "one.npy") == 1
    assert count_grids(tmp_path / "stack.npy") == 5
    assert count_grids(tmp_path / "two.npz", key="voxels") == 5
    assert np.array_equal(read_arrays(tmp_path / "one.npy")[0], stack[0])
    assert np.array_equal(read_arrays(tmp_path / "stack.npy", indices=[3, 1]), stack[[3, 1]])
    assert np.array_equal(read_arrays(tmp_path / "two.npz", key="voxels"), stack)
    with pytest.raises(VoxelFileError, match=r"several arrays.*key"):
        read_arrays(tmp_path / "two.npz")


def test_arrays_h5(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    stack = np.stack([blob(16, s) for s in range(3)])
    with h5py.File(tmp_path / "grids.h5", "w") as f:
        f["data/voxels"] = stack
    assert count_grids(tmp_path / "grids.h5") == 3
    assert np.array_equal(read_arrays(tmp_path / "grids.h5", indices=[2, 0]), stack[[2, 0]])


def test_bad_arrays_name_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(VoxelFileError, match="flat.npy.*not a grid"):
        read_arrays(tmp_path / "flat.npy")
    np.save(tmp_path / "nan.npy", np.full((4, 4, 4), np.nan))
    with pytest.raises(VoxelFileError, match="nan.npy.*NaN"):
        read_arrays(tmp_path / "nan.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "nan.npy").read_bytes()[:100])
    with pytest.raises(VoxelFileError, match="cut.npy.*not a readable"):
        read_arrays(tmp_path / "cut.npy")
    np.save(tmp_path / "zero.npy", np.zeros((4, 4, 4)))
    with pytest.raises(VoxelFileError, match="zero.npy.*empty grid"):
        load_grids(tmp_path / "zero.npy", 16)


# --- poses and normalisation ----------------------------------------------------------------------


def rotation_of(up: str, front: str) -> np.ndarray:
    """The 3x3 matrix ``to_canonical`` applies to index vectors, read off unit steps from a centre."""
    columns = []
    for axis in range(3):
        grid = np.zeros((5, 5, 5), dtype=bool)
        tip = [2, 2, 2]
        tip[axis] += 1
        grid[tuple(tip)] = True
        columns.append(np.argwhere(to_canonical(grid, up, front))[0] - 2)
    return np.stack(columns, axis=1)


def signed_axis(axis: str) -> np.ndarray:
    vector = np.zeros(3, dtype=int)
    vector["xyz".index(axis[1])] = 1 if axis[0] == "+" else -1
    return vector


@pytest.mark.parametrize("pose", [*POSES, "-x+y", "+y-x", "-z+x"])
def test_poses_rotate_up_to_y_and_front_to_z_without_mirroring(pose: str) -> None:
    up, front = parse_pose(pose)
    matrix = rotation_of(up, front)
    assert round(np.linalg.det(matrix)) == 1
    assert np.array_equal(matrix @ signed_axis(up), [0, 1, 0])
    assert np.array_equal(matrix @ signed_axis(front), [0, 0, 1])


def test_bad_pose_is_refused() -> None:
    for pose in ("sideways", "+z+z", "z-y"):
        with pytest.raises(ValueError, match="unknown pose"):
            parse_pose(pose)


def test_normalize_keeps_parts_thinner_than_a_target_voxel() -> None:
    # A 128^3 table: a slab top and four 2-voxel-thin legs; at 32^3 a leg is half a voxel wide.
    grid = np.zeros((128, 128, 128), dtype=bool)
    grid[0:128, 100:104, 0:128] = True
    for x in (0, 126):
        for z in (0, 126):
            grid[x : x + 2, 0:100, z : z + 2] = True
    small = normalize_grid(grid, 32)
    occupied = np.argwhere(small)
    lo = occupied.min(0)
    legs = small[:, lo[1] + 2, :]
    assert legs.sum() == 4


# --- the shared real files ------------------------------------------------------------------------


def check_mat_sample(paths: list[Path]) -> None:
    for path in paths:
        grid = read_mat(path)
        assert grid.shape == (30, 30, 30), path
        assert 0.01 <= grid.mean() <= 0.6, path


def test_real_mat_sample_reads() -> None:
    paths = sorted(shared(VOLUMETRIC).glob("*.mat"))
    assert len(paths) == 10668
    check_mat_sample(random.Random(0).sample(paths, 300))


@pytest.mark.slow
def test_real_mat_all_read() -> None:
    check_mat_sample(sorted(shared(VOLUMETRIC).glob("*.mat")))


def test_real_binvox_and_off_read() -> None:
    binvox = sorted(shared(SHAPENET).glob("*/*/models/*.binvox"))
    assert len(binvox) == 140
    for path in binvox:
        grid = read_binvox(path).grid
        assert grid.shape == (128, 128, 128), path
        # ShapeNet's binvox sit at the grid's origin with their longest side spanning the grid.
        assert np.argwhere(grid).max() >= 126, path
        assert 0.003 <= grid.mean() <= 0.6, path  # rifles fill 0.35% of their 128^3 grid
    for path in sorted(shared(SHARED / "modelnet_off").glob("*/*.off")):
        mesh = read_mesh(path)
        assert len(mesh.faces) > 10_000, path
        grid = load_grids(path, 32)[0]
        assert 0.01 <= grid.mean() <= 0.6, path


def test_real_obj_voxelisation_agrees_with_solid_binvox() -> None:
    objs = sorted(shared(SHAPENET).glob("*/*/models/*.obj"))
    assert objs
    scores = [iou(*(load_grids(p, 32)[0] for p in (obj, obj.with_suffix(".solid.binvox")))) for obj in objs]
    print(f"\nIoU at 32^3 of voxgan's OBJ voxelisation vs ShapeNet's solid.binvox over {len(objs)} shapes: "
          f"mean {np.mean(scores):.3f}, min {np.min(scores):.3f}")
    assert np.mean(scores) > 0.55
    assert np.min(scores) > 0.35


def chair_pose_checks(grid: np.ndarray) -> tuple[bool, bool, bool]:
    """(mirror-symmetric across x, backrest at the rear (-z), backrest above the seat): y up, +z front.

    Each wrong pose of a chair fails at least one of them on most chairs.
    """
    occupied = np.argwhere(grid)
    lo, hi = occupied.min(0), occupied.max(0)
    seat = lo[1] + np.argmax(grid.sum(axis=(0, 2))[lo[1] : hi[1] + 1])  # the widest horizontal layer
    back = lo[2] + np.argmax(grid.sum(axis=(0, 1))[lo[2] : hi[2] + 1])  # the widest vertical layer
    symmetric = iou(grid, grid[::-1]) > max(iou(grid, grid[:, ::-1]), iou(grid, grid[:, :, ::-1]))
    above, below = occupied[occupied[:, 1] > seat + 1], occupied[occupied[:, 1] < seat - 1]
    back_above = len(above) > 0 and len(below) > 0 and above[:, 2].mean() < below[:, 2].mean()
    return symmetric, back - lo[2] <= 0.35 * (hi[2] - lo[2]), back_above


def test_real_chairs_come_out_y_up_facing_plus_z() -> None:
    mats = sorted(shared(VOLUMETRIC).glob("*_1.mat"))[:60]
    binvox = sorted(shared(SHAPENET).glob("chair/*/models/model_normalized.solid.binvox"))
    for paths in (mats, binvox):
        passed = np.array([chair_pose_checks(load_grids(p, 32)[0]) for p in paths]).mean(axis=0)
        assert passed.min() > 0.75, passed


def test_error_summary_is_one_line_even_without_a_message() -> None:
    from voxgan.io import error_summary

    assert error_summary(ValueError("bad header\nmore detail")) == "ValueError: bad header"
    assert error_summary(EOFError()) == "EOFError: EOFError()"
    assert len(error_summary(RuntimeError("x" * 500))) == len("RuntimeError: ") + 200
