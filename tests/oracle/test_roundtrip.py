#!/usr/bin/python3
"""Round-trip oracle for `ckprep run` with an empty chain.

usage: test_roundtrip.py --ckprep PATH --zipcheck PATH [--corpus DIR] [--workdir DIR] [--jobs N] [-k SUBSTR]

Generates checkpoints with make_checkpoints.py, runs `PATH run -c empty.ini -o OUT IN`
on each and on every checkpoint file under --corpus (default: <repo>/../shared/corpus/
third-party), and checks with compare.py that OUT holds exactly what IN holds,
and with --zipcheck (tests/tools/zipcheck, libzip) that every OUT reads cleanly.
Also: determinism (two runs give identical bytes), input left unchanged, no stray
files next to OUT, OUT file naming, exit codes for bad inputs and bad configs.
Last line printed: "N passed, M failed"; exit status 1 if M > 0.
"""
import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import compare  # noqa: E402
import make_checkpoints  # noqa: E402

torch.set_num_threads(1)
CORPUS_EXTS = (".pt", ".pth", ".th", ".ckpt", ".bin", ".tar", ".pkl")
RUN_TIMEOUT = 120
EMPTY_CONF = "[pipeline]\nchain =\n"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


class Ctx:
    def __init__(self, ckprep, work):
        self.ckprep = ckprep
        self.work = work
        self.conf = os.path.join(work, "empty.ini")
        self._n = 0
        self._lock = threading.Lock()

    def fresh_dir(self, label):
        with self._lock:
            self._n += 1
            n = self._n
        d = os.path.join(self.work, "out", f"{n:03d}-{label.replace('/', '_').replace(':', '_')}")
        os.makedirs(d)
        return d

    def run(self, args, timeout=RUN_TIMEOUT):
        try:
            p = subprocess.run([self.ckprep] + args, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, b"", b"timeout"
        except OSError as e:
            return None, b"", str(e).encode()
        return p.returncode, p.stdout, p.stderr


def _tail(b, n=300):
    s = b.decode("utf-8", "replace").strip()
    return s if len(s) <= n else "..." + s[-n:]


def run_ok(ctx, inp, out):
    """Run ckprep; return list of failure reasons about the run itself."""
    r = []
    before = sha256(inp)
    rc, so, se = ctx.run(["run", "-c", ctx.conf, "-o", out, inp])
    if rc != 0:
        return [f"exit code {rc}, expected 0; stderr: {_tail(se)}"]
    try:
        obj = json.loads(so.decode("utf-8"))
        if not isinstance(obj, dict):
            r.append(f"stdout is JSON but not an object: {_tail(so)}")
    except Exception as e:
        r.append(f"stdout is not one JSON object ({e}): {_tail(so)}")
    if sha256(inp) != before:
        r.append("input file changed (sha256 differs after the run)")
    if not os.path.isfile(out):
        r.append("exit 0 but OUT does not exist")
    left = sorted(set(os.listdir(os.path.dirname(out))) - {os.path.basename(out)})
    if left:
        r.append(f"stray files left next to OUT: {left}")
    return r


def out_name(inp_name):
    """OUT file name: differs from IN's so the top folder must follow OUT's stem."""
    return compare.torch_stem(inp_name) + "-ckprep.pt"


def case_roundtrip(ctx, inp, weights_only_ok, byte_identical, label):
    d = ctx.fresh_dir(label)
    out = os.path.join(d, out_name(os.path.basename(inp)))
    r = run_ok(ctx, inp, out)
    if r:
        return r
    return compare.compare(inp, out, weights_only_too=weights_only_ok, byte_identical=byte_identical)


def case_determinism(ctx, inp, label):
    outs = []
    for i in range(2):
        d = ctx.fresh_dir(f"{label}-{i}")
        out = os.path.join(d, "same_name.pt")
        r = run_ok(ctx, inp, out)
        if r:
            return [f"run {i + 1}: {x}" for x in r]
        outs.append(out)
        r = compare.libzip_check(out)
        if r:
            return [f"run {i + 1}: {x}" for x in r]
    a, b = (open(p, "rb").read() for p in outs)
    if a != b:
        i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        return [f"two runs on the same input differ: {len(a)} vs {len(b)} bytes, first difference at {i}"]
    return []


def case_out_name(ctx, inp, name, label):
    d = ctx.fresh_dir(label)
    out = os.path.join(d, name)
    r = run_ok(ctx, inp, out)
    if r:
        return r
    return compare.compare(inp, out)


def case_overwrite(ctx, inp, label):
    d = ctx.fresh_dir(label)
    out = os.path.join(d, "existing.pt")
    with open(out, "wb") as f:
        f.write(b"old contents, not a checkpoint" * 100)
    r = run_ok(ctx, inp, out)
    if r:
        return r
    return compare.compare(inp, out)


def case_bad_input(ctx, make_input, label):
    """The file cannot be processed: exit 1, one line on stderr, no OUT, no stray files."""
    d = ctx.fresh_dir(label)
    inp = os.path.join(d, "input.pt")
    make_input(inp)
    outd = os.path.join(d, "o")
    os.makedirs(outd)
    out = os.path.join(outd, "out.pt")
    before = sha256(inp) if os.path.exists(inp) else None
    rc, so, se = ctx.run(["run", "-c", ctx.conf, "-o", out, inp])
    r = []
    if rc != 1:
        r.append(f"exit code {rc}, expected 1; stderr: {_tail(se)}")
    lines = se.decode("utf-8", "replace").splitlines()
    if len(lines) != 1 or not lines[0].strip():
        r.append(f"stderr should be exactly one non-empty line, got {len(lines)}: {_tail(se)}")
    if os.listdir(outd):
        r.append(f"files left in OUT's folder after a failed run: {os.listdir(outd)}")
    if before is not None and sha256(inp) != before:
        r.append("input file changed")
    return r


def case_bad_config(ctx, conf_text, make_args, inp, label):
    """Usage/config error: exit 2, nothing written (neither OUT nor beside IN).
    conf_text: text of conf.ini, or None to not create it.
    make_args(conf, out) -> argv after the binary; None means run -c conf -o out IN."""
    d = ctx.fresh_dir(label)
    out = os.path.join(d, "out.pt")
    conf = os.path.join(d, "conf.ini")
    if conf_text is not None:
        with open(conf, "w") as f:
            f.write(conf_text)
    args = ["run", "-c", conf, "-o", out, inp] if make_args is None else make_args(conf, out)
    in_dir = os.path.dirname(inp)
    before_in, before_d = set(os.listdir(in_dir)), set(os.listdir(d))
    rc, so, se = ctx.run(args)
    r = []
    if rc != 2:
        r.append(f"exit code {rc}, expected 2 (usage/config error); stderr: {_tail(se)}")
    if set(os.listdir(d)) != before_d:
        r.append(f"files written despite the usage/config error: {sorted(set(os.listdir(d)) - before_d)}")
    if set(os.listdir(in_dir)) != before_in:
        r.append(f"files written beside IN: {sorted(set(os.listdir(in_dir)) - before_in)}")
    return r


def corpus_flags(path):
    """(weights_only_ok, byte_identical) measured on a corpus file."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        wo = True
    except Exception:
        wo = False
    bi = False
    if zipfile.is_zipfile(path):
        try:
            bi = compare._data_pkl(path)[:2] == b"\x80\x02"
        except Exception:
            bi = False
    return wo, bi


def main(argv=None):
    ap = argparse.ArgumentParser(description="ckprep empty-chain round-trip oracle")
    ap.add_argument("--ckprep", required=True, help="path to the ckprep binary")
    ap.add_argument("--zipcheck", required=True,
                    help="tests/tools/zipcheck: every OUT is read by libzip too")
    ap.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus", "third-party"))
    ap.add_argument("--workdir", help="keep all files here (default: temp dir, removed if all pass)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-k", dest="only", help="run only tests whose name contains this")
    args = ap.parse_args(argv)

    ckprep = os.path.abspath(args.ckprep)
    compare.use_zipcheck(args.zipcheck)
    if args.workdir:
        work = os.path.abspath(args.workdir)
        if os.path.exists(work):
            shutil.rmtree(work)
        os.makedirs(work)
    else:
        work = tempfile.mkdtemp(prefix="ckprep-oracle-")
    ctx = Ctx(ckprep, work)
    with open(ctx.conf, "w") as f:
        f.write(EMPTY_CONF)

    t0 = time.time()
    gen = os.path.join(work, "in")
    manifest = make_checkpoints.generate(gen)

    tests = []  # (name, callable) ; callable returns list of reasons
    pre_failures = []
    if not os.path.isfile(ckprep) or not os.access(ckprep, os.X_OK):
        pre_failures.append(("setup:ckprep", [f"{ckprep} is not an executable file"]))
    if not os.access(compare.ZIPCHECK, os.X_OK):
        pre_failures.append(("setup:zipcheck", [f"{compare.ZIPCHECK} is not an executable file"]))

    for e in manifest["files"]:
        p = os.path.join(gen, e["name"])
        tests.append((f"case:{e['name']}",
                      lambda p=p, e=e: case_roundtrip(ctx, p, e["weights_only_ok"], e["byte_identical"],
                                                      e["name"])))

    corpus = os.path.abspath(args.corpus)
    if not os.path.isdir(corpus):
        pre_failures.append(("corpus:missing", [f"corpus folder {corpus} does not exist "
                                                f"(pass --corpus DIR); refusing to skip"]))
    else:
        files = []
        for root, dirs, names in os.walk(corpus):
            dirs.sort()
            for n in sorted(names):
                if n.lower().endswith(CORPUS_EXTS):
                    files.append(os.path.join(root, n))
        if not files:
            pre_failures.append(("corpus:empty", [f"no checkpoint files ({CORPUS_EXTS}) under {corpus}"]))
        for p in files:
            rel = os.path.relpath(p, corpus)

            def t(p=p, rel=rel):
                wo, bi = corpus_flags(p)
                return case_roundtrip(ctx, p, wo, bi, rel)
            tests.append((f"corpus:{rel}", t))

    g = lambda n: os.path.join(gen, n)  # noqa: E731
    tests += [
        ("determinism:checkpoint.th", lambda: case_determinism(ctx, g("checkpoint.th"), "det-ckpt")),
        ("determinism:legacy_mixed_proto4.pt",
         lambda: case_determinism(ctx, g("legacy_mixed_proto4.pt"), "det-legacy")),
        ("out-name:two-dots", lambda: case_out_name(ctx, g("views_and_ties.pt"), "model.v1.pt", "dots")),
        ("out-name:no-extension", lambda: case_out_name(ctx, g("views_and_ties.pt"), "plainname", "noext")),
        ("out-name:overwrite-existing", lambda: case_overwrite(ctx, g("parameters.pt"), "overwrite")),
    ]

    def garbage(p):
        with open(p, "wb") as f:
            f.write(b"this is not a checkpoint\n" * 10)

    def truncated(p):
        with open(g("checkpoint.th"), "rb") as f:
            data = f.read()
        with open(p, "wb") as f:
            f.write(data[: len(data) // 2])

    def truncated_legacy(p):
        with open(g("legacy_mixed_proto2.pt"), "rb") as f:
            data = f.read()
        with open(p, "wb") as f:
            f.write(data[: len(data) // 2])

    def empty(p):
        open(p, "wb").close()

    def missing(p):
        pass

    good = g("no_tensors.pt")
    tests += [
        ("exit1:garbage-input", lambda: case_bad_input(ctx, garbage, "garbage")),
        ("exit1:truncated-zip", lambda: case_bad_input(ctx, truncated, "trunc")),
        ("exit1:truncated-legacy", lambda: case_bad_input(ctx, truncated_legacy, "trunc-legacy")),
        ("exit1:empty-input", lambda: case_bad_input(ctx, empty, "empty")),
        ("exit1:missing-input", lambda: case_bad_input(ctx, missing, "missing")),
        ("exit2:no-arguments", lambda: case_bad_config(ctx, EMPTY_CONF, lambda c, o: [], good, "noargs")),
        ("exit2:run-without-input", lambda: case_bad_config(
            ctx, EMPTY_CONF, lambda c, o: ["run", "-c", c, "-o", o], good, "noin")),
        ("exit2:unknown-option", lambda: case_bad_config(
            ctx, EMPTY_CONF, lambda c, o: ["run", "--no-such-option-xyz", "-c", c, "-o", o, good], good,
            "badopt")),
        ("exit2:unknown-command", lambda: case_bad_config(
            ctx, EMPTY_CONF, lambda c, o: ["frobnicate-xyz", good], good, "badcmd")),
        ("exit2:unknown-edit", lambda: case_bad_config(
            ctx, "[pipeline]\nchain = no_such_edit_xyz\n", None, good, "unknown-edit")),
        ("exit2:config-not-ini", lambda: case_bad_config(ctx, "this is not an ini file\n", None, good,
                                                         "notini")),
        ("exit2:config-missing", lambda: case_bad_config(ctx, None, None, good, "confmissing")),
    ]

    if args.only:
        tests = [t for t in tests if args.only in t[0]]
        # setup and corpus failures are never filtered away

    results = list(pre_failures)
    plock = threading.Lock()
    for name, reasons in pre_failures:
        print(f"FAIL {name}", flush=True)
        for x in reasons:
            print(f"    {x}", flush=True)

    def runone(item):
        name, fn = item
        try:
            reasons = fn()
        except Exception as e:  # an oracle crash is a failure, with the reason
            reasons = [f"oracle exception {type(e).__name__}: {e}"]
        with plock:
            print(f"{'FAIL' if reasons else 'ok  '} {name}", flush=True)
            for x in reasons:
                print(f"    {x}", flush=True)
        return name, reasons

    if not any(n == "setup:ckprep" for n, _ in pre_failures):
        with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            results += list(ex.map(runone, tests))
    else:
        results += [(n, ["not run: no ckprep binary"]) for n, _ in tests]

    failed = [n for n, r in results if r]
    passed = len(results) - len(failed)
    print(f"# workdir {work}; {time.time() - t0:.1f}s", flush=True)
    if failed:
        print("# failed: " + ", ".join(failed), flush=True)
    if not args.workdir:
        if failed:
            print(f"# kept {work} for inspection", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
