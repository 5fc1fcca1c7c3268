"""Build step: ship the developer manual (docs/*.md) inside the package as luna_sender/manual/.

Everything else is declared in pyproject.toml. A wheel (``pip install .``) has no docs/ beside
site-packages, so /docs/dev reads the copy made here; an editable install reads ./docs directly.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithManual(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's docs/ (luna_sender/web/docs/markdown.py)
        target = Path(self.build_lib) / "luna_sender" / "manual"
        self.mkpath(str(target))
        for page in sorted((ROOT / "docs").glob("*.md")):
            self.copy_file(str(page), str(target / page.name))


setup(cmdclass={"build_py": BuildWithManual})
