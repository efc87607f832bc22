"""The procedural ``shapes`` dataset (open3d primitives and composites); nothing is downloaded.

The ``shapes`` dataset: :data:`CLASSES` (5 open3d primitives and 3 composites) with
random proportions, y up (ShapeNet's convention), a random rotation about the
vertical axis (``rotation="yaw"``; "free": uniform over SO(3); "none"), surface points
sampled uniformly by area with open3d's ``sample_points_uniformly`` (seeded with
``open3d.utility.random.seed`` right before each shape), and then normalized. Item
``k`` of a split has class ``k % 8`` and its own seed derived from (seed, split, k),
so the splits are balanced and a smaller ``limit`` gives a prefix of a larger one.
Splits are cached under :func:`seqify.io.cache_dir`.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from seqify.protocols import Splits

from seqify_pointcloud.items import NORMALIZATION, PointCloudItem, normalize_box, seed_of

__all__ = ["CLASSES", "make_shape", "shapes_splits"]

#: the classes of the ``shapes`` dataset, in label order
CLASSES = ("sphere", "box", "cylinder", "cone", "torus", "table", "chair", "airplane")
_SHAPES_VERSION = 1


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


_Z_TO_Y = _rot_x(-np.pi / 2)  # open3d's cylinders, cones and tori have their axis on z


def _box(o3d: Any, centre: tuple[float, float, float], size: tuple[float, float, float]) -> Any:
    sx, sy, sz = size
    mesh = o3d.geometry.TriangleMesh.create_box(sx, sy, sz)
    return mesh.translate((centre[0] - sx / 2, centre[1] - sy / 2, centre[2] - sz / 2))


def _shape_mesh(o3d: Any, cls: str, rng: np.random.Generator) -> Any:
    """An open3d mesh of class ``cls`` with random proportions, y up (before rotation)."""
    u = rng.uniform
    TM = o3d.geometry.TriangleMesh
    if cls == "sphere":  # an ellipsoid: a sphere scaled per axis
        mesh = TM.create_sphere(1.0, resolution=20)
        v = np.asarray(mesh.vertices) * np.array([u(0.5, 1.0), u(0.5, 1.0), u(0.5, 1.0)])
        mesh.vertices = o3d.utility.Vector3dVector(v)
        return mesh
    if cls == "box":
        return _box(o3d, (0, 0, 0), (u(0.3, 1.0), u(0.3, 1.0), u(0.3, 1.0)))
    if cls == "cylinder":
        return TM.create_cylinder(u(0.2, 0.6), u(0.5, 2.0), resolution=24).rotate(_Z_TO_Y, center=(0, 0, 0))
    if cls == "cone":
        return TM.create_cone(u(0.3, 0.8), u(0.5, 1.5), resolution=24).rotate(_Z_TO_Y, center=(0, 0, 0))
    if cls == "torus":
        return TM.create_torus(u(0.6, 1.0), u(0.1, 0.35), 24, 12).rotate(_Z_TO_Y, center=(0, 0, 0))
    if cls == "table":  # a top on four legs
        w, d, t, h, leg = u(1.0, 2.0), u(0.6, 1.2), u(0.04, 0.1), u(0.6, 1.0), u(0.05, 0.12)
        mesh = _box(o3d, (0, h - t / 2, 0), (w, t, d))
        inset = u(0.0, 0.1)
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * (w / 2 - leg / 2 - inset), sz * (d / 2 - leg / 2 - inset)
                mesh += _box(o3d, (x, (h - t) / 2, z), (leg, h - t, leg))
        return mesh
    if cls == "chair":  # a seat on four legs and a back
        w, d, t, h, leg = u(0.8, 1.1), u(0.8, 1.1), u(0.06, 0.12), u(0.8, 1.0), u(0.06, 0.1)
        back_h = u(0.7, 1.2)
        mesh = _box(o3d, (0, h - t / 2, 0), (w, t, d))
        mesh += _box(o3d, (0, h + back_h / 2, -d / 2 + t / 2), (w, back_h, t))
        for sx in (-1, 1):
            for sz in (-1, 1):
                mesh += _box(o3d, (sx * (w - leg) / 2, (h - t) / 2, sz * (d - leg) / 2), (leg, h - t, leg))
        return mesh
    if cls == "airplane":  # a fuselage along x, wings along z, a tailplane and a fin
        length, radius = u(2.0, 3.0), u(0.1, 0.2)
        span, chord = u(1.8, 2.8), u(0.3, 0.6)
        body = TM.create_cylinder(radius, length, resolution=16).rotate(_rot_y(np.pi / 2), center=(0, 0, 0))
        nose = TM.create_cone(radius, u(0.2, 0.5), resolution=16).rotate(_rot_y(np.pi / 2), center=(0, 0, 0))
        mesh = body + nose.translate((length / 2, 0, 0))
        mesh += _box(o3d, (u(-0.1, 0.3), 0, 0), (chord, 0.04, span))
        tail_x = -length / 2 + chord * 0.4
        mesh += _box(o3d, (tail_x, 0, 0), (chord * 0.6, 0.03, span * u(0.3, 0.45)))
        fin_h = u(0.3, 0.6)
        mesh += _box(o3d, (tail_x, radius + fin_h / 2, 0), (chord * 0.6, fin_h, 0.03))
        return mesh
    raise ValueError(f"unknown shape class {cls!r} (one of {', '.join(CLASSES)})")


def _rotation(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "none":
        return np.eye(3)
    if kind == "yaw":
        return _rot_y(rng.uniform(0, 2 * np.pi))
    if kind == "free":  # uniform over SO(3): QR of a Gaussian matrix, signs fixed
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        return q
    raise ValueError(f"unknown rotation {kind!r} (yaw, free or none)")


def make_shape(label: int, n_points: int, seed: int, *, rotation: str = "yaw") -> np.ndarray:
    """One normalized surface cloud of class ``CLASSES[label]`` from ``seed`` (float32 [n, 3])."""
    from seqify_pointcloud.o3d import import_open3d

    o3d = import_open3d()
    rng = np.random.default_rng(seed)
    mesh = _shape_mesh(o3d, CLASSES[label], rng)
    mesh.rotate(_rotation(rotation, rng), center=(0, 0, 0))
    o3d.utility.random.seed(int(rng.integers(2**31 - 1)))
    cloud = mesh.sample_points_uniformly(number_of_points=n_points)
    return normalize_box(np.asarray(cloud.points))


def shapes_splits(
    *, seed: int, n_points: int, n_train: int, n_val: int, n_test: int, rotation: str = "yaw",
    cache: bool = True,
) -> Splits:
    """The ``shapes`` dataset (see the module docstring), cached on disk."""
    from seqify.io import atomic_write_bytes, cache_dir

    sizes = {"train": n_train, "val": n_val, "test": n_test}
    key = hashlib.sha1(
        f"{_SHAPES_VERSION}|{seed}|{n_points}|{n_train}|{n_val}|{n_test}|{rotation}|{CLASSES}".encode()
    ).hexdigest()[:20]
    path = cache_dir() / "pointcloud" / f"shapes-{key}.npz"
    arrays: dict[str, np.ndarray] | None = None
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            if any(arrays[f"{s}_points"].shape != (n, n_points, 3) for s, n in sizes.items()):
                arrays = None
        except Exception:  # a damaged cache entry is made again, never trusted
            arrays = None
    if arrays is None:
        arrays = {}
        for s_id, (split, n) in enumerate(sizes.items()):
            labels = np.arange(n) % len(CLASSES)
            pts = np.zeros((n, n_points, 3), dtype=np.float32)
            for k in range(n):
                pts[k] = make_shape(int(labels[k]), n_points, seed_of("shapes", seed, s_id, k), rotation=rotation)
            arrays[f"{split}_points"], arrays[f"{split}_labels"] = pts, labels.astype(np.int64)
        if cache:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(path, buf.getvalue())
    parts = {
        split: [
            PointCloudItem(arrays[f"{split}_points"][k], int(arrays[f"{split}_labels"][k]), f"shapes/{split}/{k}")
            for k in range(n)
        ]
        for split, n in sizes.items()
    }
    info = {
        "dataset": "shapes",
        "classes": list(CLASSES),
        "n_points": n_points,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "split": "generated: item k of a split has class k % 8 and its own seed from (seed, split, k)",
        "rotation": {
            "yaw": "upright (y up, as ShapeNet), random rotation about the vertical y axis",
            "free": "uniformly random 3-D rotation",
            "none": "upright, unrotated",
        }[rotation],
        "sampling": "open3d TriangleMesh.sample_points_uniformly (area-weighted, seeded per shape)",
        "normalization": NORMALIZATION,
        "cache": str(path) if cache else None,
    }
    return Splits(parts["train"], parts["val"], parts["test"], info)
