"""Lazy open3d import with a clear message when a system library is missing.

open3d is heavy (about 100 MB, a second or so to import) and its wheels link system
libraries that slim images lack (``libusb-1.0.so.0`` for open3d-cpu 0.20, ``libGL.so.1``,
``libgomp.so.1``). Nothing in this plugin imports it at module level, so ``seqify --help``
and ``seqify list`` never load it; call :func:`import_open3d` where it is needed.
"""

from __future__ import annotations

import re
from types import ModuleType

from seqify.errors import SeqifyError

__all__ = ["Open3DMissing", "import_open3d", "SYSTEM_PACKAGES"]

#: shared library open3d may fail to load -> the Debian package that provides it
SYSTEM_PACKAGES: dict[str, str] = {
    "libusb-1.0.so.0": "libusb-1.0-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libgomp.so.1": "libgomp1",
    "libX11.so.6": "libx11-6",
    "libXrender.so.1": "libxrender1",
    "libXext.so.6": "libxext6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libstdc++.so.6": "libstdc++6",
}

_LIB_RE = re.compile(r"(lib[\w.+-]+\.so(?:\.\d+)*)")

_module: ModuleType | None = None


class Open3DMissing(SeqifyError, ImportError):
    """open3d is not installed, or cannot load a system library it links."""


def _explain(exc: BaseException) -> str:
    text = str(exc)
    found = _LIB_RE.search(text)
    if found:
        lib = found.group(1)
        package = SYSTEM_PACKAGES.get(lib)
        if package:
            return (f"open3d cannot load {lib}: install the Debian package {package} "
                    f"(apt-get install {package}); the loader said: {text}")
        return (f"open3d cannot load the system library {lib} (install the package that provides it, "
                f"e.g. `apt-file search {lib}` on Debian); the loader said: {text}")
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "open3d":
        return ("the pointcloud modality needs open3d: pip install open3d-cpu==0.20.* "
                "(with -c constraints.txt, so that torch and numpy stay as pinned)")
    return f"open3d failed to import: {type(exc).__name__}: {text}"


def import_open3d() -> ModuleType:
    """Import and return open3d (once; its log is set to errors only).

    Raises:
        Open3DMissing: open3d is not installed, or a system library it links is
            missing; the message names the library and the Debian package to install.
    """
    global _module
    if _module is not None:
        return _module
    try:
        import open3d
    except (ImportError, OSError) as exc:
        raise Open3DMissing(_explain(exc)) from exc
    try:  # "Read PLY failed" and the like: this plugin reports bad files itself
        open3d.utility.set_verbosity_level(open3d.utility.VerbosityLevel.Error)
    except Exception:  # pragma: no cover - older or stripped builds
        pass
    _module = open3d
    return open3d
