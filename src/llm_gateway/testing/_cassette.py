"""Kept while ``_gateway.py`` still imports the recorder from here; it lives in the core now.

Delete this module once ``Gateway(record_to=...)`` imports ``llm_gateway._recording``.
"""

from .._recording import CassetteRecorder as CassetteRecorder

__all__ = ["CassetteRecorder"]
