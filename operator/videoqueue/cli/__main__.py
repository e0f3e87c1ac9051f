"""`python -m videoqueue.cli`: the same as `kubectl videoqueue`."""

import sys

from videoqueue.cli.main import main

sys.exit(main())
