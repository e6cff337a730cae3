"""Kept importable: the destination interface lives in `napari_softcopy.destinations`."""

from .destinations import *  # noqa: F403
from .destinations import __all__  # noqa: F401
