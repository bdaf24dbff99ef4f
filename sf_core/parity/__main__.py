"""`python -m sf_core.parity FIXTURE.safetensors`: see `sf_core.parity.official`."""
from .official import main

raise SystemExit(main())
