"""Watch descriptor -> folder, in the order the folders were watched, without a dict entry
a folder (`WatchSlots`, the events' direction of `watches.WatchTable`).

The kernel numbers one inotify instance's watches 1, 2, 3... and does not reuse a number
(``idr_alloc_cyclic``: it wraps only past ``INT_MAX``). So a list indexed by the descriptor
(less the first one kept) holds each folder in 8 bytes, where a dict entry took about 47 at
110,500 watches (its slots and index at a dict's load); and the list's order is the order
the folders were watched, which `WatchTable` gives back the oldest first by.

A watch given back leaves a hole; holes at the front are cut off as they come (a time
series' finished folders are given back the oldest first). Watches kept in front of the
holes (the root, a parent of the newest folder, a folder still active) would stop that: when
more than half the list is holes, the live entries of its first half move to a small dict of
their own (`_old`, older than every slot) and that half is cut off. So the list is at most
about twice the watches held, whatever the number of folders watched over a day.
"""

from __future__ import annotations

from collections.abc import Iterator

#: A list this short is never halved (its holes cost little; a small table halves rarely).
_MIN_HALVED = 1024
#: A descriptor this far past the list's end starts a new list (the old live entries moved
#: to `_old`): never expected of the kernel, and it must not make a list of millions.
_MAX_GAP = 1 << 16


class WatchSlots:
    """Watch descriptor -> folder (below the root), iterated in the order they were added:
    the part of a dict that `watches.WatchTable` uses, for increasing descriptors."""

    __slots__ = ("_base", "_count", "_old", "_slots")

    def __init__(self) -> None:
        self._slots: list[str | None] = []  # folder of descriptor `_base` + index; None: none
        self._base = 0
        self._old: dict[int, str] = {}  # live entries below `_base` (see the module's text)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, wd: int) -> str | None:
        """``wd``'s folder, None when it has none."""
        i = wd - self._base
        if i >= 0:
            return self._slots[i] if i < len(self._slots) else None
        return self._old.get(wd)

    def __setitem__(self, wd: int, folder: str) -> None:
        i = wd - self._base
        slots = self._slots
        if i < 0:
            if wd not in self._old:
                self._count += 1
            self._old[wd] = folder
            return
        if not slots:  # (the first, or all before it cut off: the list starts here)
            self._base, i = wd, 0
        if i == len(slots):  # (the common case: the next descriptor)
            slots.append(folder)
            self._count += 1
            return
        if i > len(slots):
            if i - len(slots) > _MAX_GAP:
                self._cut(len(slots))
                self._base, i = wd, 0
            slots.extend([None] * (i + 1 - len(slots)))
        if slots[i] is None:
            self._count += 1
        slots[i] = folder

    def pop(self, wd: int) -> str:
        """Remove ``wd``, its folder (KeyError when it has none)."""
        i = wd - self._base
        slots = self._slots
        if 0 <= i < len(slots) and slots[i] is not None:
            folder, slots[i] = slots[i], None
            self._count -= 1
            if i == 0 or self._count * 2 < len(slots):
                self._tidy()
            return folder
        if i < 0 and wd in self._old:
            self._count -= 1
            return self._old.pop(wd)
        raise KeyError(wd)

    def items(self) -> Iterator[tuple[int, str]]:
        """``(wd, folder)`` in the order they were added (do not add or remove meanwhile)."""
        yield from self._old.items()
        base = self._base
        for i, folder in enumerate(self._slots):
            if folder is not None:
                yield base + i, folder

    def _tidy(self) -> None:
        """Cut the holes off the front; when more than half the list is holes behind live
        entries, move those of the first half to `_old` and cut that half off."""
        slots = self._slots
        front = 0
        while front < len(slots) and slots[front] is None:
            front += 1
        live = self._count - len(self._old)
        if not front and len(slots) >= _MIN_HALVED and live * 2 < len(slots):
            front = len(slots) // 2
            while front < len(slots) and slots[front] is None:  # (and the holes after it)
                front += 1
        if front:
            self._cut(front)

    def _cut(self, front: int) -> None:
        """Drop the first ``front`` slots (their live entries kept in `_old`)."""
        slots, base = self._slots, self._base
        for i in range(front):
            if slots[i] is not None:
                self._old[base + i] = slots[i]
        del slots[:front]
        self._base = base + front
