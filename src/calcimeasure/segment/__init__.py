"""Segmentation of radiodense lesions: :func:`segment` and :class:`Segmentation`."""

from .pipeline import Segmentation, segment

__all__ = ["segment", "Segmentation"]
