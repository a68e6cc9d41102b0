"""A reader for PyTorch's legacy ``.pth`` serialisation that never runs code from the file.

``torch.load`` unpickles arbitrary objects, so loading an untrusted checkpoint can execute
anything. This reader understands only what a state dict of tensors needs: an
``OrderedDict``, the tensor rebuild function and the storage types. Any other global in the
pickle stream is refused with a ``ValueError`` before it is touched.

The legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``) is a sequence
of pickles on one stream:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version (1001);
3. a dict of system information (endianness, sizes of C types);
4. the object itself, whose tensors refer to storages through persistent ids
   ``("storage", storage_type, key, location, numel, view_metadata)``;
5. the list of storage keys, in the order their data follows;
6. for each key: a little-endian int64 element count, then the raw bytes.

PyTorch is not needed: tensors come back as NumPy arrays.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

__all__ = ["read_pth", "read_pth_bytes"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001

# torch storage class name -> numpy dtype (little endian, as the sys_info must say).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stands in for ``torch.<X>Storage`` in the pickle: only its dtype is kept."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _StorageRef:
    """A storage named in the pickle whose bytes follow the pickle on the stream."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor view into a storage, resolved once every storage has been read."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _StorageRef):
            raise ValueError("malformed .pth: a tensor refers to something that is not a storage")
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def resolve(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError(f"malformed .pth: the data of storage {self.storage.key!r} is missing")
        if not self.size:
            if not 0 <= self.offset < data.size:
                raise ValueError(f"malformed .pth: a scalar at offset {self.offset} outside its storage")
            return np.array(data[self.offset])
        where = f"a tensor of size {self.size} and stride {self.stride} at offset {self.offset}"
        if len(self.stride) != len(self.size) or any(n < 0 for n in self.size) or self.offset < 0:
            raise ValueError(f"malformed .pth: {where}")
        # A stored tensor's elements each have their own place in the storage: a zero or
        # negative stride (one byte read many times, a memory bomb) or more elements than
        # the bytes behind them are refused before any array is made.
        if any(s < 1 for n, s in zip(self.size, self.stride) if n > 1):
            raise ValueError(f"malformed .pth: {where} has a zero or negative stride")
        numel = int(np.prod(self.size, dtype=np.int64))
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if numel > data.size - self.offset or (numel and last > data.size):
            raise ValueError(
                f"malformed .pth: {where} needs more elements than its storage of {data.size} holds"
            )
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.array(view, dtype=data.dtype.newbyteorder("="), copy=True)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):
    return _TensorRef(storage, offset, size, stride)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a tensor state dict needs."""

    def __init__(self, file: BinaryIO, storages: dict[str, _StorageRef], source: str):
        super().__init__(file)
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ValueError(
                f"{self._source}: refusing to load the global {module}.{name}: this reader only "
                "rebuilds tensors and dicts and never runs code from the file "
                f"(allowed: {', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS))})"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"{self._source}: unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"{self._source}: storage of unknown type {storage_type!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError(f"{self._source}: storage views are not supported")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _StorageRef(key, storage_type.dtype, int(numel))
        return self._storages[key]


def _load_plain(f: BinaryIO, source: str):
    """Unpickle one header object; headers never need a global."""
    return _RestrictedUnpickler(f, {}, source).load()


def read_pth(f: BinaryIO, source: str = "<stream>") -> dict:
    """Read a legacy-format ``.pth`` stream into nested dicts of NumPy arrays.

    Args:
      f: a binary stream positioned at the start of the file.
      source: a name for the stream, used in error messages.

    Returns:
      The unpickled object with every tensor replaced by a NumPy array (for a state dict,
      an ``OrderedDict`` of name to array).

    Raises:
      ValueError: the stream is not a legacy ``.pth`` file, is truncated, or names a global
        other than the tensor-rebuilding ones (a hostile pickle is refused, never executed).
    """
    try:
        magic = _load_plain(f, source)
        if magic != _MAGIC:
            raise ValueError(
                f"{source}: not a legacy PyTorch .pth file (magic number {magic!r:.40}); zip-based "
                "checkpoints (torch >= 1.6 default) are not supported by this reader"
            )
        protocol = _load_plain(f, source)
        if protocol != _PROTOCOL:
            raise ValueError(f"{source}: unsupported .pth protocol version {protocol!r}")
        sys_info = _load_plain(f, source)
        if not (isinstance(sys_info, Mapping) and sys_info.get("little_endian", False)):
            raise ValueError(f"{source}: only little-endian .pth files are supported")
        storages: dict[str, _StorageRef] = {}
        obj = _RestrictedUnpickler(f, storages, source).load()
        keys = _load_plain(f, source)
    except (pickle.UnpicklingError, EOFError, struct.error) as e:
        raise ValueError(f"{source}: truncated or corrupted .pth file ({e})") from None
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise ValueError(f"{source}: the storage key list does not match the storages used")
    for key in map(str, keys):
        ref = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"{source}: truncated .pth file (storage {key} missing)")
        (numel,) = struct.unpack("<q", header)
        if numel != ref.numel:
            raise ValueError(f"{source}: storage {key} has {numel} elements, expected {ref.numel}")
        nbytes = numel * ref.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"{source}: truncated .pth file (storage {key} is short)")
        ref.data = np.frombuffer(raw, dtype=ref.dtype)
    return _resolve(obj)


def read_pth_bytes(data: bytes, source: str = "<bytes>") -> dict:
    """``read_pth`` on an in-memory file."""
    return read_pth(io.BytesIO(data), source)


def _resolve(obj):
    if isinstance(obj, _TensorRef):
        return obj.resolve()
    if isinstance(obj, Mapping):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj
