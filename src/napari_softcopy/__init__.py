"""napari-softcopy: copy a Zarr archive while it is being written, and prove the copy.

The package is Qt-free; the napari widget lives in ``napari_softcopy._qt``.

The public names below are imported when first used (PEP 562), not with the package: the
engine's helper processes (`copy_helper`, `scan_walk`, the verification's walk helpers)
import only the modules they run, which halves their start and their memory (a helper
importing the whole package took 24 MiB and 0.15 s before its first file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "CopyEngine": ".engine",
    "CopyOptions": ".engine",
    "copy": ".engine",
    "InputError": ".checks",
    "JobState": ".status",
    "Status": ".status",
    "read_status_file": ".status",
    "VerifyReport": ".verify",
    "verify_tree": ".verify",
}

__all__ = [
    "CopyEngine",
    "CopyOptions",
    "InputError",
    "JobState",
    "Status",
    "VerifyReport",
    "__version__",
    "copy",
    "read_status_file",
    "verify_tree",
]

if TYPE_CHECKING:
    from .checks import InputError
    from .engine import CopyEngine, CopyOptions, copy
    from .status import JobState, Status, read_status_file
    from .verify import VerifyReport, verify_tree


__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
