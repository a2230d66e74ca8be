"""`python -m benchmarks [--quick] [--out DIR] [--record]` from the repository root: the same as `jaxmerge bench`."""
import sys

from jaxmerge.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
