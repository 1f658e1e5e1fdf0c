#!/usr/bin/python3
"""Every plugin suite (tests/plugins/test_*.py) in one process, on one set of
input checkpoints: a line per file, then the total "N passed, M failed";
exit 1 when M > 0.  `make test-plugins` runs it.

usage: run_all.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
                  [-k SUBSTR] [-v]
"""
import sys

import plugtest

if __name__ == "__main__":
    sys.exit(plugtest.main())
