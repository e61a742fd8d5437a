"""Compile the engine's typed per-record pure cores with mypyc, in place (issue 17).

    .venv/bin/python tools/mypyc_build.py          # make compiled: build, the .so lands beside each .py
    .venv/bin/python tools/mypyc_build.py --clean  # make uncompiled: remove every compiled artefact

Python imports a module's extension (``router.cpython-311-x86_64-linux-gnu.so``) instead of its
``router.py`` when both sit in the same directory; the ``.py`` stays the pure-Python path, which
``--clean`` returns to.  The compiled modules share one support library, ``cxstream/_mypyc__mypyc*.so``
(inside the package, so that it is found wherever ``cxstream`` is).  The generated C and the
object files go to ``build/mypyc``.  Nothing here runs unless asked: ``make run`` and ``make test``
use the pure-Python modules.

:data:`MODULES` are the modules compiled; :data:`LEFT_OUT` the ones tried and kept on pure
Python, with the reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cxstream"
BUILD_DIR = ROOT / "build" / "mypyc"
GROUP = "cxstream._mypyc"  # the shared support library: cxstream/_mypyc__mypyc.<abi>.so

# The per-record pure cores (bench/pipeline/costs.py names the hot path's parts).
MODULES: list[str] = [
    "cxstream/streams/codecs.py",
    "cxstream/context/identity.py",
    "cxstream/context/redact.py",
    "cxstream/context/resolver.py",
    "cxstream/routing/ids.py",
    "cxstream/routing/policy.py",
    "cxstream/outreach/guardrails.py",
    "cxstream/outreach/triggers.py",
    "cxstream/outreach/decide.py",
    "cxstream/intel/features.py",
    "cxstream/intel/text.py",
    "cxstream/intel/health.py",
]

# Tried (or considered) and left on pure Python: module -> why.
LEFT_OUT: dict[str, str] = {
    "cxstream/context/update.py": "compiles, and the unit tests pass, but its merge_contexts doctest does not: "
    "mypyc stores an int given for a float-typed value as a float (created_at 1 comes back 1.0); also "
    "ContextLimits, a native class once compiled, no longer has its defaults as class attributes "
    "(agents/scoring.py reads ContextLimits.repeat_window_s and gets a descriptor)",
    "cxstream/routing/router.py": "Router.from_state builds a router with cls.__new__(cls), which mypyc cannot compile "
    "for a native class (internal error 'Router has no attribute __new__'); compiling it needs a change to how a "
    "router is restored",
}

# Added to pyproject.toml's [tool.mypy] for the build: two libraries read as Any.  mypyc keeps every
# module's function bodies (preserve_asts), so mypy then checks the bodies of river and narwhals (river
# imports it), which took it over 10 minutes; none of the compiled modules needs their types.
SKIPPED_IMPORTS = "[mypy-river.*,narwhals.*]\nfollow_imports = skip\n"


def mypy_config() -> str:
    """The build's mypy.ini: pyproject.toml's ``[tool.mypy]`` settings, then :data:`SKIPPED_IMPORTS`."""
    import tomllib

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    lines = [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()]
    return "[mypy]\n" + "\n".join(lines) + "\n\n" + SKIPPED_IMPORTS


def module_name(path: str) -> str:
    """``cxstream/routing/router.py`` -> ``cxstream.routing.router``."""
    return path.removesuffix(".py").replace("/", ".")


def artefacts() -> list[Path]:
    """Every compiled file in the package: the modules' extensions and the support library."""
    return sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".so", ".pyd") and p.is_file())


def clean() -> None:
    for path in artefacts():
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    build = ROOT / "build"
    if build.exists():
        shutil.rmtree(build)
        print("removed build/")


def doctests() -> int:
    """Run the doctests of each module's ``.py`` against the module Python imports (compiled or not).

    pytest cannot collect them while a module is compiled (``import file mismatch``), and the
    compiled functions are not found by :mod:`doctest` (no source, no line numbers).
    """
    import doctest
    import importlib
    import importlib.util

    sys.path.insert(0, str(ROOT))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for path in MODULES:
        name = module_name(path)
        imported = importlib.import_module(name)
        spec = importlib.util.spec_from_file_location(f"{name}__source", ROOT / path)
        assert spec is not None and spec.loader is not None
        source = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = source
        spec.loader.exec_module(source)
        tests = [t for t in doctest.DocTestFinder().find(source, name) if t.examples]
        for test in tests:
            test.globs = dict(imported.__dict__)
            runner.run(test)
        kind = "compiled" if Path(imported.__file__ or "").suffix == ".so" else "python"
        print(f"{name:34} {kind:8} {len(tests)} docstrings with examples")
    result = runner.summarize(verbose=False)
    print(f"{result.attempted} examples, {result.failed} failed")
    return 1 if result.failed else 0


def build(jobs: int) -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    os.chdir(ROOT)  # mypy reads its settings from pyproject.toml; the paths are relative to the root
    missing = [m for m in MODULES if not (ROOT / m).is_file()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)}")
    # Imported modules are type-checked for their types but their own errors (the schemas' msgspec
    # false positives, see `make typecheck`) do not stop the build: only the compiled modules must be clean.
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    config = BUILD_DIR / "mypy.ini"
    config.write_text(mypy_config())
    extensions = mypycify([f"--config-file={config}", "--follow-imports=silent", *MODULES], opt_level="3", target_dir=str(BUILD_DIR), group_name=GROUP)
    setup(
        name="cxstream-mypyc",
        ext_modules=extensions,
        script_args=["build_ext", "--inplace", f"--build-temp={BUILD_DIR / 'temp'}", f"--parallel={jobs}"],
    )
    for m in MODULES:
        print(f"compiled {module_name(m)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules and build/ instead")
    parser.add_argument("--list", action="store_true", help="print the modules compiled and exit")
    parser.add_argument("--doctests", action="store_true", help="run the modules' doctests on what Python imports")
    parser.add_argument("--jobs", type=int, default=1, help="C compiler processes (default 1: the machine is shared)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(module_name(m) for m in MODULES))
    elif args.doctests:
        sys.exit(doctests())
    elif args.clean:
        clean()
    else:
        build(args.jobs)


if __name__ == "__main__":
    main()
