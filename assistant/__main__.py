"""`python -m assistant` runs the CLI (the same as the `assistant` console script)."""

from assistant.cli import main

main()
