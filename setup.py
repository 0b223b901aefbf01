"""The one part of architect-cleanup that is not in pyproject.toml: its C extension.

``architect_cleanup._fsops`` does one directory's listing, lstat()s and checked unlinks in
one call without the GIL (see its source); ``architect_cleanup.fs`` falls back to its own
loops when it is not built.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("architect_cleanup._fsops", ["architect_cleanup/_fsops.c"],
                             extra_compile_args=["-std=gnu11", "-Wall", "-Wextra"])])
