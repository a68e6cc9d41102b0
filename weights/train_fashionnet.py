"""Train the bundled FashionNet and write its weights and manifest (weights/fashionnet.json).

    python weights/train_fashionnet.py --data PATH_TO_FASHION_MNIST [--checkpoints DIR]

The recipe and its hyperparameters are cnnjax.training.FashionConfig; the manifest
records them with the seed, the epochs run, and the validation and test accuracy. With
--checkpoints, a run that is interrupted resumes where it stopped.
"""

import argparse
import sys
from pathlib import Path

from cnnjax.training import FashionConfig, train_fashionnet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the IDX files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--checkpoints", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=FashionConfig.epochs)
    args = parser.parse_args()
    config = FashionConfig(epochs=args.epochs)
    result, manifest = train_fashionnet(args.data, args.out, config, checkpoint_dir=args.checkpoints, overwrite=True)
    print(result.message)
    print(
        f"validation accuracy {manifest['validation_accuracy']:.4f}, "
        f"test accuracy {manifest['test_accuracy']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
