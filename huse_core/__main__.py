"""Entry point for `python -m huse_core`."""

import sys

from .cli import main

sys.exit(main())
