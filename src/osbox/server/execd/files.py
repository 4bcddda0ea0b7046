"""File and directory endpoints that are one sandbox op each (everything but upload/download).

The work happens inside the sandbox, in the agent, as the sandbox user (`_agent/fs.py`), so
paths (`..`, symlinks, `$VAR`, `~`) resolve in the sandbox's own view and permissions are the
sandbox user's. Here we only validate the request shape and map results to responses.

Decision: `DELETE /directories` ignores missing paths and refuses a plain file (400), and
`/files/info` keys its answer by the paths as given, with absolute paths inside each FileInfo.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import bad_request, sandbox_call
from .inputs import INT32_MAX, json_body, json_object, optional_int, query_all, query_one, sandbox_of

__all__ = ["FILE_ROUTES"]


async def _call(request: Request, op: str, **args: Any) -> Any:
    return await sandbox_call(sandbox_of(request), op, **args)


async def files_info(request: Request) -> Response:
    """`GET /files/info?path=a&path=b` → `{path: FileInfo}`."""
    return JSONResponse(await _call(request, "stat", paths=query_all(request, "path")))


async def delete_files(request: Request) -> Response:
    """`DELETE /files?path=…`: missing files are ignored; a directory is refused."""
    await _call(request, "delete_files", paths=query_all(request, "path"))
    return Response(status_code=200)


async def set_permissions(request: Request) -> Response:
    """`POST /files/permissions {path: {mode, owner?, group?}}`."""
    body = json_object(await json_body(request))
    await _call(request, "set_permissions", items=body)
    return Response(status_code=200)


async def move_files(request: Request) -> Response:
    """`POST /files/mv [{src, dest}]`."""
    body = await json_body(request)
    if not isinstance(body, list):
        raise bad_request("request body must be a JSON array of {src, dest}")
    await _call(request, "move", items=body)
    return Response(status_code=200)


async def search_files(request: Request) -> Response:
    """`GET /files/search?path=&pattern=` → `[FileInfo]`."""
    pattern = request.query_params.get("pattern") or "**"
    return JSONResponse(await _call(request, "search", path=query_one(request, "path"), pattern=pattern))


async def replace_content(request: Request) -> Response:
    """`POST /files/replace[?verbose=true] {path: {old, new}}`."""
    body = json_object(await json_body(request))
    counts = await _call(request, "replace", items=body)
    if request.query_params.get("verbose", "").lower() in ("true", "1", "yes"):
        return JSONResponse(counts)
    return Response(status_code=200)


async def list_directory(request: Request) -> Response:
    """`GET /directories/list?path=&depth=1` → `[FileInfo]`."""
    raw_depth = request.query_params.get("depth")
    depth = 1
    if raw_depth not in (None, ""):
        depth = optional_int(raw_depth, "depth", maximum=INT32_MAX) or 0
    return JSONResponse(await _call(request, "list_dir", path=query_one(request, "path"), depth=depth))


async def make_dirs(request: Request) -> Response:
    """`POST /directories {path: {mode, owner?, group?}}`: `mkdir -p`, then chmod/chown the leaf."""
    body = json_object(await json_body(request))
    await _call(request, "make_dirs", items=body)
    return Response(status_code=200)


async def delete_dirs(request: Request) -> Response:
    """`DELETE /directories?path=…`: recursive."""
    await _call(request, "delete_dirs", paths=query_all(request, "path"))
    return Response(status_code=200)


#: (path, endpoint, methods) for the app's route table.
FILE_ROUTES = [
    ("/files/info", files_info, ["GET"]),
    ("/files", delete_files, ["DELETE"]),
    ("/files/permissions", set_permissions, ["POST"]),
    ("/files/mv", move_files, ["POST"]),
    ("/files/search", search_files, ["GET"]),
    ("/files/replace", replace_content, ["POST"]),
    ("/directories/list", list_directory, ["GET"]),
    ("/directories", make_dirs, ["POST"]),
    ("/directories", delete_dirs, ["DELETE"]),
]
