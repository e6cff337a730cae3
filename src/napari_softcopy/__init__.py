"""napari-softcopy: copy a Zarr archive while it is being written, and prove the copy.

The package is Qt-free; the napari widget lives in ``napari_softcopy._qt``.
"""

from .checks import InputError
from .engine import CopyEngine, CopyOptions, copy
from .status import JobState, Status, read_status_file
from .verify import VerifyReport, verify_tree

__version__ = "0.1.0"

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
