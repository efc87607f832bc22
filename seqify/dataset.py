"""Tokenized splits in compact padded tensors, with an on-disk cache.

A :class:`TokenTable` keeps a whole split as small-integer tensors (a 250k-item,
741-slot ZINC split fits in a few GB instead of tens), and hands out
:class:`~seqify.types.TokenBatch` objects by index without per-item Python work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from seqify.data import RowReport
from seqify.io import cache_dir, load_checkpoint, save_checkpoint
from seqify.protocols import Tokenizer
from seqify.types import TokenBatch, TokenSet

CACHE_VERSION = 2


def _small_int(max_value: int) -> torch.dtype:
    if max_value < 127:
        return torch.int8
    if max_value < 32767:
        return torch.int16
    return torch.int32


@dataclass
class TokenTable:
    """A split as padded tensors: values/kinds ``[N, L]``, coords ``[N, L, C]``,
    given ``[N, L]``, lengths ``[N]``, one meta dict per item, and, for a conditional
    generator, each item's condition class ``cond`` ``[N]`` (set by the runner from
    :meth:`seqify.protocols.Modality.condition`; never cached with the tokens)."""

    values: torch.Tensor
    kinds: torch.Tensor
    coords: torch.Tensor
    given: torch.Tensor
    lengths: torch.Tensor
    meta: list[dict[str, Any]] = field(default_factory=list)
    #: the tokenizer's coordinate names, carried by every batch (see TokenBatch.coord_names)
    coord_names: tuple[str, ...] = ()
    #: ``[N]`` long condition class of each item (-1: none), or None: batches carry no condition
    cond: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.values.shape[1])

    @classmethod
    def from_tokensets(cls, items: list[TokenSet], length: int | None = None) -> "TokenTable":
        if not items:
            raise ValueError("cannot build a TokenTable from no items")
        L = max(len(t) for t in items) if length is None else length
        C = items[0].coords.shape[1]
        N = len(items)
        vmax = max(int(t.values.max()) if len(t) else 0 for t in items)
        kmax = max(int(t.kinds.max()) if len(t) else 0 for t in items)
        cmax = max(int(t.coords.max()) if len(t) else 0 for t in items)
        values = torch.zeros(N, L, dtype=_small_int(vmax))
        kinds = torch.zeros(N, L, dtype=_small_int(kmax))
        coords = torch.zeros(N, L, C, dtype=_small_int(cmax))
        given = torch.zeros(N, L, dtype=torch.bool)
        lengths = torch.zeros(N, dtype=torch.int32)
        for n, t in enumerate(items):
            k = len(t)
            values[n, :k] = t.values
            kinds[n, :k] = t.kinds
            coords[n, :k] = t.coords
            given[n, :k] = t.given
            lengths[n] = k
        return cls(values, kinds, coords, given, lengths, [dict(t.meta) for t in items])

    def batch(self, index: torch.Tensor | list[int], device: torch.device | str = "cpu") -> TokenBatch:
        """The items at ``index`` as a TokenBatch (trimmed to their longest item)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        lengths = self.lengths[idx]
        L = int(lengths.max()) if len(idx) else 0
        steps = torch.arange(L)
        pad = steps[None, :] >= lengths[:, None]
        b = TokenBatch(
            values=self.values[idx, :L].long().masked_fill(pad, 0),
            kinds=self.kinds[idx, :L].long().masked_fill(pad, 0),
            coords=self.coords[idx, :L].long().masked_fill(pad[..., None], 0),
            given=self.given[idx, :L] & ~pad,
            pad=pad,
            meta=[self.meta[i] for i in idx.tolist()] if self.meta else [{} for _ in range(len(idx))],
            coord_names=self.coord_names,
            cond=None if self.cond is None else self.cond[idx].long(),
        )
        return b.to(device)

    def tokenset(self, i: int) -> TokenSet:
        return self.batch([i]).unbatch()[0]

    def state(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "kinds": self.kinds,
            "coords": self.coords,
            "given": self.given,
            "lengths": self.lengths,
            "meta_json": json.dumps(self.meta),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TokenTable":
        return cls(
            state["values"],
            state["kinds"],
            state["coords"],
            state["given"],
            state["lengths"],
            json.loads(state["meta_json"]),
        )


def items_fingerprint(items: list[Any]) -> str:
    """A stable hash of a split's items, over their bytes: arrays and tensors by dtype,
    shape and every element (``repr`` abbreviates large arrays, so two images with
    equal borders would collide), containers and dataclasses field by field."""
    h = hashlib.sha1()
    h.update(str(len(items)).encode())
    for item in items:
        _hash_item(h, item)
        h.update(b"\x00")
    return h.hexdigest()


def _hash_item(h: Any, item: Any) -> None:
    import dataclasses

    import numpy as np

    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        item = (item.float() if item.dtype == torch.bfloat16 else item).numpy()
    if isinstance(item, np.ndarray):
        arr = np.ascontiguousarray(item)
        h.update(f"A{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    elif isinstance(item, (str, bytes)):
        data = item.encode() if isinstance(item, str) else item
        h.update(f"S{len(data)}:".encode())
        h.update(data)
    elif isinstance(item, dict):
        h.update(f"D{len(item)}".encode())
        for key in sorted(item, key=repr):
            _hash_item(h, key)
            _hash_item(h, item[key])
    elif isinstance(item, (list, tuple)):
        h.update(f"L{len(item)}".encode())
        for part in item:
            _hash_item(h, part)
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        h.update(type(item).__qualname__.encode())
        for f in dataclasses.fields(item):
            _hash_item(h, getattr(item, f.name))
    else:
        h.update(repr(item).encode())


def tokenize_split(
    tokenizer: Tokenizer,
    items: list[Any],
    *,
    split: str,
    report: RowReport,
    cache_key: str | None = None,
    chunk: int = 256,
) -> tuple[TokenTable, list[int]]:
    """Encode ``items`` with ``tokenizer.encode_batch``, ``chunk`` at a time; in a chunk
    that fails, each item is encoded alone and an item that fails is reported and skipped.

    Returns the table and the indices (into ``items``) of the items it holds. With a
    ``cache_key``, the result is cached on disk (weights-only tensors + JSON).
    """
    path = None
    if cache_key is not None:
        digest = hashlib.sha1(f"{CACHE_VERSION}|{cache_key}|{split}|{items_fingerprint(items)}".encode()).hexdigest()[:20]
        path = cache_dir() / "tokens" / f"{split}-{digest}.pt"
        if path.is_file():
            try:
                state = load_checkpoint(path)
                kept = state.pop("kept").tolist()
                for row, reason in json.loads(state.pop("bad_json")):
                    report.add(f"{split} split", row, reason)
                table = TokenTable.from_state(state)
                table.coord_names = tuple(tokenizer.spec.coord_names)
                return table, kept
            except Exception:  # a damaged cache is rebuilt, never trusted
                pass
    encoded, kept, bad = [], [], []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        try:
            encoded.extend(tokenizer.encode_batch(part))
            kept.extend(range(start, start + len(part)))
            continue
        except (ValueError, KeyError):
            pass  # one bad item: encode this chunk item by item, so only it is skipped
        for i, item in enumerate(part, start):
            try:
                encoded.append(tokenizer.encode(item))
                kept.append(i)
            except (ValueError, KeyError) as exc:
                report.add(f"{split} split", i + 1, f"cannot tokenize: {exc}")
                bad.append((i + 1, f"cannot tokenize: {exc}"))
    if not encoded:
        from seqify.errors import DataError

        raise DataError(f"no item of the {split} split could be tokenized by {tokenizer!r}")
    table = TokenTable.from_tokensets(encoded)
    table.coord_names = tuple(tokenizer.spec.coord_names)
    if path is not None:
        state = table.state()
        state["kept"] = torch.tensor(kept, dtype=torch.long)
        state["bad_json"] = json.dumps(bad)
        save_checkpoint(path, state)
    return table, kept


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of a tokenizer's settings and learned state (tensor bytes
    included), so caches and trained models keyed on it never mix two fits."""
    import hashlib

    h = hashlib.sha1(repr(tokenizer).encode())
    _hash_state(h, tokenizer.state_dict())
    return h.hexdigest()[:16]


def _hash_state(h: Any, value: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(f"<{key}>".encode())
            _hash_state(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _hash_state(h, v)
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        arr = value.detach().cpu().contiguous()
        h.update(f"T{arr.dtype}{tuple(arr.shape)}".encode())
        h.update(arr.numpy().tobytes() if arr.dtype != _bf16() else arr.float().numpy().tobytes())
    else:
        h.update(repr(value).encode())


def _bf16() -> Any:
    import torch

    return torch.bfloat16
