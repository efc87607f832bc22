"""Point-cloud data, in one import: the names of :mod:`~seqify_pointcloud.items` (item
type, normalization), :mod:`~seqify_pointcloud.shapes` (the procedural ``shapes``
set), :mod:`~seqify_pointcloud.readers` (file readers) and
:mod:`~seqify_pointcloud.folders` (the ``files`` dataset). Kept for compatibility: new
code imports from the module that defines each name. Nothing here downloads anything.
"""

from seqify_pointcloud.folders import files_splits
from seqify_pointcloud.items import NORMALIZATION, PointCloudItem, normalize_box, resample_points
from seqify_pointcloud.readers import SUFFIXES, BadFile, read_cloud_file, read_off
from seqify_pointcloud.shapes import CLASSES, make_shape, shapes_splits

__all__ = [
    "CLASSES",
    "NORMALIZATION",
    "PointCloudItem",
    "normalize_box",
    "resample_points",
    "make_shape",
    "shapes_splits",
    "files_splits",
    "read_cloud_file",
    "read_off",
    "BadFile",
    "SUFFIXES",
]
