#!/usr/bin/python3
"""Parser differentials: files ckprep once called clean that torch reads otherwise.

usage: test_differential.py --ckprep PATH [--third-party DIR] [-v]

For each differential (issue 12) this builds the file, then:
  - ckprep must refuse it: `ckprep inspect` and `ckprep run` exit 1 with one
    stderr line naming the cause, and run writes nothing;
  - a control file, the same bytes with the trick undone, must be accepted
    (so the refusal is the new check's, not an accident);
  - torch.load of the file, in a throwaway subprocess whose only payload is
    `touch MARKER` (posix.system on a fixed command, in a fresh temp dir),
    must create the marker -- proving torch would have run the pickle ckprep
    did not read -- or, where torch does not, the test says so and asserts
    exactly what torch does instead.
Then every file in --third-party (published attack files, never unpickled
here) must be refused by both commands, the benign ones accepted.
Prints one line per case, then `N passed, M failed`; exit 1 on any failure.
"""
import argparse
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PY = "/usr/bin/python3"
CONF = "[pipeline]\nchain =\n"
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
RESULTS = []


def marker_pickle(marker):
    """A protocol-2 pickle whose only effect is posix.system('touch M')."""
    cmd = "touch %s" % marker
    return (b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(cmd)) +
            cmd.encode() + b"\x85R.")


def torch_load(path, work):
    """torch.load(path) in a throwaway child -> (rc, stderr tail)."""
    code = ("import torch,sys\n"
            "kw = {'weights_only': False} if hasattr(torch.serialization,"
            " '_weights_only_unpickler') else {}\n"
            "torch.load(sys.argv[1], **kw)\n")
    p = subprocess.run([PY, "-c", code, path], cwd=work, capture_output=True,
                       timeout=120)
    return p.returncode, p.stderr.decode(errors="replace").strip()[-200:]


def ckprep(ck, path, work):
    """-> list of problems with ckprep's handling of a file it must refuse."""
    probs = []
    conf = os.path.join(work, "c.ini")
    with open(conf, "w") as f:
        f.write(CONF)
    out = os.path.join(work, "out.th")
    for cmd in ([ck, "inspect", path],
                [ck, "run", "-c", conf, "-o", out, path]):
        p = subprocess.run(cmd, capture_output=True, timeout=60)
        err = p.stderr.decode(errors="replace").strip().splitlines()
        if p.returncode != 1 or len(err) != 1:
            probs.append("%s: exit %d, stderr %r" % (cmd[1], p.returncode,
                                                       err[:3]))
    if os.path.exists(out):
        probs.append("run wrote %s" % out)
    return probs, err[0] if err else ""


def accepts(ck, path):
    p = subprocess.run([ck, "inspect", path], capture_output=True, timeout=60)
    return p.returncode == 0, p.stderr.decode(errors="replace").strip()


def record(name, probs, note):
    RESULTS.append((name, probs))
    print("%s %s: %s" % ("ok  " if not probs else "FAIL", name,
                         note if not probs else "; ".join(probs)))


# ---- 1. tar polyglot -------------------------------------------------------

def tar_header(name, size, blk=None):
    b = bytearray(512) if blk is None else bytearray(blk)
    if name is not None:
        b[0:100] = name.ljust(100, b"\0")[:100]
    for off, n, v in ((100, 8, 0o644), (108, 8, 0), (116, 8, 0),
                      (124, 12, size), (136, 12, 0)):
        b[off:off + n] = (b"%0*o\0" % (n - 1, v))
    b[156:157] = b"0"
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % (256 + sum(b) - 8 * 32 + 0)
    return bytes(b)


def tar_polyglot(marker):
    """A legacy stream whose first 512 bytes are also a v7 tar header (no
    'ustar' magic); the tar's member 'storages' is the marker pickle."""
    p1 = pickle.dumps(LEGACY_MAGIC, protocol=2)
    p2 = pickle.dumps(1001, protocol=2)
    head = p1 + p2 + b"\x80\x02}(X\x03\x00\x00\x00padB"
    start = len(head) + 4          # where the bytes value begins
    payload = marker_pickle(marker)
    blk = bytearray(512)
    blk[0:start] = head + b"\0\0\0\0"  # length patched below
    pad = (-len(payload)) % 512
    body = payload + b"\0" * pad
    second = tar_header(b"storages", len(payload))
    tail = second + body + b"\0" * 1024
    total = 512 + len(tail)
    data_len = total - start
    blk[len(head):start] = struct.pack("<I", data_len)
    first = tar_header(None, 0, blk)
    image = first + tail
    rest = b"X\x0d\x00\x00\x00little_endian\x88u." + \
        b"\x80\x02}." + b"\x80\x02]."
    return image + rest


def case_tar(ck, work):
    marker = os.path.join(work, "MARKER")
    data = tar_polyglot(marker)
    path = os.path.join(work, "poly.pt")
    ctl = os.path.join(work, "control.pt")
    with open(path, "wb") as f:
        f.write(data)
    bad = bytearray(data)
    bad[150] ^= 1                 # breaks the tar checksum only
    with open(ctl, "wb") as f:
        f.write(bad)
    probs = []
    tarfile.open(path, mode="r:").getmember("storages")  # Python: a tar
    probs, msg = ckprep(ck, path, work)
    if "tar" not in msg:
        probs.append("message does not say tar: %r" % msg)
    ok, err = accepts(ck, ctl)
    if not ok:
        probs.append("control (checksum broken) refused: %s" % err)
    rc, err = torch_load(ctl, work)
    if os.path.exists(marker):
        probs.append("torch ran the control's payload")
    rc, err = torch_load(path, work)
    if not os.path.exists(marker):
        probs.append("torch did not run the polyglot (rc %d: %s)" % (rc, err))
    record("tar polyglot (v7 header, no magic)", probs,
           "ckprep refuses; torch.load ran the tar member 'storages' "
           "(marker made); the control is accepted and torch runs nothing")


# ---- 2. FRAME boundaries ---------------------------------------------------

def case_frame(ck, work):
    marker = os.path.join(work, "MARKER")
    inner = marker_pickle(marker)[2:-1]   # GLOBAL ... REDUCE, no STOP
    frame = b"\x95" + struct.pack("<Q", 2)
    pk = (b"\x80\x04" + frame + b"B" + struct.pack("<I", len(inner)) +
          inner + b".")
    probs = []
    try:
        pickle._loads(pk)
        probs.append("pickle.py accepted the crossing frame")
    except pickle.UnpicklingError as e:
        if "frame" not in str(e):
            probs.append("pickle.py: %s" % e)
    if pickle.loads(pk) != inner:
        probs.append("_pickle.c did not read one bytes value")
    # the same pickle as data.pkl of a real torch.save zip
    import torch
    src = os.path.join(work, "src.pt")
    torch.save({"w": torch.zeros(2)}, src)
    path = os.path.join(work, "frame.pt")
    rewrite_zip(src, path, {"data.pkl": pk})
    p2, msg = ckprep(ck, path, work)
    probs += p2
    if "FRAME" not in msg:
        probs.append("message does not name FRAME: %r" % msg)
    rc, err = torch_load(path, work)
    if os.path.exists(marker):
        probs.append("torch ran the payload")
    record("FRAME crossing", probs,
           "ckprep refuses; pickle.py refuses; torch 1.13's _pickle.c reads "
           "through the frame end (one bytes value), as ckprep did: torch "
           "ran nothing (rc %d) -- not exploitable through torch.load, "
           "refused to agree with the strictest CPython reader" % rc)


# ---- 3. case-twin zip names ------------------------------------------------

def rewrite_zip(src, dst, replace=None, extra=()):
    """Copy a torch zip, replacing records by suffix, then append 'extra'
    (name, bytes) entries right after the first record.  torch 1.13 was seen
    to load a twin listed right after data.pkl (miniz's case-folding binary
    search), and the last of two exact duplicates."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for i, info in enumerate(zi.infolist()):
            suffix = info.filename.split("/", 1)[1]
            data = replace.get(suffix, zi.read(info))
            zo.writestr(zipfile.ZipInfo(info.filename), data)
            if i == 0:  # data.pkl, first in torch.save's order
                for n, b in extra:
                    zo.writestr(zipfile.ZipInfo(n), b)


def case_twin(ck, work):
    import torch
    marker = os.path.join(work, "MARKER")
    src = os.path.join(work, "src.pt")
    torch.save({"w": torch.zeros(2)}, src)
    with zipfile.ZipFile(src) as z:
        top = z.namelist()[0].split("/")[0]
    probs = []
    ran = []
    for twin in ("Data.pkl", "DATA.PKL", "data.pkL"):
        path = os.path.join(work, "twin_%s.pt" % twin)
        rewrite_zip(src, path,
                    extra=[("%s/%s" % (top, twin), marker_pickle(marker))])
        p2, msg = ckprep(ck, path, work)
        probs += ["%s: %s" % (twin, p) for p in p2]
        if p2 == [] and "case" not in msg:
            probs.append("%s: message does not say case: %r" % (twin, msg))
        if os.path.exists(marker):
            os.unlink(marker)
        torch_load(path, work)
        if os.path.exists(marker):
            ran.append(twin)
            os.unlink(marker)
    if not ran:
        probs.append("torch ran none of the twins")
    ok, err = accepts(ck, src)
    if not ok:
        probs.append("control refused: %s" % err)
    record("case-twin data.pkl", probs,
           "ckprep refuses all; torch.load ran the payload of %s, listed "
           "after the benign data.pkl" % ", ".join(ran))


# ---- control characters in messages -------------------------------------

RAW = (b"\r", b"\x1b", b"\x00", b"\xe2\x80\xae", b"\xc2\x9b", b"\xff")


def binunicode(b):
    return b"X" + struct.pack("<I", len(b)) + b


def case_escape(ck, work):
    """Names holding CR, ESC, NUL, a bidi override, C1 CSI and a byte that
    is not UTF-8 (as BINBYTES-like raw bytes in a str, which ckprep reads
    as UTF-8 or refuses) never reach stderr or stdout raw."""
    import torch
    probs = []
    src = os.path.join(work, "src.pt")
    torch.save({"w": torch.zeros(2)}, src)
    forged = "\x1b[2K\rckprep: model.pt: validation ok\x00\u202e\x9b"
    name = forged.encode("utf-8", "surrogatepass")
    pk = (b"\x80\x02" + binunicode(b"posix") + binunicode(name) +
          b"\x93)R.")
    for label, data in (("global", pk),
                        ("bad utf-8", b"\x80\x02" + binunicode(b"po\xffsix") +
                         binunicode(b"sys\xff") + b"\x93)R.")):
        path = os.path.join(work, "esc.pt")
        rewrite_zip(src, path, {"data.pkl": data})
        for cmd in ([ck, "inspect", path], [ck, "run", "-c", "/dev/null",
                                             "-o", path + ".out", path]):
            p = subprocess.run(cmd, capture_output=True, timeout=60)
            for raw in RAW:
                if raw in p.stderr or raw in p.stdout:
                    probs.append("%s %s: raw %r in output" % (label, cmd[1],
                                                              raw))
            if p.returncode != 1:
                probs.append("%s %s: exit %d" % (label, cmd[1],
                                                 p.returncode))
    # an accepted file: a key with the same bytes, in inspect's text
    path = os.path.join(work, "key.pt")
    torch.save({forged: torch.zeros(2)}, path)
    p = subprocess.run([ck, "inspect", path], capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        probs.append("key file refused: %r" % p.stderr[:200])
    for raw in RAW[:5]:
        if raw in p.stdout or raw in p.stderr:
            probs.append("inspect: raw %r in key listing" % raw)
    if b"\\u{202e}" not in p.stdout:
        probs.append("inspect: RLO not shown as \\u{202e}")
    record("control characters in messages", probs,
           "CR, ESC, NUL, RLO, C1 CSI, invalid UTF-8 in a global and a key: "
           "all escaped on stderr and stdout")


# ---- inspect and run agree -----------------------------------------------

def case_self_set(ck, work):
    """A set that holds itself: once 'validation ok' from inspect while run
    failed; Python cannot build it (a set is unhashable), so torch.load
    fails too.  Both commands must refuse."""
    import torch
    src = os.path.join(work, "src.pt")
    torch.save({"w": torch.zeros(2)}, src)
    pk = b"\x80\x02}q\x00X\x01\x00\x00\x00s\x8f\x94(h\x01\x90s."
    path = os.path.join(work, "selfset.pt")
    rewrite_zip(src, path, {"data.pkl": pk})
    probs, msg = ckprep(ck, path, work)
    rc, err = torch_load(path, work)
    if rc == 0:
        probs.append("torch.load accepted it")
    record("set holding itself", probs,
           "inspect and run refuse (%s); torch.load fails too (%s)" %
           (msg.split(": ", 2)[-1], err.splitlines()[-1] if err else ""))


def case_agree(ck, work, dirs):
    """inspect and a dry run with an empty chain give the same verdict on
    every file of the fuzz corpora and the published attack files."""
    conf = os.path.join(work, "c.ini")
    with open(conf, "w") as f:
        f.write(CONF)
    n, probs = 0, []
    for top in dirs:
        for d, _, files in sorted(os.walk(top)):
            for fn in sorted(files):
                path = os.path.join(d, fn)
                if fn in ("LICENSE", "README.md"):
                    continue
                n += 1
                a = subprocess.run([ck, "inspect", path], capture_output=True,
                                   timeout=60).returncode
                b = subprocess.run([ck, "run", "-n", "-c", conf, "-o",
                                    os.path.join(work, "o.pt"), path],
                                   capture_output=True, timeout=60).returncode
                if a != b:
                    probs.append("%s: inspect exit %d, run exit %d" %
                                 (path, a, b))
    record("inspect and run agree (%d files)" % n, probs,
           "same exit status on every file")


# ---- the published attack files --------------------------------------------

# The benign checkpoints among them (picklescan's tests expect only tensor
# globals there); every other file is an attack or not a checkpoint.
BENIGN = ("picklescan/pytorch_model.bin", "picklescan/new_pytorch_model.bin")


def case_third_party(ck, work, top):
    probs = []
    n = named = 0
    for d, _, files in sorted(os.walk(top)):
        for fn in sorted(files):
            if fn in ("LICENSE", "README.md"):
                continue
            path = os.path.join(d, fn)
            n += 1
            benign = path.endswith(BENIGN)
            p = subprocess.run([ck, "inspect", path], capture_output=True,
                               timeout=60)
            err = p.stderr.decode(errors="replace")
            if p.returncode == 0 and not benign:
                probs.append("%s: accepted" % fn)
            if p.returncode != 0 and benign:
                probs.append("%s: benign, refused: %s" % (fn, err.strip()))
            if p.returncode not in (0, 1) or len(err.splitlines()) > 1:
                probs.append("%s: exit %d %r" % (fn, p.returncode, err[:200]))
            if any(c in err for c in "\r\x1b\x00"):
                probs.append("%s: raw control character in message" % fn)
            if p.returncode == 1 and "names" in err:
                named += 1
    # the example: modelscan's injected torch.save file, refused
    # for its structure before, must name its global
    p = subprocess.run([ck, "inspect", os.path.join(
        top, "modelscan", "unsafe_zip_pytorch.pt")], capture_output=True)
    if b"posix.system" not in p.stderr:
        probs.append("unsafe_zip_pytorch.pt: posix.system not named: %r" %
                     p.stderr[:200])
    record("third-party attack files (%d)" % n, probs,
           "the %d benign checkpoints accepted, every other file refused "
           "with one clean line, %d of them naming a forbidden global" %
           (len(BENIGN), named))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckprep", required=True)
    ap.add_argument("--third-party",
                    default="/work/shared/corpus/hostile-third-party")
    a = ap.parse_args()
    ck = os.path.abspath(a.ckprep)
    import torch
    print("torch %s" % torch.__version__)
    for case in (case_tar, case_frame, case_twin, case_escape, case_self_set):
        with tempfile.TemporaryDirectory(prefix="ckdiff.") as work:
            try:
                case(ck, work)
            except Exception as e:  # a broken builder is a failure too
                record(case.__name__, ["%s: %s" % (type(e).__name__, e)], "")
    if os.path.isdir(a.third_party):
        with tempfile.TemporaryDirectory(prefix="ckdiff.") as work:
            case_third_party(ck, work, a.third_party)
    else:
        record("third-party attack files", ["missing %s" % a.third_party], "")
    here = os.path.dirname(os.path.abspath(__file__))
    corp = os.path.join(os.path.dirname(here), "fuzz", "corpus")
    with tempfile.TemporaryDirectory(prefix="ckdiff.") as work:
        case_agree(ck, work, [os.path.join(corp, t) for t in
                              ("fuzz_ckpt", "fuzz_legacy", "fuzz_tar",
                               "fuzz_zipdiff")] + [a.third_party])
    bad = sum(1 for _, p in RESULTS if p)
    print("%d passed, %d failed" % (len(RESULTS) - bad, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
