"""Installability: a GPU host keeps its own CUDA torch; only the Makefile pins the CPU build."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO


def test_the_package_declares_a_torch_range_and_the_makefile_pins_it():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert not any(s.operator in ("==", "===") for s in torch.specifier), torch  # no pin in the package
    for cuda_build in ("2.4.0", "2.6.0+cu124", "2.13.0"):  # what a GPU host may have installed
        assert torch.specifier.contains(Version(cuda_build), prereleases=False), cuda_build
    assert re.search(r"install .*torch==2\.13\.0", (REPO / "Makefile").read_text())


def test_dev_extra_pins_ruff_exactly():
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    ruff = next(Requirement(d) for d in dev if Requirement(d).name == "ruff")
    assert [s.operator for s in ruff.specifier] == ["=="], ruff
