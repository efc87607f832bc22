"""Atomic file writes and weights-only checkpoints.

Everything a run leaves on disk is written to a temporary file in the same folder
and moved into place with ``os.replace``, so a crash never leaves a half-written
results file or checkpoint behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Where seqify caches tokenized data and reference statistics:
    ``$SEQIFY_CACHE``, else ``~/.cache/seqify``."""
    return Path(os.environ.get("SEQIFY_CACHE", Path.home() / ".cache" / "seqify"))


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(Path(path), lambda fh: fh.write(text), "w")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(Path(path), lambda fh: fh.write(data), "wb")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """JSON with non-finite floats written as null, atomically."""
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save tensors and plain data (no pickled objects) atomically with torch.save."""
    import torch

    return _atomic(Path(path), lambda fh: torch.save(state, fh), "wb")


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: never unpickles arbitrary objects."""
    import torch

    return torch.load(Path(path), map_location=map_location, weights_only=True)
