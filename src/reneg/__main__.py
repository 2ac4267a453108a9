"""``python -m reneg``: the same as the ``reneg`` command."""

from .cli import main

raise SystemExit(main())
