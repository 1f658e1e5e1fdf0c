#!/bin/sh
# ckprep under valgrind memcheck, for a test suite's --ckprep option:
#   CKPREP_BIN=build/ckprep test_roundtrip.py --ckprep tests/faults/valgrind-ckprep.sh
# Any memcheck error or definite leak makes the run exit 99, and valgrind's
# report goes to stderr, where the suite shows it.
: "${CKPREP_BIN:?set CKPREP_BIN to the ckprep binary}"
exec valgrind -q --tool=memcheck --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    --track-fds=no "$CKPREP_BIN" "$@"
