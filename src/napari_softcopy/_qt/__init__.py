"""The napari dock widget (Qt); everything below it is Qt-free."""

from .widget import SoftcopyWidget

__all__ = ["SoftcopyWidget"]
