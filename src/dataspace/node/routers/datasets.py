"""Datasets: register by upload, list, show (a catalog view for consumers), reclassify, remove.

Uploads are parsed as they arrive and streamed straight into a private folder under the node's
``tmp/``, never held in memory; the folder is removed whatever happens, after ``datasets.add``
has imported the file into the node's data folder (or failed to).
"""

from __future__ import annotations

import secrets
import shutil
import unicodedata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import Field
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dataspace.errors import DataspaceError, InputError, UnreadableInput
from dataspace.node.auth import EVERYONE, READERS, WRITERS, get_node, require
from dataspace.node.routers.fields import Body
from dataspace.scratch import UPLOAD_PREFIX, process_tag
from dataspace.services import datasets
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter(prefix="/datasets", tags=["datasets"])

FILE_FIELD = "file"
TEXT_FIELDS = ("name", "title", "domain", "description", "format")
MAX_TEXT_FIELD = 64 * 1024  # bytes of one form field other than the file

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV/TSV (UTF-8, GBK, GB18030), Parquet or JSON Lines",
                        },
                        "name": {
                            "type": "string",
                            "description": "dataset name (default: the file name without suffix)",
                        },
                        "title": {"type": "string", "description": "human title (default: name)"},
                        "domain": {
                            "type": "string",
                            "default": "general",
                            "description": "sector whose grading rules apply",
                        },
                        "description": {"type": "string", "default": ""},
                        "format": {
                            "type": "string",
                            "description": "force the input format instead of detecting it",
                        },
                    },
                }
            }
        },
    }
}


class Reclassify(Body):
    column: str = Field(min_length=1, description="column whose category to set")
    category: str = Field(
        min_length=1, description="a classification category, or 'none' to clear it"
    )
    reason: str = Field(
        default="", max_length=2000,
        description="why; required to set aside a category the column's values confirmed",
    )


# --------------------------------------------------------------------------- reading


@router.get("", summary="List datasets")
def list_datasets(
    node: Node = Depends(get_node), _token: TokenInfo = Depends(require(*EVERYONE))
) -> list[dict[str, Any]]:
    """Name, title, domain, rows, column count, grade and overall quality of every dataset."""
    return datasets.list_datasets(node)


def catalog_view(dataset: dict[str, Any]) -> dict[str, Any]:
    """What a consumer may see of a dataset: catalog metadata, no profile or classification."""
    columns = [
        {"name": c.get("name"), "type": c.get("type", c.get("dtype"))}
        for c in (dataset.get("profile") or {}).get("columns", [])
    ]
    grading = dataset.get("grading") or {}
    quality = dataset.get("quality") or {}
    return {
        "name": dataset.get("name"),
        "title": dataset.get("title"),
        "domain": dataset.get("domain"),
        "description": dataset.get("description", ""),
        "rows": dataset.get("rows"),
        "columns": columns,
        "grade": grading.get("level", dataset.get("grade")),
        "grade_label": grading.get("label", dataset.get("grade_label")),
        "quality": quality.get("overall") if isinstance(quality, dict) else quality,
    }


@router.get("/{name}", summary="Show a dataset")
def show_dataset(
    name: str,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*EVERYONE)),
) -> dict[str, Any]:
    """Everything the catalog knows. A consumer token sees only the catalog view: name, title,
    domain, description, rows, column names and types, grade and overall quality."""
    dataset = datasets.show(node, name)
    return catalog_view(dataset) if token.role == "consumer" else dataset


def _part(node: Node, name: str, key: str) -> dict[str, Any]:
    dataset = datasets.show(node, name)
    return {"name": dataset["name"], key: dataset.get(key)}


@router.get("/{name}/profile", summary="Column profile of a dataset")
def dataset_profile(
    name: str, node: Node = Depends(get_node), _token: TokenInfo = Depends(require(*READERS))
) -> dict[str, Any]:
    """Per-column statistics; values of sensitive columns are redacted."""
    return _part(node, name, "profile")


@router.get("/{name}/classification", summary="Classification of a dataset's columns")
def dataset_classification(
    name: str, node: Node = Depends(get_node), _token: TokenInfo = Depends(require(*READERS))
) -> dict[str, Any]:
    """Each column's category, the detector findings behind it and any provider override,
    together with the dataset's grade (GB/T 43697-2024)."""
    dataset = datasets.show(node, name)
    return {
        "name": dataset["name"],
        "classification": dataset.get("classification"),
        "grading": dataset.get("grading"),
    }


@router.get("/{name}/quality", summary="Quality report of a dataset")
def dataset_quality(
    name: str, node: Node = Depends(get_node), _token: TokenInfo = Depends(require(*READERS))
) -> dict[str, Any]:
    """Quality dimensions after GB/T 36344 and the overall score."""
    return _part(node, name, "quality")


# --------------------------------------------------------------------------- writing


@router.delete("/{name}", summary="Remove a dataset")
def remove_dataset(
    name: str, node: Node = Depends(get_node), caller: TokenInfo = Depends(require(*WRITERS))
) -> dict[str, Any]:
    """Deletes the dataset's file and catalog entry; the ledger keeps the record of both."""
    return datasets.remove(node, name, actor=caller.actor)


@router.post("/{name}/reclassify", summary="Set one column's category")
def reclassify_dataset(
    name: str,
    body: Reclassify,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*WRITERS)),
) -> dict[str, Any]:
    """A provider's correction of the detectors; the dataset is regraded and the change logged."""
    return datasets.reclassify(
        node, name, column=body.column, category=body.category, actor=caller.actor,
        reason=body.reason,
    )


@router.post(
    "",
    summary="Register a dataset by upload",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=UPLOAD_BODY,
)
async def upload_dataset(
    request: Request,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*WRITERS)),
) -> dict[str, Any]:
    """Upload a file as `multipart/form-data` (field `file`, plus optional `name`, `title`,
    `domain`, `description`, `format`). It is imported to Parquet, profiled, classified, graded
    and assessed, and the registration is logged; the response is the dataset as `show` gives it.
    """
    boundary = _boundary(request.headers.get("content-type"))
    workdir = await run_in_threadpool(_make_workdir, node)
    try:
        upload = _Upload(boundary, workdir, node.limits.api_max_upload_mb << 20)
        path, fields = await _receive(request, upload)
        try:
            return await run_in_threadpool(
                datasets.add,
                node,
                path,
                # a blank field (HTML forms, `curl -F name=`) means absent, as for the others;
                # a name with blanks around it is the name checker's to refuse
                name=fields["name"] if fields.get("name", "").strip() else _stem(path.name),
                title=fields.get("title") or None,
                domain=fields.get("domain") or "general",
                description=fields.get("description", ""),
                actor=caller.actor,
                fmt=fields.get("format") or None,
            )
        except DataspaceError as exc:  # name the caller's file, not the node's upload folder
            if exc.details.get("file") == str(path):
                exc.details["file"] = path.name
            # An engine's message can quote a path of the node's (the upload, a partial
            # file): the caller learns nothing from it but the node's layout.
            for where in (str(path.parent.resolve()) + "/", str(path.parent) + "/",
                          str(node.root.resolve()), str(node.root)):
                exc.message = exc.message.replace(where, "")
                exc.hint = exc.hint.replace(where, "") if exc.hint else exc.hint
            exc.args = (exc.message,)
            raise
    finally:
        upload_cleanup(workdir)


# --------------------------------------------------------------------------- upload plumbing


async def _receive(request: Request, upload: _Upload) -> tuple[Path, dict[str, str]]:
    """Stream the body through the parser (file chunks go to disk in the threadpool)."""
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(upload.write, chunk)
        await run_in_threadpool(upload.finish)
    except ClientDisconnect:
        raise InputError("the client disconnected during the upload") from None
    finally:
        upload.close()
    assert upload.path is not None  # finish() raised otherwise
    return upload.path, upload.fields


def _make_workdir(node: Node) -> Path:
    node.tmp_dir.mkdir(parents=True, exist_ok=True)
    # named after this process, so a node opened after a kill removes what it held
    workdir = node.tmp_dir / f"{UPLOAD_PREFIX}{process_tag()}-{secrets.token_hex(8)}"
    workdir.mkdir(mode=0o700)
    return workdir


def upload_cleanup(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


def _boundary(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise StarletteHTTPException(
            415,
            detail="upload the file as multipart/form-data, not "
            + (content_type or "a body without content type"),
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise InputError("the multipart/form-data content type has no boundary")
    return boundary


def safe_file_name(raw: str) -> str:
    """The last path component of a client-sent file name, without control characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C")).strip()
    if name in {"", ".", ".."}:
        return "upload"
    if len(name) > 200:
        suffix = Path(name).suffix[:20]
        name = name[: 200 - len(suffix)] + suffix
    return name.lstrip(".") or "upload"


def _stem(file_name: str) -> str:
    return Path(file_name).stem or file_name


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Upload:
    """Feeds a multipart body through python-multipart's streaming parser: the file part goes
    to disk chunk by chunk, the small text fields are kept (each at most MAX_TEXT_FIELD bytes)."""

    def __init__(self, boundary: bytes, workdir: Path, max_bytes: int) -> None:
        self.workdir = workdir
        self.max_bytes = max_bytes
        self.file_bytes = 0
        self.fields: dict[str, str] = {}
        self.path: Path | None = None
        self._file: IO[bytes] | None = None
        self._headers: dict[str, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._field: str | None = None
        self._buffer = bytearray()
        self._ended = False
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except DataspaceError:
            self.close()
            raise
        except MultipartParseError as exc:
            self.close()
            raise InputError(
                f"the multipart body is malformed: {exc}",
                hint="send a standard multipart/form-data upload",
            ) from None

    def finish(self) -> None:
        self._parser.finalize()
        self.close()
        if not self._ended:
            raise InputError(
                "the multipart body ended early", hint="the upload was truncated; send it again"
            )
        if self.path is None:
            raise InputError(
                "the upload has no file",
                hint=f"send the file in the multipart field '{FILE_FIELD}'",
                field=FILE_FIELD,
            )
        if self.path.stat().st_size == 0:
            raise UnreadableInput(
                f"the uploaded file {self.path.name!r} is empty",
                hint="upload a file with a header row and data",
                field=FILE_FIELD,
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # python-multipart callbacks ----------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers = {}
        self._field = None
        self._buffer.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise InputError("a multipart part has no Content-Disposition: form-data name")
        field = _decode(params[b"name"])
        if field == FILE_FIELD:
            if self.path is not None:
                raise InputError(
                    "the upload has more than one file", hint="send one file per request"
                )
            self.path = self.workdir / safe_file_name(_decode(params.get(b"filename", b"upload")))
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed in _part_end / close
        elif field in TEXT_FIELDS:
            if field in self.fields:
                raise InputError(f"the form field {field!r} is given twice", field=field)
        else:
            raise InputError(
                f"unknown form field {field!r}",
                hint="fields: " + ", ".join((FILE_FIELD, *TEXT_FIELDS)),
                field=field,
            )
        self._field = field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self.file_bytes += end - start
            if self.file_bytes > self.max_bytes:
                raise InputError(
                    f"the upload is larger than {self.max_bytes:,} bytes",
                    hint="import large files on the node with `dataspace dataset add`, "
                    "or raise api_max_upload_mb in node.toml [limits]",
                )
            self._file.write(data[start:end])
            return
        self._buffer += data[start:end]
        if len(self._buffer) > MAX_TEXT_FIELD:
            raise InputError(
                f"the form field {self._field!r} is longer than {MAX_TEXT_FIELD} bytes",
                field=self._field,
            )

    def _part_end(self) -> None:
        if self._file is not None:
            self.close()
        elif self._field is not None:
            try:
                self.fields[self._field] = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(
                    f"the form field {self._field!r} is not UTF-8", field=self._field
                ) from None
        self._field = None

    def _end(self) -> None:
        self._ended = True
