"""Readers of point-cloud and mesh files (``.npy``, ``.ply``, ``.pcd``, ``.xyz``, ``.obj``,
``.off``): each returns raw clouds or raises :class:`BadFile` with the reason."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["SUFFIXES", "BadFile", "read_off", "read_cloud_file"]

#: file suffixes the ``files`` dataset reads
SUFFIXES = (".npy", ".ply", ".pcd", ".xyz", ".obj", ".off")


class BadFile(ValueError):
    """A file the reader skips: ``reason`` (and ``row``, a line number when known)."""

    def __init__(self, reason: str, row: int = 0):
        super().__init__(reason)
        self.reason, self.row = reason, row


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
