"""A cache layer that writes each step into preallocated room (imported only with the transformers extra)."""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicLayer

__all__ = ["GrowingLayer"]


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A ``DynamicLayer`` that writes new positions into spare room instead of concatenating.

    ``DynamicLayer.update`` copies the whole cache every step (``torch.cat``); this one grows its
    room by half when it is full, so a step writes only its own positions. ``keys``/``values``
    stay views of the room; where another method replaced them (a crop, a batch selection), the
    next update starts a new room from them.
    """

    _room: tuple[Any, Any] | None = None

    def adopt(self, keys: Any, values: Any, length: int) -> None:
        """Start from ``keys[:, :, :length]`` (and values), the rest of them being room to grow into."""
        self.lazy_initialization(keys, values)
        self._room = (keys, values)
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Append ``key_states``/``value_states`` (new positions); return all the keys and values so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys: Any = self.keys
        have = keys.shape[-2] if keys.numel() else 0
        need = have + key_states.shape[-2]
        room = self._room
        if (
            room is None
            or room[0].shape[-2] < need
            or room[0].shape[:2] != key_states.shape[:2]
            or (have and keys.data_ptr() != room[0].data_ptr())
        ):
            shape = (*key_states.shape[:2], need + max(64, need // 2))
            room = (
                key_states.new_empty((*shape, key_states.shape[3])),
                value_states.new_empty((*shape, value_states.shape[3])),
            )
            if have:
                room[0][:, :, :have] = keys
                room[1][:, :, :have] = self.values
            self._room = room
        room[0][:, :, have:need] = key_states
        room[1][:, :, have:need] = value_states
        self.keys, self.values = room[0][:, :, :need], room[1][:, :, :need]
        return self.keys, self.values
