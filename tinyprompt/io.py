"""Files on disk: the cache folder, sha256, atomic writes and verified, resumable downloads.

Principle 6 of the design ("nothing lost") lives here: every file tinyprompt writes goes to a
temporary name in the same folder and is renamed into place only when complete, so an interrupted
write leaves the previous version intact; a download is used only after its sha256 matches.
"""
import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

__all__ = ["cache_dir", "offline", "sha256_file", "atomic_write", "atomic_save", "writable_dir", "download"]


def cache_dir() -> Path:
    """Where downloads and caches go: $TINYPROMPT_CACHE, else ~/.cache/tinyprompt."""
    root = os.environ.get("TINYPROMPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tinyprompt")
    return Path(root)


def offline() -> bool:
    """True when TINYPROMPT_OFFLINE is set to a true value: never touch the network."""
    return os.environ.get("TINYPROMPT_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside `path`; on success fsync it and rename it onto `path`.

    If the body raises (or the process dies), `path` keeps its previous content and the temporary
    file is removed (or, after a kill, left as an ignorable `.tmp-*` file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); give it an ordinary file's mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; set it straight back
    os.umask(mask)
    return mask


def atomic_save(obj, path) -> None:
    """`torch.save` that never leaves a half-written file at `path`."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def writable_dir(path) -> Path:
    """Create the folder `path` (and its parents) and prove a file can be written there; OSError when not.

    Run before a long job, so a bad output path fails at once rather than at the first save.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):  # an existing folder can still refuse files (permissions, read-only mount)
        pass
    return path


class _Progress:
    """A one-line progress display on stderr (tqdm when installed), at most a few updates a second."""

    def __init__(self, total, desc):
        self.total, self.desc, self.done, self.last = total, desc, 0, 0.0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last > 0.5 and sys.stderr.isatty():
            self.last = now
            of = f" / {self.total / 1e6:.1f}" if self.total else ""
            sys.stderr.write(f"\r{self.desc}: {self.done / 1e6:.1f}{of} MB")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif sys.stderr.isatty():
            sys.stderr.write("\n")


def download(url: str, dest, sha256: str, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download `url` to `dest`, verified against `sha256`; resumes a previous partial download.

    Bytes go to `dest.part` (kept on a network error so that the next call resumes with an HTTP Range
    request); only a complete file whose sha256 matches is renamed to `dest`. A mismatching file is
    deleted and reported. With TINYPROMPT_OFFLINE=1 this raises instead of touching the network.
    """
    dest = Path(dest)
    if offline():
        raise RuntimeError(
            f"{dest.name} is not on disk and TINYPROMPT_OFFLINE is set, so it cannot be downloaded from "
            f"{url}. Download it elsewhere and place it at {dest} (sha256 {sha256}), or unset TINYPROMPT_OFFLINE."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already complete (or longer than the file)
            return _finish(part, dest, url, sha256)
        raise RuntimeError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise RuntimeError(
            f"cannot reach {url} ({e}). Check the network, or download the file elsewhere and place it "
            f"at {dest} (sha256 {sha256})."
        ) from e
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        total = (have if resumed else 0) + (expected or 0)
        bar = _Progress(total or None, dest.name) if progress else None
        received = 0
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    received += len(chunk)
                    if bar:
                        bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise RuntimeError(
                f"downloading {url} stopped after {part.stat().st_size} bytes ({e}); the partial file "
                f"{part} is kept and the next attempt resumes from it."
            ) from e
        finally:
            if bar:
                bar.close()
    if expected is not None and received < expected:
        raise RuntimeError(
            f"downloading {url} stopped after {part.stat().st_size} of {total} bytes; the partial file "
            f"{part} is kept (never used as is) and the next attempt resumes from it."
        )
    return _finish(part, dest, url, sha256)


def _finish(part: Path, dest: Path, url: str, sha256: str) -> Path:
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise RuntimeError(
            f"the file downloaded from {url} has sha256 {got}, expected {sha256}; it was deleted and "
            f"not used. Try again; if this repeats, the file on the server changed."
        )
    os.replace(part, dest)
    return dest
