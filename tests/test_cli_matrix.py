"""Every command of the CLI with a bad value of each of its options: exit status 2 (a value the
parser refuses) or 1 (one it can only refuse after loading the model), one line on stderr, and
nothing written. The options come from the parser itself, so a new option is covered at once."""

import argparse

import pytest
from PIL import Image

from cnnjax.cli import build_parser, main

# A valid command line per command (cheap: the small FashionNet where a model is loaded).
BASE = {
    "classify": ["classify", "IMG.png", "--model", "fashionnet"],
    "models": ["models"],
    "train": ["train", "--data-dir", "NODATA"],
    "evaluate": ["evaluate", "--data-dir", "NODATA"],
    "doctor": ["doctor", "--data-dir", "NODATA"],
    "visualize": ["visualize", "--model", "fashionnet", "--classes", "1"],
    "dream": ["dream", "IMG.png", "--model", "fashionnet", "--layers", "conv3"],
    "invert": ["invert", "IMG.png", "--model", "fashionnet", "--layers", "conv3"],
    "style": ["style", "IMG.png", "IMG.png", "--model", "fashionnet"],
    "fool": ["fool", "--classes", "1", "--model", "fashionnet"],
    "attack": ["attack", "IMG.png", "--model", "fashionnet"],
    "demo": ["demo"],
    "cam": ["cam", "IMG.png", "--model", "fashionnet"],
    "rf": ["rf", "--layer", "conv3", "--model", "fashionnet"],
    "units": ["units", "--layers", "conv3", "--data", "IMGDIR", "--model", "fashionnet"],
    "dissect": ["dissect", "--layers", "conv3", "--concepts", "NOWHERE", "--model", "fashionnet"],
    "annotate": ["annotate", "--db", "ann.sqlite", "--export", "EXPORT"],
}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def parser_cases():
    """(command, option, bad value) for every option whose values the parser checks."""
    cases = []
    for command, parser in subparsers().items():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            option = action.option_strings[-1]
            if action.choices is not None:
                cases.append((command, option, "bogus"))
            elif action.type is int:
                cases += [(command, option, "abc"), (command, option, "1.5")]
            elif (
                callable(action.type)
                and action.type is not str
                and getattr(action.type, "__name__", "") != "Path"
            ):
                cases += [(command, option, bad) for bad in ("-1", "nan", "inf", "abc")]
    return cases


def test_every_command_has_a_base_line_and_every_checked_option_a_case():
    assert set(BASE) == set(subparsers())
    assert len(parser_cases()) > 80


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), "gray").save(tmp_path / "IMG.png")
    (tmp_path / "IMGDIR").mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (60 * i, 90, 120)).save(tmp_path / "IMGDIR" / f"{i}.png")
    return tmp_path


def refused(argv, code, capsys, workdir) -> str:
    """Run ``argv``; check the exit status, the one error line on stderr (after, at most, a
    line announcing the work) and that nothing was written."""
    before = sorted(workdir.rglob("*"))
    try:
        status = main(argv)
    except SystemExit as e:  # argparse
        status = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == code, (argv, status, err)
    assert 1 <= len(err) <= 2 and err[-1].startswith(f"cnnjax {argv[0]}: error: "), err
    assert not any("Traceback" in line or "error" in line for line in err[:-1]), err
    assert sorted(workdir.rglob("*")) == before, argv
    return err[-1]


@pytest.mark.parametrize("command, option, value", parser_cases())
def test_a_bad_option_value_is_refused_by_the_parser(workdir, capsys, command, option, value):
    line = refused([*BASE[command], option, value], 2, capsys, workdir)
    assert option in line or "argument" in line, line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["classify", "MISSING.png", "--model", "fashionnet"], "MISSING.png"),
        (["evaluate", "--weights", "NOWHERE"], "NOWHERE"),
        (["doctor", "--data-dir", "NOWHERE"], "NOWHERE"),
        (["train", "--data-dir", "NODATA"], "--data-dir"),
        (["visualize", "--model", "fashionnet", "--layer", "nope", "--units", "0"], "unknown layer 'nope'"),
        (["visualize", "--model", "fashionnet", "--layer", "conv3", "--units", "999"], "channels"),
        (["visualize", "--model", "fashionnet", "--classes", "Shirtt"], "did you mean"),
        (["visualize", "--model", "fashionnet", "--classes", "1", "--steps", "1000000"], "steps"),
        (["visualize", "--model", "fashionnet"], "--classes"),
        (["dream", "IMG.png", "--model", "fashionnet", "--layers", "nope"], "unknown layer"),
        (["invert", "IMG.png", "--model", "fashionnet", "--layers", "nope"], "unknown layer"),
        (["style", "IMG.png", "nope", "--model", "fashionnet"], "nope"),
        (["style", "IMG.png", "IMG.png", "--model", "fashionnet", "--blend", "1", "2"], "blend"),
        (["fool", "--classes", "nope", "--model", "fashionnet"], "unknown class"),
        (["attack", "IMG.png", "--model", "fashionnet", "--target", "nope"], "unknown class"),
        (["attack", "IMG.png", "--model", "fashionnet", "--eps", "2"], "eps"),
        (["cam", "IMG.png", "--model", "fashionnet", "--classes", "nope"], "unknown class"),
        (["cam", "IMG.png", "--model", "fashionnet", "--layer", "nope"], "unknown layer"),
        (["rf", "--layer", "nope", "--model", "fashionnet"], "unknown layer"),
        (["rf", "--layer", "conv3", "--model", "fashionnet", "--unit", "999"], "out of range"),
        (
            ["rf", "--layer", "conv3", "--model", "fashionnet", "--unit", "1", "--images", "NOWHERE"],
            "NOWHERE",
        ),
        (["units", "--layers", "conv3", "--data", "NOWHERE", "--model", "fashionnet"], "NOWHERE"),
        (["units", "--layers", "pooled", "--data", "IMGDIR", "--model", "fashionnet"], "no spatial extent"),
        (
            ["units", "--layers", "conv3", "--data", "IMGDIR", "--model", "fashionnet", "--units", "999"],
            "out of",
        ),
        (
            ["units", "--layers", "conv3", "--data", "IMGDIR", "--model", "fashionnet", "--top-k", "5"],
            "top_k",
        ),
        (["dissect", "--layers", "conv3", "--concepts", "NOWHERE", "--model", "fashionnet"], "index.csv"),
        (["dissect", "--layers", "nope", "--concepts", "NOWHERE", "--model", "fashionnet"], "unknown layer"),
        (
            ["annotate", "--layer", "nope", "--data", "IMGDIR", "--model", "fashionnet", "--port", "59871"],
            "layer",
        ),
        (
            [
                "annotate",
                "--layer",
                "conv5",
                "--data",
                "IMGDIR",
                "--model",
                "fashionnet",
                "--units",
                "999",
                "--port",
                "59871",
            ],
            "out of range",
        ),  # fmt: skip
        (
            ["annotate", "--layer", "conv5", "--data", "NOWHERE", "--model", "fashionnet", "--port", "59871"],
            "NOWHERE",
        ),  # fmt: skip
        (["annotate", "--db", "none.sqlite", "--export", "EXPORT"], "no annotation database"),
        (["annotate", "--model", "fashionnet", "--port", "59871"], "give --layer and --data"),
    ],
)
def test_a_bad_value_found_after_loading_is_one_line_and_nothing_written(workdir, capsys, argv, message):
    line = refused(argv, 1, capsys, workdir)
    assert message in line, line
