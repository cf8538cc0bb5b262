"""Online datasets: downloads are checksum-verified and atomic, happen in `prepare_data` only
(never when the shape or classes are read: under DDP every process reads them), and the real
file formats are read.

No network: files in the published formats are written by the tests and served from `file://`
URLs, from a local HTTP server that counts requests, or placed in `data_dir` beforehand.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regzoo.datamodules import ArrayDataModule, DownloadError, cifar10, create_datamodule
from regzoo.datamodules._download import fetch
from regzoo.datamodules.mnist import FashionMnist, Mnist
from tests.datamodules.conftest import idx_arrays, write_cifar, write_idx, write_idx_set

# The online datasets and the number of files each downloads.
ONLINE = {"mnist": 4, "fashion_mnist": 4, "cifar10": 1}


class Mirror:
    """A local HTTP mirror of the files in `folder` that counts the requests it answers."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.requests = folder, 0
        handler = partial(self.Handler, self, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, mirror: Mirror, *args: Any, **kwargs: Any) -> None:
            self.mirror = mirror
            super().__init__(*args, **kwargs)

        def send_head(self) -> Any:
            self.mirror.requests += 1
            return super().send_head()

        def log_message(self, *args: Any) -> None:  # quiet test output
            pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 directly, never through a proxy
    served = Mirror(tmp_path / "mirror")
    served.folder.mkdir()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()
    thread.join()


def publish(name: str, mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny files of dataset `name` on the mirror, their checksums taken as the published ones."""
    if name == "cifar10":
        write_cifar(mirror.folder / cifar10.ARCHIVE)
    else:
        write_idx_set(mirror.folder, idx_arrays())
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.folder.iterdir()}
    if name == "cifar10":
        monkeypatch.setattr(cifar10, "MD5", md5[cifar10.ARCHIVE])
    else:
        monkeypatch.setattr({"mnist": Mnist, "fashion_mnist": FashionMnist}[name], "md5", md5)


def no_loading(dm: ArrayDataModule) -> None:
    raise AssertionError(f"{dm.dataset_name} loaded its data")


def test_fetch_downloads_and_verifies(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"regzoo" * 1000)
    dest = tmp_path / "data" / "copy.bin"
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    assert fetch(source.as_uri(), dest, md5=md5) == dest
    assert dest.read_bytes() == source.read_bytes()


def test_checksum_mismatch_is_clear_and_leaves_no_file(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"not what was published")
    dest = tmp_path / "data" / "copy.bin"
    with pytest.raises(DownloadError, match=r"checksum mismatch for file://.*expected 0{32}"):
        fetch(source.as_uri(), dest, md5="0" * 32)
    assert list(dest.parent.iterdir()) == []  # no half-written or unverified file


def test_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere.gz").as_uri()
    with pytest.raises(DownloadError, match=r"could not download file://.*place the file at"):
        fetch(missing, tmp_path / "data" / "x.gz", md5="0" * 32)


def test_mnist_from_a_mirror_is_refused_when_files_differ_from_the_published_ones(
    tmp_path: Path,
) -> None:
    write_idx_set(tmp_path / "mirror", idx_arrays())
    dm = create_datamodule(
        "mnist", data_dir=tmp_path / "data", mirror=(tmp_path / "mirror").as_uri()
    )
    with pytest.raises(DownloadError, match=r"checksum mismatch.*train-images-idx3-ubyte\.gz"):
        dm.prepare_data()
    assert not any((tmp_path / "data").rglob("*.gz"))


def test_mnist_downloads_from_a_mirror_with_matching_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = idx_arrays(seed=5)
    write_idx_set(tmp_path / "mirror", arrays)
    published = {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (tmp_path / "mirror").iterdir()
    }
    # These files stand in for the published ones, so their checksums are the expected ones.
    monkeypatch.setattr(Mnist, "md5", published)
    dm = create_datamodule(
        "mnist", data_dir=tmp_path / "data", mirror=(tmp_path / "mirror").as_uri()
    )
    dm.prepare_data()
    loaded = dm.load()
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(published)
    np.testing.assert_array_equal(loaded.x, arrays["x"][:, None] / np.float32(255))
    np.testing.assert_array_equal(loaded.y, arrays["y"])


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_are_read_as_images_and_labels(tmp_path: Path, name: str) -> None:
    arrays = idx_arrays(seed=3)
    write_idx_set(tmp_path / name, arrays)
    loaded = create_datamodule(name, data_dir=tmp_path).load()
    assert loaded.x.shape == (len(arrays["y"]), 1, 28, 28) and loaded.x.dtype == np.float32
    np.testing.assert_array_equal(loaded.x[:, 0] * 255, arrays["x"])
    np.testing.assert_array_equal(loaded.y, arrays["y"])
    assert loaded.x_test is not None and loaded.y_test is not None
    np.testing.assert_array_equal(loaded.x_test[:, 0] * 255, arrays["x_test"])
    np.testing.assert_array_equal(loaded.y_test, arrays["y_test"])


def test_a_file_that_is_not_idx_is_refused(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "mnist", idx_arrays())
    images = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(b"\x1f\x8b not idx")
    with pytest.raises(ValueError, match=r"is not a gzipped IDX file"):
        create_datamodule("mnist", data_dir=tmp_path).load()
    with gzip.open(images, "wb") as f:
        f.write(b"\x00\x00\x0d\x03" + bytes(12))  # IDX of floats: not the published format
    with pytest.raises(ValueError, match=r"not an IDX file of unsigned bytes"):
        create_datamodule("mnist", data_dir=tmp_path).load()


def test_cifar_binary_records_are_read_channel_first(tmp_path: Path) -> None:
    written = write_cifar(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", seed=7)
    loaded = create_datamodule("cifar10", data_dir=tmp_path).load()
    assert loaded.x.shape == (100, 3, 32, 32)
    np.testing.assert_allclose(loaded.x * 255, written["x"], atol=1e-3)  # R, G, B planes
    np.testing.assert_array_equal(loaded.y, written["y"])
    assert loaded.x_test is not None
    np.testing.assert_allclose(loaded.x_test * 255, written["x_test"], atol=1e-3)
    np.testing.assert_array_equal(loaded.y_test, written["y_test"])


@pytest.mark.parametrize("normalize", ["none", "pca"])
@pytest.mark.parametrize("name", sorted(ONLINE))
def test_reading_shape_and_classes_downloads_and_reads_nothing(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    normalize: str,
) -> None:
    publish(name, mirror, monkeypatch)
    data_dir = tmp_path / "data"
    dm = create_datamodule(name, data_dir=data_dir, mirror=mirror.url, normalize=normalize)
    side = (3, 32, 32) if name == "cifar10" else (1, 28, 28)
    expected = side  # raw, under pca too: the model flattens
    with monkeypatch.context() as patched:
        patched.setattr(type(dm), "load", no_loading)
        assert dm.input_shape == expected and dm.num_classes == 10
    assert mirror.requests == 0 and not data_dir.exists()
    dm.prepare_data()  # what Lightning runs on one process per node, before setup
    assert mirror.requests == ONLINE[name]
    assert len([p for p in data_dir.rglob("*") if p.is_file()]) == ONLINE[name]
    dm.setup()  # reads the downloaded files, downloads nothing more
    assert mirror.requests == ONLINE[name]
    assert dm.input_shape == expected and dm.num_classes == 10
    assert tuple(dm.splits["train"][0].shape[1:]) == expected


@pytest.mark.parametrize("name", sorted(ONLINE))
def test_loading_before_prepare_data_never_downloads(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    publish(name, mirror, monkeypatch)
    dm = create_datamodule(name, data_dir=tmp_path / "data", mirror=mirror.url)
    with pytest.raises(FileNotFoundError, match=r"is missing: call prepare_data\(\) first"):
        dm.setup()
    assert mirror.requests == 0 and not (tmp_path / "data").exists()


def test_image_folder_reads_its_classes_from_the_folder_names_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("cat", "dog", "owl"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"not an image: never opened")
    dm = create_datamodule("image_folder", data_dir=tmp_path, image_size=(6, 9), grayscale=True)
    monkeypatch.setattr(type(dm), "load", no_loading)
    assert dm.input_shape == (1, 6, 9) and dm.num_classes == 3


def test_files_that_contradict_the_declared_shape_are_refused_at_setup(tmp_path: Path) -> None:
    # A model built from `input_shape` before loading would not fit these 20×20 images.
    arrays = idx_arrays()
    arrays["x"], arrays["x_test"] = arrays["x"][:, :20, :20], arrays["x_test"][:, :20, :20]
    write_idx_set(tmp_path / "mnist", arrays)
    dm = create_datamodule("mnist", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"loaded inputs of shape \(1, 20, 20\), expected \(1, 28"):
        dm.setup()


def test_labels_beyond_the_declared_classes_are_refused_at_setup(tmp_path: Path) -> None:
    arrays = idx_arrays()
    write_idx_set(tmp_path / "mnist", arrays)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", arrays["y_test"] + 3)
    dm = create_datamodule("mnist", data_dir=tmp_path)
    assert dm.num_classes == 10
    with pytest.raises(ValueError, match=r"loaded labels up to 12, expected 10 classes"):
        dm.setup()
