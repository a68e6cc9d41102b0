"""cnnjax.data: datasets, IDX/CIFAR/folder loaders, downloads, splits, batches, statistics.

Every file is written here (tiny IDX files, CIFAR-style pickles, image folders); the download
tests run against a real HTTP server on 127.0.0.1. One test loads the real Fashion-MNIST files
when the shared data folder is present.
"""

import gzip
import hashlib
import http.server
import pickle
import struct
import threading
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from cnnjax import data
from cnnjax.data import (
    FASHION_MNIST_CLASSES,
    Dataset,
    _idx,
    _split,
    batches,
    channel_stats,
    epoch_permutation,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    make_dataset,
    read_idx,
    split,
    split_indices,
    split_train_val,
    write_idx,
)

REAL_FASHION_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --- helpers ---------------------------------------------------------------------------------


def _idx_bytes(array):
    """An IDX file written by hand from the format description (independent of write_idx)."""
    codes = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}
    header = bytes([0, 0, codes[array.dtype.name], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist_like(folder, n_train=30, n_test=10, *, gz=True, seed=0):
    """Four tiny IDX files; labels cycle through the 10 classes. Returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: (np.arange(n_train) % 10).astype(np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        raw = _idx_bytes(array)
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.fixture
def search_env(tmp_path, monkeypatch):
    """An isolated search path: HOME, CNNJAX_DATA and the system folders all under tmp_path."""
    home, env, system = tmp_path / "home", tmp_path / "env", tmp_path / "usr-share"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("CNNJAX_DATA", raising=False)
    monkeypatch.setitem(_idx._SYSTEM_DIRS, "fashion-mnist", (system,))
    return {
        "home": home,
        "cache": home / ".cache" / "cnnjax" / "fashion-mnist",
        "env": env,
        "system": system,
    }


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served; yields (folder, url, requests)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    root = tmp_path / "served"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _tiny_dataset(labels, seed=0):
    labels = np.asarray(labels)
    images = np.random.default_rng(seed).random((labels.size, 4, 4, 1), dtype=np.float32)
    return make_dataset(images, labels)


# --- make_dataset ----------------------------------------------------------------------------


def test_make_dataset_converts_uint8_and_keeps_floats():
    pixels = np.array([0, 51, 255], np.uint8).reshape(3, 1, 1, 1)
    ds = make_dataset(pixels, [0, 1, 2], ("a", "b", "c"))
    assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.images.ravel(), np.float32([0, 0.2, 1]))
    assert ds.class_names == ("a", "b", "c") and len(ds) == 3 and ds.num_classes == 3
    floats = make_dataset(np.full((2, 3, 3, 3), 0.5, np.float64), np.array([1, 0], np.uint8))
    assert floats.images.dtype == np.float32 and floats.class_names == ("0", "1")
    assert "float32[2, 3, 3, 3]" in repr(floats)


@pytest.mark.parametrize(
    "images, labels, names, match",
    [
        (np.zeros((2, 4, 4), np.float32), [0, 1], None, r"NHWC.*images\[\.\.\., None\]"),
        (np.zeros((2, 4, 4, 1, 1), np.float32), [0, 1], None, "NHWC"),
        (np.zeros((2, 4, 4, 1), np.int64), [0, 1], None, "floating point.*uint8.*int64"),
        (np.zeros((2, 4, 4, 1), bool), [0, 1], None, "dtype bool"),
        (np.full((2, 4, 4, 1), 1.5, np.float32), [0, 1], None, r"\[0, 1\].*1\.5"),
        (np.full((2, 4, 4, 1), 200.0, np.float32), [0, 1], None, "divide by 255"),
        (np.full((2, 4, 4, 1), -0.1, np.float32), [0, 1], None, r"\[0, 1\]"),
        (np.full((2, 4, 4, 1), np.nan, np.float32), [0, 1], None, "NaN"),
        (np.full((2, 4, 4, 1), np.inf, np.float32), [0, 1], None, r"\[0, 1\]"),
        (np.zeros((2, 4, 4, 1), np.float32), [0.0, 1.0], None, "integers.*float64"),
        (np.zeros((2, 4, 4, 1), np.float32), [0, 2], ("a", "b"), r"\[0, 2\).*\[2\]"),
        (np.zeros((2, 4, 4, 1), np.float32), [-1, 0], None, ">= 0"),
        (np.zeros((2, 4, 4, 1), np.float32), [-1, 0], ("a", "b"), r"\[-1\]"),
        (np.zeros((2, 4, 4, 1), np.float32), [0, 1, 1], None, "2 images, 3 labels"),
        (np.zeros((2, 4, 4, 1), np.float32), [[0, 1]], None, "1-D"),
        (np.zeros((0, 4, 4, 1), np.float32), np.zeros(0, int), None, "empty"),
        (np.zeros((2, 0, 4, 1), np.float32), [0, 1], None, "empty"),
        (np.zeros((2, 4, 4, 1), np.float32), [0, 1], ("a", "a"), "distinct"),
        (np.zeros((2, 4, 4, 1), np.float32), [0, 1], "ab", "sequence of names"),
        (np.zeros((2, 4, 4, 1), np.float32), [0, 1], ("a", ""), "non-empty strings"),
    ],
)
def test_make_dataset_rejects_bad_input(images, labels, names, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(images, labels, names)


def test_dataset_constructor_checks_types():
    with pytest.raises(ValueError, match="make_dataset"):
        Dataset(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, np.int32), ("a",))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        Dataset(np.zeros((2, 4, 4, 1), np.float32), np.zeros(3, np.int32), ("a",))


# --- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = write_idx(tmp_path / name, array)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)
    back[0] = 0  # The result is an ordinary writable array.


def test_idx_matches_the_format_and_detects_gzip_by_content(tmp_path):
    array = np.arange(12, dtype=np.int16).reshape(3, 4) * 1000
    raw = _idx_bytes(array)
    assert write_idx(tmp_path / "w", array).read_bytes() == raw
    (tmp_path / "gz-without-suffix").write_bytes(gzip.compress(raw))
    (tmp_path / "raw-with-suffix.gz").write_bytes(raw)
    for name in ("gz-without-suffix", "raw-with-suffix.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "c", array, compress=True)), array)


def test_idx_truncated_or_corrupt_files_name_the_file(tmp_path):
    raw = _idx_bytes(np.zeros((4, 5, 5), np.uint8))
    cases = {
        "short-data": (raw[:-3], r"short-data: truncated IDX file.*\(4, 5, 5\).*100 bytes.*97"),
        "short-gz": (gzip.compress(raw)[:-12], "short-gz: corrupt or truncated gzip"),
        "short-header": (raw[:9], r"short-header: truncated IDX header.*3 dimensions need 16"),
        "tiny": (b"\x00\x00", "tiny: 2 bytes is too short"),
        "extra": (raw + b"\x00", "extra: corrupt IDX file.*101 bytes follow"),
        "magic": (b"PK" + raw[2:], "magic: not an IDX file.*expected 0000"),
        "code": (raw[:2] + b"\x07" + raw[3:], "code: unknown IDX type code 0x07.*0x08"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=match):
            read_idx(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def test_write_idx_rejects_unsupported_dtypes(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    assert not (tmp_path / "x").exists()


# --- MNIST-like loaders ----------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_a_folder(tmp_path, gz):
    arrays = _write_mnist_like(tmp_path, n_train=30, n_test=10, gz=gz)
    train, test = load_fashion_mnist(tmp_path)
    assert train.images.shape == (30, 28, 28, 1) and test.images.shape == (10, 28, 28, 1)
    assert train.class_names == FASHION_MNIST_CLASSES and train.class_names[0] == "T-shirt/top"
    np.testing.assert_array_equal(train.images[..., 0], arrays[STEMS[0]] / np.float32(255))
    np.testing.assert_array_equal(test.labels, arrays[STEMS[3]])
    assert train.labels.dtype == np.int32 and train.images.dtype == np.float32


def test_load_mnist_from_a_folder_has_digit_classes(tmp_path):
    _write_mnist_like(tmp_path / "mnist", n_train=12, n_test=4)
    train, test = load_mnist(tmp_path)  # path/mnist is looked at too
    assert train.class_names == tuple("0123456789") and (len(train), len(test)) == (12, 4)


def test_mismatched_or_corrupt_files_are_value_errors(tmp_path):
    arrays = _write_mnist_like(tmp_path, gz=False)
    (tmp_path / STEMS[1]).write_bytes(_idx_bytes(arrays[STEMS[1]][:-1]))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: expected 30 uint8 labels"):
        load_fashion_mnist(tmp_path)
    (tmp_path / STEMS[1]).write_bytes(_idx_bytes(np.full(30, 10, np.uint8)))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: labels must be in \[0, 10\)"):
        load_fashion_mnist(tmp_path)
    (tmp_path / STEMS[1]).write_bytes(_idx_bytes(arrays[STEMS[1]])[:-5])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(tmp_path)


def test_search_order(search_env, monkeypatch):
    env, system, cache = search_env["env"], search_env["system"], search_env["cache"]
    _write_mnist_like(cache, n_train=14)
    assert len(load_fashion_mnist()[0]) == 14
    _write_mnist_like(system, n_train=13)
    assert len(load_fashion_mnist()[0]) == 13
    monkeypatch.setenv("CNNJAX_DATA", str(env))
    _write_mnist_like(env, n_train=12)
    assert len(load_fashion_mnist()[0]) == 12
    _write_mnist_like(env / "fashion-mnist", n_train=11, gz=False)
    assert len(load_fashion_mnist()[0]) == 11
    explicit = search_env["home"] / "explicit"
    _write_mnist_like(explicit, n_train=10)
    assert len(load_fashion_mnist(explicit)[0]) == 10
    # A partial folder is skipped, not half-loaded.
    (env / "fashion-mnist" / STEMS[3]).unlink()
    assert len(load_fashion_mnist()[0]) == 12


def test_not_found_lists_every_place_and_the_fixes(search_env, monkeypatch, http_server):
    _, url, requests = http_server
    monkeypatch.setenv("CNNJAX_DATA", str(search_env["env"]))
    _write_mnist_like(search_env["system"], n_train=10)
    (search_env["system"] / f"{STEMS[0]}.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(base_url=url)
    message = str(info.value)
    for folder in (
        search_env["env"] / "fashion-mnist",
        search_env["env"],
        search_env["system"],
        search_env["cache"],
    ):
        assert str(folder) in message
    assert f"missing {STEMS[0]}" in message and "no such folder" in message
    for fix in ("path=", "CNNJAX_DATA", "apt-get install dataset-fashion-mnist", "download=True"):
        assert fix in message
    assert requests == []  # Never downloads unless asked.
    assert "apt-get" not in str(pytest.raises(FileNotFoundError, load_mnist).value)


def test_an_explicit_path_is_not_replaced_by_another_copy(search_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNJAX_DATA", str(search_env["env"]))
    _write_mnist_like(search_env["env"])
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_fashion_mnist(tmp_path / "elsewhere")


# --- downloads (a real HTTP server on 127.0.0.1) ---------------------------------------------


def test_download_into_the_cache_with_checksums(search_env, http_server):
    served, url, requests = http_server
    arrays = _write_mnist_like(served, n_train=20, n_test=10)
    checksums = {f"{stem}.gz": _sha256(served / f"{stem}.gz") for stem in STEMS}
    train, test = load_fashion_mnist(download=True, base_url=url, checksums=checksums, progress=False)
    assert sorted(requests) == sorted(f"/{stem}.gz" for stem in STEMS)
    np.testing.assert_array_equal(train.labels, arrays[STEMS[1]])
    np.testing.assert_array_equal(test.images[..., 0], arrays[STEMS[2]] / np.float32(255))
    cache = search_env["cache"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{stem}.gz" for stem in STEMS)
    assert all(_sha256(cache / name) == digest for name, digest in checksums.items())
    # Found in the cache next time: no second download, download=True or not.
    load_fashion_mnist(download=True, base_url=url, checksums=checksums)
    load_fashion_mnist()
    assert len(requests) == 4


def test_download_with_md5_into_an_explicit_folder(tmp_path, http_server):
    served, url, requests = http_server
    _write_mnist_like(served, n_train=10, n_test=10)
    checksums = {f"{stem}.gz": _md5(served / f"{stem}.gz") for stem in STEMS}
    target = tmp_path / "mine"
    train, _ = load_mnist(target, download=True, base_url=url.rstrip("/"), checksums=checksums)
    assert len(train) == 10 and train.class_names[3] == "3"
    assert sorted(p.name for p in target.iterdir()) == sorted(checksums)


def test_a_wrong_checksum_is_refused_and_leaves_no_file(search_env, http_server):
    served, url, _ = http_server
    _write_mnist_like(served)
    checksums = {f"{stem}.gz": _sha256(served / f"{stem}.gz") for stem in STEMS}
    checksums[f"{STEMS[0]}.gz"] = "0" * 64
    with pytest.raises(ValueError, match=r"sha256 checksum mismatch.*discarded"):
        load_fashion_mnist(download=True, base_url=url, checksums=checksums, progress=False)
    cache = search_env["cache"]
    assert not cache.exists() or list(cache.iterdir()) == []
    # A later file failing keeps the earlier, verified ones and nothing else.
    checksums[f"{STEMS[0]}.gz"] = _sha256(served / f"{STEMS[0]}.gz")
    checksums[f"{STEMS[2]}.gz"] = "0" * 32
    with pytest.raises(ValueError, match="md5 checksum mismatch"):
        load_fashion_mnist(download=True, base_url=url, checksums=checksums, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == [f"{STEMS[0]}.gz", f"{STEMS[1]}.gz"]


def test_download_errors(search_env, http_server):
    served, url, requests = http_server
    with pytest.raises(ValueError, match="checksums must map"):
        load_fashion_mnist(download=True, base_url=url, checksums={"x": "y"})
    assert requests == []
    checksums = {f"{stem}.gz": "0" * 64 for stem in STEMS}
    with pytest.raises(OSError, match=f"could not download {url}train-images"):
        load_fashion_mnist(download=True, base_url=url, checksums=checksums, progress=False)


def test_default_checksums_are_the_official_ones():
    assert set(data.FASHION_MNIST_CHECKSUMS) == {f"{stem}.gz" for stem in STEMS}
    assert data.FASHION_MNIST_CHECKSUMS["t10k-labels-idx1-ubyte.gz"].startswith("67da17c7")
    assert data.MNIST_CHECKSUMS["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason=f"{REAL_FASHION_MNIST} is absent")
def test_real_fashion_mnist():
    train, test = load_fashion_mnist(REAL_FASHION_MNIST)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), [1000] * 10)
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    mean, std = channel_stats(train)
    np.testing.assert_allclose([mean[0], std[0]], [0.2860, 0.3530], atol=1e-3)


# --- CIFAR-10 --------------------------------------------------------------------------------


def _write_cifar(folder, n=4, *, protocol=4, bytes_keys=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def key(k):
        return k.encode() if bytes_keys else k

    batches_ = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        batch = {
            key("batch_label"): f"batch {i}",
            key("labels"): [int(x) for x in rng.integers(0, 10, n)],
            key("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            key("filenames"): [f"img{j}.png" for j in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches_[name] = batch
    meta = {key("label_names"): list(data.CIFAR10_CLASSES), key("num_vis"): 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batches_


@pytest.mark.parametrize("protocol, bytes_keys", [(2, True), (4, False), (5, False)])
def test_load_cifar10(tmp_path, protocol, bytes_keys):
    folder = tmp_path / "cifar-10-batches-py"
    batches_ = _write_cifar(folder, n=3, protocol=protocol, bytes_keys=bytes_keys)
    train, test = load_cifar10(tmp_path)  # the parent folder works too
    assert train.images.shape == (15, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
    assert train.class_names == data.CIFAR10_CLASSES
    first = batches_["data_batch_2"][b"data" if bytes_keys else "data"]
    # Example 3 is the first of data_batch_2; pixel (y, x) = (5, 7), channels at 0/1024/2048.
    for channel in range(3):
        assert train.images[3, 5, 7, channel] == first[0, channel * 1024 + 5 * 32 + 7] / np.float32(255)
    labels = batches_["test_batch"][b"labels" if bytes_keys else "labels"]
    np.testing.assert_array_equal(test.labels, labels)


def test_cifar_pickles_never_run_code(tmp_path):
    folder = tmp_path / "cifar"
    _write_cifar(folder)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(ValueError, match=r"data_batch_3: refusing to load the global pathlib"):
        load_cifar10(folder)
    assert not marker.exists()


def test_cifar_bad_files(tmp_path):
    folder = tmp_path / "cifar"
    _write_cifar(folder)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch: corrupt or not a pickle"):
        load_cifar10(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.float32)}))
    with pytest.raises(ValueError, match="test_batch: 'data' must be a uint8"):
        load_cifar10(folder)
    (folder / "test_batch").write_bytes(
        pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]})
    )
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        load_cifar10(folder)
    (folder / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match="missing batches.meta"):
        load_cifar10(folder)
    with pytest.raises(FileNotFoundError, match="cifar.html"):
        load_cifar10(tmp_path / "nowhere")


# --- image folders ---------------------------------------------------------------------------


def test_load_image_folder(tmp_path):
    for name, colour, count in (("dog", (0, 0, 255), 1), ("cat", (255, 0, 0), 2)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("RGB", (20, 10), colour).save(tmp_path / name / f"{i}.png")
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".git").mkdir()
    (tmp_path / "loose.png").write_bytes(b"ignored")
    ds = load_image_folder(tmp_path, 8)
    assert ds.class_names == ("cat", "dog") and ds.images.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(ds.labels, [0, 0, 1])
    np.testing.assert_allclose(ds.images[0, 4, 4], [1, 0, 0])
    np.testing.assert_allclose(ds.images[2, 4, 4], [0, 0, 1])


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing", 8)
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="empty has no images"):
        load_image_folder(tmp_path, 8)


# --- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("trial", range(6))
def test_split_is_deterministic_disjoint_covering_and_stratified(trial):
    rng = np.random.default_rng(trial)
    k = int(rng.integers(2, 8))
    n = int(rng.integers(10 * k, 300))
    labels = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k) * rng.uniform(0.5, 3)))
    fractions = [(0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (0.5, 0.3, 0.2)][trial % 3]
    parts = split_indices(labels, fractions, key=trial)
    again = split_indices(labels, fractions, key=trial)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    everything = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))  # disjoint and covering
    for c in np.unique(labels):
        class_size = np.sum(labels == c)
        for part, fraction in zip(parts, fractions):
            assert abs(np.sum(labels[part] == c) - fraction * class_size) < 1
    for part, fraction in zip(parts, fractions):
        assert abs(part.size - fraction * n) < 1 + 1e-9
    other = split_indices(labels, fractions, key=trial + 100)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
    assert not np.all(np.diff(labels[parts[0]]) >= 0)  # shuffled, not sorted by class


def test_split_datasets():
    ds = _tiny_dataset(np.arange(50) % 5)
    train, val, test = split(ds, key=3)
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    assert train.class_names == ds.class_names
    pixels = {ds.images[i].tobytes(): int(ds.labels[i]) for i in range(len(ds))}
    for part in (train, val, test):  # every example keeps its own label
        assert all(pixels[part.images[i].tobytes()] == part.labels[i] for i in range(len(part)))
    kept, held = split_train_val(train, 0.2, key=0)
    assert (len(kept), len(held)) == (24, 6)
    assert set(np.bincount(held.labels, minlength=5).tolist()) <= {1, 2}  # 1.2 per class


@pytest.mark.parametrize(
    "fractions, match",
    [
        ((0.5, 0.5, 0.1), "sum to 1"),
        ((0.8, 0.3, -0.1), "positive"),
        ((1.0, 0.0, 0.0), "positive"),
        ((0.5, 0.5), "three numbers"),
        (("a", "b", "c"), "sequence of numbers"),
        ((0.98, 0.01, 0.01), "the val split would be empty"),
    ],
)
def test_split_rejects_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        split(_tiny_dataset(np.arange(20) % 2), fractions)


def test_split_train_val_rejects_bad_fractions():
    ds = _tiny_dataset([0, 1, 0, 1])
    for bad in (0, 1, 1.5, -0.2, True, "0.2"):
        with pytest.raises(ValueError, match="val_fraction"):
            split_train_val(ds, bad)
    with pytest.raises(ValueError, match="the val split would be empty"):
        split_train_val(ds, 0.01)


# --- shuffling, batches, statistics ----------------------------------------------------------


def test_epoch_permutation():
    key = jax.random.key(0)
    perm = epoch_permutation(key, 50)
    assert isinstance(perm, np.ndarray)
    np.testing.assert_array_equal(np.sort(perm), np.arange(50))
    np.testing.assert_array_equal(perm, epoch_permutation(key, 50))
    assert not np.array_equal(perm, epoch_permutation(jax.random.fold_in(key, 1), 50))
    np.testing.assert_array_equal(np.sort(epoch_permutation(jax.random.PRNGKey(1), 7)), np.arange(7))
    np.testing.assert_array_equal(epoch_permutation(0, 50), perm)  # an int seed is the key it seeds
    with pytest.raises(ValueError, match="key must be an int seed or a jax.random.key"):
        epoch_permutation("abc", 5)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        epoch_permutation(key, 0)


def test_batches():
    ds = _tiny_dataset(np.arange(10) % 3)
    plain = list(batches(ds, 4))
    assert [x.shape for x, _ in plain] == [(4, 4, 4, 1)] * 2
    np.testing.assert_array_equal(plain[0][1], ds.labels[:4])
    key = jax.random.key(0)
    full = list(batches(ds, 4, key, drop_remainder=False))
    assert [y.shape[0] for _, y in full] == [4, 4, 2]
    order = epoch_permutation(key, 10)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in full]), ds.images[order])
    np.testing.assert_array_equal(np.concatenate([y for _, y in full]), ds.labels[order])
    again = np.concatenate([y for _, y in batches(ds, 4, key, drop_remainder=False)])
    np.testing.assert_array_equal(again, ds.labels[order])
    with pytest.raises(ValueError, match="larger than the dataset"):
        batches(ds, 11)  # raised at the call, not at the first batch
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        batches(ds, 0)


def test_channel_stats(monkeypatch):
    images = np.random.default_rng(0).random((7, 5, 3, 3), dtype=np.float32)
    ds = make_dataset(images, np.zeros(7, int))
    mean, std = channel_stats(ds)
    assert mean.shape == std.shape == (3,) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, images.mean(axis=(0, 1, 2), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(std, images.std(axis=(0, 1, 2), dtype=np.float64), rtol=1e-6)
    monkeypatch.setattr(_split, "_STATS_CHUNK", 20)  # several chunks give the same answer
    chunked = channel_stats(images)
    np.testing.assert_allclose(chunked[0], mean, rtol=1e-6)
    np.testing.assert_allclose(chunked[1], std, rtol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        channel_stats(np.zeros((0, 2, 2, 1)))
