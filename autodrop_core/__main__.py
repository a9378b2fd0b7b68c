"""``python -m autodrop_core`` runs the ``autodrop`` command."""

import sys

from autodrop_core._cli import main

sys.exit(main())
