"""Point-cloud plugin: the ``pointcloud`` modality and its ``coords`` and ``octree`` tokenizers.

Modules: :mod:`~seqify_pointcloud.items` (item type, normalization),
:mod:`~seqify_pointcloud.shapes` (the procedural ``shapes`` set),
:mod:`~seqify_pointcloud.readers` (file readers), :mod:`~seqify_pointcloud.folders` (the
``files`` dataset), :mod:`~seqify_pointcloud.data` (all of those in one import, kept for
compatibility), :mod:`~seqify_pointcloud.tokenizers` (``coords``),
:mod:`~seqify_pointcloud.octree` (``octree``), :mod:`~seqify_pointcloud.metrics` (CD,
EMD, MMD / COV / 1-NNA), :mod:`~seqify_pointcloud.modality`, :mod:`~seqify_pointcloud.render`
and :mod:`~seqify_pointcloud.o3d` (the lazy open3d import). Nothing heavy is imported
here (the registry holds "module:Class" strings), so ``seqify list`` never loads open3d.
"""

from seqify.hookspecs import hookimpl


@hookimpl
def register_modalities(register):
    register(
        "pointcloud",
        "seqify_pointcloud.modality:PointCloud",
        "Point clouds: generate surface clouds (procedural open3d shapes or your ShapeNet / ModelNet / "
        ".ply files), judged by PointFlow's MMD, COV and 1-NNA (Chamfer, EMD).",
    )


@hookimpl
def register_tokenizers(register):
    register(
        "coords",
        "seqify_pointcloud.tokenizers:CoordsTokenizer",
        "Three quantized coordinates (z, y, x) per point; points sorted zyx (PolyGen), morton or random.",
        modality="pointcloud",
    )
    register(
        "octree",
        "seqify_pointcloud.octree:OctreeTokenizer",
        "Octree child-occupancy codes, level by level, coarse to fine, grown as decoded (each slot knows its cell).",
        modality="pointcloud",
    )
