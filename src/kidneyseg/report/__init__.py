"""Pictures and tables for humans: overlay montages, metric plots and volume tables."""

from .overlay import overlay_montage
from .plots import metric_violin
from .tables import write_volume_tables

__all__ = ["metric_violin", "overlay_montage", "write_volume_tables"]
