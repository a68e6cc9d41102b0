"""Running a test's script on 8 simulated CPU devices (set before JAX is imported: a process)."""

import os
import subprocess
import sys
from pathlib import Path


def run_on_8_devices(code: str) -> None:
    """Run ``code`` in a fresh interpreter with 8 CPU devices (``tests/`` importable); it must
    print "ok" last."""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
