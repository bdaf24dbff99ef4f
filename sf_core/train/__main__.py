"""`python -m sf_core.train ...` (see cli.py)."""
from .cli import main

raise SystemExit(main())
