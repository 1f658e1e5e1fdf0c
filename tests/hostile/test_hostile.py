#!/usr/bin/python3
"""Hostile-input test suite for ckprep.

usage: test_hostile.py --ckprep PATH [--workdir DIR] [--jobs N] [-k SUBSTR]
                       [--keep] [-v]

Generates the malformed checkpoints with make_hostile.py, then for each case:
  copy to a fresh dir d/input.<ext>, run `ckprep run -c CONF -o d/out.th
  d/input.<ext>` (20 s timeout) and require: exit code 1, stderr exactly one
  non-empty line naming the input file and containing every
  expect_in_message substring (case-insensitive), no sanitizer report,
  d/ holding only the input afterwards, input unchanged. Then
  `ckprep inspect -c CONF d/input.<ext>` must exit 1 with one stderr line.
  A case with a "conf" entry (low [security] limits) runs with CONF plus
  that text instead of the shared CONF.
Two positive controls (unmodified zip and legacy checkpoints) must copy OK.
Prints failures, then one line `N passed, M failed`; exit 1 if any failed.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
TIMEOUT = 20
SANITIZER_MARKS = ("AddressSanitizer", "runtime error:", "LeakSanitizer",
                   "MemorySanitizer", "ThreadSanitizer",
                   "UndefinedBehaviorSanitizer")
CONF = "[pipeline]\nchain =\n"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(cmd, timeout=TIMEOUT):
    """-> (returncode or None on timeout, stdout, stderr)"""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, env=env)
    except OSError as e:
        return -999, b"", ("cannot execute: %s" % e).encode()
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the group we created
        except ProcessLookupError:
            pass
        out, err = p.communicate()
        return None, out, err


def describe_rc(rc):
    if rc is None:
        return "timeout after %d s" % TIMEOUT
    if rc == -999:
        return "could not execute"
    if rc < 0:
        try:
            return "killed by signal %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit %d" % rc


def one_line(err_text):
    """-> (line or None, problem or None)"""
    t = err_text
    if t.endswith("\r\n"):
        t = t[:-2]
    elif t.endswith("\n"):
        t = t[:-1]
    if not t.strip():
        return None, "stderr is empty"
    if "\n" in t:
        n = t.count("\n") + 1
        return None, "stderr has %d lines, want 1: %r" % (n, t[:300])
    return t, None


def sanitizer(err_text):
    return [m for m in SANITIZER_MARKS if m in err_text]


def check_common(tag, rc, err_text, problems):
    if rc is None or rc < 0:
        problems.append("%s: %s" % (tag, describe_rc(rc)))
    s = sanitizer(err_text)
    if s:
        problems.append("%s: sanitizer report (%s)" % (tag, ", ".join(s)))


def run_case(ckprep, conf, casedir, rundir, case):
    name = case["file"]
    ext = os.path.splitext(name)[1] or ".pt"
    d = os.path.join(rundir, os.path.splitext(name)[0])
    os.makedirs(d)
    inp = os.path.join(d, "input" + ext)
    shutil.copyfile(os.path.join(casedir, name), inp)
    h0 = sha256(inp)
    out = os.path.join(d, "out.th")
    problems = []
    if case.get("conf"):
        # the case's own configuration (low [security] limits), beside d
        conf = d + ".ini"
        with open(conf, "w") as f:
            f.write(CONF + case["conf"])

    rc, _, err = run([ckprep, "run", "-c", conf, "-o", out, inp])
    et = err.decode("utf-8", "replace")
    check_common("run", rc, et, problems)
    if rc is not None and rc >= 0 and rc != 1:
        problems.append("run: %s, want exit 1" % describe_rc(rc))
    line, prob = one_line(et)
    if prob:
        problems.append("run: " + prob)
    else:
        if inp not in line and os.path.basename(inp) not in line:
            problems.append("run: message does not name the input: %r" % line)
        # the input's path holds the case name: match the rest of the line
        low = line.replace(inp, "").lower()
        for sub in case.get("expect_in_message", []):
            if sub.lower() not in low:
                problems.append("run: message lacks %r: %r" % (sub, line))
    left = sorted(os.listdir(d))
    if left != [os.path.basename(inp)]:
        problems.append("run: folder holds %r, want only the input" % left)
    if os.path.exists(inp) and sha256(inp) != h0:
        problems.append("run: input file was modified")
    elif not os.path.exists(inp):
        problems.append("run: input file was removed")

    if os.path.exists(inp):
        rc, _, err = run([ckprep, "inspect", "-c", conf, inp])
        et = err.decode("utf-8", "replace")
        check_common("inspect", rc, et, problems)
        if rc is not None and rc >= 0 and rc != 1:
            problems.append("inspect: %s, want exit 1" % describe_rc(rc))
        _, prob = one_line(et)
        if prob:
            problems.append("inspect: " + prob)
        if sorted(os.listdir(d)) != [os.path.basename(inp)]:
            problems.append("inspect: wrote files into the folder")
        if sha256(inp) != h0:
            problems.append("inspect: input file was modified")
    return name, problems


VERIFY = r"""
import sys, torch
a = torch.load(sys.argv[1])
kw = {"weights_only": True} if "weights_only" in torch.load.__code__.co_varnames else {}
b = torch.load(sys.argv[2], **kw)
assert isinstance(b, dict), type(b)
assert sorted(a) == sorted(b), (sorted(a), sorted(b))
for k in a:
    assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
"""


def run_control(ckprep, conf, casedir, rundir, ctl):
    name = ctl["file"]
    d = os.path.join(rundir, "control_" + os.path.splitext(name)[0])
    os.makedirs(d)
    inp = os.path.join(d, "input.pt")
    shutil.copyfile(os.path.join(casedir, name), inp)
    h0 = sha256(inp)
    out = os.path.join(d, "out.th")
    problems = []
    rc, _, err = run([ckprep, "run", "-c", conf, "-o", out, inp])
    et = err.decode("utf-8", "replace")
    check_common("run", rc, et, problems)
    if rc is not None and rc >= 0 and rc != 0:
        problems.append("run: %s, want exit 0 (stderr: %r)"
                        % (describe_rc(rc), et.strip()[:300]))
    if not os.path.isfile(out) or os.path.getsize(out) == 0:
        problems.append("run: out.th missing or empty")
    else:
        left = sorted(os.listdir(d))
        if left != ["input.pt", "out.th"]:
            problems.append("run: folder holds %r" % left)
        vrc, _, verr = run([PY, "-c", VERIFY, inp, out], timeout=120)
        if vrc != 0:
            msg = verr.decode("utf-8", "replace").strip().splitlines()
            problems.append("out.th does not load as the same tensors: %s"
                            % (msg[-1] if msg else describe_rc(vrc)))
    if sha256(inp) != h0:
        problems.append("run: input file was modified")
    rc, _, err = run([ckprep, "inspect", inp])
    et = err.decode("utf-8", "replace")
    check_common("inspect", rc, et, problems)
    if rc is not None and rc >= 0 and rc != 0:
        problems.append("inspect: %s, want exit 0" % describe_rc(rc))
    return "control:" + name, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckprep", required=True, help="path of the ckprep binary")
    ap.add_argument("--workdir", help="where to generate and run (default: a "
                    "temp dir, removed afterwards unless --keep)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-k", dest="filter", help="only cases whose file name "
                    "contains this")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("-v", action="store_true", help="print every result")
    a = ap.parse_args()

    ckprep = os.path.abspath(a.ckprep)
    if not (os.path.isfile(ckprep) and os.access(ckprep, os.X_OK)):
        print("FAIL: %s is not an executable file" % ckprep)
        print("0 passed, 1 failed")
        return 1
    if a.workdir:
        work = os.path.abspath(a.workdir)
        os.makedirs(work, exist_ok=True)
        work = tempfile.mkdtemp(prefix="hostile.", dir=work)
    else:
        work = tempfile.mkdtemp(prefix="ckprep-hostile.")
    casedir = os.path.join(work, "cases")
    rundir = os.path.join(work, "run")
    os.makedirs(rundir)
    g = subprocess.run([PY, os.path.join(HERE, "make_hostile.py"), casedir],
                       capture_output=True, text=True)
    if g.returncode != 0:
        print("make_hostile.py failed:\n" + g.stderr, file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    conf = os.path.join(work, "copy.ini")
    with open(conf, "w") as f:
        f.write(CONF)
    with open(os.path.join(casedir, "cases.json")) as f:
        cases = json.load(f)
    with open(os.path.join(casedir, "controls.json")) as f:
        controls = json.load(f)
    if a.filter:
        cases = [c for c in cases if a.filter in c["file"]]
        controls = [c for c in controls if a.filter in c["file"]]

    try:
        return run_all(a, ckprep, conf, casedir, rundir, cases, controls, work)
    finally:
        if a.keep or a.workdir:
            print("files kept in " + work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_all(a, ckprep, conf, casedir, rundir, cases, controls, work):
    results = []
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as ex:
        futs = [ex.submit(run_control, ckprep, conf, casedir, rundir, c)
                for c in controls]
        futs += [ex.submit(run_case, ckprep, conf, casedir, rundir, c)
                 for c in cases]
        for fu in futs:
            try:
                results.append(fu.result())
            except Exception as e:  # harness error counts as a failure
                results.append(("?", ["harness error: %r" % e]))

    what = {c["file"]: c["what"] for c in cases}
    failed = [(n, p) for n, p in results if p]
    if a.v:
        for n, p in results:
            print("%s %s" % ("FAIL" if p else "ok  ", n))
    for n, p in failed:
        print("FAIL %s (%s)" % (n, what.get(n, "positive control")))
        for x in p:
            print("     - " + x)
    print("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
