"""The file= route over real HTTP (Gradio 3.41's rules, which A1111 extensions rely on): files under the program
folder, the data folder and the extensions, by relative or absolute path, with Range requests; dot-files, escapes,
settings and login files refused with 403 and a reason; missing files 404. The server runs under --subpath and
--gradio-auth-path, so the route is also checked to sit beside the page and to ask for the page's login."""
from __future__ import annotations

import http.client
import json
import os
import re
import uuid

import pytest
import requests

from modules.paths import SCRIPT_DIR
from tests.support.server import start_server

SUB = "/sd"
TAGS = "tag,count\n1girl,100\nsolo,90\n"


@pytest.fixture(scope="module")
def files_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("file_route")
    outside = tmp_path_factory.mktemp("outside_roots") / "secret.txt"
    outside.write_text("not for the web")
    ext = data / "extensions" / "tagger"
    (ext / "tags").mkdir(parents=True)
    (ext / "tags" / "tags.csv").write_text(TAGS)
    (ext / ".git").mkdir()
    (ext / ".git" / "config").write_text("[remote]")
    (ext / ".env").write_text("TOKEN=1")
    (ext / "escape.txt").symlink_to(outside)
    (data / "config.json").write_text(json.dumps({"samples_save": True}))
    auth = data / "auth.txt"
    auth.write_text("tester:pw123\n")
    srv = start_server(data, "--subpath", SUB, "--gradio-auth-path", str(auth), "--skip-load-model-at-start",
                       wait_model=False)
    srv.ext, srv.outside, srv.auth = ext, outside, auth
    srv.session = requests.Session()
    r = srv.session.post(f"{srv.url}{SUB}/login", data={"username": "tester", "password": "pw123"}, timeout=30)
    assert r.status_code == 200, r.text
    yield srv
    srv.stop()


def get(server, path: str, method: str = "GET", **kwargs) -> requests.Response:
    return server.session.request(method, f"{server.url}{SUB}/file={path}", timeout=30, **kwargs)


def test_absolute_path_inside_an_extension(files_server):
    r = get(files_server, str(files_server.ext / "tags" / "tags.csv"))
    assert r.status_code == 200, r.text
    assert r.text == TAGS and r.headers["content-type"].startswith("text/csv")
    assert r.headers["accept-ranges"] == "bytes"


def test_relative_path_from_the_program_folder(files_server):
    r = get(files_server, "modules/ui/js/a1111_scripts_done.js?12345")  # the ?mtime the page adds is ignored
    assert r.status_code == 200, r.text
    assert r.content == (SCRIPT_DIR / "modules/ui/js/a1111_scripts_done.js").read_bytes()
    assert r.headers["content-type"].startswith("text/javascript")


def test_relative_path_in_tmp(files_server):
    # tag autocomplete writes tmp/ files in the program folder and fetches them as file=tmp/...
    name = f"file-route-{uuid.uuid4().hex}.txt"
    target = SCRIPT_DIR / "tmp" / name
    target.parent.mkdir(exist_ok=True)
    target.write_text("tags path")
    try:
        r = get(files_server, f"tmp/{name}")
        assert r.status_code == 200 and r.text == "tags path"
    finally:
        target.unlink()


def test_range_request(files_server):
    r = get(files_server, str(files_server.ext / "tags" / "tags.csv"), headers={"Range": "bytes=4-12"})
    assert r.status_code == 206, r.text
    assert r.content == TAGS.encode()[4:13]
    assert r.headers["content-range"] == f"bytes 4-12/{len(TAGS)}"


def test_head_request(files_server):
    r = get(files_server, str(files_server.ext / "tags" / "tags.csv"), method="HEAD")
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == len(TAGS)


@pytest.mark.parametrize("name", [".env", ".git/config"])
def test_dot_files_and_folders_are_forbidden(files_server, name):
    r = get(files_server, str(files_server.ext / name))
    assert r.status_code == 403
    assert "dot-files" in r.json()["detail"]


def raw_get(server, path: str) -> tuple[int, str]:
    """GET with the path sent as written: requests (like a browser) would fold the ../ away before sending."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    cookies = "; ".join(f"{k}={v}" for k, v in server.session.cookies.items())
    conn.request("GET", f"{SUB}/file={path}", headers={"Cookie": cookies})
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_dot_escape_is_forbidden(files_server):
    relative = os.path.relpath(files_server.outside, SCRIPT_DIR)
    assert relative.startswith("..")
    absolute = f"{files_server.ext}/../../../{files_server.outside.parent.name}/secret.txt"
    for path in (relative, absolute):
        for status, body in (raw_get(files_server, path), raw_get(files_server, path.replace("..", "%2E%2E"))):
            assert status == 403, (path, body)
            assert "outside the folders this route serves" in json.loads(body)["detail"]
    # a ../ that stays inside the roots is fine (Gradio 3.41 normalises the path the same way)
    status, body = raw_get(files_server, f"{files_server.ext}/tags/../tags/tags.csv")
    assert status == 200 and body == TAGS


def test_absolute_path_outside_the_roots_is_forbidden(files_server):
    for path in (files_server.outside, "/etc/passwd"):
        r = get(files_server, str(path))
        assert r.status_code == 403, r.text
        assert "outside the folders this route serves" in r.json()["detail"]


def test_symlink_out_of_the_roots_is_forbidden(files_server):
    r = get(files_server, str(files_server.ext / "escape.txt"))
    assert r.status_code == 403 and "not for the web" not in r.text


def test_settings_and_login_files_are_forbidden(files_server):
    for path in (files_server.data_dir / "config.json", files_server.auth, "config.json"):
        r = get(files_server, str(path))
        assert r.status_code == 403, (path, r.text)
        assert "never served" in r.json()["detail"]


def test_missing_file_and_folder_are_404(files_server):
    r = get(files_server, str(files_server.ext / "tags" / "nope.csv"))
    assert r.status_code == 404 and "does not exist" in r.json()["detail"]
    r = get(files_server, str(files_server.ext / "tags"))
    assert r.status_code == 404 and "is a folder" in r.json()["detail"]


def test_login_required(files_server):
    r = requests.get(f"{files_server.url}{SUB}/file={files_server.ext / 'tags' / 'tags.csv'}", timeout=30)
    assert r.status_code == 401 and TAGS not in r.text


def test_page_scripts_resolve_under_the_subpath(files_server):
    """Every file= the page injects (relative to the page at /sd/) answers through the route."""
    page = files_server.session.get(f"{files_server.url}{SUB}/", timeout=30)
    assert page.status_code == 200
    sources = re.findall(r'src=\\"(file=[^"\\]+)', page.text)
    assert any("a1111_scripts_done.js" in s for s in sources), sources
    for src in sources:
        r = files_server.session.get(f"{files_server.url}{SUB}/{src}", timeout=30)
        assert r.status_code == 200, (src, r.text)
