"""tools/mypyc_build.py (make compiled): its module lists name real, importable modules."""

from __future__ import annotations

import importlib

from tests.scripts import ROOT, load_script

mypyc_build = load_script("tools/mypyc_build.py")


def test_every_module_listed_exists_and_imports() -> None:
    for path in [*mypyc_build.MODULES, *mypyc_build.LEFT_OUT]:
        assert (ROOT / path).is_file(), path
        importlib.import_module(mypyc_build.module_name(path))


def test_no_module_is_both_compiled_and_left_out_and_no_schema_is_compiled() -> None:
    assert not set(mypyc_build.MODULES) & set(mypyc_build.LEFT_OUT)
    assert not [m for m in mypyc_build.MODULES if m.startswith("cxstream/schemas/")]
