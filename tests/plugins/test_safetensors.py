#!/usr/bin/python3
"""safetensors both ways.  Every output is read by stspec.py, a reader
written from the specification (numpy + json), and compared with torch's
tensors; inputs are the two third-party files of the corpus (made by
TorchSharp) and files made by stspec.write, edge cases and broken ones
included.

usage: test_safetensors.py --ckprep PATH --zipcheck PATH [--examples DIR]
    [--keep] [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import glob
import json
import os
import sys

import numpy as np
import torch

import plugtest
import stspec
from plugtest import (E, OD, Fail, check, check_rejects, ini, load, plugin_changes, test)

THIRD = os.path.join(plugtest.REPO, "..", "shared", "corpus", "third-party", "torchsharp")
if not os.path.isdir(THIRD):
    THIRD = "/work/shared/corpus/third-party/torchsharp"


def st_conf(chain="", **out):
    o = {"format": "safetensors"}
    o.update(out)
    return ini(("pipeline", {"chain": chain}), ("output", o))


def st_run(conf_text, inp, ok=True, dry=False):
    """Run into OUT.safetensors; on success read it with the spec reader."""
    inp = E.inputs.get(inp, inp)
    conf = E.conf(conf_text)
    d = E.fresh("out")
    out = os.path.join(d, "out.safetensors")
    rc, so, se = E.cmd(["run", "-c", conf, "-o", out] + (["--dry-run"] if dry else []) + [inp])
    if not ok:
        check(rc == 1, f"exit {rc}, expected 1; stderr {se.strip()[:300]}")
        check(len(se.splitlines()) == 1 and inp in se, f"stderr {se!r}")
        check(os.listdir(d) == [], f"files left: {os.listdir(d)}")
        return se
    check(rc == 0, f"exit {rc}; stderr {se.strip()[:400]}")
    rec = json.loads(so)
    if dry:
        check(os.listdir(d) == [], "--dry-run wrote")
        return rec, None, None, None
    check(sorted(os.listdir(d)) == ["out.safetensors"], f"files: {os.listdir(d)}")
    check(rec["output"]["size"] == os.path.getsize(out), "record size")
    try:
        meta, arrs, hdr = stspec.read(out)
    except Exception as e:
        raise Fail(f"the spec reader refuses the output: {type(e).__name__}: {e}")
    check(meta is not None and meta.get("format") == "pt", f"__metadata__ {meta}")
    return rec, meta, arrs, hdr


def same(name, arr, hdr, t):
    got = stspec.to_torch(name, arr, hdr)
    want = t.detach().contiguous()
    check(got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape),
          f"{name}: {got.dtype} {tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}")
    check(stspec.tensor_bytes(got) == stspec.tensor_bytes(want), f"{name}: bytes differ")


def output_changes(rec):
    return next(p["changes"] for p in rec["plugins"] if p["name"] == "output")


# ---- output ------------------------------------------------------------------

@test
def st_release_recipe():
    """best_state/model -> float16 -> safetensors with tied = dedupe: every
    tensor equal to torch's .half(); the tied names dropped but the first in
    sorted order, listed in __metadata__ and the record"""
    conf = ini(("pipeline", {"chain": "cast"}), ("cast", {"to": "float16"}),
               ("output", {"format": "safetensors", "tied": "dedupe"}))
    rec, meta, arrs, hdr = st_run(conf, "ac")
    sd = load(E.inputs["ac"])["best_state"]["model"]
    groups = {}
    for k, v in sd.items():
        groups.setdefault((v.storage().data_ptr(), v.storage_offset(), v.shape, v.stride()),
                          []).append(k)
    kept = {sorted(g)[0]: sorted(g)[1:] for g in groups.values()}
    check(sorted(arrs) == sorted(kept), f"names {sorted(arrs)}, expected {sorted(kept)}")
    for k in arrs:
        same(k, arrs[k], hdr, sd[k].half() if sd[k].is_floating_point() else sd[k])
    dropped = {a: k for k, al in kept.items() for a in al}
    check({k: v for k, v in meta.items() if k != "format"} == dropped, f"metadata {meta}")
    got = {(c["key"], c["kept"]) for c in output_changes(rec) if c["op"] == "alias_dropped"}
    check(got == set(dropped.items()), f"record aliases {got}")


@test
def st_example_release():
    """conf/examples/release-safetensors.ini: the same tensors, and the
    config in __metadata__ as ckprep.config, which OmegaConf reads back
    equal to the checkpoint's xp.cfg"""
    from omegaconf import OmegaConf
    text = open(os.path.join(E.examples, "release-safetensors.ini")).read()
    rec, meta, arrs, hdr = st_run(text, "ac")
    ck = load(E.inputs["ac"])
    sd = ck["best_state"]["model"]
    for k in arrs:
        same(k, arrs[k], hdr, sd[k].half() if sd[k].is_floating_point() else sd[k])
    cfg = OmegaConf.create(meta["ckprep.config"])
    check(OmegaConf.to_container(cfg) == OmegaConf.to_container(ck["xp.cfg"]),
          "ckprep.config differs from xp.cfg")


@test
def st_tied_many_in_input_order():
    """600 tied pairs (storages in more than one chunk) and views: with
    tied = dedupe the dropped names are listed in the input's order, and
    the zip and the legacy file of one state dict give the same bytes (the
    order was once where the storages lay in memory)"""
    m = OD()
    for i in range(600):
        t = torch.randn(2 + i % 3)
        m["a%d" % i] = t
        m["b%d" % i] = t
        if i % 5 == 0:
            base = torch.randn(6)
            m["va%d" % i] = base[1:3]
            m["vb%d" % i] = base[2:6]
    d = E.fresh("in")
    outs = []
    for name, kw in (("tied.pt", {}), ("tied-legacy.pt", {"_use_new_zipfile_serialization": False})):
        p = os.path.join(d, name)
        torch.save({"best_state": {"model": m}}, p, **kw)
        rec, meta, arrs, hdr = st_run(st_conf(tied="dedupe"), p)
        aliases = [(k, v) for k, v in meta.items() if k != "format"]
        want = [("b%d" % i, "a%d" % i) for i in range(600)]
        check(aliases == want, f"{name}: aliases {aliases[:3]}..., expected {want[:3]}...")
        for k in arrs:
            same(k, arrs[k], hdr, m[k])
        outs.append(open(rec["output"]["path"], "rb").read())
    check(outs[0] == outs[1], "the zip's and the legacy file's outputs differ")


@test
def st_tied_refused():
    """tied tensors without tied = dedupe: refused, both names in the one line"""
    se = st_run(st_conf(), "ac", ok=False)
    check("emb.0.weight" in se and "tied" in se, se)


@test
def st_tied_refused_dry_run():
    """a dry run refuses what the write would"""
    path = E.conf(st_conf())
    rc, so, se = E.cmd(["run", "--dry-run", "-c", path, E.inputs["ac"]])
    check(rc == 1 and "tied" in se, f"exit {rc} {se!r}")


@test
def st_every_dtype_and_layout():
    """every dtype, 0-d and empty tensors, transposed, sliced, expanded
    (stride 0) and offset views: written contiguous, equal to torch's"""
    base = torch.randn(5, 7, dtype=torch.float64)
    sd = OD()
    for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
               torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64):
        name = str(dt)[6:]
        sd[name] = (torch.randn(3, 4) * 50).to(dt) if dt != torch.bool else torch.randn(3, 4) > 0
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["t"] = base.t()
    sd["slice"] = base[1:4, 2:6]
    sd["step"] = base.view(-1)[3:30:4]
    sd["expanded"] = torch.randn(1, 3).expand(4, 3)
    p = os.path.join(E.fresh("in"), "dtypes.th")
    torch.save({"state_dict": sd}, p)
    rec, meta, arrs, hdr = st_run(st_conf(), p)
    check(list(arrs) == list(sd), f"order {list(arrs)}")
    for k, v in sd.items():
        same(k, arrs[k], hdr, v)
    check(output_changes(rec)[0]["state"] == "state_dict", "state picked")


@test
def st_state_alternatives():
    """state = a|b: the first that exists; none: fails naming them"""
    rec, meta, arrs, hdr = st_run(st_conf(state="nothing|model", tied="dedupe"), "ac")
    sd = load(E.inputs["ac"])["model"]
    check(set(arrs) <= set(sd), "names")
    se = st_run(st_conf(state="x|y"), "ac", ok=False)
    check("x|y" in se, se)


@test
def st_not_a_tensor_refused():
    """a value that is not a tensor: refused naming it"""
    p = os.path.join(E.fresh("in"), "mixed.th")
    torch.save({"model": OD(w=torch.randn(2), step=3)}, p)
    se = st_run(st_conf(state="model"), p, ok=False)
    check("step" in se and "not a tensor" in se, se)


# ---- input --------------------------------------------------------------------

@test
def st_third_party_inputs():
    """the corpus's TorchSharp safetensors files: read as a dict of tensors
    equal to the spec reader's, written as torch (torch.load) and back as
    safetensors (the same tensors and bytes)"""
    files = sorted(glob.glob(os.path.join(THIRD, "*.safetensors")))
    check(len(files) == 2, f"third-party files: {files}")
    for f in files:
        meta, arrs, hdr = stspec.read(f, strict_padding=False)
        r = E.ok(ini(("pipeline", {"chain": ""})), f)
        out = load(r.out)
        check(sorted(out) == sorted(arrs), f"{f}: keys {sorted(out)}")
        for k in arrs:
            same(k, arrs[k], hdr, out[k])
        check(r.rec["input"]["format"] == "safetensors", "record input format")
        rec, meta2, arrs2, hdr2 = st_run(st_conf(), f)
        for k in arrs:
            check(hdr2[k]["dtype"] == hdr[k]["dtype"] and hdr2[k]["shape"] == hdr[k]["shape"]
                  and arrs2[k].tobytes() == arrs[k].tobytes(), f"{f}: {k} changed")


def make_st(name, tensors, **kw):
    p = os.path.join(E.fresh("in"), name)
    stspec.write(p, tensors, **kw)
    return p


@test
def st_edge_inputs():
    """spec edge cases as inputs: every dtype, 0-d and empty tensors, a
    header with only __metadata__ (kept on the way back), unsorted ranges"""
    ts = OD()
    for dt in stspec.TORCH_TO_ST:
        ts[str(dt)[6:]] = (torch.randn(2, 3) * 9).to(dt) if dt != torch.bool \
            else torch.randn(2, 3) > 0
    ts["zero_d"] = torch.tensor(7, dtype=torch.int32)
    ts["empty"] = torch.zeros(3, 0)
    p = make_st("edge.safetensors", ts, metadata={"who": "stspec", "format": "pt"},
                order=list(reversed(ts)))
    r = E.ok(ini(("pipeline", {"chain": ""})), p)
    out = load(r.out)
    for k, v in ts.items():
        check(out[k].dtype == v.dtype and out[k].shape == v.shape and
              stspec.tensor_bytes(out[k]) == stspec.tensor_bytes(v), f"{k} differs")
    rec, meta, arrs, hdr = st_run(st_conf(), p)
    check(meta == {"who": "stspec", "format": "pt"}, f"metadata {meta}")
    p2 = make_st("meta-only.safetensors", {}, metadata={"a": "b"})
    r = E.ok(ini(("pipeline", {"chain": ""})), p2)
    check(load(r.out) == {}, "not an empty dict")
    rec, meta, arrs, hdr = st_run(st_conf(), p2)
    check(meta == {"a": "b", "format": "pt"} and len(arrs) == 0, f"{meta} {arrs}")


@test
def st_plugins_on_input():
    """prefix_select, key_remap, head_init and cast (state = /) on a
    safetensors input, written as safetensors"""
    ts = OD([("model.enc.w", torch.randn(4, 4)), ("model.enc.b", torch.randn(4)),
             ("model.dec.w", torch.randn(2, 4)), ("other", torch.randn(1))])
    p = make_st("plug.safetensors", ts)
    conf = ini(("pipeline", {"chain": "prefix_select key_remap head_init cast"}),
               ("prefix_select", {"state": "/", "keep": "model.", "strip": "yes"}),
               ("key_remap", {"state": "/", "rename": "enc. => encoder."}),
               ("head_init", {"state": "/", "add": "head.b float32 3 const(0.5)"}),
               ("cast", {"state": "/", "to": "bfloat16"}),
               ("output", {"format": "safetensors"}))
    rec, meta, arrs, hdr = st_run(conf, p)
    want = {"encoder.w": ts["model.enc.w"], "encoder.b": ts["model.enc.b"],
            "dec.w": ts["model.dec.w"], "head.b": torch.full((3,), 0.5)}
    check(sorted(arrs) == sorted(want), f"names {sorted(arrs)}")
    for k, v in want.items():
        same(k, arrs[k], hdr, v.bfloat16())


def bad_header(name, **kw):
    return make_st(name, OD(a=torch.randn(3), b=torch.arange(4)), **kw)


@test
def st_hostile_inputs():
    """broken files: exit 1, one line naming the file and the cause, nothing
    written"""
    def edit(fn):
        return {"hdr_edit": fn}
    cases = [
        ("gap", edit(lambda h: h["b"].update(data_offsets=[16, 48])), "gap"),
        ("overlap", edit(lambda h: h["b"].update(data_offsets=[8, 40])), "overlap"),
        ("short", edit(lambda h: h["b"].update(shape=[3])), "bytes"),
        ("dtype", edit(lambda h: h["b"].update(dtype="Q7")), "dtype"),
        ("extra", edit(lambda h: h["b"].update(extra=1)), "extra"),
        ("past", {"data_edit": lambda d: d[:-8]}, "cover"),
        ("dup", {"raw_header": '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},'
                               '"a":{"dtype":"I64","shape":[4],"data_offsets":[12,44]}}'},
         "twice"),
        ("utf8", {"raw_header": b'{"\xff":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'},
         "UTF-8"),
        ("json", {"raw_header": '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},}'},
         "header"),
        ("neg", edit(lambda h: h["a"].update(shape=[-3])), "header"),
        ("float", edit(lambda h: h["a"].update(shape=[3.0])), "whole number"),
        ("meta", {"raw_header": '{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[3],'
                                '"data_offsets":[0,12]}}'}, "metadata"),
    ]
    for name, kw, cause in cases:
        p = bad_header(name + ".safetensors", **kw)
        r = E.run(ini(("pipeline", {"chain": ""})), p)
        check(r.rc == 1, f"{name}: exit {r.rc}, expected 1; {r.stderr.strip()[:200]}")
        check(len(r.stderr.splitlines()) == 1 and p in r.stderr and
              cause.lower() in r.stderr.lower(), f"{name}: stderr {r.stderr!r} (wanted {cause!r})")
        check(os.listdir(r.outdir) == [], f"{name}: wrote {os.listdir(r.outdir)}")
    # a header length past the end of the file
    p = os.path.join(E.fresh("in"), "len.safetensors")
    with open(p, "wb") as f:
        f.write((10 ** 6).to_bytes(8, "little") + b'{"a":1}')
    r = E.run(ini(("pipeline", {"chain": ""})), p)
    check(r.rc == 1, f"header length: exit {r.rc}")


@test
def st_daemon_output_name():
    """`ckprep watch` with format = safetensors: model.th in incoming comes
    out as output/model.safetensors, read by the spec reader"""
    import subprocess
    import time
    d = E.fresh("watch")
    for sub in ("incoming", "output", "failed"):
        os.makedirs(os.path.join(d, sub))
    conf = os.path.join(d, "c.ini")
    with open(conf, "w") as f:
        f.write(ini(("pipeline", {"chain": ""}), ("output", {"format": "safetensors",
                                                              "state": "model"}),
                    ("watch", {"incoming": "incoming", "output": "output", "failed": "failed",
                               "audit_log": "audit.jsonl", "settle_ms": 100})))
    src = os.path.join(d, "model.th")
    torch.save({"model": {"w": torch.randn(3)}}, src)
    p = subprocess.Popen([E.ckprep, "watch", "-c", conf], cwd=d, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        os.rename(src, os.path.join(d, "incoming", "model.th"))
        out = os.path.join(d, "output", "model.safetensors")
        for _ in range(100):
            if os.path.exists(out):
                break
            time.sleep(0.1)
    finally:
        p.terminate()
        p.wait(timeout=30)
    check(os.listdir(os.path.join(d, "output")) == ["model.safetensors"],
          f"output folder: {os.listdir(os.path.join(d, 'output'))}")
    meta, arrs, hdr = stspec.read(out)
    check(list(arrs) == ["w"], f"names {list(arrs)}")


@test
def st_fingerprint_covers_tensor_bytes():
    """a safetensors input's fingerprint (the record's input digest) changes
    with any one tensor byte, the header being the same; a copy of a file
    has its fingerprint; a written file's digest is the one it has as input"""
    d = E.fresh("fp")
    tensors = {"a": torch.arange(1000, dtype=torch.float32),
               "e": torch.zeros(0, dtype=torch.float16),
               "b": torch.arange(5, dtype=torch.int64)}

    def flip(at):
        def edit(data):
            return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]
        return edit

    # the first data byte, one inside "a", the first of "b", the last
    cases = {"same": None, "first": flip(0), "mid": flip(2001), "b": flip(4000),
             "last": flip(4039)}
    digests, headers = {}, set()
    for name, edit in cases.items():
        p = os.path.join(d, name + ".safetensors")
        stspec.write(p, tensors, metadata={"k": "v"}, data_edit=edit)
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            headers.add(f.read(n))
        r = E.run(ini(("pipeline", {"chain": ""}), ("output", {"format": "safetensors",
                                                               "state": "/"})), p)
        check(r.rc == 0, f"{name}: exit {r.rc}; {r.stderr.strip()[:300]}")
        digests[name] = r.rec["input"]["digest"]
        check(r.rec["input"].get("digest_kind") in (None, "fingerprint-sha256"),
              f"digest_kind {r.rec['input'].get('digest_kind')}")
        # the output, opened as an input, has the digest its record gave it
        r2 = E.run(ini(("pipeline", {"chain": ""}), ("output", {"format": "safetensors",
                                                                "state": "/"})), r.out)
        check(r2.rc == 0 and r2.rec["input"]["digest"] == r.rec["output"]["digest"],
              f"{name}: written {r.rec['output']['digest']}, read back "
              f"{r2.rec and r2.rec['input']['digest']}")
    check(len(headers) == 1, f"{len(headers)} different headers")
    check(len(set(digests.values())) == len(cases),
          f"equal fingerprints for different tensor bytes: {digests}")
    p = os.path.join(d, "copy.safetensors")
    stspec.write(p, tensors, metadata={"k": "v"})
    r = E.run(ini(("pipeline", {"chain": ""})), p)
    check(r.rc == 0 and r.rec["input"]["digest"] == digests["same"],
          f"a copy's fingerprint {r.rec and r.rec['input']['digest']} != {digests['same']}")


@test
def st_output_check_errors():
    """[output] values are checked at load"""
    check_rejects(ini(("pipeline", {"chain": ""}), ("output", {"format": "onnx"})), 5, "onnx")
    check_rejects(ini(("pipeline", {"chain": ""}), ("output", {"state": "a||b"})), 5, "state")
    check_rejects(ini(("pipeline", {"chain": ""}), ("output", {"tied": "maybe"})), 5, "maybe")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
