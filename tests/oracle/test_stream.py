#!/usr/bin/python3
"""Streaming oracle: `ckprep run ... -` (input from stdin) and `-o -` (output to stdout).

usage: test_stream.py --ckprep PATH --zipcheck PATH [--corpus DIR] [--big] [--limit-mib 64]
                      [--workdir DIR] [--jobs N] [-k SUBSTR]

For every checkpoint torch wrote -- the oracle's (make_checkpoints.py) and the third-party
corpus (default <repo>/../shared/corpus/third-party) -- the file-mode output is the
reference; the output written to stdout (file in), the output of stdin to stdout and of
stdin to a file (zip and legacy inputs alike) must each hold what IN holds (compare.py:
torch.load equal, layout, libzip's reading through --zipcheck) and be `ckprep diff`-equal
to the reference.  The record goes to stderr with -o -; the input's digest read from a
pipe is the file's.

An input whose writer left CRC-32s out gets them computed.
Failures: a pipe cut at several points, a central directory that disagrees with what was
read, trailing bytes, a zip whose storages come before data.pkl, a plugin that needs
bytes before they arrive, a cast that needs a storage twice, the reader of stdout going
away, usage errors.  Each must exit non-zero with one line on stderr, and what reached
stdout must not parse as a zip (Python's zipfile and libzip).

--big: a checkpoint of more than 1 GiB through `cat | ckprep run -o - - | cat > out`,
peak RSS under --limit-mib (the sanitized build runs without it: ASan's shadow memory
is not ckprep's).
Last line printed: "N passed, M failed"; exit status 1 if M > 0.
"""
import argparse
import concurrent.futures as cf
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import compare  # noqa: E402
import make_checkpoints  # noqa: E402
import test_bigrss  # noqa: E402
from test_roundtrip import CORPUS_EXTS, corpus_flags  # noqa: E402

torch.set_num_threads(1)
MiB = 1 << 20
TIMEOUT = 300
EMPTY = "[pipeline]\nchain =\n"


class Ctx:
    def __init__(self, ckprep, work):
        self.ckprep = ckprep
        self.work = work
        self.conf = self.write_conf("empty.ini", EMPTY)
        self.n = 0

    def write_conf(self, name, text):
        p = os.path.join(self.work, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def dir(self, label):
        self.n += 1
        d = os.path.join(self.work, "out", f"{self.n:04d}-{label.replace('/', '_')}")
        os.makedirs(d)
        return d

    def run(self, args, stdin=None, conf=None):
        """(rc, stdout bytes, stderr bytes); stdin: a path, bytes or None."""
        cmd = [self.ckprep, "run", "-c", conf or self.conf] + args
        if isinstance(stdin, str):
            with open(stdin, "rb") as f:
                p = subprocess.run(cmd, stdin=f, capture_output=True, timeout=TIMEOUT)
        else:
            p = subprocess.run(cmd, input=stdin if stdin is not None else b"",
                               capture_output=True, timeout=TIMEOUT)
        return p.returncode, p.stdout, p.stderr


def tail(b, n=300):
    s = b.decode("utf-8", "replace").strip()
    return s if len(s) <= n else "..." + s[-n:]


def record(err_bytes):
    """The JSON record: the last line of stderr."""
    lines = err_bytes.decode("utf-8", "replace").strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def not_a_zip(ctx, data, d, label):
    """Reasons why data (a failed stream's stdout) would parse as a zip."""
    p = os.path.join(d, label + ".partial")
    with open(p, "wb") as f:
        f.write(data)
    r = []
    try:
        zipfile.ZipFile(p)
        r.append(f"{label}: the partial output ({len(data)} bytes) parses as a zip (zipfile)")
    except zipfile.BadZipFile:
        pass
    if compare.ZIPCHECK:
        q = subprocess.run([compare.ZIPCHECK, p], capture_output=True)
        if q.returncode == 0:
            r.append(f"{label}: the partial output ({len(data)} bytes) parses as a zip (libzip)")
    return r


def diff_same(ctx, a, b, conf=None):
    p = subprocess.run([ctx.ckprep, "diff"] + (["-c", conf] if conf else []) + [a, b],
                       capture_output=True, timeout=TIMEOUT)
    if p.returncode != 0:
        return [f"ckprep diff {os.path.basename(a)} {os.path.basename(b)}: exit {p.returncode}: "
                f"{tail(p.stdout + p.stderr)}"]
    return []


def write_out(path, data):
    with open(path, "wb") as f:
        f.write(data)


def check_ok(rc, so, se, what, out_on_stdout):
    r = []
    if rc != 0:
        return [f"{what}: exit {rc}, expected 0; stderr: {tail(se)}"]
    try:
        rec = record(se) if out_on_stdout else json.loads(so)
    except Exception as e:
        return [f"{what}: no JSON record on {'stderr' if out_on_stdout else 'stdout'}: {e}"]
    if rec.get("status") != "ok":
        r.append(f"{what}: record status {rec.get('status')!r}")
    if out_on_stdout:
        if rec.get("output", {}).get("path") != "-":
            r.append(f"{what}: record output path {rec.get('output')!r}, expected '-'")
        if rec["output"].get("size") != len(so):
            r.append(f"{what}: record says {rec['output'].get('size')} bytes, stdout had {len(so)}")
        if not so.startswith(b"PK\x03\x04"):
            r.append(f"{what}: stdout does not start with a zip local header")
    return r


def case_file(ctx, inp, wo, bi, fmt, label):
    """File mode (reference), then file->stdout, stdin->stdout, stdin->file."""
    d = ctx.dir(label)
    ref = os.path.join(d, "ref.pt")
    rc, so, se = ctx.run(["-o", ref, inp])
    if rc != 0:
        return [f"file mode: exit {rc}: {tail(se)}"]
    file_rec = json.loads(so)
    r = []
    variants = [("file->stdout", ["-o", "-", inp], None, "fs"),
                ("stdin->stdout", ["-o", "-", "-"], inp, "ss"),
                ("stdin->file", ["-o", os.path.join(d, "sf", "piped.pt"), "-"], inp, "sf")]
    for what, args, stdin, sub in variants:
        os.makedirs(os.path.join(d, sub))
        rc, so, se = ctx.run(args, stdin=stdin)
        to_stdout = args[1] == "-"
        r += check_ok(rc, so, se, what, to_stdout)
        if rc != 0:
            continue
        rec = record(se) if to_stdout else json.loads(so)
        if stdin is not None and rec["input"].get("digest") != file_rec["input"]["digest"]:
            r.append(f"{what}: input digest {rec['input'].get('digest')} read from a pipe, "
                     f"{file_rec['input']['digest']} from the file")
        if stdin is not None and rec["input"].get("size") != os.path.getsize(inp):
            r.append(f"{what}: input size {rec['input'].get('size')}, file has "
                     f"{os.path.getsize(inp)}")
        if to_stdout:
            out = os.path.join(d, sub, "archive.pt")  # torch's top folder for a stream
            write_out(out, so)
        else:
            out = args[1]
        r += [f"{what}: {x}" for x in compare.compare(inp, out, weights_only_too=wo,
                                                        byte_identical=bi)]
        r += [f"{what}: {x}" for x in diff_same(ctx, ref, out)]
    return r


# ------------------------------------------------------------------ failures

def expect_fail(ctx, d, label, args, stdin, words, rc_want=1, conf=None):
    rc, so, se = ctx.run(args, stdin=stdin, conf=conf)
    r = []
    lines = [x for x in se.decode("utf-8", "replace").splitlines() if not x.startswith("{")]
    if rc != rc_want:
        r.append(f"exit {rc}, expected {rc_want}; stderr {tail(se)!r}")
    if len(lines) != 1:
        r.append(f"{len(lines)} message lines on stderr, expected 1: {lines[:3]}")
    elif not all(w in lines[0] for w in words):
        r.append(f"stderr {lines[0]!r} lacks {words}")
    if so:
        r += not_a_zip(ctx, so, d, label)
    return r


def case_cut(ctx, inp):
    """The input pipe cut at several points: loud failure, stdout no zip."""
    d = ctx.dir("cut-" + os.path.basename(inp))
    with open(inp, "rb") as f:
        data = f.read()
    cd = data.rfind(b"PK\x01\x02")
    r = []
    for name, at in (("10%", len(data) // 10), ("half", len(data) // 2), ("90%", len(data) * 9 // 10),
                     ("in the central directory", cd + 10), ("before the end record", len(data) - 10)):
        r += [f"cut {name}: {x}" for x in expect_fail(ctx, d, f"cut-{at}", ["-o", "-", "-"],
                                                      data[:at], ["stdin", "cut short"])]
        # to a file: nothing may be left
        out = os.path.join(d, f"cut-{at}.pt")
        rc, so, se = ctx.run(["-o", out, "-"], stdin=data[:at])
        if rc != 1 or os.path.exists(out):
            r.append(f"cut {name} to a file: exit {rc}, file left: {os.path.exists(out)}")
        left = [x for x in os.listdir(d) if ".tmp." in x]
        if left:
            r.append(f"cut {name} to a file: temporaries left: {left}")
    return r


def patched(data, fn):
    b = bytearray(data)
    fn(b)
    return bytes(b)


def case_directory_disagrees(ctx, inp):
    d = ctx.dir("cd")
    with open(inp, "rb") as f:
        data = f.read()
    cd = data.find(b"PK\x01\x02")
    r = []

    def crc(b):
        b[cd + 16] ^= 1

    def size(b):
        b[cd + 24] ^= 1  # the first entry's uncompressed size

    for name, fn, words in (("a CRC", crc, ["central directory says", "CRC"]),
                            ("a size", size, ["stdin"])):
        r += [f"{name}: {x}" for x in expect_fail(ctx, d, f"cd-{name[2:]}", ["-o", "-", "-"],
                                                   patched(data, fn), words)]
    r += [f"trailing bytes: {x}" for x in expect_fail(ctx, d, "trailing", ["-o", "-", "-"],
                                                       data + b"trailing", ["stdin"])]
    return r


def case_order(ctx, inp):
    """A zip whose storages come before data.pkl (not torch's order)."""
    d = ctx.dir("order")
    src = zipfile.ZipFile(inp)
    p = os.path.join(d, "reordered.pt")
    with zipfile.ZipFile(p, "w") as z:
        for n in sorted(src.namelist(), key=lambda n: n.endswith("data.pkl")):
            z.writestr(n, src.read(n))
    r = expect_fail(ctx, d, "order", ["-o", "-", "-"], p,
                    ["before data.pkl", "give the input as a file"], rc_want=1)
    # a storage's record missing, as a file's open says
    m = os.path.join(d, "missing.pt")
    gone = sorted(n for n in src.namelist() if "/data/" in n)[-1]
    with zipfile.ZipFile(m, "w") as z:
        for n in src.namelist():
            if n != gone:
                z.writestr(n, src.read(n))
    r += [f"missing record: {x}" for x in expect_fail(
        ctx, d, "missing", ["-o", "-", "-"], m,
        ["record data/" + gone.rsplit("/", 1)[1] + " is missing"])]
    # and a zip torch 1.6 would write (version first) is read
    q = os.path.join(d, "version-first.pt")
    with zipfile.ZipFile(q, "w") as z:
        for n in sorted(src.namelist(), key=lambda n: not n.endswith("/version")):
            z.writestr(n, src.read(n))
    rc, so, se = ctx.run(["-o", "-", "-"], stdin=q)
    if rc != 0:
        r.append(f"version first: exit {rc}: {tail(se)}")
    else:
        out = os.path.join(d, "archive.pt")
        write_out(out, so)
        r += [f"version first: {x}" for x in compare.compare(inp, out) + diff_same(ctx, inp, out)]
    return r


def case_no_crcs(ctx, inp):
    """An input written with CRC-32s turned off (torch >= 2.5 can): zeros in
    its descriptors and directory; the output gets real ones (libzip checks
    every record's)."""
    d = ctx.dir("nocrc")
    with open(inp, "rb") as f:
        data = bytearray(f.read())
    for i in zipfile.ZipFile(inp).infolist():
        o = i.header_offset
        nl, xl = struct.unpack("<HH", data[o + 26:o + 30])
        end = o + 30 + nl + xl + i.file_size
        if data[end:end + 4] == b"PK\x07\x08":
            data[end + 4:end + 8] = bytes(4)
    p = data.find(b"PK\x01\x02")
    while p >= 0:
        data[p + 16:p + 20] = bytes(4)
        p = data.find(b"PK\x01\x02", p + 4)
    rc, so, se = ctx.run(["-o", "-", "-"], stdin=bytes(data))
    if rc != 0:
        return [f"exit {rc}: {tail(se)}"]
    out = os.path.join(d, "archive.pt")
    write_out(out, so)
    return compare.compare(inp, out) + diff_same(ctx, inp, out)


def case_tar_polyglot(ctx):
    """A legacy stream that Python's tarfile takes for a tar (torch 1.13
    would unpickle its member): refused from stdin as from a file."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "hostile"))
    import test_differential
    d = ctx.dir("tar")
    marker = os.path.join(d, "MARKER")
    r = expect_fail(ctx, d, "tar", ["-o", "-", "-"], test_differential.tar_polyglot(marker),
                    ["stdin", "tar archive"])
    if os.path.exists(marker):
        r.append("the polyglot's payload ran")
    return r


def case_plugins(ctx, inp):
    """A plugin that reads bytes before they arrive; a cast that needs a storage twice; a
    cast that streams."""
    d = ctx.dir("plugins")
    r = []
    copy = ctx.write_conf("copy.ini", "[pipeline]\nchain = head_init\n[head_init]\nstate = model\n"
                          "add = head2 float32 6x4 copy(w)\n")
    r += [f"head_init copy: {x}" for x in expect_fail(
        ctx, d, "copy", ["-o", "-", "-"], inp, ["before they arrive", "give the input as a file"],
        conf=copy)]
    split = ctx.write_conf("split.ini", "[pipeline]\nchain = cast\n[cast]\nstate = model\n"
                           "to = float16\nkeys = w\n")
    r += [f"cast split: {x}" for x in expect_fail(
        ctx, d, "split", ["-o", "-", "-"], inp, ["twice", "give the input as a file"], conf=split)]
    cast = ctx.write_conf("cast.ini", "[pipeline]\nchain = cast\n[cast]\nstate = model\n"
                          "to = bfloat16\n")
    ref = os.path.join(d, "ref.pt")
    rc, so, se = ctx.run(["-o", ref, inp], conf=cast)
    if rc != 0:
        return r + [f"cast, file mode: exit {rc}: {tail(se)}"]
    rc, so, se = ctx.run(["-o", "-", "-"], stdin=inp, conf=cast)
    if rc != 0:
        return r + [f"cast, stream: exit {rc}: {tail(se)}"]
    out = os.path.join(d, "archive.pt")
    write_out(out, so)
    r += [f"cast: {x}" for x in diff_same(ctx, ref, out) + compare.libzip_check(out)]
    a, b = torch.load(ref), torch.load(out)
    for k, v in a["model"].items():
        if v.dtype != b["model"][k].dtype or not torch.equal(v, b["model"][k]):
            r.append(f"cast: model.{k} differs from file mode's")
    return r


def case_numpy(ctx):
    """[security] allow_numpy holds for an input read from a pipe as for a file:
    accepted and checked with it (the same output, the same numpy values), refused
    with the same words without it"""
    import numpy as np
    d = ctx.dir("numpy")
    inp = os.path.join(d, "np.pt")
    torch.save({"w": torch.ones(3), "np": np.arange(4, dtype=np.float32),
                "step": np.int64(7)}, inp)
    yes = ctx.write_conf("numpy.ini", "[security]\nallow_numpy = yes\n" + EMPTY)
    r = []
    ref = os.path.join(d, "ref.pt")
    rc, so, se = ctx.run(["-o", ref, inp], conf=yes)
    if rc != 0:
        return [f"file mode: exit {rc}: {tail(se)}"]
    rc, so, se = ctx.run(["-o", "-", "-"], stdin=inp, conf=yes)
    if rc != 0:
        return [f"stdin->stdout: exit {rc}: {tail(se)}"]
    out = os.path.join(d, "archive.pt")
    write_out(out, so)
    r += diff_same(ctx, ref, out, conf=yes)
    a, b = torch.load(ref, weights_only=False), torch.load(out, weights_only=False)
    if not (torch.equal(a["w"], b["w"]) and np.array_equal(a["np"], b["np"]) and
            a["np"].dtype == b["np"].dtype and b["step"] == 7 and type(b["step"]) is np.int64):
        r.append(f"stdin->stdout: {b!r} differs from file mode's {a!r}")
    for what, args, stdin in [("file", ["-o", os.path.join(d, "no.pt"), inp], None),
                              ("stdin", ["-o", "-", "-"], inp)]:
        r += [f"without allow_numpy, {what}: {x}" for x in expect_fail(
            ctx, d, "no-" + what, args, stdin, ["numpy", "not allowed"])]
    return r


def case_reader_gone(ctx, inp):
    """stdout's reader goes away: a write error on stderr, exit 1."""
    with open(inp, "rb") as f:
        p1 = subprocess.Popen([ctx.ckprep, "run", "-c", ctx.conf, "-o", "-", "-"], stdin=f,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p1.stdout.read(1000)
        p1.stdout.close()
        err = p1.stderr.read()
        rc = p1.wait(timeout=TIMEOUT)
    line = err.decode("utf-8", "replace").splitlines()[:1]
    if rc != 1 or not line or "Broken pipe" not in line[0]:
        return [f"exit {rc}, stderr {line}; expected 1 and a line naming the broken pipe"]
    return []


def case_dry_run(ctx, inp):
    """-n with the input -: the plan from the pickle, the record on stdout."""
    rc, so, se = ctx.run(["-n", "-"], stdin=inp)
    r = []
    if rc != 0:
        return [f"exit {rc}: {tail(se)}"]
    rec = json.loads(so)
    if rec.get("status") != "ok" or not rec.get("dry_run") or "output" in rec:
        r.append(f"record {tail(so)}")
    if b"plan (dry run, nothing written)" not in se:
        r.append(f"no plan on stderr: {tail(se)}")
    return r


def case_usage(ctx, inp):
    d = ctx.dir("usage")
    st = ctx.write_conf("st.ini", "[pipeline]\nchain =\n[output]\nformat = safetensors\n")
    r = []
    for label, args, stdin, conf, words in (
            ("-c - with -", ["-o", "-", "-"], inp, "-", ["both read stdin"]),
            ("- without -o", ["-"], inp, None, ["-o"]),
            ("- to a folder", ["-o", d + "/", "-"], inp, None, ["-o FILE"]),
            ("safetensors to stdout", ["-o", "-", inp], None, st, ["safetensors"]),
            ("safetensors from stdin", ["-o", os.path.join(d, "x.safetensors"), "-"], inp, st,
             ["safetensors"])):
        rc, so, se = ctx.run(args, stdin=stdin, conf=conf)
        if rc != 2 or so or not all(w in se.decode() for w in words):
            r.append(f"{label}: exit {rc}, {len(so)} bytes out, stderr {tail(se)!r}; "
                     f"expected 2 and {words}")
    return r


def case_big(ctx, limit):
    """More than 1 GiB through cat | ckprep | cat, in bounded memory."""
    d = ctx.dir("big")
    inp = os.path.join(d, "big.pt")
    obj = test_bigrss.make_big(inp)
    out = os.path.join(d, "archive.pt")
    sh = (f"set -o pipefail 2>/dev/null; cat '{inp}' | '{ctx.ckprep}' run -c '{ctx.conf}' -o - - "
          f"2>'{d}/err' | cat > '{out}'")
    t = time.time()
    res = test_bigrss.measured_run(["/bin/bash", "-c", sh])
    rss = res["maxrss_kib"] / 1024
    print(f"# big: {os.path.getsize(inp) / MiB:.0f} MiB through a pipe in {time.time() - t:.1f}s, "
          f"peak RSS {rss:.1f} MiB (limit {limit:g})", flush=True)
    r = []
    if res["rc"] != 0:
        with open(os.path.join(d, "err")) as f:
            return [f"exit {res['rc']}: {f.read()[-300:]}"]
    if rss >= limit:
        r.append(f"peak RSS {rss:.1f} MiB >= {limit:g} MiB")
    got = torch.load(out, map_location="cpu")
    for k, v in obj["model"].items():
        if v.dtype != got["model"][k].dtype or not torch.equal(v, got["model"][k]):
            r.append(f"model.{k} differs")
    del got
    r += compare.libzip_check(out)
    r += diff_same(ctx, inp, out)
    os.unlink(inp)
    os.unlink(out)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckprep", required=True)
    ap.add_argument("--zipcheck", required=True)
    ap.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus", "third-party"))
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--limit-mib", type=float, default=64.0)
    ap.add_argument("--workdir")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-k", dest="only")
    args = ap.parse_args(argv)
    compare.use_zipcheck(args.zipcheck)
    work = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="ckprep-stream-")
    if args.workdir:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    ctx = Ctx(os.path.abspath(args.ckprep), work)
    t0 = time.time()
    gen = os.path.join(work, "in")
    manifest = make_checkpoints.generate(gen)
    tests = []
    for e in manifest["files"]:
        p = os.path.join(gen, e["name"])
        tests.append((f"case:{e['name']}", lambda p=p, e=e: case_file(
            ctx, p, e["weights_only_ok"], e["byte_identical"], e["format"], e["name"])))
    corpus = os.path.abspath(args.corpus)
    files = []
    for root, dirs, names in os.walk(corpus):
        dirs.sort()
        files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(CORPUS_EXTS)]
    if not files:
        tests.append(("corpus", lambda: [f"no checkpoint under {corpus}; refusing to skip"]))
    for p in files:
        rel = os.path.relpath(p, corpus)
        fmt = "zip" if zipfile.is_zipfile(p) else "legacy"
        tests.append((f"corpus:{rel}", lambda p=p, rel=rel, fmt=fmt: case_file(
            ctx, p, *corpus_flags(p), fmt, rel)))
    ck = os.path.join(gen, "checkpoint.th")
    plug = os.path.join(work, "plug.pt")
    w = torch.randn(6, 4)
    torch.save({"model": {"w": w, "w_view": w[1:3], "b": torch.randn(4),
                          "n": torch.arange(5)}}, plug)
    mid = os.path.join(work, "mid.pt")  # past the 1 MiB pipes ckprep asks for
    torch.save({"w": torch.randn(4 << 20), "b": torch.randn(100)}, mid)
    leg = os.path.join(gen, "legacy_mixed_proto2.pt")
    tests += [("fail:cut", lambda: case_cut(ctx, ck)),
              ("fail:cut-legacy", lambda: case_cut(ctx, leg)),
              ("fail:cut-big", lambda: case_cut(ctx, mid)),
              ("fail:directory", lambda: case_directory_disagrees(ctx, ck)),
              ("fail:order", lambda: case_order(ctx, ck)),
              ("plugins", lambda: case_plugins(ctx, plug)),
              ("no-crcs", lambda: case_no_crcs(ctx, ck)),
              ("fail:tar-polyglot", lambda: case_tar_polyglot(ctx)),
              ("fail:reader-gone", lambda: case_reader_gone(ctx, mid)),
              ("dry-run", lambda: case_dry_run(ctx, ck)),
              ("numpy", lambda: case_numpy(ctx)),
              ("usage", lambda: case_usage(ctx, ck))]
    if args.only:
        tests = [t for t in tests if args.only in t[0]]

    def one(t):
        try:
            return t[0], t[1]()
        except Exception as e:
            return t[0], [f"exception {type(e).__name__}: {e}"]

    with cf.ThreadPoolExecutor(max_workers=args.jobs) as ex:
        results = list(ex.map(one, tests))
    if args.big and (not args.only or "big" in args.only):
        results.append(one(("big", lambda: case_big(ctx, args.limit_mib))))
    elif not args.big:
        print("# big: not run (no --big; `make test-stream` runs it in the plain build)")
    failed = 0
    for name, reasons in results:
        for x in reasons:
            print(f"FAIL {name}: {x}")
        failed += bool(reasons)
    print(f"# workdir {work}; {time.time() - t0:.1f}s")
    if not failed and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
