"""Pictures and tables for humans: overlay montages, metric plots and volume tables.

The picture modules import matplotlib (about 0.45 s), so they are imported on first use."""

from .tables import write_volume_tables

__all__ = ["metric_violin", "overlay_montage", "write_volume_tables"]


def __getattr__(name: str):
    if name == "overlay_montage":
        from .overlay import overlay_montage

        return overlay_montage
    if name == "metric_violin":
        from .plots import metric_violin

        return metric_violin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
