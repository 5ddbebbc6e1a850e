"""The inference side must import without torch (GUIDE: a stage never needs the training extra)."""

import subprocess
import sys

TORCH_FREE = [
    "bitface",
    "bitface.schemes",
    "bitface.io",
    "bitface.data",
    "bitface.evaluate",
    "bitface.evaluate.results",
    "bitface.draw",
    "bitface.export.format",
    "bitface.runtime",
    "bitface.data.predictor",
    "bitface.cli",
    "bitface.api",
    "bitface.track",
    "bitface.predict",
]


def test_inference_modules_import_without_torch():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    __import__(name)\n"
        "from bitface.cli import build_parser\n"
        "build_parser().parse_args(['data', 'info', 'x'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
