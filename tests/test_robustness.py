"""Nothing lost, nothing silently wrong: the cases a careful user tried that went wrong, one
test each, and the rules behind them (numbers, output paths, image sizes, interrupts)."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnjax
from cnnjax import objectives
from cnnjax.cli import main
from cnnjax.models import load_model
from cnnjax.models._weights import sha256_file, weights_dir
from cnnjax.testing import tiny_cnn

TINY = tiny_cnn()


def one_line_error(err: str, command: str) -> str:
    """The single line a refused command prints on stderr (no usage block, no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cnnjax {command}: error: "), err
    return lines[0]


def write_png(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    Image.new(mode, size).save(path)
    return path


# -- numbers: finite, in range, integers where integers are meant --------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: cnnjax.dream(TINY, np.full((1, 32, 32, 3), 0.5), "conv2", learning_rate=np.inf), "finite"),
        (
            lambda: cnnjax.dream(TINY, np.full((1, 32, 32, 3), 0.5), "conv2", learning_rate=-1.0),
            "learning_rate",
        ),
        (
            lambda: cnnjax.visualize(TINY, objectives.channel("conv3", 0), learning_rate=np.nan),
            "learning_rate",
        ),
        (
            lambda: cnnjax.visualize(TINY, objectives.channel("conv3", 0), steps=2.5),
            "steps must be an integer",
        ),
        (lambda: cnnjax.visualize(TINY, objectives.channel("conv3", 0), steps=10**9), "100000"),
        (lambda: cnnjax.attacks.pgd(TINY, np.full((1, 32, 32, 3), 0.5), eps=np.inf), "eps"),
        (lambda: cnnjax.attacks.fgsm(TINY, np.full((1, 32, 32, 3), 0.5), eps=np.nan), "eps"),
        (
            lambda: cnnjax.style_transfer(
                TINY, np.full((1, 32, 32, 3), 0.5), np.full((1, 32, 32, 3), 0.5), style_weight=np.inf
            ),  # fmt: skip
            "style_weight",
        ),
    ],
)
def test_non_finite_and_non_integer_settings_are_refused_before_work(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def fit_tiny(**kwargs):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (16, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 16)
    return cnnjax.training.fit(TINY, (x, y), (x, y), batch_size=8, progress=False, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=2.5), "epochs must be an integer"),
        (dict(learning_rate=math.inf), "learning_rate"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(learning_rate=0.1, key="abc"), "key"),
        (dict(learning_rate=0.1, patience=0), "patience"),
        (dict(learning_rate=0.1, l2=math.nan), "l2"),
    ],
)
def test_fit_refuses_bad_settings_before_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_tiny(**kwargs)


@pytest.mark.parametrize("field, value", [("learning_rate", math.inf), ("epochs", 2.5), ("patience", 0)])
def test_fashion_config_refuses_bad_settings(field, value):
    with pytest.raises(ValueError, match=field):
        cnnjax.training.FashionConfig(**{field: value})


# -- weights that are not what they claim ---------------------------------------------------------


@pytest.fixture
def fashion_weights(tmp_path):
    """A copy of the bundled FashionNet weights folder, to damage."""
    folder = tmp_path / "weights"
    folder.mkdir()
    manifest = json.loads((weights_dir() / "fashionnet.json").read_text())
    shutil.copy(weights_dir() / manifest["file"], folder / manifest["file"])
    (folder / "fashionnet.json").write_text(json.dumps(manifest))
    return folder, manifest


def test_nan_weights_with_a_matching_checksum_are_refused(fashion_weights, tmp_path, capsys, monkeypatch):
    from cnnjax._src.safetensors import read_safetensors, write_safetensors

    folder, manifest = fashion_weights
    path = folder / manifest["file"]
    tensors, metadata = read_safetensors(path)
    name = sorted(tensors)[0]
    tensors[name] = np.array(tensors[name], copy=True)
    tensors[name].flat[0] = np.nan
    write_safetensors(path, tensors, metadata)
    manifest.update(bytes=path.stat().st_size, sha256=sha256_file(path))
    (folder / "fashionnet.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"tensor '{name}' holds 1 non-finite"):
        load_model("fashionnet", weights_dir=folder)
    # The command line says so in one line, instead of "24.19% Bag".
    monkeypatch.setenv("CNNJAX_WEIGHTS", str(folder))
    image = write_png(tmp_path / "x.png", (28, 28), "L")
    assert main(["classify", str(image), "--model", "fashionnet"]) == 1
    assert "non-finite" in one_line_error(capsys.readouterr().err, "classify")


def test_non_finite_logits_are_an_error_not_a_probability():
    dense = {**TINY.params["dense"], "b": np.full_like(TINY.params["dense"]["b"], np.nan)}
    broken = dataclasses.replace(TINY, params={**TINY.params, "dense": dense})
    with pytest.raises(ValueError, match="non-finite"):
        cnnjax.classify(broken, np.full((1, 32, 32, 3), 0.5))
    with pytest.raises(ValueError, match="non-finite"):
        cnnjax.models.probabilities(broken, np.full((1, 32, 32, 3), 0.5))


@pytest.mark.parametrize("key", ["sha256", "bytes", "file"])
def test_a_manifest_without_a_key_names_the_file_and_the_key(fashion_weights, key, capsys):
    folder, manifest = fashion_weights
    del manifest[key]
    (folder / "fashionnet.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"fashionnet.json lacks a valid '{key}' entry"):
        load_model("fashionnet", weights_dir=folder)
    assert main(["evaluate", "--weights", str(folder)]) == 1
    assert f"'{key}'" in one_line_error(capsys.readouterr().err, "evaluate")


# -- class names ----------------------------------------------------------------------------------


def test_an_exact_class_name_wins_and_an_ambiguous_one_is_refused():
    spec = cnnjax.load_model("efficientnet_lite0").spec
    assert spec.class_index("cardigan") == 474  # exactly class 474's first name
    assert spec.class_index("Cardigan") == 264  # the corgi, written as its own first name
    with pytest.raises(ValueError, match=r"'crane' names 2 classes.*134.*517"):
        spec.class_index("crane")
    assert spec.class_index(134) == 134


# -- images: one minimum and one maximum size everywhere ------------------------------------------


def test_a_1x1_image_is_refused_by_every_command_that_reads_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "dot.png", (1, 1))
    for command in ("classify", "cam", "dream", "attack"):
        assert main([command, "dot.png", "--model", "fashionnet"]) == 1
        line = one_line_error(capsys.readouterr().err, command)
        assert "1x1" in line and "at least" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dot.png"]


def test_an_image_above_the_pixel_limit_is_refused_before_decoding(tmp_path, capsys):
    # A real 13000x13000 PNG of a few kilobytes: decoding it as RGB would take 500 MB.
    big = tmp_path / "big.png"
    Image.new("1", (13000, 13000)).save(big)
    assert big.stat().st_size < 1_000_000
    assert main(["classify", str(big), "--model", "fashionnet"]) == 1
    line = one_line_error(capsys.readouterr().err, "classify")
    assert "13000x13000" in line and "--max-pixels" in line, line
    # The limit is a flag: a small one refuses a small image too.
    small = write_png(tmp_path / "small.png", (40, 40))
    assert main(["classify", str(small), "--model", "fashionnet", "--max-pixels", "1000"]) == 1
    assert "40x40" in one_line_error(capsys.readouterr().err, "classify")


# -- output paths: checked before any work --------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cam", "IMG.png", "--out", "result.txt"], "extension must be one of"),
        (["visualize", "--classes", "1", "--out", "vis.gif"], "extension must be one of"),
        (["visualize", "--classes", "1", "--out", "FILE/x.png"], "is a file, not a folder"),
        (["visualize", "--classes", "1", "--out", "DIR"], "extension must be one of"),
        (["visualize", "--classes", "1", "--out", "DIR/x.png/"], "it is a folder"),
        (["visualize", "--classes", "1", "--out", "FILE.png"], "exists; pass --overwrite"),
        (["train", "--out", "FILE"], "is a file, not a folder"),
        (["train", "--checkpoints", "FILE"], "is a file, not a folder"),
        (["demo", "--out", "FILE/report"], "is a file, not a folder"),
        (["demo", "--out", "/proc/report"], "not writable"),
    ],
)
def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "IMG.png", (64, 64))
    (tmp_path / "FILE").write_bytes(b"x")
    (tmp_path / "FILE.png").write_bytes(b"x")
    (tmp_path / "DIR" / "x.png").mkdir(parents=True)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    t0 = time.perf_counter()
    assert main(argv) == 1
    assert message in one_line_error(capsys.readouterr().err, argv[0])
    assert time.perf_counter() - t0 < 5  # no model loaded, nothing compiled, no data read
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "FILE.png").read_bytes() == b"x"


# -- the command line's own manners ---------------------------------------------------------------


def _sigint_not_ignored():
    """Let the children see Ctrl-C: a shell starts background jobs with SIGINT ignored, the
    children of an ignoring process inherit that, and Python leaves an ignored SIGINT ignored.
    A handled signal is reset to its default in a new program, so handling it here is enough."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_cli(*args, **kwargs):
    _sigint_not_ignored()
    return subprocess.Popen([sys.executable, "-m", "cnnjax.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip


def test_a_closed_pipe_is_not_an_error():
    with run_cli("models") as proc:
        first = proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 141 and first.startswith("efficientnet_lite0") and err == "", err


def test_ctrl_c_stops_a_long_synthesis_within_seconds(tmp_path):
    out = tmp_path / "vis.png"
    with run_cli("visualize", "--model", "fashionnet", "--classes", "1", "--preset", "plain", "--size", "28",
                 "--steps", "100000", "--out", str(out)) as proc:  # fmt: skip
        while not proc.stderr.readline().startswith("visualize: 1 targets"):  # the model is loaded
            assert proc.poll() is None
        time.sleep(1.5)  # compiling and into the loop: 100000 steps take minutes
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        t0 = time.perf_counter()
        code = proc.wait(timeout=20)
        assert code == 130 and time.perf_counter() - t0 < 10
        assert "interrupted" in proc.stderr.read() and not out.exists()


@pytest.mark.parametrize(
    "run",
    [
        lambda: cnnjax.visualize(
            TINY,
            [objectives.channel("conv3", 2), objectives.channel("conv3", 5)],
            preset="plain",
            size=32,
            steps=10,
            key=1,
        ),  # fmt: skip
        lambda: cnnjax.invert(
            TINY, np.linspace(0, 1, 2 * 32 * 32 * 3).reshape(2, 32, 32, 3), "conv2", steps=10
        ),
    ],
    ids=["visualize", "invert"],
)
def test_chunked_synthesis_equals_one_long_loop(monkeypatch, run):
    from cnnjax.synthesis import _engine

    whole = run()
    monkeypatch.setattr(_engine, "CHUNK_STEPS", 4)  # 4 + 4 + 2 steps, the state carried between
    chunked = run()
    np.testing.assert_allclose(chunked.images, whole.images, atol=1e-6)
    np.testing.assert_allclose(chunked.history, whole.history, atol=1e-6)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_in_the_python_api_raises_keyboard_interrupt_promptly():
    code = (
        "import os, signal, threading, time, cnnjax\n"
        "from cnnjax import objectives\n"
        "from cnnjax.testing import tiny_cnn\n"
        "threading.Timer(2.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "t0 = time.perf_counter()\n"
        "try:\n"
        "    objective = objectives.channel('conv3', 0)\n"
        "    cnnjax.visualize(tiny_cnn(), objective, preset='plain', size=32, steps=100000)\n"
        "except KeyboardInterrupt:\n"
        "    print(f'stopped {time.perf_counter() - t0:.1f}')\n"
    )
    _sigint_not_ignored()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("stopped"), out.stderr
    assert float(out.stdout.split()[1]) < 15
