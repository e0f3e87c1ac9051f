"""`python -m videoqueue_worker`: run the job in VIDEOQUEUE_JOB and exit with its code."""

import sys

from videoqueue_worker.runner import main

sys.exit(main())
