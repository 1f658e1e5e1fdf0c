#!/usr/bin/python3
"""Python stand-in for `ckprep run` with an EMPTY chain, used only to self-test
the oracle (compare.py / test_roundtrip.py) while the C tool does not exist.

    ref_ckprep.py run -c CONF -o OUT IN

Writes OUT following the ckprep output contract (zip, stored, 64-byte aligned,
records data.pkl, byteorder, data/0..n-1, version). zip protocol-2 inputs whose
storage keys are already 0..n-1 in first-reference order keep their data.pkl
bytes; anything else goes through torch.load + torch.save(protocol 2).

REF_CKPREP_FAULT=<name> injects one defect, to check that the oracle notices:
  noalign, compress, nobyteorder, topfolder, flipbyte, extra_storage,
  protocol4, dropkey, stdout_text, exit3, touch_input, leave_tmp
"""
import argparse
import configparser
import io
import json
import os
import struct
import sys
import tempfile
import warnings
import zipfile

warnings.filterwarnings("ignore")
FAULT = os.environ.get("REF_CKPREP_FAULT", "")


def stem(path):
    name = os.path.basename(path)
    i = name.rfind(".")
    return name if i < 0 else name[:i]


def _records_from_torch_zip(data):
    """(data.pkl bytes, {key: bytes}) from an in-memory torch zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        top = names[0].split("/", 1)[0]
        pkl = z.read(f"{top}/data.pkl")
        recs = {n[len(top) + 6:]: z.read(n) for n in names if n.startswith(f"{top}/data/")}
    return pkl, recs


def _first_ref_keys(pkl):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import compare
    u = compare._ScanUnpickler(io.BytesIO(pkl))
    u.load()
    order = []
    for pid in u.pids:
        k = compare._decode(pid[2])
        if k not in order:
            order.append(k)
    return order


def build(inp):
    with open(inp, "rb") as f:
        raw = f.read()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        pkl, recs = _records_from_torch_zip(raw)
        if pkl[:2] == b"\x80\x02" and FAULT != "protocol4":
            order = _first_ref_keys(pkl)
            if order == [str(i) for i in range(len(order))]:
                return pkl, {k: recs[k] for k in order}
    import torch
    obj = torch.load(io.BytesIO(raw), map_location="cpu")
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=4 if FAULT == "protocol4" else 2)
    return _records_from_torch_zip(buf.getvalue())


def write_zip(path, top, pkl, recs):
    entries = [("data.pkl", pkl), ("byteorder", b"little")]
    entries += [(f"data/{k}", v) for k, v in sorted(recs.items(), key=lambda kv: int(kv[0]))]
    if FAULT == "extra_storage":
        entries.append((f"data/{len(recs)}", b"\0" * 8))
    if FAULT == "dropkey" and recs:
        entries = [e for e in entries if e[0] != "data/0"]
    entries.append(("version", b"3\n"))
    if FAULT == "nobyteorder":
        entries = [e for e in entries if e[0] != "byteorder"]
    if FAULT == "topfolder":
        top = top + "_x"
    with open(path, "wb") as f, zipfile.ZipFile(f, "w") as z:
        for name, data in entries:
            if FAULT == "flipbyte" and name == "data/0" and data:
                data = bytes([data[0] ^ 1]) + data[1:]
            full = f"{top}/{name}"
            zi = zipfile.ZipInfo(full, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED if FAULT == "compress" else zipfile.ZIP_STORED
            if FAULT != "noalign":
                here = f.tell()
                base = here + 30 + len(full.encode()) + 4
                pad = (-base) % 64
                zi.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' like torch
            z.writestr(zi, data)


def main(argv):
    ap = argparse.ArgumentParser(prog="ref_ckprep")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("-c", dest="conf", required=True)
    r.add_argument("-o", dest="out", required=True)
    r.add_argument("inp")
    try:
        args = ap.parse_args(argv)
    except SystemExit:
        return 2
    cp = configparser.ConfigParser()
    try:
        with open(args.conf) as f:
            cp.read_file(f)
        chain = cp.get("pipeline", "chain").split()
    except Exception as e:
        print(f"ckprep: config error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    if chain:
        print(f"ckprep: config error: unknown edit {chain[0]!r}", file=sys.stderr)
        return 2
    try:
        pkl, recs = build(args.inp)
    except Exception as e:
        print(f"ckprep: {args.inp}: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    d = os.path.dirname(os.path.abspath(args.out))
    fd, tmp = tempfile.mkstemp(prefix=".ckprep-", dir=d)
    os.close(fd)
    write_zip(tmp, stem(args.out), pkl, recs)
    if FAULT != "leave_tmp":
        os.replace(tmp, args.out)
    else:
        import shutil
        shutil.copy(tmp, args.out)
    if FAULT == "touch_input":
        with open(args.inp, "ab") as f:
            f.write(b"\0")
    if FAULT == "stdout_text":
        print("done")
    else:
        print(json.dumps({"ok": True, "in": args.inp, "out": args.out, "storages": len(recs)}))
    return 3 if FAULT == "exit3" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
