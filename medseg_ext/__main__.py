"""`python -m medseg_ext` is the `medseg-ext` command."""
import sys

from .cli import main

sys.exit(main())
