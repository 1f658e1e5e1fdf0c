#!/usr/bin/python3
"""Differential harness: ckprep beside torch's own readers on mutated files.

usage: diff_harness.py --ckprep PATH [--count N] [--seed S] [--keep DIR]

Makes small torch.save checkpoints (zip, protocols 2 and 4, and legacy),
then N mutants of them, seeded: zip-name tricks (case twins, duplicates,
'./', backslashes, trailing NUL, extra fields, junk before/after, a second
end record in the comment), FRAME lengths, v7 tar headers over legacy
files, byte flips in the zip directory and the pickle.  Where a mutant
carries a pickle it is a marker-only payload (posix.system('touch M') with
M unique to the mutant).  For every mutant that `ckprep inspect --json`
accepts:
  - torch._C.PyTorchFileReader (miniz) must open it, list as many records,
    and give a data.pkl of the size ckprep read;
  - every global that pickletools finds in torch's data.pkl must be among
    the globals ckprep reported;
  - torch.load of it, in one throwaway child for all mutants, must not
    create its marker.
Any breach is a failure: a file ckprep calls clean that torch reads
otherwise.  Prints counts, then `N passed, M failed`; exit 1 on failure.
"""
import argparse
import io
import json
import os
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile

PY = "/usr/bin/python3"
PY2 = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def marker_pickle(marker):
    cmd = "touch %s" % marker
    return (b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(cmd)) +
            cmd.encode() + b"\x85R.")


def bases(work):
    import torch
    out = []
    sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    for proto in (2, 4):
        p = os.path.join(work, "base%d.pt" % proto)
        torch.save(sd, p, pickle_protocol=proto)
        out.append(("zip", open(p, "rb").read()))
    p = os.path.join(work, "legacy.pt")
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    out.append(("legacy", open(p, "rb").read()))
    return out


def rezip(data, edit):
    """Rewrite a zip through zipfile; edit(list of [name, bytes, extra])."""
    with zipfile.ZipFile(io.BytesIO(data)) as zi:
        recs = [[i.filename, zi.read(i), b""] for i in zi.infolist()]
    edit(recs)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w") as zo:
            for n, b, x in recs:
                zi = zipfile.ZipInfo(n)
                zi.extra = x
                zo.writestr(zi, b)
    return out.getvalue()


def m_zipname(rng, data, marker):
    evil = marker_pickle(marker)

    def edit(recs):
        i = rng.randrange(len(recs))
        name = recs[i][0]
        top, rest = name.split("/", 1)
        kind = rng.choice(["twin", "dup", "dot", "bslash", "nul", "extra",
                           "toptwin"])
        if kind == "twin":
            alt = top + "/" + "".join(c.upper() if rng.random() < .5 else c
                                      for c in rest)
        elif kind == "toptwin":
            alt = top.upper() + "/" + rest
        elif kind == "dup":
            alt = name
        elif kind == "dot":
            alt = top + "/./" + rest
        elif kind == "bslash":
            alt = top + "\\" + rest
        elif kind == "nul":
            alt = name + "\0"
        else:
            recs[i][2] = struct.pack("<HH", 0x0001, 16) + os.urandom(16)
            return
        payload = evil if rest.endswith(".pkl") else recs[i][1]
        recs.insert(rng.randrange(len(recs) + 1), [alt, payload, b""])
    return rezip(data, edit)


def m_frame(rng, data, marker):
    """Protocol-4 data.pkl with its FRAME length moved."""
    def edit(recs):
        for r in recs:
            if r[0].endswith("data.pkl") and b"\x95" in r[1][:3]:
                pk = bytearray(r[1])
                n = struct.unpack_from("<Q", pk, 3)[0]
                struct.pack_into("<Q", pk, 3, max(0, n + rng.randint(-40, 40)))
                r[1] = bytes(pk)
    return rezip(data, edit)


def m_flip(rng, data, marker):
    b = bytearray(data)
    # mostly the zip directory and headers, where readers differ
    for _ in range(rng.randint(1, 4)):
        if rng.random() < .6:
            pos = rng.randrange(max(1, len(b) - 400), len(b))
        else:
            pos = rng.randrange(len(b))
        b[pos] = rng.randrange(256)
    return bytes(b)


def m_wrap(rng, data, marker):
    kind = rng.choice(["prefix", "suffix", "comment"])
    if kind == "prefix":
        return os.urandom(rng.randint(1, 64)) + data
    if kind == "suffix":
        return data + os.urandom(rng.randint(1, 64))
    # a fake end record inside the comment
    eocd = data.rfind(b"PK\x05\x06")
    fake = b"PK\x05\x06" + bytes(18)
    b = bytearray(data)
    struct.pack_into("<H", b, eocd + 20, len(fake))
    return bytes(b) + fake


def m_tar(rng, data, marker):
    """Legacy file: force a tar checksum over its first block."""
    b = bytearray(data[:512].ljust(512, b"\0")) + data[512:]
    field = rng.choice([b"%06o\0 ", b"%o", b"0o%o", b" %o "])
    b[148:156] = b" " * 8
    s = sum(b[:512])
    b[148:156] = (field % s).ljust(8, b"\0")[:8]
    return bytes(b)


ZIP_MUTATORS = [m_zipname, m_zipname, m_frame, m_flip, m_wrap]


def pickle_globals(pk):
    out, strs = set(), []
    try:
        for op, arg, _ in pickletools.genops(pk):
            if op.name in ("GLOBAL", "INST"):
                m, n = arg.split(" ", 1)
                out.add((PY2.get(m, m), n))
            elif isinstance(arg, str):
                strs.append(arg)
            elif op.name == "STACK_GLOBAL" and len(strs) >= 2:
                out.add((PY2.get(strs[-2], strs[-2]), strs[-1]))
    except Exception:
        pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckprep", required=True)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--keep")
    a = ap.parse_args()
    import torch
    ck = os.path.abspath(a.ckprep)
    rng = random.Random(a.seed)
    work = a.keep or tempfile.mkdtemp(prefix="ckharness.")
    os.makedirs(work, exist_ok=True)
    base = bases(work)
    fails, accepted, loads = [], [], []
    for i in range(a.count):
        kind, data = base[i % len(base)]
        marker = os.path.join(work, "M%d" % i)
        mut = m_tar if kind == "legacy" else rng.choice(ZIP_MUTATORS)
        try:
            mdata = mut(rng, data, marker)
        except Exception:
            mdata = m_flip(rng, data, marker)
        path = os.path.join(work, "m%04d_%s.pt" % (i, mut.__name__))
        with open(path, "wb") as f:
            f.write(mdata)
        p = subprocess.run([ck, "inspect", "--json", path],
                           capture_output=True, timeout=60)
        if p.returncode != 0:
            if len(p.stderr.splitlines()) != 1 or p.returncode != 1:
                fails.append("%s: exit %d, %r" % (path, p.returncode,
                                                   p.stderr[:200]))
            continue
        accepted.append(path)
        info = json.loads(p.stdout)
        loads.append((path, marker))
        if info["format"] != "zip":
            continue
        try:
            r = torch._C.PyTorchFileReader(path)
            recs = r.get_all_records()
            pk = r.get_record("data.pkl")
            pk = bytes(pk) if not isinstance(pk, bytes) else pk
        except Exception as e:
            fails.append("%s: ckprep accepts, torch's reader: %s" % (path, e))
            continue
        if len(recs) != info["records"]:
            fails.append("%s: records: ckprep %d, torch %d" %
                         (path, info["records"], len(recs)))
        if len(pk) != info["pickle"]["bytes"]:
            fails.append("%s: data.pkl: ckprep %d bytes, torch %d" %
                         (path, info["pickle"]["bytes"], len(pk)))
        mine_full = set()
        for g in info["globals"]:
            for old, new in PY2.items():
                if g.startswith(old + "."):
                    g = new + g[len(old):]
            mine_full.add(g)
        for m, n in pickle_globals(pk):
            if m + "." + n not in mine_full:
                fails.append("%s: torch's data.pkl names %s.%s, ckprep "
                             "did not see it" % (path, m, n))
    # every accepted mutant through torch.load, in one throwaway child
    if loads:
        code = ("import torch, sys\n"
                "for f in sys.argv[1:]:\n"
                "    try:\n"
                "        torch.load(f)\n"
                "    except Exception:\n"
                "        pass\n")
        subprocess.run([PY, "-c", code] + [p for p, _ in loads], cwd=work,
                       capture_output=True, timeout=1800)
        for path, marker in loads:
            if os.path.exists(marker):
                fails.append("%s: ckprep accepted it, torch.load ran its "
                             "payload" % path)
    by = {}
    for p in accepted:
        k = p.split("_m_")[-1][:-3]
        by[k] = by.get(k, 0) + 1
    print("%d mutants (seed %d), %d accepted by ckprep %s, %d loaded by "
          "torch in a throwaway child" % (a.count, a.seed, len(accepted),
                                          json.dumps(by, sort_keys=True),
                                          len(loads)))
    for f in fails[:30]:
        print("FAIL " + f)
    print("%d passed, %d failed" % (a.count - len(fails), len(fails)))
    if not a.keep:
        subprocess.run(["rm", "-rf", work])
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
