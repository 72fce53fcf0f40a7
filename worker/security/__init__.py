"""Input that comes from providers but decides where we connect or write: URLs and file names."""

from worker.security.filenames import safe_filename
from worker.security.urls import UrlGuard

__all__ = ["UrlGuard", "safe_filename"]
