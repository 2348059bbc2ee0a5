"""Entry point of the processes that ``assistant finetune train --gpus N`` starts under torchrun.

torchrun's own argument parser reads abbreviations among the training options (``--r 16`` is
"ambiguous: --rdzv-backend, --role, ...") unless they follow a ``--``. So the relaunch passes
``-- finetune train ...`` and this module drops the ``--`` before handing the command line to
the assistant CLI (run as ``python -m assistant`` would: the CLI is the composition root, which
command modules never import). Nothing else.
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    sys.argv = [sys.argv[0], *args]
    runpy.run_module("assistant", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
