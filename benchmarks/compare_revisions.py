"""The native runtime of another git revision against this working tree's, in one process.

    python benchmarks/compare_revisions.py REV [MODEL ...] [--rounds 7] [--stages]

Kernel changes of a few percent drown in this host's drift between runs (its speed moves 10-30%
within minutes), so both builds run side by side: REV's extension is built from `git archive REV`
as a module of another name, each revision compiles its own plans (`compile_plan` of its tree,
in a subprocess), and the two plans of each bundled model (default: the 1-bit ones) alternate
round by round, single thread, pinned; the fastest run of each side is compared (`plan.profile`,
summed over the stages), and with --stages the time per kind of stage. Prints, writes nothing.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import pickle
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bitface.bundled import list_models
from bitface.evaluate.results import pin_single_thread
from bitface.export.format import load_packed
from bitface.runtime import _native
from bitface.runtime.plan import FIELDS, compile_plan

ROOT = Path(__file__).resolve().parents[1]
KINDS = "input conv bconv pool bpool sign affine add upsample".split()
DUMP = """
import pickle, sys
from bitface.export.format import load_packed
from bitface.runtime.plan import compile_plan
plans = {}
for path in sys.argv[2:]:
    c = compile_plan(load_packed(path))
    plans[path] = (c.stages, c.buffers, c.output, c.input_shape)
pickle.dump(plans, open(sys.argv[1], "wb"))
"""


def build_revision(rev: str, where: Path):
    """REV's extension, built in `where` as bitface.runtime._native_old (its own init symbol)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    source = where / "src/bitface/runtime/_native.c"
    text = source.read_text()
    text = text.replace('"_native", "bitface native kernels"', '"_native_old", "bitface native kernels"')
    text = text.replace("PyInit__native(void)", "PyInit__native_old(void)")
    source.write_text(text.replace("bitface.runtime._native.Plan", "bitface.runtime._native_old.Plan"))
    setup = where / "setup.py"
    setup.write_text(setup.read_text().replace('"bitface.runtime._native",', '"bitface.runtime._native_old",'))
    subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=where, check=True, capture_output=True
    )
    built = next((where / "src/bitface/runtime").glob("_native_old*.so"))
    loader = importlib.machinery.ExtensionFileLoader("bitface.runtime._native_old", str(built))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def old_plans(where: Path, paths: list[str]) -> dict:
    """Each model compiled by REV's own plan compiler (its stage parameters may differ from ours)."""
    out = where / "plans.pkl"
    env = {"PYTHONPATH": str(where / "src"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", DUMP, str(out), *paths], env=env, check=True)
    return pickle.loads(out.read_bytes())


def stage_kinds(stages) -> list[str]:
    return [KINDS[params[FIELDS.index("kind")]] for params, *_ in stages]  # kind: the first parameter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the git revision to compare with (e.g. HEAD, or a commit)")
    parser.add_argument("models", nargs="*", help="bundled model names (default: every 1-bit model)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--stages", action="store_true", help="also the time per kind of stage")
    args = parser.parse_args()
    models = {m["name"]: m for m in list_models()}
    names = args.models or [n for n, m in models.items() if m.get("method") in ("xnor", "acn1bit")]
    unknown = [n for n in names if n not in models]
    if unknown:
        sys.exit(f"compare_revisions: unknown bundled model(s) {', '.join(unknown)} (known: {', '.join(models)})")
    pin_single_thread()
    with tempfile.TemporaryDirectory() as tmp:
        old = build_revision(args.rev, Path(tmp))
        paths = {n: models[n]["path"] for n in names}
        theirs = old_plans(Path(tmp), list(paths.values()))
        sides = {}
        for name, path in paths.items():
            c = compile_plan(load_packed(path))
            mine = _native.Plan(c.stages, c.buffers, c.output, int(np.prod(c.input_shape)))
            o = theirs[path]
            sides[name] = {
                "old": (old.Plan(o[0], o[1], o[2], int(np.prod(o[3]))), stage_kinds(o[0])),
                "new": (mine, stage_kinds(c.stages)),
                "x": np.random.default_rng(0).standard_normal((1, *c.input_shape)).astype(np.float32),
            }
        best: dict = defaultdict(lambda: None)
        peak = {"old": 0.0, "new": 0.0}
        for _ in range(args.rounds):  # alternate the sides round by round: drift hits both alike
            for side, module in (("old", old), ("new", _native)):
                start = time.perf_counter()
                macs = module.peak(500_000)
                peak[side] = max(peak[side], macs / (time.perf_counter() - start))
                for name, s in sides.items():
                    times = np.array(s[side][0].profile(s["x"], 20))
                    key = (name, side)
                    best[key] = times if best[key] is None else np.minimum(best[key], times)
    print(
        f"{'binary peak (T MAC/s)':44s} {peak['old'] / 1e12:9.3f} {peak['new'] / 1e12:9.3f}  new/old "
        f"{peak['new'] / peak['old']:.3f}"
    )
    for name in names:
        old_t, new_t = best[(name, "old")], best[(name, "new")]
        print(
            f"{name:44s} {old_t.sum() * 1e6:8.1f}us {new_t.sum() * 1e6:8.1f}us  new/old {new_t.sum() / old_t.sum():.3f}"
        )
        if args.stages:
            per_kind = defaultdict(lambda: [0.0, 0.0])
            for i, side in enumerate(("old", "new")):
                for kind, t in zip(sides[name][side][1], (old_t, new_t)[i], strict=True):
                    per_kind[kind][i] += t * 1e6
            for kind, (o, n) in sorted(per_kind.items(), key=lambda kv: -max(kv[1])):
                ratio = f"{n / o:.3f}" if o else "-"
                print(f"  {kind:42s} {o:8.1f}us {n:8.1f}us  new/old {ratio}")


if __name__ == "__main__":
    main()
