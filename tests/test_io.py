"""tinyprompt.io: cache dir, offline switch, sha256, atomic writes, and verified resumable downloads
(against a file server the test starts on 127.0.0.1)."""
import hashlib
import os
import socket
import threading
import urllib.request

import pytest
import torch

from httpserver import FileServer
from tinyprompt import io

DATA = torch.randint(0, 256, (300_000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
DATA = DATA.numpy().tobytes()
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "0")


@pytest.fixture
def server():
    with FileServer({"/ckpt.pt": DATA}) as s:
        yield s


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_cache_dir_and_offline_follow_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "c"))
    assert io.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TINYPROMPT_CACHE")
    assert io.cache_dir().parts[-2:] == (".cache", "tinyprompt")
    for value, expected in [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)]:
        monkeypatch.setenv("TINYPROMPT_OFFLINE", value)
        assert io.offline() is expected


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    assert io.sha256_file(path, chunk_size=4096) == SHA


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    with io.atomic_write(path, "w") as f:
        f.write("first")
    with pytest.raises(ZeroDivisionError):
        with io.atomic_write(path, "w") as f:
            f.write("half-written")
            1 / 0
    assert path.read_text() == "first"
    assert leftovers(tmp_path) == ["out.txt"]  # the temporary file is gone


def test_atomic_save_round_trip(tmp_path):
    obj = {"w": torch.arange(6.0).view(2, 3)}
    io.atomic_save(obj, tmp_path / "sub" / "x.pt")
    assert torch.equal(torch.load(tmp_path / "sub" / "x.pt", weights_only=True)["w"], obj["w"])


def test_download_good_file(online, server, tmp_path):
    dest = io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False)
    assert dest == tmp_path / "ckpt.pt" and dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["ckpt.pt"]  # no .part left behind
    assert server.requests == [("/ckpt.pt", None)]


def test_download_wrong_sha_leaves_nothing(online, server, tmp_path):
    with pytest.raises(RuntimeError, match="sha256 .* expected 0{64}; it was deleted and not used"):
        io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", "0" * 64, progress=False)
    assert leftovers(tmp_path) == []


def test_truncated_download_keeps_part_and_resumes(online, server, tmp_path):
    server.truncate_next = 100_000
    with pytest.raises(RuntimeError, match=r"stopped after 100000 of 300000 bytes.*kept \(never used as is\)"):
        io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False)
    assert leftovers(tmp_path) == ["ckpt.pt.part"]
    assert (tmp_path / "ckpt.pt.part").read_bytes() == DATA[:100_000]

    dest = io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False)
    assert dest.read_bytes() == DATA and leftovers(tmp_path) == ["ckpt.pt"]
    assert server.requests[-1] == ("/ckpt.pt", "bytes=100000-")  # the second call asked for the rest only


def test_resume_of_complete_part_gets_416_and_finishes(online, server, tmp_path):
    (tmp_path / "ckpt.pt.part").write_bytes(DATA)  # e.g. killed between the last byte and the rename
    assert io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False).read_bytes() == DATA
    assert leftovers(tmp_path) == ["ckpt.pt"]


def test_server_without_range_support_restarts_from_zero(online, tmp_path):
    (tmp_path / "ckpt.pt.part").write_bytes(b"stale bytes from another attempt")
    with FileServer({"/ckpt.pt": DATA}, ranges=False) as server:
        dest = io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False)
    assert dest.read_bytes() == DATA and leftovers(tmp_path) == ["ckpt.pt"]


def test_corrupt_part_is_deleted_not_used(online, server, tmp_path):
    (tmp_path / "ckpt.pt.part").write_bytes(b"x" * 1000)  # resumed onto garbage: the sha check catches it
    with pytest.raises(RuntimeError, match="it was deleted and not used"):
        io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False)
    assert leftovers(tmp_path) == []
    assert io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False).read_bytes() == DATA


def test_http_error_is_reported(online, server, tmp_path):
    with pytest.raises(RuntimeError, match="HTTP 404"):
        io.download(server.url("/missing.pt"), tmp_path / "m.pt", SHA, progress=False)
    assert leftovers(tmp_path) == []


def test_server_down_is_a_clear_error(online, server, tmp_path):
    url = server.url("/ckpt.pt")
    server.stop()
    with pytest.raises(RuntimeError, match=f"cannot reach {url}.*place it at .*ckpt.pt \\(sha256 {SHA}\\)"):
        io.download(url, tmp_path / "ckpt.pt", SHA, progress=False)
    assert leftovers(tmp_path) == []


def test_non_http_answer_is_a_clear_error(online, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_garbage():  # one connection: a reply that is not HTTP at all (http.client.BadStatusLine)
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"NOT HTTP\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    with listener, pytest.raises(RuntimeError, match="cannot reach http://127.0.0.1"):
        io.download(f"http://127.0.0.1:{listener.getsockname()[1]}/x.pt", tmp_path / "x.pt", SHA, progress=False)
    thread.join()
    assert leftovers(tmp_path) == []


def test_offline_never_touches_the_network(monkeypatch, server, tmp_path):
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used in offline mode")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(RuntimeError, match="TINYPROMPT_OFFLINE is set"):
        io.download(server.url("/ckpt.pt"), tmp_path / "ckpt.pt", SHA, progress=False)
    assert server.requests == [] and leftovers(tmp_path) == []


def test_atomic_write_gives_an_ordinary_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        with io.atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
