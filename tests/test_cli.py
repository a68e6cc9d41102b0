"""The ``cnnjax`` command: output, exit codes, usage messages instead of tracebacks, the demo
report (also rendered in a real headless browser when Chromium is installed)."""

import re
import shutil
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from PIL import Image

from cnnjax.cli import main

PHOTOS = resources.files("cnnjax").joinpath("assets/photos")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_prints_top_classes(capsys):
    with resources.as_file(PHOTOS.joinpath("coffee.png")) as coffee:
        code, out, err = run(capsys, "classify", str(coffee), "--top-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("coffee.png") and len(lines) == 4
    assert re.match(r"\s+9\d\.\d\d%\s+espresso \(967\)", lines[1])


def test_models_lists_layers(capsys):
    code, out, _ = run(capsys, "models", "--layers")
    assert code == 0
    assert "efficientnet_lite0" in out
    assert re.search(r"block_15\s+7x7x320\s+stride 32", out)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["classify"], "the following arguments are required: IMAGE"),
        (["classify", "x.png", "--top-k", "zero"], "expected a positive integer"),
        (["classify", "x.png", "--model", "vgg"], "invalid choice: 'vgg'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnjax") and message in err and "--help)" in err and len(err.splitlines()) == 1


def test_bad_files_give_one_line_and_exit_1(capsys, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path, message in [
        (tmp_path / "missing.png", "no such image file"),
        (tmp_path, "is a directory"),
        (text, "is not an image Pillow can read"),
        (empty, "is empty (0 bytes)"),
    ]:
        code, out, err = run(capsys, "classify", str(path))
        assert code == 1 and out == ""
        assert err.startswith("cnnjax classify: error:") and message in err, err
        assert len(err.strip().splitlines()) == 1


def test_console_script_runs_without_traceback(tmp_path):
    exe = shutil.which("cnnjax")
    cmd = [exe] if exe else [sys.executable, "-m", "cnnjax.cli"]
    bad = subprocess.run(cmd + ["classify", str(tmp_path / "nope.png")], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "no such image file" in bad.stderr


def test_demo_writes_a_self_contained_report(demo_report):
    html = demo_report.read_text()
    assert "<h2>Classification</h2>" in html and "<h2>The model</h2>" in html
    assert "<h2>Training</h2>" in html and "test accuracy" in html
    # Four photos and the training curves; four CAM overlays; the receptive-field plot, the
    # empirical fields and a unit segmentation; one figure each for activation maximisation,
    # DeepDream, inversion and style transfer; the robustness curve and four adversarial
    # figures; the fooling images (the evolved ones only with --full); and four units' top images
    # (FashionNet's class detectors only where Fashion-MNIST is found); the notes' claims: the
    # momentum paths (and, with Fashion-MNIST, the SGD curves and the ablation).
    fashion = "<th>class detectors</th>" in html
    assert html.count('src="data:image/png;base64,') == 5 + 4 + 3 + 4 + 5 + 1 + 4 + 1 + (5 if fashion else 0)
    titles = (
        "The notes&#x27; claims about training",
        "Class activation maps",
        "Receptive fields",
        "What units respond to",
        "Activation maximisation",
        "DeepDream",
        "Inversion",
        "Style transfer",
        "Adversarial examples",
        "Fooling images",
    )
    for title in titles:
        assert f"<h2>{title}</h2>" in html
    # With the app's extra installed (the test extra installs it), its section: the unit page and
    # the results page as sandboxed frames.
    assert "<h2>Annotating units</h2>" in html and html.count("<iframe sandbox srcdoc=") == 2
    assert "accuracy under attack" in html
    assert "851" in html  # derived theoretical size of the last block
    assert "espresso (967)" in html
    assert "block_15" in html
    assert not re.search(r'src="(?!data:)', html), "no external resources"
    assert demo_report.stat().st_mode & 0o044, "readable by others, like any written file"


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_demo_report_renders_in_a_headless_browser(demo_report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1400",
        f"--screenshot={shot}", demo_report.as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # The probability bars are drawn in #4a7bd0; the photos bring thousands of distinct colours.
    bar_pixels = np.sum(np.all(np.abs(pixels - [0x4A, 0x7B, 0xD0]) <= 2, axis=1))
    distinct = len(np.unique(pixels[:, 0] * 65536 + pixels[:, 1] * 256 + pixels[:, 2]))
    assert bar_pixels > 500, bar_pixels
    assert distinct > 5000, distinct


SYNTHESIS_RUNS = {
    "visualize": ["--classes", "Trouser", "Bag", "--preset", "plain", "--steps", "4", "--size", "28"],
    "dream": ["{coffee}", "--layers", "conv4", "--octaves", "2", "--steps", "2", "--max-size", "64"],
    "invert": ["{coffee}", "--layers", "conv2", "logits", "--steps", "5"],
    "style": ["{coffee}", "ihc", "--steps", "3", "--size", "32"],
    "fool": ["--classes", "Sandal", "--steps", "5"],
}


@pytest.mark.parametrize("command", list(SYNTHESIS_RUNS))
def test_synthesis_commands_write_their_pictures(capsys, tmp_path, command):
    """visualize, dream, invert, style and fool end to end, on the small FashionNet for speed
    (one test each, so the workers share them out)."""
    out = tmp_path / f"{command}.png"
    with resources.as_file(PHOTOS.joinpath("coffee.png")) as coffee:
        argv = [command, *(a.format(coffee=coffee) for a in SYNTHESIS_RUNS[command])]
        code, stdout, err = run(capsys, *argv, "--model", "fashionnet", "--out", str(out))
    assert code == 0, (argv, err)
    assert f"wrote {out}" in stdout
    with Image.open(out) as picture:
        assert picture.size[0] >= 28


def test_visualize_command_bad_input_one_line_exit_1(capsys):
    code, stdout, err = run(capsys, "visualize", "--classes", "Trowser", "--model", "fashionnet")
    assert code == 1 and "did you mean 'Trouser'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "visualize", "--layer", "conv5", "--model", "fashionnet")
    assert code == 1 and "give --classes, or --layer with --units" in err
    code, _, err = run(capsys, "visualize", "--layer", "conv5", "--units", "999", "--model", "fashionnet")
    assert code == 1 and "it has 128 channels" in err


def test_cam_command_writes_overlays(capsys, tmp_path):
    out = tmp_path / "cam.png"
    with resources.as_file(PHOTOS.joinpath("coffee.png")) as coffee:
        code, stdout, err = run(capsys, "cam", str(coffee), "--model", "fashionnet", "--top-k", "2",
                                "--method", "layercam", "--out", str(out))  # fmt: skip
    assert code == 0, err
    lines = stdout.splitlines()
    assert "layercam at 'conv5'" in lines[0] and len(lines) == 4
    assert re.match(r"\s+\d+\.\d\d%\s+.+ \(\d\)\s+peak at \(y=\d+, x=\d+\)", lines[1])
    with Image.open(out) as written:
        assert np.asarray(written).shape == (28, 28 * 2 + 2, 3)  # two 28x28 overlays side by side


def test_rf_command_prints_theoretical_and_empirical_fields(capsys, tmp_path):
    code, stdout, err = run(capsys, "rf", "--model", "fashionnet", "--layer", "conv5")
    assert code == 0, err
    assert "theoretical receptive field 24x24 pixels, stride 4x4" in stdout
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("coffee.png", "chelsea.png"):
        with resources.as_file(PHOTOS.joinpath(name)) as photo:
            (folder / name).write_bytes(photo.read_bytes())
    out = tmp_path / "rf.png"
    argv = ["rf", "--model", "fashionnet", "--layer", "conv3", "--unit", "5", "--images", str(folder),
            "--top-k", "2", "--stride", "4", "--out", str(out), "--quiet"]  # fmt: skip
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    assert re.search(r"unit 5: empirical receptive field [\d.]+ px \(occlusion, top 2 of 2 images", stdout)
    with Image.open(out) as written:
        assert written.size == (55, 55)  # the re-centred canvas, 2 * 28 - 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cam", "{coffee}", "--model", "fashionnet", "--classes", "12"], "class index 12 is out of range"),
        (["cam", "{coffee}", "--model", "fashionnet", "--layer", "pooled"], "no spatial extent"),
        (["rf", "--model", "fashionnet", "--layer", "logits"], "no spatial extent"),
        (["rf", "--model", "fashionnet", "--layer", "conv3", "--unit", "64"], "out of range"),
        (["rf", "--model", "fashionnet", "--layer", "conv3", "--unit", "1", "--patch", "40"], "larger than"),
        (
            ["rf", "--model", "fashionnet", "--layer", "conv3", "--unit", "1", "--images", "/x"],
            "/x does not exist",
        ),
    ],
)
def test_cam_and_rf_bad_input_one_line_exit_1(capsys, argv, message):
    with resources.as_file(PHOTOS.joinpath("coffee.png")) as coffee:
        code, out, err = run(capsys, *[a.format(coffee=coffee) for a in argv])
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cam", "x.png", "--classes", "3", "--top-k", "2"], "not allowed with argument"),
        (["cam", "x.png", "--method", "saliency"], "invalid choice: 'saliency'"),
        (["rf"], "the following arguments are required: --layer"),
        (["rf", "--layer", "conv1", "--unit", "-1"], "expected a non-negative integer"),
    ],
)
def test_cam_and_rf_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
