"""Exceptions raised by kidneyseg.

Every error a user can cause (a bad path, an unreadable file, a volume with NaN voxels,
an output folder that is not writable) is an :class:`InputError`. The command line turns
it into one line on stderr and exit status 2; the Python API lets it propagate.
"""

from __future__ import annotations


class KidneysegError(Exception):
    """Base class of all kidneyseg errors."""


class InputError(KidneysegError, ValueError):
    """A user-supplied file, folder or value is unusable.

    The message names the file or argument and states expected versus actual, in one line.
    """


class GeometryError(KidneysegError, RuntimeError):
    """An internal geometry invariant was broken (output grid differs from the input's)."""
