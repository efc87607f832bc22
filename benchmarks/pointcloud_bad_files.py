"""A folder of point-cloud files, some of them broken, for `seqify bench --dataset files`.

Writes good clouds (.npy, .ply, .xyz, .off meshes, one with ModelNet's fused header
`OFF<n> <m> 0`) made from the procedural shapes, and broken ones: a truncated .ply, an
empty .npy, a malformed .off, a .npy holding NaNs, a text file that is no cloud. The
run must report each broken file with its path and reason and keep the rest:

    python benchmarks/pointcloud_bad_files.py --out runs/pc-files --seed 0
    seqify bench --modality pointcloud --dataset files --data runs/pc-files --tokenizer coords \
        --orderer raster --budget smoke --out runs/pc-files-bench
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from seqify_pointcloud.shapes import make_shape


def write_ply(path: Path, pts: np.ndarray) -> None:
    head = (f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\nproperty float x\nproperty float y\n"
            "property float z\nend_header\n")
    path.write_text(head + "\n".join(" ".join(f"{v:.5f}" for v in p) for p in pts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/pc-files")
    parser.add_argument("--n", type=int, default=24, help="good clouds of each format")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.n):
        pts = make_shape(i % 8, 256, seed=args.seed * 1000 + i).astype(np.float32)
        np.save(out / f"good_{i:03d}.npy", pts)
        write_ply(out / f"good_{i:03d}.ply", pts)
        np.savetxt(out / f"good_{i:03d}.xyz", pts, fmt="%.5f")
    # a tetrahedron mesh with ModelNet's fused header, and one with a proper header
    verts = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
    faces = "3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
    (out / "fused_header.off").write_text("OFF4 4 0\n" + verts + faces)
    (out / "proper_header.off").write_text("OFF\n4 4 0\n" + verts + faces)
    # broken files
    good = (out / "good_000.ply").read_text()
    (out / "truncated.ply").write_text(good[: len(good) // 3])
    np.save(out / "empty.npy", np.zeros((0, 3), dtype=np.float32))
    (out / "malformed.off").write_text("OFF\n4 4\n0 0 0\n1 0\n")
    bad = make_shape(0, 256, seed=1).astype(np.float32)
    bad[5, 1] = np.nan
    np.save(out / "nans.npy", bad)
    (out / "notes.xyz").write_text("this is not a point cloud\n")
    print(f"wrote {3 * args.n + 2} good and 5 broken files into {out}")


if __name__ == "__main__":
    main()
