#!/bin/sh
# ckprep under valgrind memcheck, for a test suite's --ckprep option:
#   CKPREP_BIN=build/ckprep test_roundtrip.py --ckprep tests/faults/valgrind-ckprep.sh
# Any memcheck error or definite leak makes the run exit 99, and valgrind's
# report then goes to stderr, where the suite shows it.  Valgrind implements
# no Landlock: its words about the unknown system call go to a log of their
# own, and the sandbox's notice that "Landlock is not available" is
# dropped, so ckprep's stderr stays what the suite checks.
: "${CKPREP_BIN:?set CKPREP_BIN to the ckprep binary}"
log=$(mktemp "${TMPDIR:-/tmp}/ckprep-vg.XXXXXX") || exit 98
err=$(mktemp "${TMPDIR:-/tmp}/ckprep-vg.XXXXXX") || exit 98
valgrind -q --tool=memcheck --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    --track-fds=no --log-file="$log" "$CKPREP_BIN" "$@" 2>"$err"
rc=$?
grep -v '^ckprep: sandbox: Landlock is not available' "$err" >&2
if [ "$rc" -eq 99 ]; then
    cat "$log" >&2
fi
rm -f "$log" "$err"
exit "$rc"
