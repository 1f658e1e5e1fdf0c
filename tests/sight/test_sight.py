#!/usr/bin/python3
"""`ckprep inspect --tensors/--config/--manifest` and `ckprep diff` against
real torch and OmegaConf.

 - every case of tests/oracle/make_checkpoints.py (zip and legacy) and
   every file of the third-party corpus: --tensors --json lists exactly the
   tensors torch.load finds walking dicts, lists and tuples, in its order,
   with dtype, shape, storage offset, stride (when not contiguous),
   Parameter and requires_grad, and marks as shared exactly the tensors
   whose storage another tensor uses; the text form has one line per
   tensor; GLOB filters; --config prints what OmegaConf.to_yaml prints for
   the DictConfig, the YAML string (OmegaConf.create) or the dict;
   --manifest lists the state dict's keys, dtypes and shapes; diff of a
   file with itself exits 0 (zip) or, for legacy files, 1 without --exact
   and 0 with it;
 - diff on made pairs: keys dropped, added, renamed (same content), a
   value changed, a dtype changed, a view of a shared storage changed,
   top-level keys, config keys; exit status, --json fields, --stat, text.

The two .safetensors files of the corpus (made outside this project) are
listed and diffed against their own header.

usage: test_sight.py --ckprep PATH [--corpus DIR] [--keep]
Last line: "N passed, M failed"; exit 1 when M > 0.
"""
import argparse
import collections
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings

import torch
from omegaconf import DictConfig, OmegaConf

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CKPREP = None
RESULTS = {"passed": 0, "failed": 0}


def run(*args):
    p = subprocess.run([CKPREP] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def check(name, fn, *a):
    try:
        fn(*a)
        RESULTS["passed"] += 1
    except Exception as e:  # a failed check, whatever raised
        RESULTS["failed"] += 1
        print("FAIL %s: %s" % (name, e))
        if os.environ.get("SIGHT_TRACE"):
            traceback.print_exc()


# ---- what torch sees ----------------------------------------------------

def torch_tensors(obj):
    """[(group, key, tensor)] walking dicts, lists and tuples as ckprep does."""
    out = []

    def walk(o, path, depth):
        if depth > 16:
            return
        if isinstance(o, dict):
            it = [(k, v) for k, v in o.items()]
        elif isinstance(o, (list, tuple)):
            it = list(enumerate(o))
        else:
            return
        for k, v in it:
            ks = k if isinstance(k, str) else str(k) if isinstance(k, int) and not isinstance(k, bool) else "<non-str key>"
            if isinstance(v, torch.Tensor):
                # ckprep models strided, unquantized tensors (_rebuild_tensor*)
                if v.layout == torch.strided and not v.is_quantized:
                    out.append((path or "/", ks, v))
            elif "\0" not in ks:
                walk(v, path + "/" + ks if path else ks, depth + 1)

    if not isinstance(obj, torch.Tensor):
        walk(obj, "", 0)
    return out


def contiguous(t):
    expect = 1
    for s, st in reversed(list(zip(t.shape, t.stride()))):
        if s != 1 and st != expect:
            return False
        expect *= s
    return True


def dtype_name(dt):
    return str(dt)[len("torch."):]


def check_tensors(path):
    rc, out, err = run("inspect", "--tensors", "--json", "--bytes", path)
    assert rc == 0, "exit %d: %s" % (rc, err)
    got = json.loads(out)["tensors"]
    want = torch_tensors(torch.load(path))
    assert len(got) == len(want), "%d tensors listed, torch finds %d" % (len(got), len(want))
    users = collections.Counter(t.untyped_storage().data_ptr() if hasattr(t, "untyped_storage")
                                else t.storage().data_ptr() for _, _, t in want)
    for g, (group, key, t) in zip(got, want):
        where = "%s/%s" % (group, key)
        assert (g["state"], g["key"]) == (group, key), "%s listed as %s/%s" % (where, g["state"], g["key"])
        assert g["dtype"] == dtype_name(t.dtype), "%s: dtype %s vs %s" % (where, g["dtype"], t.dtype)
        assert g["shape"] == list(t.shape), "%s: shape %s vs %s" % (where, g["shape"], list(t.shape))
        assert g["numel"] == t.numel() and g["bytes"] == t.numel() * t.element_size(), where
        assert g["offset"] == t.storage_offset(), "%s: offset %s vs %d" % (where, g["offset"], t.storage_offset())
        if contiguous(t):
            assert g["stride"] is None, "%s: stride %s for a contiguous tensor" % (where, g["stride"])
        else:
            assert g["stride"] == list(t.stride()), "%s: stride %s vs %s" % (where, g["stride"], t.stride())
        assert g["parameter"] == isinstance(t, torch.nn.Parameter), "%s: parameter %s" % (where, g["parameter"])
        assert g["requires_grad"] == t.requires_grad, "%s: requires_grad %s" % (where, g["requires_grad"])
        ptr = t.untyped_storage().data_ptr() if hasattr(t, "untyped_storage") else t.storage().data_ptr()
        if t.numel() > 0:
            assert (g["shared"] > 1) == (users[ptr] > 1), "%s: shared %s, torch %d users" % (
                where, g["shared"], users[ptr])
    rc, text, err = run("inspect", "--tensors", path)
    assert rc == 0, err
    lines = [l for l in text.splitlines() if l.startswith("  ")]
    assert len(lines) == len(want) or (not want and "no tensor" in text), "%d text lines" % len(lines)
    if want:
        key = want[0][1]
        pat = "*" + key[-3:] if len(key) >= 3 else key
        rc, out, err = run("inspect", "--tensors=" + pat, "--json", path)
        n = sum(1 for _, k, _ in want if __import__("fnmatch").fnmatchcase(k, pat))
        assert rc == 0 and len(json.loads(out)["tensors"]) == n, "glob %s: %s" % (pat, out[:200])


def config_of(obj):
    if not isinstance(obj, dict):
        return None
    for k, v in obj.items():
        if isinstance(v, DictConfig):
            return v
    for name in ("xp.cfg", "cfg", "config", "hyper_parameters", "hparams"):
        if name in obj and isinstance(obj[name], (str, dict)):
            return obj[name]
    return None


def check_config(path):
    obj = torch.load(path)
    cfg = config_of(obj)
    rc, out, err = run("inspect", "--config", path)
    if cfg is None:
        assert rc == 1 and "no config" in err, "exit %d without a config: %s" % (rc, err)
        return
    assert rc == 0, "exit %d: %s" % (rc, err)
    want = OmegaConf.to_yaml(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))
    assert out == want, "--config:\n%s\nOmegaConf.to_yaml:\n%s" % (out, want)
    c = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    for k in list(c.keys())[:3]:
        sub = OmegaConf.select(c, str(k))
        rc, out, err = run("inspect", "--config=%s" % k, path)
        assert rc == 0, err
        if OmegaConf.is_config(sub):
            assert out == OmegaConf.to_yaml(sub), "--config=%s: %r vs %r" % (k, out, OmegaConf.to_yaml(sub))
    rc, out, err = run("inspect", "--config", "--json", path)
    assert rc == 0, err
    j = json.loads(out)["config"]
    want = OmegaConf.to_container(c, resolve=False)
    assert j == json.loads(json.dumps(want)), "--config --json differs from to_container"


def check_manifest(path):
    obj = torch.load(path)
    sd = None
    for p in ("best_state/model", "model", "state_dict"):
        o = obj
        for part in p.split("/"):
            o = o.get(part) if isinstance(o, dict) else None
        if isinstance(o, dict):
            sd = o
            break
    if sd is None and isinstance(obj, dict):
        sd = obj
    rc, out, err = run("inspect", "--manifest", path)
    if sd is None:
        assert rc == 1, "exit %d for no state dict" % rc
        return
    assert rc == 0, err
    m = json.loads(out)
    assert m["format"] == "ckprep-manifest" and m["version"] == 1
    want = [(k, dtype_name(v.dtype), list(v.shape)) for k, v in sd.items()
            if isinstance(k, str) and isinstance(v, torch.Tensor)
            and v.layout == torch.strided and not v.is_quantized]
    got = [(t["key"], t["dtype"], t["shape"]) for t in m["tensors"]]
    assert got == want, "manifest %s vs %s" % (got[:3], want[:3])


def check_self_diff(path, legacy):
    rc, out, err = run("diff", path, path)
    has = bool(torch_tensors(torch.load(path)))
    if legacy and has:
        assert rc == 1 and "--exact" in out, "legacy self-diff without --exact: %d %s" % (rc, out)
        rc, out, err = run("diff", "--exact", path, path)
    assert rc == 0 and out.endswith("same\n"), "self-diff: exit %d %s %s" % (rc, out[-200:], err)


def is_legacy(path):
    with open(path, "rb") as f:
        return f.read(2) != b"PK"


def check_file(path):
    legacy = is_legacy(path)
    name = os.path.basename(path)
    check(name + " --tensors", check_tensors, path)
    check(name + " --config", check_config, path)
    check(name + " --manifest", check_manifest, path)
    check(name + " diff self", check_self_diff, path, legacy)


# ---- diff on made pairs ---------------------------------------------------

def diff_pairs(tmp):
    torch.manual_seed(0)
    sd = collections.OrderedDict((k, torch.randn(4, 3)) for k in ("a.weight", "b.weight", "c.weight", "d.weight"))
    sd["e.bias"] = torch.randn(5)
    cfg = OmegaConf.create({"optim": {"lr": 0.001, "betas": [0.9, 0.95]}, "name": "x"})
    A = os.path.join(tmp, "A.th")
    torch.save({"model": sd, "xp.cfg": cfg, "epoch": 3}, A)
    sd2 = collections.OrderedDict(sd)
    del sd2["a.weight"]                          # removed
    sd2["f.weight"] = torch.randn(2)             # added
    sd2["bb.weight"] = sd2.pop("b.weight")       # renamed, same content
    sd2["c.weight"] = sd["c.weight"] + 1         # content changed
    sd2["d.weight"] = sd["d.weight"].half()      # dtype changed
    cfg2 = OmegaConf.create({"optim": {"lr": 0.01, "betas": [0.9, 0.95], "wd": 0.1}})
    B = os.path.join(tmp, "B.th")
    torch.save({"model": sd2, "xp.cfg": cfg2, "step": 7}, B)

    def changed():
        rc, out, err = run("diff", "--json", A, B)
        assert rc == 1, "exit %d: %s" % (rc, err)
        j = json.loads(out)
        assert j["same"] is False
        t = j["top_level"]
        assert [x["key"] for x in t["removed"]] == ["epoch"] and [x["key"] for x in t["added"]] == ["step"], t
        (m,) = [s for s in j["state_dicts"] if s["path"] == "model"]
        assert [x["key"] for x in m["only_a"]] == ["a.weight"], m["only_a"]
        assert [x["key"] for x in m["only_b"]] == ["f.weight"], m["only_b"]
        assert m["renamed"] == [{"from": "b.weight", "to": "bb.weight"}], m["renamed"]
        ch = {x["key"]: x for x in m["changed"]}
        assert set(ch) == {"c.weight", "d.weight"}, ch
        assert ch["c.weight"]["content"] == "different"
        assert ch["d.weight"]["b"]["dtype"] == "float16"
        assert m["same"] == 1, m  # e.bias
        c = j["config"]
        assert c["removed"] == [{"key": "name", "value": "x"}], c
        assert c["added"] == [{"key": "optim.wd", "value": 0.1}], c
        assert c["changed"] == [{"key": "optim.lr", "a": 0.001, "b": 0.01}], c
        rc, out, _ = run("diff", A, B)
        for s in ("- top-level epoch", "+ top-level step", "  - a.weight", "  + f.weight",
                  "  > renamed b.weight -> bb.weight", "  ~ c.weight  content differs",
                  "  ~ d.weight  float32 [4, 3] -> float16 [4, 3]", "config xp.cfg:\n",
                  "  ~ optim.lr: 0.001 -> 0.01", "  - name: \"x\"", "  + optim.wd: 0.1"):
            assert s in out, "text diff lacks %r:\n%s" % (s, out)
        rc, out, _ = run("diff", "--stat", A, B)
        assert rc == 1 and " model | 1 only in A, 1 only in B, 1 renamed, 2 changed, 0 unknown, 1 same" in out, out

    check("diff A B", changed)

    def resaved_same():
        A2 = os.path.join(tmp, "A2.th")
        torch.save({"model": sd, "xp.cfg": cfg, "epoch": 3}, A2)
        rc, out, err = run("diff", A, A2)
        assert rc == 0 and out.endswith("same\n"), (rc, out, err)

    check("diff A resaved", resaved_same)

    def legacy_exact():
        L1, L2, L3 = (os.path.join(tmp, n) for n in ("L1.th", "L2.th", "L3.th"))
        base = torch.arange(12.0)
        torch.save({"w": base[2:8], "v": base}, L1, _use_new_zipfile_serialization=False)
        torch.save({"w": base[2:8].clone(), "v": base.clone()}, L2, _use_new_zipfile_serialization=False)
        b3 = base.clone()
        b3[5] = -1
        torch.save({"w": b3[2:8], "v": base}, L3, _use_new_zipfile_serialization=False)
        rc, out, _ = run("diff", L1, L2)
        assert rc == 1 and "--exact" in out, (rc, out)
        rc, out, _ = run("diff", "--exact", L1, L2)
        assert rc == 0, (rc, out)
        rc, out, _ = run("diff", "--exact", "--json", L1, L3)
        j = json.loads(out)
        ch = {x["key"]: x["content"] for s in j["state_dicts"] for x in s["changed"]}
        assert rc == 1 and ch == {"w": "different"}, (rc, ch)

    check("diff legacy --exact", legacy_exact)

    def zip_view_exact():
        Z1, Z2 = os.path.join(tmp, "Z1.th"), os.path.join(tmp, "Z2.th")
        base = torch.arange(12.0)
        torch.save({"w": base[:4], "x": base[4:]}, Z1)
        b2 = base.clone()
        b2[10] = 0
        torch.save({"w": b2[:4], "x": b2[4:]}, Z2)
        rc, out, _ = run("diff", "--json", Z1, Z2)
        ch = {x["key"]: x["content"] for s in json.loads(out)["state_dicts"] for x in s["changed"]}
        assert rc == 1 and ch == {"w": "unknown", "x": "unknown"}, ch
        rc, out, _ = run("diff", "--json", "--exact", Z1, Z2)
        ch = {x["key"]: x["content"] for s in json.loads(out)["state_dicts"] for x in s["changed"]}
        assert rc == 1 and ch == {"x": "different"}, ch

    check("diff views --exact", zip_view_exact)

    def trouble():
        rc, out, err = run("diff", A, os.path.join(tmp, "nope.th"))
        assert rc == 2 and "nope.th" in err and err.count("\n") == 1, (rc, err)
        rc, out, err = run("diff", A)
        assert rc == 2, rc

    check("diff trouble", trouble)


def config_edges(tmp):
    """Scalars PyYAML and OmegaConf's dumper quote, fold or type."""
    c = OmegaConf.create({
        "desc": "word " * 30, "k": "a: b", "u": "h\u00e9llo", "multi": "line1\nline2",
        "e": {}, "l": [], "f": 1e-5, "g": 1e16, "h": 0.1, "big": 2 ** 70, "neg": -0.0,
        "pinf": float("inf"), "nan": float("nan"), "s": "1e5", "t": "yes", "y": "y",
        "n": None, "inter": "${f}", "q": "???", "bs": "back\\slash",
        "lst": [{"a": 1}, [1, 2]], 3: "intkey", "ts": "2024-01-01", "inf": "inf",
        "sp": " 1", "em": "", "tab": "a\tb", "hash": "a #b", "colon": "x:",
        "dash": "- x", "pct": "%x", "merge": "<<", "us": "1_000", "tilde": "~",
        "nul": "null", "hex": "0x10", "oct": "017", "sexa": "1:30", "b": True})
    for i, (form, cfg) in enumerate((("DictConfig", c),
                                     ("YAML string", OmegaConf.to_yaml(c)),
                                     ("dict", {"lr": 0.1, "name": "no", "layers": [1, 2]}))):
        path = os.path.join(tmp, "cfg%d.th" % i)
        torch.save({"xp.cfg": cfg}, path)

        def one(path=path, cfg=cfg):
            rc, out, err = run("inspect", "--config", path)
            want = OmegaConf.to_yaml(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))
            assert rc == 0 and out == want, "exit %d %s\n%s\nvs OmegaConf.to_yaml\n%s" % (rc, err, out, want)

        check("config edges (%s)" % form, one)


class Foo:
    """A class no allowlist names: torch.save pickles __main__.Foo."""


def refused(tmp):
    path = os.path.join(tmp, "refused.th")
    for i, kw in enumerate(({}, {"_use_new_zipfile_serialization": False})):
        torch.save({"model": collections.OrderedDict(w=torch.ones(2, 3)), "obj": Foo(),
                    "cfg": {"lr": 0.1}}, path, **kw)

        def one():
            rc, out, err = run("inspect", "--tensors", "--json", path)
            assert rc == 1 and err.count("\n") == 1 and "__main__.Foo" in err, (rc, err)
            t = json.loads(out)["tensors"]
            assert [(x["state"], x["key"], x["shape"]) for x in t] == [("model", "w", [2, 3])], t
            rc, out, err = run("inspect", "--json", path)
            j = json.loads(out)
            assert rc == 1 and j["validation"] == "refused" and "__main__.Foo" in j["refused"], j
            rc, out, err = run("inspect", "--config", path)
            assert rc == 1 and out == "lr: 0.1\n", (rc, out)
            rc, out, err = run("diff", path, path)
            assert rc == 2 and "__main__.Foo" in err, (rc, err)

        check("refused file, as far as validation got (%s)" % ("zip", "legacy")[i], one)


def safetensors_file(path):
    """a safetensors file made outside this project (the corpus): inspect
    --tensors --json lists its header's tensors in order with their dtypes
    and shapes, and diff --exact finds it equal to itself"""
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    want = [(k, v["shape"]) for k, v in header.items() if k != "__metadata__"]
    rc, out, err = run("inspect", "--tensors", "--json", path)
    assert rc == 0, "inspect exit %d: %s" % (rc, err)
    got = [(t["key"], t["shape"]) for t in json.loads(out)["tensors"]]
    assert sorted(got) == sorted(want), "tensors %s, header %s" % (got, want)
    rc, out, err = run("diff", "--exact", path, path)
    assert rc == 0, "diff --exact of itself: exit %d %s" % (rc, out[:200])


def diff_sandboxed(tmp, shim):
    """diff reads A and B inside the sandbox: when it opens B (confine_shim,
    LD_PRELOAD) /etc/passwd, a file beside them and a new file in their
    folder are refused, as they are not from the same process at start"""
    A = os.path.join(REPO, "tests", "data", "sample.th")
    d = os.path.join(tmp, "sandboxed")
    os.makedirs(d)
    B = os.path.join(d, "b.th")
    shutil.copyfile(A, B)
    secret = os.path.join(tmp, "secret")
    open(secret, "w").close()
    log = os.path.join(tmp, "shim.log")
    tries = ["r:/etc/passwd", "r:" + secret, "w:" + os.path.join(d, "planted")]
    env = dict(os.environ, LD_PRELOAD=shim, CK_SHIM_LOG=log,
               CK_SHIM_TRIGGER="b.th", CK_SHIM_TRY=";".join(tries),
               ASAN_OPTIONS="detect_leaks=1:verify_asan_link_order=0")
    p = subprocess.run([CKPREP, "diff", A, B], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 0 and "same" in p.stdout, (p.returncode, p.stderr)
    lines = [ln.split(" ", 2) for ln in open(log).read().splitlines()]
    start = {spec: res for who, spec, res in lines if who == "start"}
    inside = [(spec, res) for who, spec, res in lines if who != "start"]
    assert start == {t: "ok" for t in tries}, start
    assert sorted(inside) == sorted((t, "EACCES") for t in tries), inside
    assert not os.path.exists(os.path.join(d, "planted"))


def diff_conf(tmp):
    """diff -c CONF opens A and B under CONF's [security]: a checkpoint
    holding numpy values is trouble without it (exit 2, naming the numpy
    global), and compared with allow_numpy = yes"""
    import numpy as np
    src = os.path.join(tmp, "np.th")
    torch.save({"model": {"w": torch.ones(2)}, "best": np.float64(1.5)}, src)
    other = os.path.join(tmp, "np2.th")
    torch.save({"model": {"w": torch.zeros(2)}, "best": np.float64(1.5)}, other)
    rc, out, err = run("diff", src, src)
    assert rc == 2 and "numpy.core.multiarray.scalar" in err, (rc, err)
    conf = os.path.join(tmp, "allow.ini")
    with open(conf, "w") as f:
        f.write("[pipeline]\nchain =\n[security]\nallow_numpy = yes\n")
    rc, out, err = run("diff", "-c", conf, src, src)
    assert rc == 0 and "same" in out, (rc, out, err)
    rc, out, err = run("diff", "--conf", conf, src, other)
    assert rc == 1 and "w" in out, (rc, out, err)
    rc, out, err = run("diff", "-c", os.path.join(tmp, "nope.ini"), src, src)
    assert rc == 2 and "nope.ini" in err, (rc, err)


def main():
    global CKPREP
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckprep", required=True)
    ap.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus", "third-party"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--shim", help="tests/daemon/confine_shim.so: look "
                    "inside diff's sandbox")
    a = ap.parse_args()
    CKPREP = os.path.abspath(a.ckprep)
    tmp = tempfile.mkdtemp(prefix="ck-sight-")
    cases = os.path.join(tmp, "oracle")
    subprocess.run([sys.executable, os.path.join(REPO, "tests", "oracle", "make_checkpoints.py"), cases],
                   check=True, capture_output=True)
    files = sorted(glob.glob(os.path.join(cases, "*")))
    files = [f for f in files if not f.endswith(".json")]
    files.append(os.path.join(REPO, "tests", "data", "sample.th"))
    corpus = sorted(p for p in glob.glob(os.path.join(a.corpus, "**", "*"), recursive=True)
                    if os.path.isfile(p) and not p.endswith(".md"))
    sts = [p for p in corpus if p.endswith(".safetensors")]
    corpus = [p for p in corpus if not p.endswith(".safetensors")]
    if len(corpus) < 100:
        RESULTS["failed"] += 1
        print("FAIL the corpus at %s holds %d files, expected 112" % (a.corpus, len(corpus)))
    for f in files + corpus:
        check_file(f)
    diff_pairs(tmp)
    config_edges(tmp)
    refused(tmp)
    check("diff -c", diff_conf, tmp)
    if a.shim:
        check("diff sandboxed", diff_sandboxed, tmp, os.path.abspath(a.shim))
    else:
        RESULTS["failed"] += 1
        print("FAIL diff sandboxed: no --shim given")
    for f in sts:
        check("safetensors " + os.path.basename(f), safetensors_file, f)
    print("files: %d oracle cases, %d third-party" % (len(files), len(corpus)))
    if not a.keep:
        shutil.rmtree(tmp)
    print("%d passed, %d failed" % (RESULTS["passed"], RESULTS["failed"]))
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
