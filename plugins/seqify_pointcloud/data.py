"""Point-cloud data: the item type, normalization, the procedural ``shapes`` set and
the ``files`` reader. Nothing here downloads anything.

Normalization (every dataset): each cloud is centred on the centre of its bounding
box and scaled by its largest half-extent, so it lies in the [-1, 1]^3 box and touches
+-1 along its longest axis (aspect ratio kept). Why per shape, and why a box: both
tokenizers quantize a fixed domain (``coords`` bins each axis of [-1, 1]; ``octree``
splits the [-1, 1]^3 root cell), so a per-shape box uses every bin along the longest
axis; and MMD / COV / 1-NNA values change about tenfold with the normalization, so
generated and reference clouds are compared in this same box (as LION and PVD
evaluate PointFlow's protocol). PointFlow's global (dataset mean / std) normalization
would leave shapes of different sizes using different parts of the grid.

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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seqify.data import RowReport
from seqify.errors import DataError
from seqify.protocols import Splits

__all__ = [
    "CLASSES",
    "NORMALIZATION",
    "PointCloudItem",
    "normalize_box",
    "make_shape",
    "shapes_splits",
    "files_splits",
    "read_cloud_file",
    "read_off",
    "BadFile",
    "SUFFIXES",
]

#: the classes of the ``shapes`` dataset, in label order
CLASSES = ("sphere", "box", "cylinder", "cone", "torus", "table", "chair", "airplane")

#: how every cloud is normalized (goes to results.json as Splits.info["normalization"])
NORMALIZATION = (
    "per shape: centred on its bounding-box centre and divided by its largest half-extent, so every "
    "cloud lies in [-1, 1]^3 and touches +-1 along its longest axis (aspect ratio kept); chosen because "
    "both tokenizers quantize the fixed [-1, 1]^3 domain (a per-shape box uses every bin of the longest "
    "axis), and generated and reference clouds are compared in the same box (as LION / PVD evaluate "
    "PointFlow's protocol; absolute MMD values change ~10x with the normalization)"
)

#: file suffixes the ``files`` dataset reads
SUFFIXES = (".npy", ".ply", ".pcd", ".xyz", ".obj", ".off")
_SPLIT_DIRS = ("train", "val", "test")
_SHAPES_VERSION = 1


@dataclass(eq=False)
class PointCloudItem:
    """One point cloud.

    Args:
        points: float32 ``[N, 3]`` (x, y, z), normalized into [-1, 1]^3 by the loaders.
        label: class index (``Splits.info["classes"]`` names it), or None.
        source: where it came from ("shapes/train/12", a file path, "decoded").
    """

    points: np.ndarray
    label: int | None = None
    source: str = ""

    def __repr__(self) -> str:
        return f"PointCloudItem({self.points.shape[0]} points, label={self.label}, source={self.source!r})"


class BadFile(ValueError):
    """A file the reader skips: ``reason`` (and ``row``, a line number when known)."""

    def __init__(self, reason: str, row: int = 0):
        super().__init__(reason)
        self.reason, self.row = reason, row


def normalize_box(points: np.ndarray) -> np.ndarray:
    """Centre on the bounding-box centre, divide by the largest half-extent (see module doc).

    Raises:
        ValueError: no points, non-finite coordinates, or all points identical.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise ValueError(f"expected an [N, 3] array of points with N > 0, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("NaN or infinite coordinates")
    lo, hi = pts.min(0), pts.max(0)
    half = float((hi - lo).max()) / 2
    if not half > 1e-12:
        raise ValueError("degenerate: all points are identical (nothing to normalize)")
    out = (pts - (lo + hi) / 2) / half
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def resample_points(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``points``: a random subset without replacement when there are at
    least ``n``, else all of them plus random repeats (duplicated points)."""
    m = points.shape[0]
    if m == n:
        return points
    if m > n:
        return points[np.sort(rng.choice(m, n, replace=False))]
    extra = rng.choice(m, n - m, replace=True)
    return np.concatenate([points, points[extra]], axis=0)


def _seed_of(*parts: Any) -> int:
    h = hashlib.sha1("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little")


# --------------------------------------------------------------- the shapes dataset


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
                pts[k] = make_shape(int(labels[k]), n_points, _seed_of("shapes", seed, s_id, k), rotation=rotation)
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


# ------------------------------------------------------------------ the files dataset


_OFF_TAG = re.compile(r"^\s*(ST)?(C)?(N)?(4)?(n)?OFF", re.ASCII)


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` and triangles ``[F, 3]`` of an OFF file (polygons fan-triangulated).

    Accepts the header on its own line (``OFF`` then ``V F E``) or fused with the counts
    (``OFF490 518 0``, as in many ModelNet files); ``#`` comments, blank lines and
    extra columns (colours) are skipped.

    Raises:
        BadFile: the reason and the line where the file stops making sense.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadFile("not an ASCII .off file (binary OFF is not supported)") from None
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append((number, line))
    if not lines:
        raise BadFile("empty file")
    number, first = lines[0]
    tag = _OFF_TAG.match(first)
    if tag is None:
        raise BadFile(f"malformed .off header: expected it to start with 'OFF', got {first[:40]!r}", number)
    rest = first[tag.end():].strip()
    at = 1
    if not rest:
        if len(lines) < 2:
            raise BadFile("malformed .off header: no vertex / face counts", number)
        number, rest = lines[1]
        at = 2
    try:
        counts = [int(x) for x in rest.split()]
    except ValueError:
        raise BadFile(f"malformed .off header: counts {rest[:40]!r} are not integers", number) from None
    if len(counts) < 2 or min(counts[:2]) < 0:
        raise BadFile(f"malformed .off header: expected 'vertices faces [edges]', got {rest[:40]!r}", number)
    nv, nf = counts[0], counts[1]
    if len(lines) - at < nv:
        raise BadFile(f"truncated: {len(lines) - at} of {nv} vertex lines", lines[-1][0])
    vertex_lines = lines[at : at + nv]
    if nv == 0:
        raise BadFile("empty: the header declares 0 vertices", number)
    try:
        verts = np.array([ln.split()[:3] for _, ln in vertex_lines], dtype=np.float64)
    except ValueError:
        for number, ln in vertex_lines:
            fields = ln.split()
            try:
                if len(fields) < 3:
                    raise ValueError
                [float(x) for x in fields[:3]]
            except ValueError:
                raise BadFile(f"vertex line {ln[:40]!r} does not hold 3 numbers", number) from None
        raise
    if verts.shape != (nv, 3):
        raise BadFile(f"vertex block has shape {verts.shape}, expected ({nv}, 3)", vertex_lines[0][0] if nv else 0)
    at += nv
    if len(lines) - at < nf:
        raise BadFile(f"truncated: {len(lines) - at} of {nf} face lines", lines[-1][0])
    tris: list[list[int]] = []
    for number, ln in lines[at : at + nf]:
        try:
            fields = [int(x) for x in ln.split()]
        except ValueError:
            # colours after the indices may be floats: read the count, then that many ints
            parts = ln.split()
            try:
                k = int(parts[0])
                fields = [k] + [int(x) for x in parts[1 : 1 + k]]
            except (ValueError, IndexError):
                raise BadFile(f"face line {ln[:40]!r} is not a list of vertex indices", number) from None
        k = fields[0] if fields else 0
        idx = fields[1 : 1 + k]
        if k < 3 or len(idx) != k:
            raise BadFile(f"face line {ln[:40]!r}: expected a count >= 3 and that many indices", number)
        bad = [i for i in idx if i < 0 or i >= nv]
        if bad:
            raise BadFile(f"face refers to vertex {bad[0]} of {nv}", number)
        tris.extend([idx[0], idx[j], idx[j + 1]] for j in range(1, k - 1))
    faces = np.array(tris, dtype=np.int64).reshape(-1, 3)
    return verts, faces


def _sample_mesh(verts: np.ndarray, faces: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` points uniformly by area on a triangle mesh (open3d, seeded), or the
    vertices themselves when there are no faces."""
    if not np.isfinite(verts).all():
        raise BadFile("NaN or infinite vertex coordinates")
    if len(faces) == 0:
        if len(verts) == 0:
            raise BadFile("empty: no vertices")
        return verts
    from seqify_pointcloud.o3d import import_open3d

    o3d = import_open3d()
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    if not float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()) > 0:
        raise BadFile("degenerate mesh: zero surface area")
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(faces.astype(np.int32)))
    o3d.utility.random.seed(seed % (2**31 - 1))
    return np.asarray(mesh.sample_points_uniformly(number_of_points=n).points)


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def _check_ply(path: Path) -> int:
    """The vertex count a PLY header declares, after checking that the file is long
    enough for what the header declares (open3d zero-fills a truncated file and only
    logs a warning, so truncation is caught here).

    Raises:
        BadFile: no PLY header, an unknown property type, or a truncated body.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadFile(f"cannot read: {exc}") from None
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise BadFile("not a PLY file: no 'ply ... end_header' header")
    body_start = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, elements = "", []  # [name, count, min bytes per row]
    for number, line in enumerate(header, 1):
        words = line.split()
        if not words:
            continue
        if words[0] == "format" and len(words) > 1:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            try:
                elements.append([words[1], int(words[2]), 0])
            except ValueError:
                raise BadFile(f"malformed PLY header line {line!r}", number) from None
        elif words[0] == "property" and elements:
            if len(words) >= 5 and words[1] == "list":  # count type, item type: a face has >= 3 items
                sizes = (_PLY_SIZES.get(words[2]), _PLY_SIZES.get(words[3]))
                if None in sizes:
                    raise BadFile(f"unknown PLY property type in {line!r}", number)
                elements[-1][2] += sizes[0] + 3 * sizes[1]
            elif len(words) >= 3:
                size = _PLY_SIZES.get(words[1])
                if size is None:
                    raise BadFile(f"unknown PLY property type in {line!r}", number)
                elements[-1][2] += size
    vertices = next((count for name, count, _ in elements if name == "vertex"), 0)
    body = data[body_start:]
    if fmt == "ascii":
        rows = sum(1 for line in body.splitlines() if line.strip())
        need = sum(count for _, count, _ in elements)
        if rows < need:
            raise BadFile(f"truncated: the header declares {need} rows, the file has {rows}")
    elif fmt.startswith("binary"):
        need = sum(count * row for _, count, row in elements)
        if len(body) < need:
            raise BadFile(f"truncated: the header declares at least {need} bytes of data, the file has {len(body)}")
    else:
        raise BadFile(f"unknown PLY format {fmt!r}")
    return vertices


def read_cloud_file(path: str | Path, n_points: int, seed: int) -> list[np.ndarray]:
    """The raw (not yet normalized or resampled) clouds of one file.

    ``.npy``: an ``[N, >=3]`` array (first three columns) or ``[M, N, >=3]`` (M clouds);
    ``.xyz``: text, first three columns (numpy); ``.ply`` / ``.obj``: a mesh (surface
    sampled with ``n_points`` points) or, without faces, its vertices (open3d);
    ``.pcd``: open3d; ``.off``: :func:`read_off`, then sampled like a mesh.

    Raises:
        BadFile: unreadable, empty, NaN / infinite values, or a wrong shape.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise BadFile(f"cannot read .npy: {type(exc).__name__}: {exc}") from None
        if arr.size == 0:
            raise BadFile(f"empty: array of shape {arr.shape}")
        if arr.ndim == 2 and arr.shape[1] >= 3:
            clouds = [arr[:, :3]]
        elif arr.ndim == 3 and arr.shape[2] >= 3:
            clouds = [a[:, :3] for a in arr]
        else:
            raise BadFile(f"not an [N, 3] (or [M, N, 3]) array: shape {arr.shape}")
        try:
            clouds = [np.asarray(c, dtype=np.float64) for c in clouds]
        except (TypeError, ValueError):
            raise BadFile(f"not numeric: dtype {arr.dtype}") from None
    elif suffix == ".xyz":
        try:
            arr = np.loadtxt(path, usecols=(0, 1, 2), ndmin=2, comments="#")
        except Exception as exc:
            raise BadFile(f"cannot read .xyz: {exc}") from None
        if arr.size == 0:
            raise BadFile("empty: no points")
        clouds = [arr]
    elif suffix == ".off":
        verts, faces = read_off(path)
        clouds = [_sample_mesh(verts, faces, n_points, seed)]
    elif suffix in (".ply", ".obj", ".pcd"):
        from seqify_pointcloud.o3d import import_open3d

        o3d = import_open3d()
        declared = _check_ply(path) if suffix == ".ply" else None
        if declared == 0:
            raise BadFile("empty: the header declares 0 vertices")
        points = None
        if suffix in (".ply", ".obj"):
            mesh = o3d.io.read_triangle_mesh(str(path))
            verts, faces = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
            if declared is not None and 0 < len(verts) < declared:
                raise BadFile(f"truncated: the header declares {declared} vertices, {len(verts)} were read")
            if len(faces):
                points = _sample_mesh(verts, faces.astype(np.int64), n_points, seed)
            elif len(verts):
                points = verts
        if points is None:
            cloud = o3d.io.read_point_cloud(str(path))
            points = np.asarray(cloud.points)
            if declared is not None and len(points) < declared:
                raise BadFile(f"unreadable or truncated: the header declares {declared} vertices, "
                              f"{len(points)} were read")
        if len(points) == 0:
            raise BadFile(f"empty or unreadable {suffix} file (open3d read no points)")
        clouds = [np.asarray(points, dtype=np.float64)]
    else:
        raise BadFile(f"unsupported file type {suffix!r} (one of {', '.join(SUFFIXES)})")
    for c in clouds:
        if c.shape[0] == 0:
            raise BadFile("empty: a cloud with no points")
        if not np.isfinite(c).all():
            raise BadFile(f"NaN or infinite coordinates: in {int((~np.isfinite(c)).any(1).sum())} of {c.shape[0]} points")
    return clouds


def _layout(root: Path, path: Path) -> tuple[str | None, str | None]:
    """(split, class) of a file from the folder layout: the nearest ancestor folder named
    train / val / test is its split and the folder above it its class; without one,
    the folder holding the file (below the root) is its class."""
    parts = path.relative_to(root).parts[:-1]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].lower() in _SPLIT_DIRS:
            return parts[i].lower(), parts[i - 1] if i > 0 else None
    return None, parts[-1] if parts else None


def files_splits(
    root: Path, *, seed: int, n_points: int, limit: int | None, max_val: int, max_test: int,
    report: RowReport, progress: Callable[[int], None] | None = None,
) -> Splits:
    """Read a folder (or one file) of point clouds and meshes into splits.

    Layouts: ShapeNet as PointFlow ships it (``<synset>/{train,val,test}/<id>.npy``,
    15,000 x 3 per shape), ModelNet40 (``<class>/{train,test}/*.off``), or loose files.
    Files under a ``train`` / ``val`` / ``test`` folder keep that split (a layout with
    no validation files gives 5% of its training files, seeded, to validation); other
    files are split with the seed (10% test, 5% validation, at least one each). Each
    split is shuffled with the seed (so the first items of the test split, which the
    metrics compare against, mix the classes); validation and test are capped at
    ``max_val`` / ``max_test`` files, training at ``limit`` good clouds. Each cloud is
    resampled to ``n_points`` (a seeded subset, or repeats when it has fewer) and
    normalized (:func:`normalize_box`). A bad file is reported (path, line or 0,
    reason) and skipped.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"--data {str(root)!r} does not exist")
    if root.is_file():
        files, base = [root], root.parent
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        base = root
    if not files:
        raise DataError(f"{root}: no point-cloud files found (looked for {', '.join(SUFFIXES)}, recursively)")
    layout = {p: _layout(base, p) for p in files}
    class_names = sorted({c for _, c in layout.values() if c is not None})
    label_of = {c: i for i, c in enumerate(class_names)}
    rng = np.random.default_rng(_seed_of("files-split", seed))
    by_split: dict[str, list[Path]] = {s: [] for s in _SPLIT_DIRS}
    loose = []
    for p in files:
        split = layout[p][0]
        (by_split[split] if split else loose).append(p)
    notes = []
    if loose:
        order = [loose[i] for i in rng.permutation(len(loose))]
        n_test = max(1, len(order) // 10) if len(order) >= 3 else 0
        n_val = max(1, len(order) // 20) if len(order) >= 3 else 0
        by_split["test"] += order[:n_test]
        by_split["val"] += order[n_test : n_test + n_val]
        by_split["train"] += order[n_test + n_val :]
        notes.append(f"{len(loose)} files outside train/val/test folders: seeded split 10% test, 5% val, rest train")
    if not by_split["val"] and len(by_split["train"]) >= 2:
        order = [by_split["train"][i] for i in rng.permutation(len(by_split["train"]))]
        n_val = max(1, len(order) // 20)
        by_split["val"], by_split["train"] = order[:n_val], order[n_val:]
        notes.append("no validation files in the layout: 5% of the training files (seeded) became validation")
    caps = {"train": limit, "val": max_val, "test": max_test}
    parts: dict[str, list[PointCloudItem]] = {}
    upsampled = 0
    for split in _SPLIT_DIRS:
        todo = [by_split[split][i] for i in rng.permutation(len(by_split[split]))]
        kept: list[PointCloudItem] = []
        cap = caps[split]
        for p in todo:
            if cap is not None and len(kept) >= cap:
                break
            report.seen()
            file_seed = _seed_of("file", seed, p.relative_to(base).as_posix())
            try:
                clouds = read_cloud_file(p, n_points, file_seed)
                out = []
                for j, cloud in enumerate(clouds):
                    sub = np.random.default_rng(_seed_of(file_seed, j))
                    upsampled += int(cloud.shape[0] < n_points)
                    out.append(normalize_box(resample_points(cloud, n_points, sub)))
            except BadFile as exc:
                report.add(str(p), exc.row, exc.reason)
                continue
            except ValueError as exc:  # normalize_box: degenerate clouds
                report.add(str(p), 0, str(exc))
                continue
            except Exception as exc:  # anything else a reader raises: still one bad file
                report.add(str(p), 0, f"cannot read: {type(exc).__name__}: {exc}")
                continue
            label = label_of.get(layout[p][1]) if layout[p][1] is not None else None
            for j, pts in enumerate(out):
                source = str(p) if len(out) == 1 else f"{p}[{j}]"
                kept.append(PointCloudItem(pts, label, source))
            if progress is not None:
                progress(1)
        parts[split] = kept[:cap] if cap is not None else kept
    for split in ("train", "test"):
        if not parts[split]:
            raise DataError(
                f"{root}: no readable point clouds for the {split} split ({report.skipped} files skipped; "
                f"first reasons: {'; '.join(str(b) for b in report.bad[:3]) or 'none'})"
            )
    summary = report.summary()
    info = {
        "dataset": "files",
        "path": str(root),
        "classes": class_names,
        "n_points": n_points,
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
        "n_test": len(parts["test"]),
        "split": "from the folder layout (train/val/test folders)" + (f"; {'; '.join(notes)}" if notes else ""),
        "caps": {"train": limit, "val": max_val, "test": max_test},
        "resampling": (f"each cloud to {n_points} points: a seeded random subset (e.g. of ShapeNet's 15,000), "
                       "or all points plus random repeats when it has fewer; meshes (.off/.obj/.ply with faces) "
                       f"are sampled uniformly by area with open3d, {n_points} points"),
        "clouds_upsampled_with_repeats": upsampled,
        "normalization": NORMALIZATION,
        "files_found": len(files),
        "files_read": summary["rows_read"],
        "files_skipped": summary["rows_skipped"],
        "skipped_by_reason": summary["skipped_by_reason"],
    }
    return Splits(parts["train"], parts["val"], parts["test"], info)
