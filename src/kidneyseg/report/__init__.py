"""Pictures and tables for humans: overlay montages and volume tables."""

from .overlay import overlay_montage
from .tables import write_volume_tables

__all__ = ["overlay_montage", "write_volume_tables"]
