"""`python -m sf_core.train ...` (see cli.py)."""
import logging
import os
import sys

from .cli import main

rc = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A rank started by torchrun has already left its process group (cli.cmd_run: barrier, then
    # destroy_process_group) and written its outputs atomically. Interpreter finalisation can still abort in
    # torch's C++ teardown ("terminate called without an active exception", exit -6), which makes torchrun
    # fail a finished run; leave without it once everything is flushed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
raise SystemExit(rc)
