#!/usr/bin/python3
"""The expect plugin against real torch: for a few hundred generated
surgeries of real nn.Module state dicts (keys dropped, added, renamed,
reshaped, dtype changed, a value that is no tensor, several at once),
`expect` (keys = strict) passes exactly when torch's
load_state_dict(strict=True) into the target module succeeds, and its
missing/unexpected keys equal torch's (as sets: torch orders unexpected
keys module by module); with keys = subset it passes exactly when
strict=False reports no unexpected key and no error; with keys = superset,
when none is missing and no error; with dtype = exact, a changed dtype is
a mismatch.

The manifest is written by the two lines of Python the README documents
(from model.state_dict()); half the cases use a reference checkpoint
instead.  torch's lists come from a load_state_dict post hook on the root
module (called with the complete lists before torch raises).

usage: test_expect_oracle.py --ckprep PATH [--cases N] [--seed S] [--keep]
Last line: "N passed, M failed"; exit 1 when M > 0.
"""
import argparse
import collections
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


class Tiny(nn.Module):
    """Embedding, LayerNorm, a non-persistent buffer, a persistent one."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("cache", torch.zeros(2), persistent=False)


class Conv(nn.Module):
    """Conv2d and BatchNorm (a 0-dim num_batches_tracked) and a Sequential."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.Conv2d(4, 2, 1))
        self.fc = nn.Linear(8, 2)


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2)),
    "encoder": lambda: nn.TransformerEncoderLayer(d_model=8, nhead=2,
                                                  dim_feedforward=16),
    "conv": Conv,
    "tiny": Tiny,
    "lstm": lambda: nn.LSTM(4, 5, num_layers=2),
}

DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.float32]


def write_manifest(model, path):
    # The README's two lines (kept identical to them).
    sd = model.state_dict()
    json.dump({"tensors": [{"key": k, "dtype": str(v.dtype)[6:], "shape": list(v.shape)} for k, v in sd.items()]}, open(path, "w"))


def surgery(rng, sd):
    """A changed copy of state dict sd (its _metadata kept) and a label."""
    keys = list(sd.keys())
    items = list(sd.items())
    ops = rng.sample(["drop", "add", "rename", "reshape", "dtype",
                      "prefix", "scalar", "notensor", "none"],
                     rng.choice([1, 1, 2, 3]))
    done = []
    for op in ops:
        keys = [k for k, _ in items]
        if op == "drop" and items:
            for _ in range(rng.randint(1, 3)):
                if items:
                    items.pop(rng.randrange(len(items)))
        elif op == "add":
            base = rng.choice(keys) if keys else "x"
            name = rng.choice([base + ".extra", "head2.weight", base.split(".")[0] + ".bias2",
                               "zzz", base + "_copy"])
            if name not in keys:
                items.insert(rng.randrange(len(items) + 1), (name, torch.randn(rng.randint(1, 4))))
        elif op == "rename" and items:
            i = rng.randrange(len(items))
            k, v = items[i]
            nk = rng.choice(["renamed." + k, k.replace(".", "_", 1), k + "x"])
            if nk not in keys:
                items[i] = (nk, v)
        elif op == "reshape" and items:
            i = rng.randrange(len(items))
            k, v = items[i]
            if not isinstance(v, torch.Tensor):
                pass
            elif v.dim() > 0:
                shape = list(v.shape)
                shape[rng.randrange(len(shape))] += rng.choice([1, 2])
                items[i] = (k, torch.zeros(shape, dtype=v.dtype))
            else:
                items[i] = (k, torch.zeros(2, dtype=v.dtype))
        elif op == "dtype" and items:
            i = rng.randrange(len(items))
            k, v = items[i]
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                items[i] = (k, v.to(rng.choice(DTYPES)))
        elif op == "prefix":
            items = [("module." + k, v) for k, v in items]
        elif op == "scalar":
            for i, (k, v) in enumerate(items):
                if isinstance(v, torch.Tensor) and v.dim() == 0:
                    items[i] = (k, v.reshape(1).repeat(rng.choice([1, 1, 3])))
                    break
        elif op == "notensor" and items:
            i = rng.randrange(len(items))
            items[i] = (items[i][0], 7)
        done.append(op)
    out = collections.OrderedDict(items)
    out._metadata = copy.deepcopy(getattr(sd, "_metadata", None))
    return out, "+".join(done)


def torch_verdict(factory, path):
    """(ok_strict, missing, unexpected, ok_subset, ok_superset)."""
    got = {}

    def hook(module, inc):
        got["missing"] = list(inc.missing_keys)
        got["unexpected"] = list(inc.unexpected_keys)

    res = []
    for strict in (True, False):
        m = factory()
        m.register_load_state_dict_post_hook(hook)
        sd = torch.load(path)
        if "model" in sd and not isinstance(sd["model"], torch.Tensor):
            sd = sd["model"]
        try:
            m.load_state_dict(sd, strict=strict)
            res.append(True)
        except (RuntimeError, IndexError):
            res.append(False)
    ok_strict, ok_loose = res
    miss, unexp = got.get("missing", []), got.get("unexpected", [])
    return ok_strict, miss, unexp, ok_loose and not unexp, ok_loose and not miss


def quirk_keys(factory, path):
    """Keys torch 1.x's strict check lets through although the model has
    no such key: a key under a parameter's or buffer's name."""
    ref = factory().state_dict()
    sd = torch.load(path)
    if "model" in sd and not isinstance(sd["model"], torch.Tensor):
        sd = sd["model"]
    if not torch.__version__.startswith("1."):
        return []
    return [k for k in sd if k not in ref and any(k.startswith(r + ".") for r in ref)]


def run_expect(ckprep, tmp, inp, manifest, keys="strict", dtype="any", report=False):
    conf = os.path.join(tmp, "expect.ini")
    with open(conf, "w") as f:
        f.write("[pipeline]\nchain = expect\n\n[expect]\n")
        f.write("manifest = %s\nkeys = %s\ndtype = %s\n" % (manifest, keys, dtype))
        if report:
            f.write("report_only = yes\n")
    p = subprocess.run([ckprep, "run", "-c", conf, "--dry-run", inp],
                       capture_output=True, text=True)
    rec = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None
    return p.returncode, rec, p.stderr


def change_of(rec):
    for pl in rec["plugins"]:
        if pl["name"] == "expect":
            return pl["changes"][0]
    raise AssertionError("no expect change in the record")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckprep", required=True)
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    ckprep = os.path.abspath(a.ckprep)
    rng = random.Random(a.seed)
    torch.manual_seed(a.seed)
    tmp = tempfile.mkdtemp(prefix="ck-expect-")
    passed = failed = 0
    verdicts = collections.Counter()
    names = sorted(MODELS)
    refs = {}
    for name in names:
        model = MODELS[name]()
        mpath = os.path.join(tmp, name + ".manifest.json")
        write_manifest(model, mpath)
        rpath = os.path.join(tmp, name + ".ref.pt")
        torch.save({"model": model.state_dict()}, rpath)
        refs[name] = (mpath, rpath)
    for i in range(a.cases):
        name = names[i % len(names)]
        factory = MODELS[name]
        sd, label = surgery(rng, factory().state_dict())
        inp = os.path.join(tmp, "case%d.pt" % i)
        torch.save({"model": sd} if i % 3 else sd, inp)
        manifest = refs[name][i % 2]
        what = "case %d (%s: %s, %s)" % (i, name, label, os.path.basename(manifest))
        try:
            ok, miss, unexp, ok_sub, ok_sup = torch_verdict(factory, inp)
            quirk = quirk_keys(factory, inp)
            if quirk:
                # torch 1.x ignores a key under a parameter's name
                # ("fc.weight.extra"); torch 2.x and expect report it
                verdicts["quirk"] += 1
                unexp = unexp + quirk
                if ok and not miss and not unexp[:-len(quirk)]:
                    ok = False
                ok_sub = ok_sub and False
            verdicts["pass" if ok else "fail"] += 1
            rc, _, err = run_expect(ckprep, tmp, inp, manifest)
            assert rc in (0, 1), "exit %d: %s" % (rc, err)
            assert (rc == 0) == ok, "expect %s, torch strict=True %s: %s" % (
                "passed" if rc == 0 else "failed", "succeeded" if ok else "failed", err.strip())
            if rc == 1:
                assert err.count("\n") == 1 and "expect" in err, "stderr: %r" % err
            rc, rec, err = run_expect(ckprep, tmp, inp, manifest, report=True)
            assert rc == 0, "report_only exit %d: %s" % (rc, err)
            ch = change_of(rec)
            assert ch["verdict"] == ("pass" if ok else "fail"), ch
            assert ch["missing_count"] == len(miss), (ch["missing_count"], miss)
            assert ch["unexpected_count"] == len(unexp), (ch["unexpected_count"], unexp)
            if len(miss) <= 20:
                assert sorted(ch["missing"]) == sorted(miss), (ch["missing"], miss)
            if len(unexp) <= 20:
                assert sorted(map(str, ch["unexpected"])) == sorted(unexp), (ch["unexpected"], unexp)
            if i % 4 == 0:
                rc, _, err = run_expect(ckprep, tmp, inp, manifest, keys="subset")
                assert (rc == 0) == ok_sub, "subset: %d vs torch %s: %s" % (rc, ok_sub, err)
                rc, _, err = run_expect(ckprep, tmp, inp, manifest, keys="superset")
                assert (rc == 0) == ok_sup, "superset: %d vs torch %s: %s" % (rc, ok_sup, err)
            if i % 4 == 1:
                # dtype = exact: also fails on a changed dtype
                ref = factory().state_dict()
                cur = torch.load(inp)
                cur = cur.get("model", cur) if isinstance(cur, dict) else cur
                dt_changed = any(k in ref and isinstance(v, torch.Tensor) and v.dtype != ref[k].dtype
                                 and v.shape == ref[k].shape for k, v in cur.items())
                rc, _, err = run_expect(ckprep, tmp, inp, manifest, dtype="exact")
                assert (rc == 0) == (ok and not dt_changed), "dtype=exact: %d (torch %s, dtype changed %s)" % (
                    rc, ok, dt_changed)
            passed += 1
        except AssertionError as e:
            failed += 1
            print("FAIL %s: %s" % (what, e))
    # the configuration errors
    for bad, why in (("manifest = /nonexistent.json\n", "nonexistent"),
                     ("keys = loose\nmanifest = %s\n" % refs["mlp"][0], "loose"),
                     ("", "manifest is required")):
        conf = os.path.join(tmp, "bad.ini")
        with open(conf, "w") as f:
            f.write("[pipeline]\nchain = expect\n\n[expect]\n" + bad)
        p = subprocess.run([ckprep, "check", "-c", conf], capture_output=True, text=True)
        if p.returncode == 2 and why in p.stderr and "bad.ini:" in p.stderr:
            passed += 1
        else:
            failed += 1
            print("FAIL check %r: exit %d %r" % (bad, p.returncode, p.stderr))
    print("torch verdicts: %d strict loads succeeded, %d failed (%d with a key under a parameter name)" % (
        verdicts["pass"], verdicts["fail"], verdicts["quirk"]))
    if verdicts["pass"] < a.cases // 10 or verdicts["fail"] < a.cases // 10:
        failed += 1
        print("FAIL the surgeries are lopsided: %s" % dict(verdicts))
    if not a.keep:
        shutil.rmtree(tmp)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
