"""The prediction request's form, read strictly.

``POST /v1/predictions`` takes ``multipart/form-data`` with exactly one file field ``image`` and at
most one of each text field :data:`TEXT_FIELDS`. :func:`read_prediction_form` streams the body
through Starlette's multipart parser with checks that name the field at fault: an unknown field, a
field sent twice (a second image included), a file where text belongs or text where the image
belongs, a text field over :data:`MAX_TEXT_BYTES`, an image over the upload limit, a body that is
not multipart. Each raises :class:`~skinlesion.api.errors.ApiError`, answered in the project's JSON
error shape and counted like every other refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from skinlesion.api.errors import ApiError, size_text
from skinlesion.schema import SEXES, SITES

IMAGE_FIELD = "image"
TEXT_FIELDS: tuple[str, ...] = ("age_approx", "sex", "anatom_site_general")
FIELDS: tuple[str, ...] = (IMAGE_FIELD, *TEXT_FIELDS)
#: Longest text value accepted (the longest site name is under 20 bytes).
MAX_TEXT_BYTES = 64
_SHOWN_NAME_CHARS = 40


@dataclass(frozen=True)
class PredictionForm:
    """The fields of one prediction request: the image's bytes and the raw metadata text."""

    image: bytes
    age_approx: str | None = None
    sex: str | None = None
    anatom_site_general: str | None = None


def _shown(name: str) -> str:
    """A client-sent field name, shortened for an error message."""
    return repr(name if len(name) <= _SHOWN_NAME_CHARS else name[:_SHOWN_NAME_CHARS] + "...")


class _StrictParser(MultiPartParser):
    """Starlette's parser with the checks of the module docstring, raised as soon as a part's headers
    or bytes show them (nothing more of the body is read)."""

    def __init__(self, headers: Headers, request: Request, max_image_bytes: int):
        super().__init__(headers, request.stream(), max_files=len(FIELDS), max_fields=len(FIELDS),
                         max_part_size=MAX_TEXT_BYTES)
        self.max_image_bytes = max_image_bytes
        self._seen: set[str] = set()
        self._image_bytes = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        name, is_file = self._current_part.field_name, self._current_part.file is not None
        if name not in FIELDS:
            raise ApiError(422, "form", f"unknown field {_shown(name)}; the form takes "
                           f"{', '.join(FIELDS)}")
        if name in self._seen:
            what = "exactly one image per request" if name == IMAGE_FIELD else "each field once"
            raise ApiError(422, name, f"the field '{name}' was sent more than once; send {what}")
        self._seen.add(name)
        if name == IMAGE_FIELD and not is_file:
            raise ApiError(422, name, "'image' must be a file upload (multipart file part with a "
                           "filename), not a text field")
        if name != IMAGE_FIELD and is_file:
            raise ApiError(422, name, f"'{name}' is a text field; send its value, not a file")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is None and len(part.data) + end - start > MAX_TEXT_BYTES:
            raise ApiError(422, part.field_name, f"the value of '{part.field_name}' is longer than "
                           f"{MAX_TEXT_BYTES} bytes; send one of the allowed values")
        if part.file is not None:
            self._image_bytes += end - start
            if self._image_bytes > self.max_image_bytes:
                raise ApiError(413, IMAGE_FIELD, f"image larger than the "
                               f"{size_text(self.max_image_bytes)} limit; send the dermoscopy "
                               "image as JPEG or PNG")
        super().on_part_data(data, start, end)


async def read_prediction_form(request: Request, max_image_bytes: int) -> PredictionForm:
    """The prediction form of ``request`` (see the module docstring)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        raise ApiError(422, IMAGE_FIELD, "the field 'image' is required: send the form as "
                       "multipart/form-data with the image as a file part")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415, "Content-Type", "send the image and metadata as multipart/form-data "
                       f"(got {content_type[:60] or 'no Content-Type'})")
    parser = _StrictParser(request.headers, request, max_image_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise ApiError(422, "form", f"the body is not valid multipart/form-data ({err})") from None
    try:
        image = form.get(IMAGE_FIELD)
        if not isinstance(image, UploadFile):
            raise ApiError(422, IMAGE_FIELD, "the field 'image' is required")
        data = await image.read()
        if not data:
            raise ApiError(422, IMAGE_FIELD, "the image file is empty (0 bytes)")
        text: dict[str, Any] = {f: form.get(f) for f in TEXT_FIELDS}
    finally:
        await form.close()
    return PredictionForm(image=data, **{k: (v or None) for k, v in text.items()})


#: The form as OpenAPI describes it (the route reads the body itself, so FastAPI cannot infer it).
OPENAPI_FORM: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": [IMAGE_FIELD], "properties": {
        IMAGE_FIELD: {"type": "string", "format": "binary",
                      "description": "Dermoscopy image: one JPEG or PNG (8-bit colour)"},
        "age_approx": {"type": "string", "description": "Age in years, 0-85 (85+ as 85); empty "
                       "if unknown"},
        "sex": {"type": "string", "enum": [*SEXES, ""], "description": "empty if unknown"},
        "anatom_site_general": {"type": "string", "enum": [*SITES, ""],
                                "description": "ISIC 2019 site; empty if unknown"},
    }}}}}}
