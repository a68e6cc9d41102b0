"""Two processes of four simulated CPU devices each (``jax.distributed`` on localhost) render a
layer's channels and attack a data set; each writes only its own rows, process 0 the index, and
the result put together equals one process's (issue 15)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cnnjax import objectives
from cnnjax.attacks import pgd
from cnnjax.distributed import process_rows, read_shards, write_shards
from cnnjax.synthesis import visualize
from cnnjax.testing import tiny_cnn

EXAMPLE = Path(__file__).parents[1] / "examples" / "multihost.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_their_own_rows_and_agree_with_one_process(tmp_path):
    port, out = _free_port(), tmp_path / "run"
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu")
    args = ["--processes", "2", "--coordinator", f"localhost:{port}", "--out", str(out), "--model", "tiny",
            "--units", "6", "--steps", "4", "--images", "10"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--process-id", str(p), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for p in (0, 1)
    ]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "6 channels of conv3 and 10 images x 2 eps on 8 devices in 2 processes" in logs[0]

    # Each process wrote only the rows on its own devices: 6 channels over 8 devices are one per
    # device (process 0 has devices 0-3); 10 images are two per device.
    for name, mine in (("channels", [[0, 1, 2, 3], [4, 5]]), ("pgd", [list(range(8)), [8, 9]])):
        index = json.loads((out / name / "index.json").read_text())
        assert index["processes"] == 2 and index["shards"] == [f"shard-0000{p}-of-00002.npz" for p in (0, 1)]
        for p in (0, 1):
            with np.load(out / name / index["shards"][p]) as shard:
                assert shard["rows"].tolist() == mine[p]
    channels, attacked = read_shards(out / "channels"), read_shards(out / "pgd")

    model = tiny_cnn()
    one = visualize(
        model, [objectives.channel("conv3", c) for c in range(6)], preset="plain", size=32, steps=4, key=0
    )
    np.testing.assert_allclose(channels["images"], np.asarray(one.images), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(channels["scores"], np.asarray(one.scores[:, 0]), rtol=1e-4, atol=1e-5)
    images = np.random.default_rng(0).random((10, 32, 32, 3), np.float32)
    ref = pgd(model, images, eps=[2 / 255, 8 / 255], steps=10, key=0)
    assert attacked["images"].shape == (2, 10, 32, 32, 3)
    np.testing.assert_allclose(attacked["images"], np.asarray(ref.images), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(attacked["predictions"], np.asarray(ref.predictions))
    np.testing.assert_array_equal(attacked["success"], np.asarray(ref.success))
    assert attacked["success"].any()


def test_one_process_writes_every_row_and_an_unfinished_or_damaged_folder_is_refused(tmp_path):
    mesh = jax.make_mesh((1,), ("data",))
    assert process_rows(7, mesh).tolist() == list(range(7)) and process_rows(7, mesh, process=1).size == 0
    scores, labels = np.arange(14.0).reshape(2, 7), np.arange(7)
    write_shards(
        tmp_path / "a", {"scores": scores, "labels": labels}, mesh=mesh, axis={"scores": 1, "labels": 0}
    )
    back = read_shards(tmp_path / "a")
    np.testing.assert_array_equal(back["scores"], scores)
    np.testing.assert_array_equal(back["labels"], labels)
    with pytest.raises(ValueError, match="lengths along their axes differ"):
        write_shards(tmp_path / "b", {"scores": scores, "labels": labels}, mesh=mesh)
    with pytest.raises(ValueError, match="identifiers other than 'rows'"):
        write_shards(tmp_path / "b", {"rows": labels}, mesh=mesh)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        write_shards(tmp_path / "b", {"labels": labels}, mesh=mesh, axis=2)
    with pytest.raises(ValueError, match="needs the mesh"):
        write_shards(tmp_path / "b", {"labels": labels})
    assert not (tmp_path / "b").exists()  # refused before any write
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="it is a file"):
        write_shards(tmp_path / "file", {"labels": labels}, mesh=mesh)
    # A shard that holds a row twice (or misses one) is refused; a folder without its index too.
    shard = tmp_path / "a" / "shard-00000-of-00001.npz"
    np.savez(shard, rows=np.array([0, 0, 1, 2, 3, 4, 5]), scores=scores, labels=labels)
    with pytest.raises(ValueError, match="every row exactly once"):
        read_shards(tmp_path / "a")
    (tmp_path / "a" / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_shards(tmp_path / "a")
