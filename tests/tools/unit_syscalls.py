#!/usr/bin/python3
"""unit_syscalls.py UNIT SYSCALL... -- do UNIT's SystemCallFilter= lines let
each SYSCALL through?   unit_syscalls.py --list UNIT -- every call they let
through, one per line (an allow-list unit only), for unit_filter.

Reads the lines as systemd 252 does (config_parse_syscall_filter): an
empty value resets; the first line after that decides the mode (a list of
what is allowed, which starts from @default, or with '~' of what is
denied); after it, a line adds to or takes from the set, in order; a
NAME:ERRNO entry on a line without '~' is ignored (systemd warns); groups
(@name) are expanded with `systemd-analyze syscall-filter`, nested groups
too.  Drop-ins are not read.  Prints one line per
syscall and exits 1 when one is refused: ckprep's daemon needs Landlock's
three calls in its threads, and systemd 252's @system-service does not hold
them (a refused call is EPERM under SystemCallErrorNumber=EPERM, and the
jobs would run without their file-system confinement).
"""
import subprocess
import sys

GROUPS = {}


def expand(name):
    if not name.startswith("@"):
        return {name}
    if name not in GROUPS:
        out = subprocess.run(["systemd-analyze", "syscall-filter", name],
                             capture_output=True, text=True, check=True).stdout
        items = set()
        for line in out.splitlines()[1:]:
            tok = line.strip()
            if tok and not tok.startswith("#"):
                items |= expand(tok)
        GROUPS[name] = items
    return GROUPS[name]


def main(argv):
    listing = argv[1] == "--list"
    if listing:
        argv = argv[1:]
    unit, calls = argv[1], argv[2:]
    allow_mode, allowed, denied = None, set(), set()
    for line in open(unit):
        key, eq, spec = line.strip().partition("=")
        if not eq or key.strip() != "SystemCallFilter":
            continue
        spec = spec.strip()
        if spec == "":
            allow_mode, allowed, denied = None, set(), set()
            continue
        deny = spec.startswith("~")
        names = set()
        for tok in spec.lstrip("~").split():
            name, _, errno_ = tok.partition(":")
            if errno_ and not deny:
                continue    # allowed calls take no errno: systemd skips it
            names |= expand(name)
        if allow_mode is None:
            allow_mode = not deny
            if allow_mode:
                allowed = set(expand("@default"))
        if allow_mode:
            allowed = allowed - names if deny else allowed | names
        else:
            denied = denied | names if deny else denied - names
    if listing:
        if not allow_mode:
            print("%s: not an allow list" % unit, file=sys.stderr)
            return 1
        print("\n".join(sorted(allowed)))
        return 0
    bad = 0
    for c in calls:
        ok = (c in allowed) if allow_mode else (c not in denied)
        print("%s: %s %s" % (unit, c, "allowed" if ok else "REFUSED"))
        bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
