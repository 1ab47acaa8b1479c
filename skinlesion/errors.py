"""Project exceptions. Every message names the file/row/field at fault and how to fix it."""

from __future__ import annotations


class SkinLesionError(Exception):
    """Base class: an error the user can act on (bad input, missing file, unknown version)."""


class DataError(SkinLesionError, ValueError):
    """A dataset or input row is unusable. ``source`` names the file, ``row`` the 1-based data row."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        self.source, self.row, self.field = source, row, field
        where = ", ".join(p for p in (
            f"file {source}" if source else "",
            f"row {row}" if row is not None else "",
            f"field '{field}'" if field else "",
        ) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ImageError(DataError):
    """An image cannot be used: not an image, empty, truncated, corrupt, too large or too small."""


class ImageFormatError(ImageError):
    """An image in a format that is not accepted (only JPEG and single-frame PNG are; HTTP 415)."""


class MetadataError(DataError):
    """A metadata value is outside the ISIC 2019 vocabulary or range."""


class FetchError(SkinLesionError):
    """A published dataset cannot be downloaded or unpacked (no network, server error, bad checksum)."""


class ModelNotFoundError(SkinLesionError, LookupError):
    """A model version id or alias does not exist in the models folder."""


class WeightsUnavailableError(SkinLesionError, FileNotFoundError):
    """Pretrained weights are needed but no local file is available (no download is ever attempted)."""


class StoreError(SkinLesionError):
    """The prediction store refused an operation (schema newer than the code, unknown API key name...)."""


class PermissionDeniedError(SkinLesionError, PermissionError):
    """The signed-in role may not take this action (skinlesion.auth.PERMISSIONS); nothing changed."""


class StoreBusyError(StoreError, TimeoutError):
    """The DuckDB file stayed locked by other processes past the deadline; retry later (HTTP 503)."""


class JobConflictError(SkinLesionError):
    """A job is already queued or running for this model; wait for it or cancel it first."""
