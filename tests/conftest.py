"""Fixtures every test gets."""

from __future__ import annotations
