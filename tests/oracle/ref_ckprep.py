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
  protocol4, dropkey, padrecord, stdout_text, exit3, touch_input, leave_tmp
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


class _Src:
    """A record source: bytes in memory, or a member of the input zip (streamed)."""

    def __init__(self, data=None, zpath=None, member=None, size=None):
        self.data, self.zpath, self.member = data, zpath, member
        self.size = len(data) if data is not None else size

    def chunks(self):
        if self.data is not None:
            yield self.data
            return
        with zipfile.ZipFile(self.zpath) as z, z.open(self.member) as f:
            for blk in iter(lambda: f.read(1 << 20), b""):
                yield blk


def _records_from_torch_zip(zsrc):
    """(data.pkl bytes, {key: _Src}) from a torch zip (path or BytesIO)."""
    with zipfile.ZipFile(zsrc) as z:
        names = z.namelist()
        top = names[0].split("/", 1)[0]
        pkl = z.read(f"{top}/data.pkl")
        recs = {}
        for n in names:
            if n.startswith(f"{top}/data/"):
                if isinstance(zsrc, str):
                    recs[n[len(top) + 6:]] = _Src(zpath=zsrc, member=n, size=z.getinfo(n).file_size)
                else:
                    recs[n[len(top) + 6:]] = _Src(data=z.read(n))
    return pkl, recs


def build(inp):
    if zipfile.is_zipfile(inp):
        pkl, recs = _records_from_torch_zip(inp)
        if pkl[:2] == b"\x80\x02" and FAULT != "protocol4":
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from pickle_scan import storage_keys_in_order
            order = storage_keys_in_order(pkl)
            if order == [str(i) for i in range(len(order))]:
                return pkl, {k: recs[k] for k in order}
    import torch
    obj = torch.load(inp, map_location="cpu")
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=4 if FAULT == "protocol4" else 2)
    buf.seek(0)
    return _records_from_torch_zip(buf)


def write_zip(path, top, pkl, recs):
    entries = [("data.pkl", _Src(pkl)), ("byteorder", _Src(b"little"))]
    entries += [(f"data/{k}", v) for k, v in sorted(recs.items(), key=lambda kv: int(kv[0]))]
    if FAULT == "extra_storage":
        entries.append((f"data/{len(recs)}", _Src(b"\0" * 8)))
    if FAULT == "padrecord" and recs:
        k0 = entries[2][1]
        entries[2] = (entries[2][0], _Src(b"".join(k0.chunks()) + b"\0\0\0\0"))
    if FAULT == "dropkey" and recs:
        entries = [e for e in entries if e[0] != "data/0"]
    entries.append(("version", _Src(b"3\n")))
    if FAULT == "nobyteorder":
        entries = [e for e in entries if e[0] != "byteorder"]
    if FAULT == "topfolder":
        top = top + "_x"
    with open(path, "wb") as f, zipfile.ZipFile(f, "w") as z:
        for name, src in entries:
            full = f"{top}/{name}"
            zi = zipfile.ZipInfo(full, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED if FAULT == "compress" else zipfile.ZIP_STORED
            zi.file_size = src.size
            if FAULT != "noalign":
                base = f.tell() + 30 + len(full.encode()) + 4
                pad = (-base) % 64
                zi.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' like torch
            first = True
            with z.open(zi, "w") as w:
                for blk in src.chunks():
                    if FAULT == "flipbyte" and name == "data/0" and first and blk:
                        blk = bytes([blk[0] ^ 1]) + blk[1:]
                    first = False
                    w.write(blk)


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
