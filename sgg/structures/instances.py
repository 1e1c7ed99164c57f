"""Per-object fields of one image (detectron2-style), all with the same first dimension."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Tuple

import torch

from .boxes import Boxes


class Instances:
    """Objects of one image: ``Instances((h, w), boxes=Boxes(...), labels=tensor, ...)``.

    Every field has length ``len(self)``; indexing with an int/slice/mask/index tensor selects
    the same objects in all fields. ``image_size`` is (height, width) of the frame the boxes
    live in.
    """

    def __init__(self, image_size: Tuple[int, int], **fields: Any) -> None:
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: Dict[str, Any] = {}
        for k, v in fields.items():
            self.set(k, v)

    @property
    def image_size(self) -> Tuple[int, int]:
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # e.g. during unpickling, before _fields exists
            raise AttributeError(name)
        if name not in self._fields:
            raise AttributeError(f"Instances has no field '{name}'; fields: {sorted(self._fields)}")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        n = len(value)
        if self._fields and n != len(self):
            raise ValueError(f"field '{name}' has length {n}, other fields have {len(self)}")
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def get(self, name: str) -> Any:
        return self._fields[name]

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get_fields(self) -> Dict[str, Any]:
        return dict(self._fields)

    def __len__(self) -> int:
        for v in self._fields.values():
            return len(v)
        return 0

    def __getitem__(self, idx) -> "Instances":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(idx, None)
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v[idx])
        return out

    def to(self, device) -> "Instances":
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v.to(device) if hasattr(v, "to") else v)
        return out

    @staticmethod
    def cat(items: Iterable["Instances"]) -> "Instances":
        items = list(items)
        if not items:
            raise ValueError("Instances.cat needs at least one element")
        out = Instances(items[0].image_size)
        for k, v in items[0]._fields.items():
            vals = [i.get(k) for i in items]
            if isinstance(v, torch.Tensor):
                out.set(k, torch.cat(vals, dim=0))
            elif isinstance(v, Boxes):
                out.set(k, Boxes.cat(vals))
            elif isinstance(v, list):
                out.set(k, [x for lst in vals for x in lst])
            else:
                raise TypeError(f"cannot concatenate field '{k}' of type {type(v).__name__}")
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {type(v).__name__}[{len(v)}]" for k, v in self._fields.items())
        return f"Instances(num={len(self)}, image_size={self._image_size}, {fields})"
