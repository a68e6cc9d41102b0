"""``cnnjax attack``: the printed result, the three-panel figure, fractions for --eps, errors.

Uses the bundled FashionNet (28x28) so that a run costs a fraction of a second; the demo
(tests/test_cli.py) runs the attacks on EfficientNet.
"""

import argparse
from importlib import resources

import numpy as np
import pytest
from PIL import Image

from cnnjax.cli import _fraction, main
from cnnjax.report import adversarial_figure

PHOTOS = resources.files("cnnjax").joinpath("assets/photos")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def coffee():
    with resources.as_file(PHOTOS.joinpath("coffee.png")) as path:
        yield str(path)


def test_attack_prints_the_result_and_writes_the_figure(capsys, tmp_path, coffee):
    out_png = tmp_path / "fig.png"
    argv = ["--method", "fgsm", "--eps", "16/255", "--target", "Bag"]  # a fraction, a class name
    code, out, err = run(capsys, "attack", coffee, "--model", "fashionnet", "--out", str(out_png), *argv)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("original:") and lines[1].startswith("adversarial:")
    assert lines[1].startswith("adversarial:  Bag (8)") and lines[1].endswith("(success)")
    assert lines[2].startswith("perturbation: L-inf 16.000/255")
    assert lines[-1] == f"wrote {out_png}"
    fig = np.asarray(Image.open(out_png).convert("RGB"))
    # Three panels of 28 px enlarged 6x to 168 px, with room for the "+", "=" and the labels.
    assert fig.shape[1] == 3 * 168 + 2 * 44 + 12 and fig.shape[0] > 168 + 30


def test_eps_fractions_and_bad_arguments(capsys, coffee):
    assert _fraction("2/255") == pytest.approx(2 / 255)
    assert _fraction("0.5") == 0.5 and _fraction(" 8/255 ") == pytest.approx(8 / 255)
    for bad in ["-1/255", "two", "1/0"]:
        with pytest.raises(argparse.ArgumentTypeError):
            _fraction(bad)
    with pytest.raises(SystemExit) as e:
        main(["attack", coffee, "--eps", "abc"])
    assert e.value.code == 2 and "fraction (2/255)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["attack", coffee, "--method", "deepfool"])
    assert e.value.code == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "nonsense"], "unknown class 'nonsense'"),
        (["--target", "10"], "out of range"),
        (["--eps", "2"], "eps must be finite and in [0, 1] for L-infinity"),
        (["--method", "fgsm", "--norm", "2"], "--norm applies to bim and pgd"),
        (["--method", "cw", "--eps", "0.1"], "cw minimises the perturbation and takes no --eps"),
    ],
)
def test_bad_values_give_one_line_and_exit_1(capsys, coffee, argv, message):
    code, out, err = run(capsys, "attack", coffee, "--model", "fashionnet", *argv)
    assert code == 1 and out == ""
    assert err.startswith("cnnjax attack: error:") and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_missing_image_exits_1(capsys, tmp_path):
    code, _, err = run(capsys, "attack", str(tmp_path / "nope.png"), "--model", "fashionnet")
    assert code == 1 and "no such image file" in err


def test_figure_panels_hold_the_images_and_the_magnified_perturbation():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 3), dtype=np.float32)
    adv = x.copy()
    adv[4:8, 4:8] = np.clip(adv[4:8, 4:8] + 0.02, 0, 1)
    fig = adversarial_figure(x, adv, original_label="a", original_prob=0.5,
                             adversarial_label="b", adversarial_prob=0.9)  # fmt: skip
    scale = 5  # 32 px panels enlarged to 160
    top, left = 6, 6
    panel = fig[top : top + 160 : scale, left : left + 160 : scale]
    np.testing.assert_allclose(panel, np.round(x * 255) / 255, atol=1 / 255 + 1e-6)
    right = fig[top : top + 160 : scale, left + 2 * (160 + 44) : left + 2 * (160 + 44) + 160 : scale]
    np.testing.assert_allclose(right, np.round(adv * 255) / 255, atol=1 / 255 + 1e-6)
    middle = fig[top : top + 160 : scale, left + 204 : left + 204 + 160 : scale]
    changed = np.zeros((32, 32), bool)
    changed[4:8, 4:8] = True
    # Grey where nothing changed; the largest change at full contrast.
    np.testing.assert_allclose(middle[~changed], 128 / 255, atol=1 / 255)
    assert middle[changed].max() == 1.0
    with pytest.raises(ValueError, match="same shape"):
        adversarial_figure(x, adv[:16], original_label="a", original_prob=0.5,
                           adversarial_label="b", adversarial_prob=0.9)  # fmt: skip
