#!/usr/bin/python3
"""Self-test of the oracle itself (no ckprep needed): compare.py must accept
faithful copies and reject deliberately altered ones with a reason naming the place.

usage: selftest_oracle.py [--workdir DIR]
Last line: "N passed, M failed".
"""
import argparse
import collections
import copy
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import compare  # noqa: E402
import make_checkpoints  # noqa: E402


def resave(src, dst, mutate=None, **kw):
    obj = torch.load(src, map_location="cpu")
    if mutate is not None:
        r = mutate(obj)
        obj = obj if r is None else r
    torch.save(obj, dst, **kw)


def _do(_):
    """in-place mutation: keep the mutated object"""
    return None


def _set(d, k, v):
    d[k] = v


def _reorder(d):
    items = list(d.items())
    return type(d)([items[1], items[0]] + items[2:])


def _cfg_unstruct(o):
    OmegaConf.set_struct(o["xp.cfg"], False)


def _cfg_resolve(o):
    cfg = o["xp.cfg"]
    OmegaConf.set_struct(cfg, False)
    cfg.dataset.sample_rate = 32000


def _cfg_fill_missing(o):
    cfg = o["xp.cfg"]
    cfg.label = "filled"


def _flip_bf16(o):
    t = o["bfloat16"]
    t.view(torch.int16)[2] ^= 1


def _param_to_tensor(o):
    o["param_nograd"] = o["param_nograd"].detach().clone()


# (name, base file, mutation, expected substring in one reason)
MUTATIONS = [
    ("float 1 ulp", "checkpoint.th",
     lambda o: _set(o["history"][0]["train"], "loss",
                    struct.unpack("<d", struct.pack("<q", struct.unpack("<q", struct.pack(
                        "<d", o["history"][0]["train"]["loss"]))[0] + 1))[0]),
     "['history'][0]['train']['loss']"),
    ("-0.0 vs 0.0", "scalars.pt", lambda o: o["floats"].__setitem__(4, 0.0), "['floats'][4]"),
    ("nan payload", "scalars.pt",
     lambda o: o["floats"].__setitem__(1, struct.unpack("<d", bytes.fromhex("010000000000f87f"))[0]),
     "['floats'][1]"),
    ("int vs bool", "scalars.pt", lambda o: o["ints"].__setitem__(1, True), "['ints'][1]"),
    ("big int", "scalars.pt", lambda o: o["ints"].__setitem__(16, 2 ** 200 + 1), "['ints'][16]"),
    ("bytes", "scalars.pt", lambda o: _set(o, "bytes", b"\x00\xffabd"), "['bytes']"),
    ("str", "scalars.pt", lambda o: o["strings"].__setitem__(3, "漢"), "['strings'][3]"),
    ("dict vs OrderedDict", "checkpoint.th", lambda o: collections.OrderedDict(o), "<root>: type"),
    ("key order", "checkpoint.th", _reorder, "key #0"),
    ("defaultdict factory", "checkpoint.th",
     lambda o: _set(o["ema"], "state", collections.defaultdict(list, o["ema"]["state"])),
     "defaultdict factory"),
    ("defaultdict -> dict", "checkpoint.th",
     lambda o: _set(o["ema"], "state", dict(o["ema"]["state"])), "['ema']['state']: type"),
    ("state_dict _metadata dropped", "checkpoint.th", lambda o: delattr(o["model"], "_metadata"),
     "['model']: attributes differ"),
    ("tuple vs list", "big_containers.pt", lambda o: o["tuples"].__setitem__(2, [1, 2, 3]),
     "['tuples'][2]"),
    ("list 1001 -> 1000", "big_containers.pt", lambda o: _do(o["list1001"].pop()), "['list1001']"),
    ("od1200 value", "big_containers.pt", lambda o: _do(o["od1200"]["layer.1100.w"].add_(1)),
     "['od1200']['layer.1100.w']"),
    ("untie weights", "views_and_ties.pt", lambda o: _set(o, "tied_b", o["tied_b"].clone()),
     "['tied_b']: IN object is the same object"),
    ("merge distinct storages", "views_and_ties.pt",
     lambda o: _set(o, "zeros_b", o["zeros_a"].view(3)), "storage sharing differs"),
    ("split shared storage", "views_and_ties.pt",
     lambda o: _set(o, "other_hi", o["other_lo"].new_empty(10).copy_(
         torch.cat([o["other_lo"], o["other_hi"]]))[5:]), "storage sharing differs"),
    ("contiguous instead of transposed", "views_and_ties.pt",
     lambda o: _set(o, "transposed", o["transposed"].contiguous()), "['transposed']: tensor stride"),
    ("storage offset", "views_and_ties.pt", lambda o: _set(o, "slice_off", o["base"][6:12]),
     "['slice_off']: tensor storage_offset"),
    ("storage trimmed", "storage_larger.pt", lambda o: o.clone(), "storage size"),
    ("bf16 one bit", "all_dtypes.pt", _flip_bf16, "['bfloat16']: storage bytes differ"),
    ("dtype", "all_dtypes.pt", lambda o: _set(o, "int32", o["int32"].long()), "['int32']: tensor dtype"),
    ("Parameter -> Tensor", "parameters.pt", _param_to_tensor, "['param_nograd']: type"),
    ("requires_grad", "parameters.pt", lambda o: _do(o["tensor_grad"].requires_grad_(False)),
     "['tensor_grad']: tensor requires_grad"),
    ("shared dict copied", "shared_objects.pt", lambda o: _set(o, "second", copy.deepcopy(o["second"])),
     "['second']"),
    ("distinct dicts merged", "shared_objects.pt",
     lambda o: _set(o, "equal_not_same_2", o["equal_not_same_1"]), "['equal_not_same_2']"),
    ("cycle broken", "shared_objects.pt", lambda o: o["cycle"].__setitem__(1, ["head", []]), "['cycle'][1]"),
    ("omegaconf struct flag", "checkpoint.th", _cfg_unstruct, "struct flag"),
    ("omegaconf interpolation resolved", "checkpoint.th", _cfg_resolve, "to_container(resolve=False)"),
    ("omegaconf missing filled", "checkpoint.th", _cfg_fill_missing, "['xp.cfg']"),
    ("sparse value", "exotic_tensors.pt", lambda o: _do(o["sparse_coo"]._values().mul_(2)),
     "['sparse_coo']._values()"),
    ("quantized scale", "exotic_tensors.pt",
     lambda o: _set(o, "qint8", torch.quantize_per_tensor(o["qint8"].dequantize(), 0.2, 3, torch.qint8)),
     "['qint8']"),
]

# faithful copies: must compare equal (objects only; torch.save writes no byteorder record)
FAITHFUL = [
    ("self", None), ("resaved", "resave"), ("resaved proto 4", "p4"), ("resaved legacy", "legacy"),
]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir")
    args = ap.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="ckprep-oracle-self-")
    os.makedirs(work, exist_ok=True)
    gen = os.path.join(work, "in")
    manifest = make_checkpoints.generate(gen)
    results = []

    def record(name, reasons):
        results.append((name, reasons))
        print(f"{'FAIL' if reasons else 'ok  '} {name}")
        for x in reasons:
            print(f"    {x}")

    # 1. every generated file equals itself and faithful re-saves of itself
    for e in manifest["files"]:
        src = os.path.join(gen, e["name"])
        for label, how in FAITHFUL:
            dst = src if how is None else os.path.join(work, f"{how}-{e['name']}")
            if how == "resave":
                resave(src, dst)
            elif how == "p4":
                resave(src, dst, pickle_protocol=4)
            elif how == "legacy":
                resave(src, dst, _use_new_zipfile_serialization=False)
            wo = e["weights_only_ok"] and how in (None, "resave", "legacy")
            bi = e["byte_identical"] and how is None  # torch.load+save may re-memoize
            r = compare.compare(src, dst, weights_only_too=wo, byte_identical=bi, check_layout_too=False)
            record(f"faithful:{label}:{e['name']}", r)

    # 2. mutations must be caught, with the expected place in the message
    for name, base, mut, expect in MUTATIONS:
        src = os.path.join(gen, base)
        dst = os.path.join(work, "mut-" + name.replace(" ", "_").replace(">", "") + ".pt")
        resave(src, dst, mut)
        r = compare.compare(src, dst, check_layout_too=False)
        if not r:
            record(f"mutation:{name}", ["NOT DETECTED"])
        elif not any(expect in x for x in r):
            record(f"mutation:{name}", [f"detected but no reason mentions {expect!r}: {r[:3]}"])
        else:
            record(f"mutation:{name}", [])
            print(f"    (reason: {r[0][:160]})")

    # 3. byte-identical must catch a protocol change; layout must accept the reference writer
    src = os.path.join(gen, "views_and_ties.pt")
    dst = os.path.join(work, "p4.pt")
    resave(src, dst, pickle_protocol=4)
    r = compare.compare(src, dst, byte_identical=True, check_layout_too=False)
    record("byte-identical:detects protocol 4", [] if any("not byte-identical" in x for x in r)
           else [f"not detected: {r}"])
    conf = os.path.join(work, "empty.ini")
    with open(conf, "w") as f:
        f.write("[pipeline]\nchain =\n")
    for nm in ("checkpoint.th", "legacy_mixed_proto2.pt", "no_tensors.pt", "big_containers.pt"):
        out = os.path.join(work, "ref-" + nm.replace(".", "_") + ".out.pt")
        p = subprocess.run([sys.executable, os.path.join(HERE, "ref_ckprep.py"), "run", "-c", conf,
                            "-o", out, os.path.join(gen, nm)], capture_output=True)
        e = next(x for x in manifest["files"] if x["name"] == nm)
        r = [] if p.returncode == 0 else [f"ref_ckprep failed: {p.stderr.decode()[-300:]}"]
        r = r or compare.compare(os.path.join(gen, nm), out, e["weights_only_ok"], e["byte_identical"])
        record(f"layout:reference writer passes:{nm}", r)
    # torch.save's own zip lacks byteorder: layout check must say so
    r = compare.check_layout(src)
    record("layout:detects missing byteorder in torch 1.13 output",
           [] if any("byteorder" in x for x in r) else [f"not detected: {r}"])

    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    failed = sum(1 for _, r in results if r)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
