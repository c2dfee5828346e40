"""Build hook: ship resources/ and product_profiles/ inside the wheel.

In a source checkout they are read from the repository root; in an installed wheel from
``inspector/_resources`` and ``inspector/_profiles`` (see ``inspector.settings.resources_dir``).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = {"resources": "_resources", "product_profiles": "_profiles"}


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        for src, dst in DATA.items():
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, Path(self.build_lib) / "inspector" / dst, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithData})
