"""File and directory endpoints that are one sandbox op each (everything but upload/download).

The work happens inside the sandbox, as the sandbox user (the backend's `handle.files`), so
paths (`..`, symlinks, `$VAR`, `~`) resolve in the sandbox's own view and permissions are the
sandbox user's. Here we only validate the request shape and map results to responses.

Decision: `DELETE /directories` ignores missing paths and refuses a plain file (400), and
`/files/info` keys its answer by the paths as given, with absolute paths inside each FileInfo.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from osbox.server._backend.base import SandboxFiles

from .errors import bad_request, in_sandbox
from .inputs import INT32_MAX, json_body, json_object, optional_int, query_all, query_one, sandbox_of

__all__ = ["FILE_ROUTES"]


def _files(request: Request) -> SandboxFiles:
    return sandbox_of(request).files


async def files_info(request: Request) -> Response:
    """`GET /files/info?path=a&path=b` → `{path: FileInfo}`."""
    return JSONResponse(await in_sandbox(_files(request).stat(query_all(request, "path")), "stat"))


async def delete_files(request: Request) -> Response:
    """`DELETE /files?path=…`: missing files are ignored; a directory is refused."""
    await in_sandbox(_files(request).delete_files(query_all(request, "path")), "delete_files")
    return Response(status_code=200)


async def set_permissions(request: Request) -> Response:
    """`POST /files/permissions {path: {mode, owner?, group?}}`."""
    body = json_object(await json_body(request))
    await in_sandbox(_files(request).set_permissions(body), "set_permissions")
    return Response(status_code=200)


async def move_files(request: Request) -> Response:
    """`POST /files/mv [{src, dest}]`."""
    body = await json_body(request)
    if not isinstance(body, list):
        raise bad_request("request body must be a JSON array of {src, dest}")
    await in_sandbox(_files(request).move(body), "move")
    return Response(status_code=200)


async def search_files(request: Request) -> Response:
    """`GET /files/search?path=&pattern=` → `[FileInfo]`."""
    pattern = request.query_params.get("pattern") or "**"
    found = await in_sandbox(_files(request).search(query_one(request, "path"), pattern), "search")
    return JSONResponse(found)


async def replace_content(request: Request) -> Response:
    """`POST /files/replace[?verbose=true] {path: {old, new}}`."""
    body = json_object(await json_body(request))
    counts = await in_sandbox(_files(request).replace(body), "replace")
    if request.query_params.get("verbose", "").lower() in ("true", "1", "yes"):
        return JSONResponse(counts)
    return Response(status_code=200)


async def list_directory(request: Request) -> Response:
    """`GET /directories/list?path=&depth=1` → `[FileInfo]`."""
    raw_depth = request.query_params.get("depth")
    depth = 1
    if raw_depth not in (None, ""):
        depth = optional_int(raw_depth, "depth", maximum=INT32_MAX) or 0
    entries = await in_sandbox(_files(request).list_dir(query_one(request, "path"), depth), "list_dir")
    return JSONResponse(entries)


async def make_dirs(request: Request) -> Response:
    """`POST /directories {path: {mode, owner?, group?}}`: `mkdir -p`, then chmod/chown the leaf."""
    body = json_object(await json_body(request))
    await in_sandbox(_files(request).make_dirs(body), "make_dirs")
    return Response(status_code=200)


async def delete_dirs(request: Request) -> Response:
    """`DELETE /directories?path=…`: recursive."""
    await in_sandbox(_files(request).delete_dirs(query_all(request, "path")), "delete_dirs")
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
