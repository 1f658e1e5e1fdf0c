#!/usr/bin/python3
"""Fault tests for `ckprep run`: the output cannot be written, the input
changes while it is read.

usage: test_faults.py --ckprep PATH [--workdir DIR] [-k SUBSTR] [--keep] [-v]

Write failures (the output must not be partly written):
  fsize:*   RLIMIT_FSIZE at several sizes (the write fails with EFBIG; the
            process must not be killed by SIGXFSZ, which stays at its default)
  enospc:*  a small tmpfs that fills up, with the input outside it (copy
            through memory) and inside it (copy_file_range); only as root
            where mounting works -- the summary says whether it ran.
  Each must give exit 1, stdout empty, one stderr line naming the input, the
  output and the cause, no output and no temporary file in the output
  folder (an output that existed before is left as it was), input unchanged
  (SHA-256 before and after).

Input changing mid-run (a 64 MiB checkpoint A; B has the same layout and
other values).  The change is made as soon as ckprep's temporary output
appears (the input is open and parsed, its tensors are being copied), or
after a fixed delay from the start:
  truncate:*  the input is truncated (to 0, to half)
  rename:*    B is renamed over the input path
  unlink:*    the input is removed
  cp:*        B is copied over the input in place (truncate, then write)
  overwrite:* B's bytes are written over the input without truncating
  Each run must fail cleanly (exit 1, one stderr line naming the input, no
  output, no temporary) or succeed with an output that torch.load reads as
  exactly A (or B, where the change may come before ckprep opens the file)
  -- never a mix.  Truncations made once copying started must be detected
  in at least one run.

Prints failures, then one line `N passed, M failed`; exit 1 if any failed.
"""
import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

SANITIZER_MARKS = ("AddressSanitizer", "runtime error:", "LeakSanitizer",
                   "UndefinedBehaviorSanitizer")
TIMEOUT = 120
BIG_TENSORS = 8            # tensors of 2 Mi float32 each: 64 MiB
CONF = "[pipeline]\nchain =\n"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def env():
    e = dict(os.environ)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
    return e


def fsize_limit(n):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return pre


def run(cmd, preexec=None):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=TIMEOUT, preexec_fn=preexec, env=env())
    return p.returncode, p.stdout.decode("utf-8", "replace"), \
        p.stderr.decode("utf-8", "replace")


def describe(rc):
    if rc < 0:
        return "killed by %s" % signal.Signals(-rc).name
    return "exit %d" % rc


def stderr_line(err, problems):
    t = err[:-1] if err.endswith("\n") else err
    if not t.strip():
        problems.append("stderr is empty")
        return ""
    if "\n" in t:
        problems.append("stderr has %d lines, want 1: %r"
                        % (t.count("\n") + 1, t[:400]))
    for m in SANITIZER_MARKS:
        if m in err:
            problems.append("sanitizer report: " + m)
    return t


def leftovers(d, keep):
    return sorted(n for n in os.listdir(d) if n not in keep)


class Suite:
    def __init__(self, a):
        self.a = a
        self.results = []
        self.notes = []

    def check(self, name, problems):
        if self.a.filter and self.a.filter not in name:
            return
        self.results.append((name, problems))
        if self.a.v or problems:
            print("%s %s" % ("FAIL" if problems else "ok  ", name))
            for p in problems:
                print("     - " + p)
        sys.stdout.flush()

    def wanted(self, name):
        return not self.a.filter or self.a.filter in name


# ---------------------------------------------------------------- write side

def write_failure(s, name, ckprep, conf, inp, outdir, cause, preexec=None,
                  old=None):
    """Run with the output in outdir, where writing must fail with cause."""
    if not s.wanted(name):
        return
    out = os.path.join(outdir, "out.th")
    for n in os.listdir(outdir):
        os.unlink(os.path.join(outdir, n))
    if old is not None:
        with open(out, "wb") as f:
            f.write(old)
    h0 = sha256(inp)
    problems = []
    rc, so, se = run([ckprep, "run", "-c", conf, "-o", out, inp], preexec)
    if rc != 1:
        problems.append("%s, want exit 1 (stderr %r)" % (describe(rc), se[:300]))
    # the record of the failed job, and nothing else
    try:
        rec = json.loads(so)
        if rec.get("status") != "failed" or "output" in rec or so.count("\n") != 1:
            problems.append("stdout is not one failed record: %r" % so[:200])
    except ValueError:
        problems.append("stdout is not a JSON record: %r" % so[:200])
    line = stderr_line(se, problems)
    for want in (inp, out, cause):
        if line and want not in line:
            problems.append("stderr line lacks %r: %r" % (want, line))
    keep = ["out.th"] if old is not None else []
    left = leftovers(outdir, keep)
    if left:
        problems.append("the output folder holds %r" % left)
    if old is not None:
        with open(out, "rb") as f:
            if f.read() != old:
                problems.append("the existing output was changed")
    elif os.path.exists(out):
        problems.append("out.th was written")
    if sha256(inp) != h0:
        problems.append("the input changed")
    s.check(name, problems)


def mount_tmpfs(d, size):
    """-> None when mounted, else the reason it could not be."""
    if os.geteuid() != 0:
        return "not running as root"
    os.makedirs(d, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size,
                        "tmpfs", d], capture_output=True, text=True)
    if p.returncode != 0:
        return "mount failed: " + p.stderr.strip()
    return None


def umount(d):
    subprocess.run(["umount", d], capture_output=True)


def write_side(s, ckprep, work, conf, sample, big):
    # reference sizes of the outputs
    sizes = {}
    for label, inp in (("sample", sample), ("big", big)):
        os.makedirs(os.path.join(work, "ref"), exist_ok=True)
        ref = os.path.join(work, "ref", "out.th")  # same name, same size
        rc, _, se = run([ckprep, "run", "-c", conf, "-o", ref, inp])
        if rc != 0:
            s.check("fsize:reference " + label, ["reference run failed: " + se])
            return
        sizes[label] = os.path.getsize(ref)
        os.unlink(ref)

    outdir = os.path.join(work, "wout")
    os.makedirs(outdir)
    efbig = os.strerror(27)  # EFBIG: "File too large"
    n = sizes["sample"]
    for lim in (1, 100, 4096, n // 2, n - 1):
        write_failure(s, "fsize:sample:%d" % lim, ckprep, conf, sample, outdir,
                      efbig, fsize_limit(lim))
    n = sizes["big"]
    for lim in (70000, n // 3, n - 100):
        write_failure(s, "fsize:big:%d" % lim, ckprep, conf, big, outdir,
                      efbig, fsize_limit(lim))
    write_failure(s, "fsize:existing-output-kept", ckprep, conf, sample,
                  outdir, efbig, fsize_limit(sizes["sample"] // 2),
                  old=b"the previous output\n")

    enospc = os.strerror(28)  # ENOSPC: "No space left on device"
    if not any(s.wanted("enospc:" + n) for n in
               ("sample-outside", "big-outside", "sample-inside",
                "existing-output-kept")):
        return
    mnt = os.path.join(work, "full")
    why = mount_tmpfs(mnt, "40k")
    if why is not None:
        s.notes.append("ENOSPC: NOT RUN (%s); RLIMIT_FSIZE only" % why)
        return
    try:
        s.notes.append("ENOSPC: ran on a tmpfs mounted at %s" % mnt)
        od = os.path.join(mnt, "o")
        os.makedirs(od)
        # input outside: records copied through memory (EXDEV fallback)
        write_failure(s, "enospc:sample-outside", ckprep, conf, sample, od,
                      enospc)
        write_failure(s, "enospc:big-outside", ckprep, conf, big, od, enospc)
    finally:
        umount(mnt)
    why = mount_tmpfs(mnt, "%dk" % ((os.path.getsize(sample) + 16384) // 1024))
    if why is not None:
        s.check("enospc:remount", ["second tmpfs mount failed: " + why])
        return
    try:
        # input inside: records copied by copy_file_range within the tmpfs
        inp = os.path.join(mnt, "sample.th")
        shutil.copyfile(sample, inp)
        od = os.path.join(mnt, "o")
        os.makedirs(od)
        write_failure(s, "enospc:sample-inside", ckprep, conf, inp, od, enospc)
        write_failure(s, "enospc:existing-output-kept", ckprep, conf, inp, od,
                      enospc, old=b"x" * 100)
    finally:
        umount(mnt)


# ---------------------------------------------------------------- read side

def make_big(work):
    g = torch.Generator().manual_seed(5)
    a = {"t%d" % i: torch.randn(2 << 20, generator=g) for i in range(BIG_TENSORS)}
    b = {k: v + 1 for k, v in a.items()}
    pa, pb = os.path.join(work, "A.th"), os.path.join(work, "B.th")
    torch.save(a, pa)
    torch.save(b, pb)
    assert os.path.getsize(pa) == os.path.getsize(pb)
    return pa, pb, a, b


def same(x, ref):
    return (isinstance(x, dict) and sorted(x) == sorted(ref) and
            all(x[k].dtype == ref[k].dtype and torch.equal(x[k], ref[k])
                for k in ref))


def change(kind, inp, pb):
    if kind == "truncate-0":
        os.truncate(inp, 0)
    elif kind == "truncate-half":
        os.truncate(inp, os.path.getsize(inp) // 2)
    elif kind == "rename":
        os.rename(pb + ".copy", inp)
    elif kind == "unlink":
        os.unlink(inp)
    elif kind == "cp":
        shutil.copyfile(pb, inp)  # O_TRUNC, then write
    elif kind == "overwrite":
        with open(pb, "rb") as src, open(inp, "r+b") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    else:
        raise ValueError(kind)


def read_side(s, ckprep, work, conf, big):
    pa, pb, ta, tb = big
    detected = {}
    runs = 0
    cases = []
    for kind in ("truncate-0", "truncate-half", "rename", "unlink", "cp",
                 "overwrite"):
        for rep in range(3):
            cases.append((kind, "copying", rep))
        for delay in (0.0, 0.005, 0.02):
            cases.append((kind, "after-%gms" % (delay * 1000), delay))
    for kind, when, arg in cases:
        name = "%s:%s%s" % (kind, when,
                            ":%d" % arg if when == "copying" else "")
        if not s.wanted(name):
            continue
        runs += 1
        d = os.path.join(work, "r%03d" % runs)
        os.makedirs(d)
        inp = os.path.join(d, "input.th")
        out = os.path.join(d, "out.th")
        shutil.copyfile(pa, inp)
        if kind == "rename":
            shutil.copyfile(pb, pb + ".copy")
        problems = []
        p = subprocess.Popen([ckprep, "run", "-c", conf, "-o", out, inp],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env())
        changed_at = None
        if when == "copying":
            # the temporary output appears once the input is open and parsed
            t0 = time.monotonic()
            while p.poll() is None and time.monotonic() - t0 < TIMEOUT:
                if any(n.startswith(".out.th.tmp.") for n in os.listdir(d)):
                    change(kind, inp, pb)
                    changed_at = "copying"
                    break
        else:
            time.sleep(arg)
            change(kind, inp, pb)
            changed_at = "any"
        so, se = p.communicate(timeout=TIMEOUT)
        rc = p.returncode
        so, se = so.decode("utf-8", "replace"), se.decode("utf-8", "replace")
        if changed_at is None:
            problems.append("ckprep ended before its temporary output was seen; "
                            "the change was not made (%s)" % describe(rc))
        left = [n for n in os.listdir(d) if n.startswith(".")]
        if left:
            problems.append("temporary files left: %r" % left)
        if rc == 0:
            try:
                x = torch.load(out, weights_only=True)
            except Exception as e:  # a broken output is a failure
                x = None
                problems.append("the output does not load: %s" % e)
            ok = [ta] if changed_at == "copying" else [ta, tb]
            if x is not None and not any(same(x, r) for r in ok):
                problems.append("the output is not %s: a mix of two files"
                                % ("A" if len(ok) == 1 else "A or B"))
        elif rc == 1:
            line = stderr_line(se, problems)
            if line and inp not in line:
                problems.append("stderr line does not name the input: %r" % line)
            if os.path.exists(out):
                problems.append("failed, yet out.th exists")
            if changed_at == "copying":
                detected[kind] = detected.get(kind, 0) + 1
            if s.a.v:
                print("     (%s)" % line)
        else:
            problems.append("%s, want 0 or 1 (stderr %r)" % (describe(rc), se[:300]))
        s.check(name, problems)
        shutil.rmtree(d)
    for kind in ("truncate-0", "truncate-half"):
        name = "%s:detected" % kind
        if s.wanted(name):
            s.check(name, [] if detected.get(kind) else
                    ["no truncation made while copying was detected in 3 runs"])
    if os.path.exists(pb + ".copy"):
        os.unlink(pb + ".copy")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckprep", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("-k", dest="filter")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    ckprep = os.path.abspath(a.ckprep)
    if not os.access(ckprep, os.X_OK):
        print("FAIL: %s is not executable\n0 passed, 1 failed" % ckprep)
        return 1
    repo = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    sample = os.path.join(repo, "tests", "data", "sample.th")
    base = os.path.abspath(a.workdir) if a.workdir else None
    if base:
        os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ckprep-faults.", dir=base)
    s = Suite(a)
    t0 = time.monotonic()
    try:
        conf = os.path.join(work, "copy.ini")
        with open(conf, "w") as f:
            f.write(CONF)
        big = make_big(work)
        write_side(s, ckprep, work, conf, sample, big[0])
        read_side(s, ckprep, work, conf, big)
    finally:
        if a.keep:
            print("files kept in " + work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    for n in s.notes:
        print(n)
    failed = [r for r in s.results if r[1]]
    if not s.results:
        print("FAIL: no test selected")
        failed = [("none", ["no test"])]
    print("%d passed, %d failed (%.1f s)" % (len(s.results) - len(failed),
                                             len(failed), time.monotonic() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
