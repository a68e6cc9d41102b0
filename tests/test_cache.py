"""The persistent compilation cache: where it lives, its permissions, turning it off, a damaged
entry read as a miss, and the same results with and without it. Each case is a fresh process:
JAX reads its cache settings once per process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from cnnjax._src.cache import cache_dir

# a program with a convolution (worth caching), its output printed exactly
PROGRAM = """
import json, os, jax, jax.numpy as jnp, numpy as np
import cnnjax
x = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 3), np.float32))
w = jnp.asarray(np.random.default_rng(1).random((3, 3, 3, 4), np.float32))
dims = ("NHWC", "HWIO", "NHWC")
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)
f = jax.jit(lambda x, w: jnp.tanh(conv(x, w)).sum((1, 2)))
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir, "out": np.asarray(f(x, w)).tolist()}))
"""


def run(env_changes: dict[str, str | None]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "CNNJAX_CACHE"))}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # cache even this small program
    env.update({k: v for k, v in env_changes.items() if v is not None})
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNJAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "cnnjax" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "cnnjax" / "xla"
    monkeypatch.setenv("CNNJAX_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "", "none"):
        monkeypatch.setenv("CNNJAX_CACHE_DIR", off)
        assert cache_dir() is None


def test_programs_are_cached_privately_reused_and_a_damaged_entry_is_a_miss(tmp_path):
    folder = tmp_path / "cache" / "xla"
    first = run({"CNNJAX_CACHE_DIR": str(folder)})
    assert first["dir"] == str(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    entries = sorted(p for p in folder.iterdir() if p.name.endswith("-cache"))
    assert entries, "the program was written to the cache"
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    assert run({"CNNJAX_CACHE_DIR": str(folder)})["out"] == first["out"]
    assert {p: p.stat().st_mtime_ns for p in entries} == stamps  # read, not compiled and rewritten
    for p in entries:
        p.write_bytes(b"not an XLA executable")
    assert run({"CNNJAX_CACHE_DIR": str(folder)})["out"] == first["out"]  # recompiled, no crash
    off = run({"CNNJAX_CACHE_DIR": "off"})
    assert off["dir"] is None and off["out"] == first["out"]


def test_a_cache_the_user_gave_jax_is_kept(tmp_path):
    theirs = tmp_path / "theirs"
    got = run({"JAX_COMPILATION_CACHE_DIR": str(theirs), "CNNJAX_CACHE_DIR": str(tmp_path / "ours")})
    assert got["dir"] == str(theirs) and not (tmp_path / "ours").exists()


def test_a_folder_that_cannot_be_made_costs_only_the_compile(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    got = run({"CNNJAX_CACHE_DIR": str(blocker / "xla")})
    assert got["dir"] is None and len(got["out"]) == 2
