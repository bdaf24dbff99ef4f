"""`python -m sf_core.toy ...` (see cli.py)."""
from .cli import main

raise SystemExit(main())
