"""The restricted ``.pth`` reader: rebuilds tensors, never runs code from the file."""

import collections
import io
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from cnnjax.models._pth import read_pth_bytes

MAGIC, PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, np.ascontiguousarray(data).ravel()


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride))


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a fake ``torch`` module for ``pickle`` to write the legacy format."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
        storage_types[name] = cls
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    _Tensor.__reduce__ = lambda self: (_rebuild_tensor_v2, self.args + (False, collections.OrderedDict()))
    return storage_types


def write_legacy(state, storage_types) -> bytes:
    """Write ``state`` (name -> _Tensor) in torch's legacy serialisation format."""
    storages = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                storages[obj.key] = obj
                kind = "LongStorage" if obj.data.dtype == np.int64 else "FloatStorage"
                return ("storage", storage_types[kind], obj.key, "cpu", obj.data.size, None)
            return None

    f = io.BytesIO()
    for header in (MAGIC, PROTOCOL, SYS_INFO):
        pickle.dump(header, f, protocol=2)
    Pickler(f, protocol=2).dump(state)
    pickle.dump(list(storages), f, protocol=2)
    for s in storages.values():
        f.write(struct.pack("<q", s.data.size))
        f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    return f.getvalue()


def test_round_trip_with_views_offsets_and_scalars(fake_torch):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    shared = _Storage("7", np.arange(20, dtype=np.float32))
    state = collections.OrderedDict(
        a=_Tensor(_Storage("1", a), 0, a.shape, (12, 4, 1)),
        a_t=_Tensor(_Storage("1", a), 0, (4, 3, 2), (1, 4, 12)),  # a transposed view
        tail=_Tensor(shared, 5, (3, 5), (5, 1)),  # an offset view into a shared storage
        count=_Tensor(_Storage("9", np.array([42], np.int64)), 0, (), ()),
    )
    out = read_pth_bytes(write_legacy(state, fake_torch))
    assert list(out) == ["a", "a_t", "tail", "count"]
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["a_t"], a.transpose(2, 1, 0))
    np.testing.assert_array_equal(out["tail"], np.arange(5, 20, dtype=np.float32).reshape(3, 5))
    assert out["count"] == 42 and out["count"].dtype == np.int64
    out["a"][0, 0, 0] = 1e9  # arrays are private copies, not views of the file buffer
    assert out["a_t"][0, 0, 0] != 1e9


class _Hostile:
    """Unpickling this would call ``exec`` on attacker-chosen code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


def test_hostile_pickle_is_refused_and_never_executed(tmp_path, fake_torch):
    marker = tmp_path / "pwned"
    # A well-formed header, then a payload that would run code.
    f = io.BytesIO()
    for header in (MAGIC, PROTOCOL, SYS_INFO):
        pickle.dump(header, f, protocol=2)
    pickle.dump({"weight": _Hostile(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"refusing to load the global (builtins|__builtin__)\.exec"):
        read_pth_bytes(f.getvalue(), "evil.pth")
    assert not marker.exists()


def test_hostile_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    message = r"evil\.pth: refusing to load the global (builtins|__builtin__)\.exec"
    with pytest.raises(ValueError, match=message):
        read_pth_bytes(pickle.dumps(_Hostile(marker), protocol=2), "evil.pth")
    assert not marker.exists()


def test_refuses_other_globals(fake_torch):
    f = io.BytesIO()
    for header in (MAGIC, PROTOCOL, SYS_INFO):
        pickle.dump(header, f, protocol=2)
    pickle.dump({"x": collections.Counter("ab")}, f, protocol=2)
    with pytest.raises(ValueError, match=r"global collections\.Counter"):
        read_pth_bytes(f.getvalue())


def test_truncated_and_foreign_files(fake_torch):
    data = write_legacy({"w": _Tensor(_Storage("1", np.ones(100, np.float32)), 0, (100,), (1,))}, fake_torch)
    for cut in (len(data) - 1, len(data) - 300, 30, 3):
        with pytest.raises(ValueError, match="truncated|corrupted"):
            read_pth_bytes(data[:cut], "cut.pth")
    with pytest.raises(ValueError, match="not a legacy PyTorch .pth"):
        read_pth_bytes(pickle.dumps(12345), "other.pth")
    with pytest.raises(ValueError, match="truncated or corrupted"):
        read_pth_bytes(b"PK\x03\x04 zip-based checkpoint", "zip.pth")


def test_view_past_storage_is_refused(fake_torch):
    state = {"w": _Tensor(_Storage("1", np.ones(10, np.float32)), 4, (3, 3), (3, 1))}
    with pytest.raises(ValueError, match="needs more elements than its storage of 10 holds"):
        read_pth_bytes(write_legacy(state, fake_torch))


@pytest.mark.parametrize(
    "size, stride",
    [((16384, 16384), (0, 0)), ((1 << 28,), (0,)), ((4, 4), (-1, 1)), ((1 << 20, 2), (1, 1))],
)
def test_memory_bombs_are_refused_before_any_array_is_made(fake_torch, size, stride):
    """A few bytes of storage cannot become a huge tensor: zero or negative strides, or more
    elements than the storage holds (a 1 GiB array from a 274-byte file, before the fix)."""
    data = write_legacy({"w": _Tensor(_Storage("1", np.ones(4, np.float32)), 0, size, stride)}, fake_torch)
    assert len(data) < 1000
    with pytest.raises(ValueError, match="zero or negative stride|more elements than its storage"):
        read_pth_bytes(data)
