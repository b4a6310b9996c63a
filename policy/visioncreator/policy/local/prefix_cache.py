"""The attention caches of recent conversations, kept between ``generate`` calls of one local model.

A conversation's next turn starts with everything its last turn read and wrote: the same ids at
the same positions, so the same keys and values under the same weights. :class:`PrefixCache`
keeps, per conversation, the cache of its last prompt and completion (one entry: its ids and, per
layer, keys and values at batch size 1), and hands :func:`~visioncreator.policy.local.decoding.generate_rows`
the longest part of each row's prompt some entry already covers. A batch of rows from different
conversations then reads only each row's new ids (the tool's reply, the next instruction), not
its whole history: the batch cache is laid out row by row as ``[its covered ids][padding]``, the
attention mask zero over the padding and positions counted from the mask.

What the rows of a batch share (the system prompt and tool list, for a new conversation) is
computed once, at batch size 1, from the longest entry that starts it.

Entries are used in least-recently-used order and evicted past ``max_bytes``; an entry that a new
one extends is dropped (the new one covers it). Everything is dropped when the model changes:
another model object, any parameter changed in place (an optimizer step, a loaded state dict:
torch's per-tensor version counters) or given new data, so no cache is read against other
weights than those that made it. Models whose cache layers are not plain (sliding windows,
recurrent state) keep nothing.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PrefixCache", "growing_cache"]

_untracked = itertools.count(1)


@dataclass(eq=False)
class _Entry:
    ids: Any
    """numpy int64 array of the ids the layers cover."""
    layers: list[tuple[Any, Any]]
    """Per layer: keys and values, ``(1, heads, len(ids), head_dim)``."""

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


class PrefixCache:
    """Attention caches of recent conversations (and shared prompt prefixes) of one model.

    Args:
        max_bytes: Most memory the kept keys and values take; the least recently used go first.
            0 keeps nothing between calls (a batch still computes its shared prefix once).

    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._key = itertools.count()
        self._model: tuple[int, int] | None = None
        self.reused = 0
        """Prompt ids the rows did not read themselves (an entry covered them), summed over rows and calls."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Memory the kept entries take."""
        return sum(e.nbytes for e in self._entries.values())

    def batch(self, model: Any, prompts: Sequence[Sequence[int]], shared: int, room: int = 0) -> tuple[Any, list[int]]:
        """The cache a batch of ``prompts`` starts from, and how many leading ids of each it covers.

        Args:
            model: The model (its weights decide whether the entries still hold).
            prompts: The rows' prompt ids.
            shared: How many leading ids every prompt shares (computed once if no entry has them).
            room: Positions to leave free after the widest prompt (what ``generate`` will add).

        Returns:
            A ``DynamicCache`` of width ``max(covered)`` (row ``i``'s first ``covered[i]`` positions
            filled, the rest zero: mask them), or None where nothing is covered; and ``covered``,
            each below its prompt's length (the model must read at least one id of each row).

        """
        import numpy as np

        if not _plain(model):
            return None, [0] * len(prompts)
        self._check(model)
        arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
        if shared:
            self._cover(model, arrays[0][:shared])
        found = [self._longest(a, len(a) - 1) for a in arrays]
        covered = [n for _, n in found]
        self.reused += sum(covered)
        if not any(covered):
            return None, covered
        width = max(covered)
        rest = max(len(p) - n for p, n in zip(prompts, covered, strict=True))
        return _merge(model, found, width, width + rest + room), covered

    def keep(self, model: Any, cache: Any, ids: Sequence[Sequence[int]], positions: Sequence[Any]) -> None:
        """Keep each row's conversation: ``ids[i]``, whose keys and values sit at ``positions[i]`` of ``cache``."""
        import numpy as np

        if self.max_bytes <= 0 or cache is None or not _plain(model):
            return
        self._check(model)
        for row, (row_ids, where) in enumerate(zip(ids, positions, strict=True)):
            if len(row_ids) == 0:
                continue
            layers = [
                (layer.keys[row : row + 1].index_select(2, where), layer.values[row : row + 1].index_select(2, where))
                for layer in cache.layers
            ]
            self._add(_Entry(np.asarray(row_ids, dtype=np.int64), layers))

    # ---- internals -------------------------------------------------------------------------

    def _check(self, model: Any) -> None:
        which = (id(model), weights_version(model))
        if which != self._model:
            self._entries.clear()
            self._model = which

    def _longest(self, ids: Any, cap: int) -> tuple[_Entry | None, int]:
        """The entry covering most leading ids of ``ids`` (at most ``cap``), marked recently used."""
        import numpy as np

        best: tuple[int | None, int] = (None, 0)
        for key, entry in self._entries.items():
            n = min(cap, len(entry.ids), len(ids))
            if n <= best[1]:
                continue
            differ = np.flatnonzero(entry.ids[:n] != ids[:n])
            same = int(differ[0]) if len(differ) else n
            if same > best[1]:
                best = (key, same)
        if best[0] is None:
            return None, 0
        self._entries.move_to_end(best[0])
        return self._entries[best[0]], best[1]

    def _cover(self, model: Any, ids: Any) -> None:
        """Make sure an entry covers ``ids``: extend the longest one that starts them, at batch size 1."""
        import torch

        entry, same = self._longest(ids, len(ids))
        if same == len(ids):
            return
        cache = _merge(model, [(entry, same)], same, len(ids)) if entry is not None and same else _empty(model)
        model(input_ids=torch.tensor([ids[same:].tolist()], device=model.device), cache=cache, use_cache=True)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        self._add(_Entry(ids.copy(), layers), needed=True)

    def _add(self, entry: _Entry, needed: bool = False) -> None:
        """Keep ``entry``, drop the entries it extends, evict the least recently used past the budget.

        ``needed``: the caller reads it next, so it stays even alone over the budget.
        """
        n = len(entry.ids)
        for key, old in list(self._entries.items()):
            if len(old.ids) <= n and (old.ids == entry.ids[: len(old.ids)]).all():
                del self._entries[key]
            elif len(old.ids) > n and (old.ids[:n] == entry.ids).all():
                self._entries.move_to_end(key)  # an entry already covers it
                return
        key = next(self._key)
        self._entries[key] = entry
        size = self.nbytes
        for oldest in [k for k in self._entries if k != key]:
            if size <= self.max_bytes:
                break
            size -= self._entries.pop(oldest).nbytes
        if size > self.max_bytes and not needed:
            del self._entries[key]


def _plain(model: Any) -> bool:
    """Whether the model's cache layers are plain growing key/value tensors (what entries slice and merge)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config the cache cannot read: keep nothing
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _empty(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def growing_cache(model: Any) -> Any:
    """An empty ``DynamicCache`` for ``generate`` whose layers write each step into spare room.

    A ``DynamicLayer`` concatenates its keys and values with each step's, copying the whole cache
    every step: at 8 rows and ~850 positions that is a fifth of a decoding step of SmolLM2 on CPU
    (:class:`~visioncreator.policy.local.growing_layer.GrowingLayer` writes only the new
    positions). None for models with other layer kinds (``generate`` makes its own cache).
    """
    from transformers import DynamicCache

    from visioncreator.policy.local.growing_layer import GrowingLayer

    if not _plain(model):
        return None
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer() for _ in cache.layers]  # type: ignore[no-untyped-call]
    return cache


def _merge(model: Any, rows: Sequence[tuple[_Entry | None, int]], width: int, capacity: int) -> Any:
    """A batch cache of ``width`` positions, room for ``capacity``: row ``i`` holds its entry's first ``n``, then 0."""
    cache = growing_cache(model)
    template = next(e for e, n in rows if e is not None and n)
    for index, (layer, (k0, v0)) in enumerate(zip(cache.layers, template.layers, strict=True)):
        keys = k0.new_empty((len(rows), k0.shape[1], capacity, k0.shape[3]))
        values = v0.new_empty((len(rows), v0.shape[1], capacity, v0.shape[3]))
        for i, (entry, n) in enumerate(rows):
            if entry is not None and n:
                k, v = entry.layers[index]
                keys[i, :, :n] = k[0, :, :n]
                values[i, :, :n] = v[0, :, :n]
            keys[i, :, n:width] = 0  # masked, but must be finite
            values[i, :, n:width] = 0
        layer.adopt(keys, values, width)
    return cache


def weights_version(model: Any) -> int:
    """A number that changes whenever a weight is changed in place or replaced.

    The parameters' in-place version counters (an optimizer step, a loaded state dict) and where
    their data lives (``param.data = other`` keeps the counter but moves the data). Parameters
    made under ``torch.inference_mode`` have no counter: then a new value every call, so nothing
    is reused.
    """
    try:
        params = list(model.parameters())
        return hash((sum(int(p._version) for p in params), tuple(p.data_ptr() for p in params)))
    except RuntimeError:
        return -next(_untracked)
