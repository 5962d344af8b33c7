"""Exceptions. The CLI maps them to exit codes; the library never calls sys.exit."""

from __future__ import annotations


class BgvidError(Exception):
    """A failure bgvid can explain in one line. Exit code 1."""

    exit_code = 1


class InputError(BgvidError):
    """Bad usage or bad input (missing file, not a video, bad option). Exit code 2."""

    exit_code = 2


class ModelError(BgvidError):
    """A model could not be fetched, verified, converted or loaded. Exit code 1."""

    exit_code = 1
