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
        # A finder that refuses torch looks like a machine without it. (sys.modules['torch'] = None
        # does not: SciPy's array-API helpers take that entry for an imported torch and fail.)
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    __import__(name)\n"
        "from bitface.cli import build_parser\n"
        "build_parser().parse_args(['data', 'info', 'x'])\n"
        "assert 'torch' not in sys.modules\n"
        "from bitface.evaluate import paired_difference\n"
        "paired_difference([1.0, 2.0, 3.0], [1.5, 2.0, 2.0], resamples=100)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
