"""Files and directories against a real sandbox: metadata ops, upload, download, confinement."""

from __future__ import annotations

import json
import os

import httpx2

from tests.integration.execd_fixtures import Execd, check_spec


def on_host(path: str) -> bool:
    """Whether `path` exists on the host (outside every sandbox)."""
    return os.path.lexists(path)


def metadata_part(meta: dict[str, object]) -> tuple[str, tuple[str, bytes, str]]:
    return ("metadata", ("metadata", json.dumps(meta).encode(), "application/json"))


def file_part(data: bytes) -> tuple[str, tuple[str, bytes, str]]:
    return ("file", ("blob", data, "application/octet-stream"))


async def upload(execd: Execd, *pairs: tuple[dict[str, object], bytes]) -> httpx2.Response:
    files = []
    for meta, data in pairs:
        files += [metadata_part(meta), file_part(data)]
    return await execd.client.post("/files/upload", files=files)


async def test_upload_several_files_then_download(execd: Execd) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    response = await upload(
        execd,
        ({"path": "/workspace/a/b/one.txt", "mode": 600}, b"one\n"),
        ({"path": "two.bin"}, big),
    )
    assert response.status_code == 200, response.text
    info = await execd.client.get(
        "/files/info", params=[("path", "/workspace/a/b/one.txt"), ("path", "two.bin")]
    )
    check_spec(info)
    body = info.json()
    assert body["/workspace/a/b/one.txt"]["mode"] == 600 and body["/workspace/a/b/one.txt"]["size"] == 4
    assert body["two.bin"]["path"] == "/workspace/two.bin" and body["two.bin"]["type"] == "file"
    download = await execd.client.get("/files/download", params={"path": "/workspace/two.bin"})
    assert download.status_code == 200 and download.content == big
    assert download.headers["content-length"] == str(len(big))
    assert download.headers["content-disposition"] == 'attachment; filename="two.bin"'
    listing = await execd.sh("ls -a /workspace")
    assert "osbox-upload" not in listing, "no temp files left behind"


async def test_upload_overwrites_and_bad_uploads_lose_nothing(execd: Execd) -> None:
    assert (await upload(execd, ({"path": "/workspace/f"}, b"old"))).status_code == 200
    assert (await upload(execd, ({"path": "/workspace/f"}, b"new"))).status_code == 200
    assert await execd.sh("cat /workspace/f") == "new"
    no_meta = await execd.client.post("/files/upload", files=[file_part(b"x")])
    assert no_meta.status_code == 400 and no_meta.json()["code"] == "INVALID_FILE_METADATA"
    bad_meta = await execd.client.post("/files/upload", files=[("metadata", ("m", b"{", "application/json"))])
    assert bad_meta.status_code == 400
    denied = await upload(execd, ({"path": "/usr/x"}, b"data"))
    assert denied.status_code in (400, 403), denied.text
    assert set(denied.json()) == {"code", "message"}
    not_multipart = await execd.client.post("/files/upload", content=b"raw")
    assert not_multipart.status_code == 400
    assert await execd.sh("cat /workspace/f") == "new"


async def test_download_ranges(execd: Execd) -> None:
    data = bytes(range(256)) * 4
    assert (await upload(execd, ({"path": "/workspace/r.bin"}, data))).status_code == 200

    async def get(range_header: str) -> httpx2.Response:
        return await execd.client.get(
            "/files/download", params={"path": "/workspace/r.bin"}, headers={"Range": range_header}
        )

    first = await get("bytes=0-9")
    assert first.status_code == 206 and first.content == data[:10]
    assert (
        first.headers["content-range"] == f"bytes 0-9/{len(data)}" and first.headers["content-length"] == "10"
    )
    assert (await get("bytes=1000-")).content == data[1000:]
    assert (await get("bytes=-5")).content == data[-5:]
    beyond = await get("bytes=5000-6000")
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert (await get("bytes=9-3")).status_code == 416
    assert (await get("bytes=0-1,4-5")).status_code == 416


async def test_download_errors_and_names(execd: Execd) -> None:
    missing = await execd.client.get("/files/download", params={"path": "/workspace/nope"})
    assert missing.status_code == 404 and missing.json()["code"] == "FILE_NOT_FOUND"
    directory = await execd.client.get("/files/download", params={"path": "/workspace"})
    assert directory.status_code == 400
    no_path = await execd.client.get("/files/download")
    assert no_path.status_code == 400 and no_path.json()["code"] == "MISSING_QUERY"
    assert (await upload(execd, ({"path": "/workspace/résumé.txt"}, b"x"))).status_code == 200
    named = await execd.client.get("/files/download", params={"path": "/workspace/résumé.txt"})
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.txt" in named.headers["content-disposition"]


async def test_confinement_traversal_and_symlinks(execd: Execd) -> None:
    shadow = await execd.client.get("/files/download", params={"path": "/workspace/../../etc/shadow"})
    assert shadow.status_code in (403, 404), "the sandbox user must not read /etc/shadow"
    await execd.sh("ln -s /etc/shadow /workspace/link")
    via_link = await execd.client.get("/files/download", params={"path": "/workspace/link"})
    assert via_link.status_code in (403, 404)
    mkdir_usr = await execd.client.post("/directories", json={"/usr/evil": {"mode": 755}})
    assert mkdir_usr.status_code in (400, 403) and not on_host("/usr/evil")
    mv_out = await execd.client.post("/files/mv", json=[{"src": "/workspace/link", "dest": "/usr/link"}])
    assert mv_out.status_code in (400, 403) and not on_host("/usr/link")
    # The sandbox's /workspace is its own, not the host's.
    assert not on_host("/workspace/link")


async def test_metadata_operations(execd: Execd) -> None:
    await execd.sh(
        "mkdir -p /workspace/p/q && echo 'host=localhost' > /workspace/p/c.conf && touch /workspace/p/q/x.py"
    )
    perms = await execd.client.post("/files/permissions", json={"/workspace/p/c.conf": {"mode": 640}})
    assert perms.status_code == 200
    assert await execd.sh("stat -c %a /workspace/p/c.conf") == "640"
    replaced = await execd.client.post(
        "/files/replace",
        params={"verbose": "true"},
        json={"/workspace/p/c.conf": {"old": "localhost", "new": "0.0.0.0"}},
    )
    check_spec(replaced)
    assert replaced.json() == {"/workspace/p/c.conf": {"replacedCount": 1}}
    quiet = await execd.client.post("/files/replace", json={"/workspace/p/c.conf": {"old": "zz", "new": "y"}})
    assert quiet.status_code == 200 and quiet.content == b""
    empty_old = await execd.client.post(
        "/files/replace", json={"/workspace/p/c.conf": {"old": "", "new": "y"}}
    )
    assert empty_old.status_code == 400
    found = await execd.client.get("/files/search", params={"path": "/workspace/p", "pattern": "*.{py,conf}"})
    check_spec(found)
    assert sorted(i["path"] for i in found.json()) == ["/workspace/p/c.conf", "/workspace/p/q/x.py"]
    listing = await execd.client.get("/directories/list", params={"path": "/workspace/p", "depth": 2})
    check_spec(listing)
    assert [i["path"] for i in listing.json()] == [
        "/workspace/p/c.conf",
        "/workspace/p/q",
        "/workspace/p/q/x.py",
    ]
    zero = await execd.client.get("/directories/list", params={"path": "/workspace/p", "depth": 0})
    assert zero.json() == []
    not_dir = await execd.client.get("/directories/list", params={"path": "/workspace/p/c.conf"})
    assert not_dir.status_code == 400
    moved = await execd.client.post(
        "/files/mv", json=[{"src": "/workspace/p/c.conf", "dest": "/workspace/n/m/c.conf"}]
    )
    assert moved.status_code == 200
    exists = await execd.client.post(
        "/files/mv", json=[{"src": "/workspace/p/q/x.py", "dest": "/workspace/n/m/c.conf"}]
    )
    assert exists.status_code == 400
    gone = await execd.client.post("/files/mv", json=[{"src": "/workspace/nope", "dest": "/workspace/z"}])
    assert gone.status_code == 404
    deleted = await execd.client.delete(
        "/files", params=[("path", "/workspace/n/m/c.conf"), ("path", "/workspace/none")]
    )
    assert deleted.status_code == 200
    refuse_dir = await execd.client.delete("/files", params={"path": "/workspace/p"})
    assert refuse_dir.status_code == 400
    info_missing = await execd.client.get("/files/info", params={"path": "/workspace/n/m/c.conf"})
    assert info_missing.status_code == 404
    check_spec(info_missing)
    made = await execd.client.post("/directories", json={"/workspace/d1/d2": {"mode": 700}})
    assert made.status_code == 200 and await execd.sh("stat -c %a /workspace/d1/d2") == "700"
    removed = await execd.client.delete(
        "/directories", params=[("path", "/workspace/d1"), ("path", "/workspace/p")]
    )
    assert removed.status_code == 200
    assert await execd.sh("ls /workspace") == "n"
    bad = await execd.client.post("/files/permissions", content=b"nope")
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_REQUEST_BODY"
