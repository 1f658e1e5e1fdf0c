#!/usr/bin/python3
"""Oracle tests for ckprep's plugins: optimizer_strip, prefix_select,
key_remap, head_init, config_override, their chain, and `ckprep check`.

usage: test_plugins.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep] [-k SUBSTR] [-v]

Makes real checkpoints with torch.save in a temporary folder (an
AudioCraft-shaped training checkpoint, a PyTorch Lightning checkpoint, an
exported AudioCraft package whose xp.cfg is a YAML string, and a small one
with edge cases), runs `ckprep run` over them, and checks the result with
torch.load and OmegaConf against the same edit done in Python: exactly the
intended keys gone / renamed / added; every other tensor bit-identical
(dtype, shape, stride, offset, every byte of its storage) and sharing
storage with exactly the same tensors as before; `_metadata` consistent;
every output read by libzip too (--zipcheck, tests/tools/zipcheck: CRC-32
and header consistency, records as zipfile lists them);
the JSON record's changes; errors (exit 1, one stderr line naming the input
and the cause, nothing written); --dry-run; `ckprep check`.

The example configurations (examples/ beside this file, else conf/examples/,
or --examples DIR) are run and checked too.

Each check is one test.  Failures are printed with their reasons; the last
line is "N passed, M failed" and the exit status is 1 when M > 0.
Run with /usr/bin/python3 (python3-torch, python3-omegaconf, numpy).
"""
import argparse
import collections
import copy
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.nodes import FloatNode, IntegerNode, StringNode, BooleanNode

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# the example configs: tests/plugins/examples/, or conf/examples/ once moved there
EXAMPLES = next((d for d in (os.path.join(HERE, "examples"), os.path.join(REPO, "conf", "examples"))
                 if os.path.isdir(d)), os.path.join(HERE, "examples"))
sys.path.insert(0, os.path.join(REPO, "tests", "oracle"))
import compare  # noqa: E402  (libzip_check, shared with the oracle suite)

OD = collections.OrderedDict
RUN_TIMEOUT = 60

HEAD_W = "condition_provider.conditioners.style.output_proj.weight"
HEAD_B = "condition_provider.conditioners.style.output_proj.bias"


# ====================================================================
# checkpoints, made by torch.save
# ====================================================================

class TinyLM(torch.nn.Module):
    """MusicGen-shaped toy LM with tied weights: out.weight is emb.0.weight,
    and linears.1.weight (dropped by the fine-tune example) is it too."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.ModuleList(torch.nn.Embedding(8, 6) for _ in range(2))
        self.transformer = torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(6, 2, 12), 1)
        self.out_norm = torch.nn.LayerNorm(6)
        self.linears = torch.nn.ModuleList(torch.nn.Linear(6, 8) for _ in range(2))
        self.out = torch.nn.Linear(6, 8, bias=False)
        self.out.weight = self.emb[0].weight
        self.linears[1].weight = self.emb[0].weight


class MSSTFTD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 1, 3)])


class AdversarialLoss(torch.nn.Module):
    """As in AudioCraft: the adversary's optimizer state is saved inside the
    module's state dict, under PREFIX + 'optimizer'."""

    def __init__(self, adversary, optimizer):
        super().__init__()
        self.adversary = adversary
        self.optimizer = optimizer

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "optimizer"] = self.optimizer.state_dict()


class SmallLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
        self.bn = torch.nn.BatchNorm1d(4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight


class Wrapper(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lm = SmallLM()
        self.other = torch.nn.Linear(4, 3)


class LitModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = Wrapper()


def train_step(params, opt):
    loss = sum((p.float() ** 2).sum() for p in params)
    loss.backward()
    opt.step()


def half_copy(sd):
    """`{k: v.half()}` the way AudioCraft's best_state is made, but keeping
    the OrderedDict's _metadata and the tying (one copy per tensor)."""
    out, memo = OD(), {}
    for k, v in sd.items():
        key = (v.storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if key not in memo:
            memo[key] = v.detach().clone().half() if v.is_floating_point() else v.detach().clone()
        out[k] = memo[key]
    out._metadata = copy.deepcopy(sd._metadata)
    return out


def audiocraft_cfg():
    cfg = OmegaConf.create({
        "sample_rate": 32000,
        "channels": 1,
        "optim": {"lr": 1e-4, "optimizer": "adamw", "epochs": 10,
                  "adam": {"betas": [0.9, 0.95], "weight_decay": 0.1}},
        "dataset": {"batch_size": 8, "segment_duration": 30,
                    "train": {"path": "/data/train", "num_samples": 1000},
                    "valid": {"path": "/data/valid"}},
        "transformer_lm": {"dim": 6, "num_heads": 2, "card": 8},
        "conditioners": {"description": {"model": "t5", "t5": {"name": "t5-base"}}},
        "generate": {"lm": {"use_sampling": True, "top_k": 250}},
        "sampling_rate_ref": "${sample_rate}",
        "solver": "musicgen",
        "label": "0123",
        "continue_from": "???",
    })
    OmegaConf.set_struct(cfg, True)
    return cfg


def make_audiocraft(path):
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_step(model.parameters(), opt)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    state = model.state_dict()
    adversary = MSSTFTD()
    opt_d = torch.optim.Adam(adversary.parameters(), lr=3e-4)
    train_step(adversary.parameters(), opt_d)
    adv = torch.nn.ModuleDict({"msstftd": AdversarialLoss(adversary, opt_d)}).state_dict()
    ema = {k: v.detach().clone() for k, v in state.items()}
    ckpt = {
        "history": [{"train": {"loss": 3.1, "ce": 3.0}, "valid": {"loss": 3.2, "ce": 3.1}}],
        "xp.cfg": audiocraft_cfg(),
        "xp.sig": "9f3a1c2b",
        "best_state": {"model": half_copy(state)},
        "fsdp_best_state": {},
        "model": state,
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 0},
        "ema": {"state": collections.defaultdict(dict, {"model": ema}), "count": 3.0},
        "adv_losses": adv,
    }
    torch.save(ckpt, path)


def make_lightning(path):
    torch.manual_seed(1)
    lit = LitModule()
    opt = torch.optim.Adam(lit.parameters(), lr=1e-3)
    train_step(lit.parameters(), opt)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": lit.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {
            "monitor": "val_loss", "best_model_score": torch.tensor(0.5),
            "best_model_path": "/ckpt/epoch=3.ckpt"}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 1e-3, "model": {"dim": 4, "vocab": 10},
                             "name": "lm-small", "betas": [0.9, 0.999]},
    }
    torch.save(ckpt, path)


def make_export(path):
    torch.manual_seed(2)
    model = TinyLM()
    cfg = audiocraft_cfg()
    torch.save({
        "best_state": half_copy(model.state_dict()),
        "xp.cfg": OmegaConf.to_yaml(cfg),
        "version": "1.0.0",
        "exported": True,
    }, path)


def make_misc(path):
    torch.manual_seed(3)
    w = torch.randn(6, 4)
    flat = torch.randn(20)
    ints = torch.arange(24, dtype=torch.int64).reshape(4, 6)
    sd = OD()
    sd["w"] = w
    sd["wt"] = w.t()                 # non-contiguous view of w
    sd["head"] = flat[:5]
    sd["tail"] = flat[5:15]          # view at storage offset 5
    sd["h16"] = torch.randn(3, 4).half()
    sd["bf"] = torch.randn(3, 4).bfloat16()
    sd["ints"] = ints
    lin = torch.nn.Linear(4, 4)
    opt_a = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    train_step(lin.parameters(), opt_a)
    lin2 = torch.nn.Linear(3, 3)
    opt_b = torch.optim.Adam(lin2.parameters())
    train_step(lin2.parameters(), opt_b)
    cfg = OmegaConf.create({"x": FloatNode(1.5), "i": IntegerNode(3), "s": StringNode("abc"),
                            "b": BooleanNode(True), "y": 2.5, "n": 7})
    torch.save({
        "sd": sd,
        "opts": [opt_a.state_dict(), "keep-me"],
        "nested": {"deep": {"o": opt_b.state_dict(), "x": 1}},
        "lin": lin.state_dict(),
        "cfg": cfg,
        "plain": {"a": 1},
    }, path)


def make_oddkeys(path):
    """A state dict with keys that are not a str (not what state_dict()
    makes, but what a pickle may hold), and a top-level int key."""
    torch.manual_seed(4)
    sd = OD()
    sd["enc.w"] = torch.randn(2, 3)
    sd[7] = torch.randn(5)
    sd["dec.w"] = torch.randn(3)
    sd[(1, 2)] = torch.randn(2)
    sd[None] = torch.zeros(0)
    sd._metadata = OD([("", {"version": 1}), ("enc", {"version": 1}), ("dec", {"version": 1})])
    torch.save({"model": sd, 5: "an int key", "epoch": 1}, path)


# ====================================================================
# comparing loaded checkpoints
# ====================================================================

class New:
    """Placeholder in an expected graph for a tensor ckprep creates: only
    dtype and shape are known; it must be contiguous, offset 0, on a storage
    of its own holding exactly its elements."""

    def __init__(self, dtype, shape):
        self.dtype, self.shape = dtype, tuple(shape)


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def load(path):
    return torch.load(path, map_location="cpu")


def _untyped(s):
    return s._storage if isinstance(s, torch.storage.TypedStorage) else s


def storage_bytes(t):
    """Every byte of t's storage as a uint8 tensor."""
    u = _untyped(t.storage())
    return torch.empty(0, dtype=torch.uint8).set_(u, 0, (u.nbytes(),), (1,))


def tensor_bytes(t):
    """The bytes of t's elements, in order."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() \
        if t.element_size() == 1 else \
        t.detach().contiguous().reshape(-1).view(
            {2: torch.int16, 4: torch.int32, 8: torch.int64, 16: torch.int64}[t.element_size()]
        ).numpy().tobytes()


def pstr(path):
    return "/".join(str(p) for p in path) or "<root>"


def walk_tensors(obj, path=(), out=None):
    """{path: tensor} of every tensor in a loaded graph (New placeholders too)."""
    if out is None:
        out = {}
    if isinstance(obj, (torch.Tensor, New)):
        out[path] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk_tensors(v, path + (k,), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk_tensors(v, path + (i,), out)
    return out


def sharing(obj):
    """The partition of tensor paths by storage: a set of frozensets.  A New
    placeholder is a storage of its own."""
    groups = collections.defaultdict(set)
    for p, t in walk_tensors(obj).items():
        if isinstance(t, New):
            groups[("new", p)].add(p)
        else:
            u = _untyped(t.storage())
            groups[("st", u.data_ptr()) if u.nbytes() else ("empty", p)].add(p)
    return {frozenset(g) for g in groups.values()}


def describe_sharing(part):
    return sorted(sorted(pstr(p) for p in g) for g in part if len(g) > 1)


class Comparer:
    def __init__(self):
        self.errors = []

    def fail(self, path, msg):
        if len(self.errors) < 25:
            self.errors.append(f"{pstr(path)}: {msg}")

    def cmp(self, exp, act, path=()):
        if isinstance(exp, New):
            if not isinstance(act, torch.Tensor):
                return self.fail(path, f"expected a new tensor, got {type(act).__name__}")
            if act.dtype != exp.dtype or tuple(act.shape) != exp.shape:
                return self.fail(path, f"new tensor is {act.dtype}{tuple(act.shape)}, "
                                       f"expected {exp.dtype}{exp.shape}")
            if not act.is_contiguous() or act.storage_offset() != 0 or \
                    _untyped(act.storage()).nbytes() != act.numel() * act.element_size():
                self.fail(path, "new tensor is not alone and contiguous on its storage")
            return
        if type(exp) is not type(act):
            return self.fail(path, f"type {type(act).__name__}, expected {type(exp).__name__}")
        if isinstance(exp, torch.Tensor):
            return self.cmp_tensor(exp, act, path)
        if isinstance(exp, (DictConfig, ListConfig)):
            a = OmegaConf.to_container(exp, resolve=False)
            b = OmegaConf.to_container(act, resolve=False)
            if a != b:
                self.fail(path, f"config differs:\n      got      {b}\n      expected {a}")
            return
        if isinstance(exp, dict):
            ka, kb = list(exp.keys()), list(act.keys())
            if set(ka) != set(kb):
                self.fail(path, f"keys: missing {sorted(map(str, set(ka) - set(kb)))}, "
                                f"unexpected {sorted(map(str, set(kb) - set(ka)))}")
            if isinstance(exp, collections.defaultdict) and exp.default_factory != act.default_factory:
                self.fail(path, "defaultdict factory differs")
            ma, mb = getattr(exp, "_metadata", None), getattr(act, "_metadata", None)
            if (ma is None) != (mb is None):
                self.fail(path, f"_metadata {'missing' if mb is None else 'unexpected'}")
            elif ma is not None and dict(ma) != dict(mb):
                self.fail(path + ("_metadata",),
                          f"missing {sorted(set(ma) - set(mb))}, unexpected "
                          f"{sorted(set(mb) - set(ma))}, differing "
                          f"{sorted(k for k in set(ma) & set(mb) if ma[k] != mb[k])}")
            for k in ka:
                if k in act:
                    self.cmp(exp[k], act[k], path + (k,))
            return
        if isinstance(exp, (list, tuple)):
            if len(exp) != len(act):
                return self.fail(path, f"length {len(act)}, expected {len(exp)}")
            for i, (x, y) in enumerate(zip(exp, act)):
                self.cmp(x, y, path + (i,))
            return
        if isinstance(exp, float) and math.isnan(exp) and math.isnan(act):
            return
        if exp != act:
            self.fail(path, f"{act!r}, expected {exp!r}")

    def cmp_tensor(self, a, b, path):
        for what, x, y in (("dtype", a.dtype, b.dtype), ("shape", tuple(a.shape), tuple(b.shape)),
                           ("stride", a.stride(), b.stride()),
                           ("storage_offset", a.storage_offset(), b.storage_offset()),
                           ("storage bytes", _untyped(a.storage()).nbytes(),
                            _untyped(b.storage()).nbytes()),
                           ("requires_grad", a.requires_grad, b.requires_grad)):
            if x != y:
                return self.fail(path, f"{what} {y}, expected {x}")
        if not torch.equal(storage_bytes(a), storage_bytes(b)):
            self.fail(path, "storage bytes differ")


def compare_graph(exp, act):
    """Failures: structure/values/tensor bits, then storage sharing."""
    c = Comparer()
    c.cmp(exp, act)
    if not c.errors:
        pe, pa = sharing(exp), sharing(act)
        if pe != pa:
            c.errors.append(f"storage sharing differs: got {describe_sharing(pa)}, "
                            f"expected {describe_sharing(pe)} "
                            f"(singletons: got {sum(len(g) == 1 for g in pa)}, "
                            f"expected {sum(len(g) == 1 for g in pe)})")
    return c.errors


def assert_same(exp, act):
    errs = compare_graph(exp, act)
    check(not errs, "output differs from the Python edit:\n    " + "\n    ".join(errs))


# ====================================================================
# running ckprep
# ====================================================================

class Result:
    pass


class Env:
    def __init__(self, ckprep, work):
        self.ckprep = ckprep
        self.work = work
        self.n = 0
        self.inputs = {}

    def fresh(self, what):
        self.n += 1
        d = os.path.join(self.work, "runs", f"{self.n:03d}-{what}")
        os.makedirs(d)
        return d

    def conf(self, text, name="c"):
        d = self.fresh("conf")
        p = os.path.join(d, name + ".ini")
        with open(p, "w") as f:
            f.write(text)
        return p

    def cmd(self, args):
        try:
            p = subprocess.run([self.ckprep] + args, capture_output=True, stdin=subprocess.DEVNULL,
                               timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Fail(f"ckprep {' '.join(args)}: timed out")
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def run(self, conf_text, inp, dry=False, conf_path=None):
        """Run a chain over input `inp` (a key of self.inputs or a path) into a
        fresh, empty folder."""
        r = Result()
        r.inp = self.inputs.get(inp, inp)
        r.conf = conf_path or self.conf(conf_text)
        r.outdir = self.fresh("out")
        r.out = os.path.join(r.outdir, "out.th")
        args = ["run", "-c", r.conf, "-o", r.out] + (["--dry-run"] if dry else []) + [r.inp]
        r.rc, r.stdout, r.stderr = self.cmd(args)
        r.rec = None
        if r.rc == 0:
            try:
                r.rec = json.loads(r.stdout)
            except ValueError as e:
                raise Fail(f"stdout is not one JSON record ({e}): {r.stdout[:300]!r}")
        return r

    def ok(self, conf_text, inp, dry=False, conf_path=None):
        r = self.run(conf_text, inp, dry, conf_path)
        check(r.rc == 0, f"exit {r.rc}, expected 0; stderr: {r.stderr.strip()[:400]}")
        check(r.stdout.count("\n") == 1 and r.stdout.endswith("\n"),
              f"stdout is not exactly one line: {r.stdout[:300]!r}")
        rec = r.rec
        check(rec.get("status") == "ok", f"record status {rec.get('status')!r}")
        check(rec.get("input", {}).get("path") == r.inp, f"record input {rec.get('input')}")
        check(isinstance(rec.get("plugins"), list), "record has no plugins list")
        for p in rec["plugins"]:
            check(set(p) >= {"name", "label", "duration_ms", "changes"} and
                  isinstance(p["changes"], list) and isinstance(p["duration_ms"], int),
                  f"malformed plugin entry {p}")
        if dry:
            check(not os.path.exists(r.out), "--dry-run wrote the output")
            check(os.listdir(r.outdir) == [], f"--dry-run left files: {os.listdir(r.outdir)}")
            check("output" not in rec, f"--dry-run record has an output: {rec.get('output')}")
        else:
            check(os.path.isfile(r.out), "no output written")
            check(sorted(os.listdir(r.outdir)) == ["out.th"],
                  f"files beside the output: {sorted(os.listdir(r.outdir))}")
            check(rec.get("output", {}).get("path") == r.out, f"record output {rec.get('output')}")
            check(rec["output"].get("size") == os.path.getsize(r.out),
                  f"record output size {rec['output'].get('size')} != {os.path.getsize(r.out)}")
            errs = compare.libzip_check(r.out)
            check(not errs, "; ".join(errs))
        return r

    def fails(self, conf_text, inp, *causes, conf_path=None):
        """Exit 1, one stderr line naming the input and each cause, nothing
        written, no temporary file."""
        r = self.run(conf_text, inp, conf_path=conf_path)
        check(r.rc == 1, f"exit {r.rc}, expected 1; stderr: {r.stderr.strip()[:300]}; "
                         f"stdout: {r.stdout.strip()[:200]}")
        lines = r.stderr.splitlines()
        check(len(lines) == 1 and r.stderr.endswith("\n"),
              f"stderr is not exactly one line: {r.stderr!r}")
        line = lines[0]
        check(r.inp in line, f"stderr does not name the input {r.inp}: {line!r}")
        for c in causes:
            check(c.lower() in line.lower(), f"stderr does not mention {c!r}: {line!r}")
        check(not os.path.exists(r.out), "output written despite the failure")
        check(os.listdir(r.outdir) == [], f"files left in the output folder: {os.listdir(r.outdir)}")
        return r


def plugin_changes(rec, i=0):
    return rec["plugins"][i]["changes"]


def change_set(changes, *fields):
    return sorted(tuple(str(c.get(f)) for f in fields) for c in changes)


def check_changes(got, expected, *fields):
    g, e = change_set(got, *fields), sorted(tuple(str(x) for x in t) for t in expected)
    check(g == e, f"changes {fields}:\n      got      {g}\n      expected {e}")


def ini(*sections):
    """ini(('pipeline', {'chain': '...'}), ('head_init', [('seed', 7), ('add', '...')]))"""
    out = []
    for name, items in sections:
        out.append(f"[{name}]")
        for k, v in (items.items() if isinstance(items, dict) else items):
            out.append(f"{k} = {v}")
        out.append("")
    return "\n".join(out)


def chain1(plugin, items):
    return ini(("pipeline", {"chain": plugin}), (plugin, items))


# ====================================================================
# Python versions of the edits
# ====================================================================

def od_like(src, items, metadata=None):
    """A dict of src's type (OrderedDict keeps _metadata) with new items."""
    out = type(src)(items) if not isinstance(src, collections.defaultdict) else \
        collections.defaultdict(src.default_factory, items)
    md = getattr(src, "_metadata", None) if metadata is None else metadata
    if md is not None:
        out._metadata = md
    return out


def select(sd, keep=(), drop=(), strip=False):
    """prefix_select on a state dict and its _metadata."""
    def decide(name):
        p = None
        if keep:
            p = next((k for k in keep if name.startswith(k)), None)
            if p is None:
                return None
        if any(name.startswith(d) for d in drop):
            return None
        return name[len(p):] if strip and p else name

    items = [(decide(k), v) for k, v in sd.items()]
    md = getattr(sd, "_metadata", None)
    if md is not None:
        nmd = OD()
        for m, v in md.items():
            n = decide(m + ".")
            if n is not None:
                nmd[n[:-1] if n.endswith(".") else n] = v
        md = nmd
    return od_like(sd, [(k, v) for k, v in items if k is not None], md)


def rename_name(name, rules):
    for frm, to in rules:
        if frm.startswith("re:"):
            m = re.search(frm[3:], name)
            if m:
                name = name[:m.start()] + m.expand(to) + name[m.end():]
        elif name.startswith(frm):
            name = to + name[len(frm):]
    return name


def remap(sd, rules):
    """key_remap (no conflicts) on a state dict and its _metadata."""
    md = getattr(sd, "_metadata", None)
    if md is not None:
        nmd = OD()
        for m, v in md.items():
            # module m owns the keys starting with m + '.', the root those starting with ''
            n = rename_name(m + "." if m else "", rules)
            nmd[n[:-1] if n.endswith(".") else n] = v
        md = nmd
    return od_like(sd, [(rename_name(k, rules), v) for k, v in sd.items()], md)


def without(d, *keys):
    return od_like(d, [(k, v) for k, v in d.items() if k not in keys])


def edit_cfg(cfg, fn):
    with open_dict(cfg):
        fn(cfg)
    return cfg


# ---- the documented generator of head_init -------------------------------

M64 = (1 << 64) - 1


class Xoshiro:
    def __init__(self, seed, key):
        h = 0xcbf29ce484222325
        for b in key.encode():
            h = ((h ^ b) * 0x100000001b3) & M64
        x = seed ^ h
        self.s = []
        for _ in range(4):
            x = (x + 0x9e3779b97f4a7c15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
            z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    def next(self):
        s = self.s
        out = (self.rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self.rotl(s[3], 45)
        return out

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53


def reference_values(seed, key, init, n, a=0.0, b=1.0, fan_in=None):
    r = Xoshiro(seed, key)
    out = np.empty(n, dtype=np.float64)
    if init == "kaiming":
        a, b = -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in)
    for i in range(n):
        if init == "normal":
            u1 = 1.0 - r.uniform()
            u2 = r.uniform()
            out[i] = a + b * math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)
        else:
            out[i] = a + (b - a) * r.uniform()
    return out


def double_to_bf16_bits(d):
    """Round a double to bfloat16, to nearest even, directly."""
    res = np.empty(len(d), dtype=np.uint16)
    for i, x in enumerate(d):
        fr, ex = math.frexp(float(x))
        v = math.ldexp(round(math.ldexp(fr, 8)), ex - 8)   # round() is half-even
        res[i] = np.array([v], dtype=np.float32).view(np.uint32)[0] >> 16
    return res


# ====================================================================
# the tests
# ====================================================================

TESTS = []
E = None  # the Env


def test(fn):
    TESTS.append(fn)
    return fn


DEFAULT_STRIP = chain1("optimizer_strip", {})


# ---- optimizer_strip ------------------------------------------------------

def expected_default_strip(ck):
    for k in ("optimizer", "lr_scheduler", "scaler", "ema"):
        del ck[k]
    ck["adv_losses"] = without(ck["adv_losses"], "msstftd.optimizer")
    return ck


@test
def strip_default_audiocraft():
    """defaults: drop optimizer lr_scheduler scaler ema, detect the
    adversary's optimizer inside adv_losses; the file gets smaller"""
    r = E.ok(DEFAULT_STRIP, "ac")
    assert_same(expected_default_strip(load(r.inp)), load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "optimizer"), ("removed", "lr_scheduler"),
                                          ("removed", "scaler"), ("removed", "ema"),
                                          ("removed", "adv_losses/msstftd.optimizer")],
                  "op", "path")
    for c in plugin_changes(r.rec):
        check(isinstance(c.get("bytes"), int), f"change without a byte count: {c}")
    by = {c["path"]: c["bytes"] for c in plugin_changes(r.rec)}
    check(by["optimizer"] > 0 and by["ema"] > 0 and by["adv_losses/msstftd.optimizer"] > 0,
          f"removed byte counts should be positive: {by}")
    insize, outsize = os.path.getsize(r.inp), os.path.getsize(r.out)
    check(outsize < insize * 0.8, f"output {outsize} B is not clearly smaller than input {insize} B")
    check(r.rec["output"]["storage_bytes"] < sum(
        _untyped(t.storage()).nbytes() for t in
        {_untyped(t.storage()).data_ptr(): t for t in walk_tensors(load(r.inp)).values()}.values()),
        "storage bytes did not shrink")


@test
def strip_detect_no():
    """detect = no: only the listed keys go; adv_losses keeps its optimizer"""
    r = E.ok(chain1("optimizer_strip", {"drop": "optimizer", "detect": "no"}), "ac")
    ck = load(r.inp)
    del ck["optimizer"]
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "optimizer")], "op", "path")


@test
def strip_detect_only():
    """detect finds the top-level optimizer by shape; ema (has 'state' but no
    'param_groups') and lr_scheduler stay when not listed"""
    r = E.ok(chain1("optimizer_strip", {"drop": "scaler", "detect": "yes"}), "ac")
    ck = load(r.inp)
    del ck["scaler"], ck["optimizer"]
    ck["adv_losses"] = without(ck["adv_losses"], "msstftd.optimizer")
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "scaler"), ("removed", "optimizer"),
                                          ("removed", "adv_losses/msstftd.optimizer")],
                  "op", "path")


@test
def strip_lightning():
    """Lightning: optimizer_states' only entry is detected, the emptied list
    goes with its key; lr_schedulers dropped; the rest untouched"""
    r = E.ok(chain1("optimizer_strip", {"drop": "lr_schedulers"}), "pl")
    ck = load(r.inp)
    del ck["optimizer_states"], ck["lr_schedulers"]
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "lr_schedulers"),
                                          ("removed", "optimizer_states/0"),
                                          ("removed", "optimizer_states")], "op", "path")
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller")


@test
def strip_nested_and_partial_list():
    """an optimizer deep in nested dicts is found; a list keeps its other
    entries (and its key) when not emptied"""
    r = E.ok(chain1("optimizer_strip", {"drop": "nothere"}), "misc")
    ck = load(r.inp)
    ck["opts"] = ["keep-me"]
    del ck["nested"]["deep"]["o"]
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "opts/0"), ("removed", "nested/deep/o")],
                  "op", "path")


@test
def strip_empty_drop():
    """drop = (empty) drops no listed key; detect still works"""
    r = E.ok(chain1("optimizer_strip", {"drop": ""}), "ac")
    ck = load(r.inp)
    del ck["optimizer"]
    ck["adv_losses"] = without(ck["adv_losses"], "msstftd.optimizer")
    assert_same(ck, load(r.out))


@test
def strip_absent_keys():
    """absent drop keys are skipped: no change, everything identical"""
    r = E.ok(chain1("optimizer_strip", {"drop": "nothere alsonot", "detect": "no"}), "ac")
    assert_same(load(r.inp), load(r.out))
    check(plugin_changes(r.rec) == [], f"changes reported: {plugin_changes(r.rec)}")


@test
def strip_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    real = E.ok(DEFAULT_STRIP, "ac")
    dry = E.ok(DEFAULT_STRIP, "ac", dry=True)
    check(dry.rec.get("dry_run") is True, "record has no dry_run: true")
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


@test
def strip_not_a_dict_fails():
    """a checkpoint that is not a dict fails the job"""
    p = os.path.join(E.work, "inputs", "list.th")
    torch.save([torch.zeros(2)], p)
    E.fails(DEFAULT_STRIP, p, "not a dict")


# ---- prefix_select --------------------------------------------------------

@test
def select_drop_audiocraft():
    """drop linears.: those keys and modules go; the tied emb.0/out weights
    (also tied to the dropped linears.1.weight) still share one storage"""
    r = E.ok(chain1("prefix_select", {"drop": "linears."}), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"] = select(ck["best_state"]["model"], drop=["linears."])
    out = load(r.out)
    assert_same(ck, out)
    md = list(out["best_state"]["model"]._metadata)
    check(not any(m.startswith("linears") for m in md) and "out" in md and "" in md,
          f"_metadata: {md}")
    check_changes(plugin_changes(r.rec), [("removed", "best_state/model", k) for k in
                                          ("linears.0.weight", "linears.0.bias",
                                           "linears.1.weight", "linears.1.bias")],
                  "op", "state", "key")


@test
def select_keep_strip_lightning():
    """keep model.lm. with strip in a Lightning state_dict: a flat LM state
    dict that loads strictly into the bare module"""
    r = E.ok(chain1("prefix_select", {"state": "state_dict", "keep": "model.lm.",
                                      "strip": "yes"}), "pl")
    ck = load(r.inp)
    ck["state_dict"] = select(ck["state_dict"], keep=["model.lm."], strip=True)
    out = load(r.out)
    assert_same(ck, out)
    sd = out["state_dict"]
    check(list(sd._metadata) == ["", "emb", "layers", "layers.0", "layers.1", "bn", "head"],
          f"_metadata keys {list(sd._metadata)}")
    lm = SmallLM()
    lm.load_state_dict(sd, strict=True)
    check(torch.equal(lm.emb.weight.detach(), sd["emb.weight"]), "load_state_dict gave other values")
    check_changes(plugin_changes(r.rec),
                  [("removed", "model.other.weight", "None"), ("removed", "model.other.bias", "None")] +
                  [("renamed", k, k[len("model.lm."):]) for k in load(r.inp)["state_dict"]
                   if k.startswith("model.lm.")], "op", "key", "to")


@test
def select_keep_several_no_strip():
    """several keep prefixes, no strip: modules kept when NAME. starts with a
    keep prefix (the root module '' is not)"""
    r = E.ok(chain1("prefix_select", {"keep": "transformer. out_norm."}), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"] = select(ck["best_state"]["model"], keep=["transformer.", "out_norm."])
    out = load(r.out)
    assert_same(ck, out)
    md = list(out["best_state"]["model"]._metadata)
    check("" not in md and "out_norm" in md and "transformer.layers.0.norm1" in md
          and "emb" not in md, f"_metadata keys {md}")


@test
def select_keep_drop_strip():
    """keep, then drop inside it, with strip"""
    r = E.ok(chain1("prefix_select", {"keep": "transformer.", "drop": "transformer.layers.0.norm",
                                      "strip": "yes"}), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"] = select(ck["best_state"]["model"], keep=["transformer."],
                                       drop=["transformer.layers.0.norm"], strip=True)
    out = load(r.out)
    assert_same(ck, out)
    keys = list(out["best_state"]["model"])
    check(keys and all(k.startswith("layers.0.") and ".norm" not in k for k in keys), f"keys {keys}")


@test
def select_other_state_untouched():
    """only the named state dict changes: 'model' (fp32) and ema keep linears."""
    r = E.ok(chain1("prefix_select", {"state": "model", "drop": "linears. out."}), "ac")
    ck = load(r.inp)
    ck["model"] = select(ck["model"], drop=["linears.", "out."])
    assert_same(ck, load(r.out))


@test
def select_keep_nomatch_fails():
    """a keep prefix that matches nothing fails the job, naming it"""
    E.fails(chain1("prefix_select", {"keep": "transformer. transfromer_typo."}), "ac",
            "transfromer_typo.")


@test
def select_missing_state_fails():
    """state path that does not exist"""
    E.fails(chain1("prefix_select", {"state": "best_state/nosuch", "drop": "x"}), "ac",
            "best_state/nosuch")


@test
def select_state_not_dict_fails():
    """state path that is not a dict"""
    E.fails(chain1("prefix_select", {"state": "xp.sig", "drop": "x"}), "ac", "xp.sig")


@test
def select_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("prefix_select", {"state": "state_dict", "keep": "model.lm.", "strip": "yes"})
    real, dry = E.ok(conf, "pl"), E.ok(conf, "pl", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


def storages_of(obj):
    """{data_ptr: nbytes} of the distinct storages of the tensors in obj."""
    out = {}
    for t in walk_tensors(obj).values():
        u = _untyped(t.storage())
        out[u.data_ptr()] = u.nbytes()
    return out


def storage_records(path):
    """The data/N records of a torch.save zip."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        return sorted(n for n in z.namelist() if re.search(r"/data/[0-9]+$", n))


def check_root_output(r, expected):
    """torch.load of the output IS expected (an OrderedDict state dict):
    values, tensors bit for bit, sharing; only its storages are written."""
    out = load(r.out)
    check(type(out) is type(expected), f"output is a {type(out).__name__}, "
                                       f"expected a {type(expected).__name__}")
    assert_same(expected, out)
    want = storages_of(expected)
    recs = storage_records(r.out)
    check(len(recs) == len(want), f"{len(recs)} storage records written, the state dict "
                                  f"uses {len(want)}")
    check(r.rec["output"]["storages"] == len(want) and
          r.rec["output"]["storage_bytes"] == sum(want.values()),
          f"record output {r.rec['output']}, expected {len(want)} storages of "
          f"{sum(want.values())} bytes")
    return out


@test
def select_root_lightning():
    """root = state_dict alone: torch.load(out) is the Lightning state_dict
    (tensors bit for bit, the tied emb/head pair sharing one storage,
    _metadata kept); nothing else, and no other storage, is written"""
    r = E.ok(chain1("prefix_select", {"root": "state_dict"}), "pl")
    ck = load(r.inp)
    out = check_root_output(r, ck["state_dict"])
    check(any(len(g) > 1 for g in sharing(out)), "no tensors share a storage in the output")
    LitModule().load_state_dict(out, strict=True)
    dropped = sum(storages_of(ck).values()) - sum(storages_of(ck["state_dict"]).values())
    check(dropped > 0, "the input has nothing outside state_dict to drop")
    ch = plugin_changes(r.rec)
    check(len(ch) == 1 and ch[0].get("op") == "root" and ch[0].get("path") == "state_dict"
          and ch[0].get("removed") == [k for k in ck if k != "state_dict"]
          and ch[0].get("bytes") == dropped,
          f"changes {ch}, expected one root change removing {[k for k in ck if k != 'state_dict']} "
          f"and {dropped} bytes")
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller")


@test
def select_root_keep_strip():
    """keep model.lm., strip, root = state_dict: the output is the bare LM's
    state dict and loads strictly into it"""
    r = E.ok(chain1("prefix_select", {"state": "state_dict", "keep": "model.lm.",
                                      "strip": "yes", "root": "state_dict"}), "pl")
    ck = load(r.inp)
    out = check_root_output(r, select(ck["state_dict"], keep=["model.lm."], strip=True))
    SmallLM().load_state_dict(out, strict=True)
    check(list(out._metadata) == ["", "emb", "layers", "layers.0", "layers.1", "bn", "head"],
          f"_metadata keys {list(out._metadata)}")


@test
def select_root_nested_audiocraft():
    """root = best_state/model (AudioCraft, fp16 copy) after drop linears.:
    the tied emb.0/out weights still share one storage; the fp32 model,
    the optimizers and the config are gone"""
    r = E.ok(chain1("prefix_select", {"drop": "linears.", "root": "best_state/model"}), "ac")
    ck = load(r.inp)
    out = check_root_output(r, select(ck["best_state"]["model"], drop=["linears."]))
    check(out["out.weight"].data_ptr() == out["emb.0.weight"].data_ptr(),
          "out.weight and emb.0.weight no longer share their storage")


@test
def select_root_dry_run():
    """--dry-run with root writes nothing and reports the same changes"""
    conf = chain1("prefix_select", {"root": "state_dict"})
    real, dry = E.ok(conf, "pl"), E.ok(conf, "pl", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


@test
def select_root_fails():
    """root that does not exist, is not a dict, or is a tensor fails the job"""
    E.fails(chain1("prefix_select", {"root": "state_dict_ema"}), "pl", "state_dict_ema")
    E.fails(chain1("prefix_select", {"root": "epoch"}), "pl", "epoch", "not a dict")
    E.fails(chain1("prefix_select", {"root": "state_dict/model.other.bias"}), "pl",
            "model.other.bias", "not a dict")


@test
def check_root_outside_state():
    """keep with a state that root would drop is a configuration error"""
    check_rejects("[pipeline]\nchain = prefix_select\n\n[prefix_select]\nkeep = model.\n"
                  "root = state_dict\n", None, "best_state/model", "not inside root",
                  exact_line=False)


@test
def select_non_str_keys_keep():
    """keep: a state-dict key that is not a str (7, (1, 2), None) starts with
    no keep prefix: removed, and reported with its type and bytes"""
    r = E.ok(chain1("prefix_select", {"state": "model", "keep": "enc.", "strip": "yes"}), "odd")
    ck = load(r.inp)
    sd = ck["model"]
    ck["model"] = od_like(sd, [("w", sd["enc.w"])], OD([("", sd._metadata["enc"])]))
    assert_same(ck, load(r.out))
    ch = plugin_changes(r.rec)
    odd = sorted((c["op"], str(c["key"]), c.get("key_type"), c.get("bytes")) for c in ch
                 if c.get("key_type"))
    check(odd == [("removed", "7", "int", 20), ("removed", "<tuple>", "tuple", 8),
                  ("removed", "None", "NoneType", 0)],
          f"changes for the keys that are not a str: {odd}")
    check(any(c["key"] == 7 and type(c["key"]) is int for c in ch), "key 7 is not a JSON number")
    check(sum(c["op"] == "removed" for c in ch) == 4, f"changes {ch}")


@test
def select_non_str_keys_drop():
    """drop alone: a key that is not a str starts with no drop prefix: it
    stays, with its tensor, and the record says it was kept"""
    r = E.ok(chain1("prefix_select", {"state": "model", "drop": "dec."}), "odd")
    ck = load(r.inp)
    sd = ck["model"]
    ck["model"] = od_like(sd, [(k, v) for k, v in sd.items() if k != "dec.w"],
                          OD((k, v) for k, v in sd._metadata.items() if k != "dec"))
    out = load(r.out)
    assert_same(ck, out)
    check(list(out["model"]) == ["enc.w", 7, (1, 2), None], f"keys {list(out['model'])}")
    kept = sorted((str(c["key"]), c["key_type"]) for c in plugin_changes(r.rec)
                  if c["op"] == "kept")
    check(kept == [("7", "int"), ("<tuple>", "tuple"), ("None", "NoneType")], f"kept {kept}")


@test
def select_root_non_str_key():
    """root: a top-level key that is not a str is named as itself in the
    record (an int as a JSON number)"""
    r = E.ok(chain1("prefix_select", {"root": "model"}), "odd")
    ck = load(r.inp)
    check_root_output(r, ck["model"])
    ch = plugin_changes(r.rec)
    check(ch[0]["removed"] == [k for k in ck if k != "model"], f"removed {ch[0]['removed']}")


# ---- key_remap ------------------------------------------------------------

def remap_test(rules, inp="ac", state="best_state/model", extra=()):
    items = [("state", state)] + [("rename", f"{a} => {b}") for a, b in rules] + list(extra)
    r = E.ok(chain1("key_remap", items), inp)
    ck = load(r.inp)
    for st in state.split():
        parts = st.split("/")
        parent = ck
        for p in parts[:-1]:
            parent = parent[p]
        parent[parts[-1]] = remap(parent[parts[-1]], rules)
    out = load(r.out)
    assert_same(ck, out)
    return r, load(r.inp), out


@test
def remap_prefix():
    """emb. => embeddings.: keys and _metadata renamed, sharing kept"""
    r, ck, out = remap_test([("emb.", "embeddings.")])
    md = list(out["best_state"]["model"]._metadata)
    check("embeddings" in md and "embeddings.1" in md and "emb" not in md, f"_metadata {md}")
    check_changes(plugin_changes(r.rec), [("renamed", "emb.0.weight", "embeddings.0.weight"),
                                          ("renamed", "emb.1.weight", "embeddings.1.weight")],
                  "op", "key", "to")


@test
def remap_regex():
    r"""re: rules with \1 \2 groups, anchored and unanchored"""
    r, ck, out = remap_test([(r"re:^transformer\.layers\.([0-9]+)\.norm([12])\.", r"blocks.\1.ln_\2."),
                             ("re:self_attn", "attn")])
    sd = out["best_state"]["model"]
    check("blocks.0.ln_1.weight" in sd and "transformer.layers.0.attn.in_proj_weight" in sd,
          f"keys {list(sd)}")
    check("blocks.0.ln_2" in sd._metadata and "transformer.layers.0.attn.out_proj" in sd._metadata,
          f"_metadata {list(sd._metadata)}")


@test
def remap_rules_in_order():
    """rules apply in order to every key, each to the previous result"""
    r, ck, out = remap_test([("emb.", "a."), ("a.", "b."), (r"re:\.bias$", ".b")])
    sd = out["best_state"]["model"]
    check("b.0.weight" in sd and "out_norm.b" in sd and "a.0.weight" not in sd, f"keys {list(sd)}")


@test
def remap_add_prefix():
    r"""re:^ => model. adds a prefix to every key (a bare state dict made
    Lightning-shaped): the root module's _metadata entry '' becomes 'model'
    and every module m becomes model.m"""
    r, ck, out = remap_test([("re:^", "model.")], inp="ex", state="best_state")
    src, md = ck["best_state"]._metadata, list(out["best_state"]._metadata)
    want = ["model" if m == "" else "model." + m for m in src]
    check(sorted(md) == sorted(want), f"_metadata keys {md}, expected {want}")


@test
def remap_several_states():
    """state = best_state/model model: both renamed"""
    remap_test([("out_norm.", "final_norm.")], state="best_state/model model")


@test
def remap_swap():
    """renaming onto a key that is itself renamed away is no conflict"""
    r, ck, out = remap_test([("emb.0.", "emb.X."), ("emb.1.", "emb.0.")])
    a, b = ck["best_state"]["model"], out["best_state"]["model"]
    check(torch.equal(b["emb.0.weight"], a["emb.1.weight"]) and
          torch.equal(b["emb.X.weight"], a["emb.0.weight"]), "swapped values wrong")


@test
def remap_conflict_fails():
    """renaming onto a key that stays fails, naming both keys"""
    E.fails(chain1("key_remap", [("rename", "out. => emb.0.")]), "ac", "out.weight", "emb.0.weight")


@test
def remap_two_onto_one_fails():
    """two keys renamed to the same name fail, naming them"""
    E.fails(chain1("key_remap", [("rename", r"re:^emb\.[01]\. => emb.")]), "ac",
            "emb.0.weight", "emb.1.weight")


@test
def remap_on_conflict_replace():
    """on_conflict = replace: the renamed key replaces the existing one"""
    r = E.ok(chain1("key_remap", [("rename", "linears.0. => linears.1."),
                                  ("on_conflict", "replace")]), "ac")
    ck = load(r.inp)
    sd = ck["best_state"]["model"]
    items = [(k.replace("linears.0.", "linears.1."), v) for k, v in sd.items()
             if not k.startswith("linears.1.")]
    md = OD((m.replace("linears.0", "linears.1"), v) for m, v in sd._metadata.items()
            if m != "linears.1")
    ck["best_state"]["model"] = od_like(sd, items, md)
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec),
                  [("renamed", "linears.0.weight", "linears.1.weight"),
                   ("renamed", "linears.0.bias", "linears.1.bias"),
                   ("replaced", "linears.1.weight", "None"), ("replaced", "linears.1.bias", "None")],
                  "op", "key", "to")


@test
def remap_require_match_fails():
    """require_match = yes: a rule matching nothing fails, naming it"""
    E.fails(chain1("key_remap", [("rename", "emb. => e."), ("rename", "nosuch. => x."),
                                 ("require_match", "yes")]), "ac", "nosuch.")


@test
def remap_unmatched_reported():
    """without require_match, a rule matching nothing is reported; nothing changes"""
    r = E.ok(chain1("key_remap", [("rename", "nosuch. => x.")]), "ac")
    assert_same(load(r.inp), load(r.out))
    check_changes(plugin_changes(r.rec), [("unmatched", "nosuch.", "x.")], "op", "from", "to")


@test
def remap_missing_state_fails():
    """a state path that does not exist"""
    E.fails(chain1("key_remap", [("state", "best_state/model nosuch"),
                                 ("rename", "emb. => e.")]), "ac", "nosuch")


@test
def remap_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("key_remap", [("rename", "emb. => embeddings."), ("rename", "nosuch. => x.")])
    real, dry = E.ok(conf, "ac"), E.ok(conf, "ac", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


# ---- head_init ------------------------------------------------------------

SPEC_ADDS = [("add", f"{HEAD_W} float16 16x12 normal(0,0.02)"),
             ("add", f"{HEAD_B} float16 16 zeros")]


def head_test(adds, inp="ac", state="best_state/model", seed=7, extra=()):
    """Run head_init; check every other tensor is untouched and the new ones
    have the dtype and shape asked for.  Returns (record, output state dict)."""
    items = [("state", state), ("seed", seed)] + [("add", a) for a in adds] + list(extra)
    r = E.ok(chain1("head_init", items), inp)
    ck = load(r.inp)
    sd = ck
    for p in state.split("/"):
        sd = sd[p]
    added = []
    for a in adds:
        key, dt, shape, init = a.split()
        if shape.startswith("like:"):
            shape = tuple(sd[shape[5:]].shape)
        else:
            shape = tuple(int(x) for x in shape.split("x"))
        sd[key] = New(getattr(torch, dt), shape)
        added.append((key, dt, list(shape), a))
    out = load(r.out)
    assert_same(ck, out)
    osd = out
    for p in state.split("/"):
        osd = osd[p]
    check_changes(plugin_changes(r.rec), [("added", k, dt, s, a) for k, dt, s, a in added],
                  "op", "key", "dtype", "shape", "init")
    return r, osd


def stats(t):
    x = t.double()
    return x.mean().item(), x.std().item(), x.min().item(), x.max().item()


@test
def head_spec_example():
    """the spec's conditioner head: float16 16x12 normal(0,0.02) and zero bias;
    _metadata untouched, each new tensor on its own storage"""
    r, sd = head_test([a for _, a in SPEC_ADDS])
    w, b = sd[HEAD_W], sd[HEAD_B]
    check(torch.count_nonzero(b).item() == 0, "bias not all zeros")
    mean, std, _, _ = stats(w)
    check(abs(mean) < 0.006 and 0.015 < std < 0.025, f"normal(0,0.02): mean {mean:.5f} std {std:.5f}")
    check(len(torch.unique(w.float())) > 150, "weight values are not random")
    check(sd._metadata == load(r.inp)["best_state"]["model"]._metadata, "_metadata changed")


@test
def head_distributions():
    """normal / uniform / kaiming_uniform / xavier_uniform statistics"""
    adds = ["n.weight float32 256x128 normal(0.5,2)",
            "u.weight float64 128x128 uniform(-3,1)",
            "k.weight float32 64x256 kaiming_uniform",
            "kc.weight float32 32x8x3x3 kaiming_uniform",
            "x.weight float32 64x192 xavier_uniform",
            "bf.weight bfloat16 128x128 normal(0,1)",
            "h.weight float16 128x128 uniform(-0.5,0.5)"]
    r, sd = head_test(adds, inp="misc", state="sd", seed=11)
    errs = []

    def want(cond, msg):
        if not cond:
            errs.append(msg)

    m, s, lo, hi = stats(sd["n.weight"])
    want(abs(m - 0.5) < 0.06 and abs(s - 2) < 0.05, f"normal(0.5,2): mean {m:.4f} std {s:.4f}")
    m, s, lo, hi = stats(sd["u.weight"])
    want(lo >= -3 and hi < 1 and abs(m + 1) < 0.05 and abs(s - 4 / math.sqrt(12)) < 0.03
         and lo < -2.99 and hi > 0.99, f"uniform(-3,1): mean {m:.4f} std {s:.4f} range [{lo}, {hi}]")
    for key, bound in (("k.weight", 1 / math.sqrt(256)), ("kc.weight", 1 / math.sqrt(8 * 9)),
                       ("x.weight", math.sqrt(6 / (64 + 192)))):
        m, s, lo, hi = stats(sd[key])
        want(-bound <= lo and hi <= bound and lo < -0.97 * bound and hi > 0.97 * bound
             and abs(m) < 0.05 * bound and abs(s - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3),
             f"{key}: bound {bound:.5f}, got range [{lo:.5f}, {hi:.5f}] mean {m:.5f} std {s:.5f}")
    m, s, lo, hi = stats(sd["bf.weight"])
    want(abs(m) < 0.05 and abs(s - 1) < 0.03, f"bfloat16 normal(0,1): mean {m:.4f} std {s:.4f}")
    m, s, lo, hi = stats(sd["h.weight"])
    want(lo >= -0.5 and hi <= 0.5 and abs(m) < 0.02 and abs(s - 1 / math.sqrt(12)) < 0.01,
         f"float16 uniform(-0.5,0.5): mean {m:.4f} std {s:.4f} range [{lo}, {hi}]")
    check(not errs, "; ".join(errs))


@test
def head_constants_and_copies():
    """ones / const / zeros (also integer dtypes), like:KEY shapes, copy()
    with dtype conversion, copy() of non-contiguous and offset views"""
    adds = ["a float64 3x4 const(2.5)",
            "b bfloat16 like:w ones",
            "c int64 5 const(7)",
            "d int32 2x2 zeros",
            "e float32 like:h16 copy(h16)",
            "f float16 6x4 copy(w)",
            "g float32 4x6 copy(wt)",
            "h float64 10 copy(tail)",
            "i float32 3x4 copy(bf)",
            "j int64 4x6 copy(ints)",
            "k float32 2x12 copy(ints)",
            "l float32 1 const(-1e-3)"]
    r, sd = head_test(adds, inp="misc", state="sd")
    src = load(E.inputs["misc"])["sd"]
    exp = {"a": torch.full((3, 4), 2.5, dtype=torch.float64),
           "b": torch.ones(6, 4, dtype=torch.bfloat16),
           "c": torch.full((5,), 7, dtype=torch.int64),
           "d": torch.zeros(2, 2, dtype=torch.int32),
           "e": src["h16"].float(),
           "f": src["w"].half(),
           "g": src["wt"].contiguous(),
           "h": src["tail"].double(),
           "i": src["bf"].float(),
           "j": src["ints"].clone(),
           "k": src["ints"].float().reshape(2, 12),
           "l": torch.tensor([-1e-3], dtype=torch.float32)}
    bad = [k for k, v in exp.items() if tensor_bytes(v) != tensor_bytes(sd[k])]
    check(not bad, "wrong values: " + ", ".join(f"{k}: got {sd[k].flatten()[:6].tolist()} "
                                                f"expected {exp[k].flatten()[:6].tolist()}" for k in bad))


@test
def head_same_seed_same_bytes():
    """the same seed gives the same bytes (and the same output file); another
    seed gives other values"""
    conf = chain1("head_init", [("seed", 7)] + SPEC_ADDS +
                  [("add", "z.weight bfloat16 8x8 kaiming_uniform"),
                   ("add", "y.weight float64 5 uniform(0,1)")])
    r1, r2 = E.ok(conf, "ac"), E.ok(conf, "ac")
    r3 = E.ok(conf.replace("seed = 7", "seed = 8"), "ac")
    a, b, c = (load(r.out)["best_state"]["model"] for r in (r1, r2, r3))
    for k in (HEAD_W, "z.weight", "y.weight"):
        check(tensor_bytes(a[k]) == tensor_bytes(b[k]), f"{k}: second run with seed 7 differs")
        check(tensor_bytes(a[k]) != tensor_bytes(c[k]), f"{k}: seed 8 gives the same values as seed 7")
    with open(r1.out, "rb") as f1, open(r2.out, "rb") as f2:
        check(f1.read() == f2.read(), "two runs with the same seed wrote different files")


@test
def head_independent_streams():
    """each key has its own stream: adding other keys (before it, of any
    size) does not change a key's values"""
    one = E.ok(chain1("head_init", [("seed", 5), ("add", "k float32 40x30 normal(0,1)")]), "ac")
    two = E.ok(chain1("head_init", [("seed", 5), ("add", "a float32 1000 normal(0,1)"),
                                    ("add", "b float16 3x7 uniform(-1,1)"),
                                    ("add", "k float32 40x30 normal(0,1)")]), "ac")
    a = load(one.out)["best_state"]["model"]["k"]
    b = load(two.out)["best_state"]["model"]["k"]
    check(tensor_bytes(a) == tensor_bytes(b), "values of k changed when other keys were added")


def generator_case(dtype, init, n, a=0.0, b=1.0, fan_in=None, shape=None, key="gen.weight"):
    seed = 0x1234567890abcdef
    spec = {"normal": f"normal({a},{b})", "uniform": f"uniform({a},{b})",
            "kaiming": "kaiming_uniform"}[init]
    shape = shape or (n,)
    line = f"{key} {dtype} {'x'.join(map(str, shape))} {spec}"
    r = E.ok(chain1("head_init", [("state", "sd"), ("seed", seed), ("add", line)]), "misc")
    got = load(r.out)["sd"][key]
    ref = reference_values(seed, key, init, n, a, b, fan_in)
    if dtype == "float64":
        want = ref.view(np.uint64)
        have = got.numpy().view(np.uint64).reshape(-1)
    elif dtype == "float32":
        want = ref.astype(np.float32).view(np.uint32)
        have = got.numpy().view(np.uint32).reshape(-1)
    elif dtype == "float16":
        want = ref.astype(np.float16).view(np.uint16)       # numpy rounds double -> half directly
        have = got.view(torch.int16).numpy().view(np.uint16).reshape(-1)
    else:
        want = double_to_bf16_bits(ref)
        have = got.view(torch.int16).numpy().view(np.uint16).reshape(-1)
    diff = np.nonzero(want != have)[0]
    check(len(diff) == 0, f"{line}: {len(diff)} of {n} values differ from the documented generator "
                          f"(first at {diff[:3].tolist()}: got bits {have[diff[:3]].tolist()}, "
                          f"expected {want[diff[:3]].tolist()}, double value {ref[diff[:3]].tolist()})")


@test
def head_generator_float64_float32():
    """values are exactly the documented xoshiro256**/SplitMix64/FNV-1a/
    Box-Muller generator, rounded to float64 / float32"""
    generator_case("float64", "normal", 3000, 0.25, 1.5)
    generator_case("float32", "normal", 3000, 0.0, 0.02)
    generator_case("float64", "uniform", 2000, -2.0, 3.0)
    generator_case("float32", "kaiming", 64 * 32, fan_in=32, shape=(64, 32))


@test
def head_generator_float16_rounding():
    """float16 values are the documented double values rounded to float16,
    to nearest even (header of plugins/head_init.c: "values are computed in
    double and rounded to the dtype"), not rounded twice via float32"""
    generator_case("float16", "normal", 60000, 0.0, 1.0)


@test
def head_generator_bfloat16_rounding():
    """bfloat16 values are the documented double values rounded to bfloat16,
    to nearest even"""
    generator_case("bfloat16", "normal", 30000, 0.0, 1.0)


@test
def head_on_exists_error_fails():
    """adding an existing key fails by default, naming it"""
    E.fails(chain1("head_init", [("add", "out_norm.weight float32 6 ones")]), "ac", "out_norm.weight")


@test
def head_on_exists_skip():
    """on_exists = skip: unchanged, reported as skipped"""
    r = E.ok(chain1("head_init", [("add", "out_norm.weight float32 6 ones"),
                                  ("on_exists", "skip")]), "ac")
    assert_same(load(r.inp), load(r.out))
    check_changes(plugin_changes(r.rec), [("skipped", "out_norm.weight")], "op", "key")


@test
def head_on_exists_replace():
    """on_exists = replace: a new tensor in place of the old; tied keys keep
    sharing with each other"""
    r = E.ok(chain1("head_init", [("add", "out.weight float32 8x6 ones"),
                                  ("on_exists", "replace")]), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"]["out.weight"] = New(torch.float32, (8, 6))
    out = load(r.out)
    assert_same(ck, out)
    check(torch.equal(out["best_state"]["model"]["out.weight"], torch.ones(8, 6)), "not ones")
    check_changes(plugin_changes(r.rec), [("replaced", "out.weight", "float32")], "op", "key", "dtype")


@test
def head_lightning_state():
    """adding to a Lightning state_dict (an OrderedDict with _metadata)"""
    r, sd = head_test(["model.lm.extra.weight float32 like:model.lm.emb.weight xavier_uniform"],
                      inp="pl", state="state_dict", seed=3)
    check(sd._metadata == load(r.inp)["state_dict"]._metadata, "_metadata changed")


@test
def head_like_missing_fails():
    """like: a key that does not exist"""
    E.fails(chain1("head_init", [("add", "n float32 like:nosuch.weight zeros")]), "ac", "nosuch.weight")


@test
def head_copy_missing_fails():
    """copy() of a key that does not exist"""
    E.fails(chain1("head_init", [("add", "n float32 4 copy(nosuch.weight)")]), "ac", "nosuch.weight")


@test
def head_copy_numel_fails():
    """copy() of a tensor with another number of elements"""
    E.fails(chain1("head_init", [("add", "n float32 5x5 copy(out_norm.weight)")]), "ac",
            "out_norm.weight")


@test
def head_kaiming_1d_fails():
    """kaiming_uniform needs two dimensions"""
    E.fails(chain1("head_init", [("add", "n.weight float32 16 kaiming_uniform")]), "ac",
            "n.weight", "kaiming_uniform")


@test
def head_missing_state_fails():
    """state that does not exist"""
    E.fails(chain1("head_init", [("state", "best_state/nosuch"), ("add", "n float32 4 zeros")]),
            "ac", "best_state/nosuch")


@test
def head_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("head_init", [("seed", 7)] + SPEC_ADDS)
    real, dry = E.ok(conf, "ac"), E.ok(conf, "ac", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


# ---- config_override --------------------------------------------------------

SPEC_SETS = [("set", "optim.lr=1e-5"), ("set", "dataset.train.path=/new/dataset/path"),
             ("set", "+conditioners.style.model=chroma")]


def spec_cfg_edit(c):
    c.optim.lr = 1e-5
    c.dataset.train.path = "/new/dataset/path"
    c.conditioners.style = {"model": "chroma"}


def check_dictconfig(cfg, expected):
    """A DictConfig OmegaConf can use, equal to expected (a DictConfig)."""
    check(isinstance(cfg, DictConfig), f"config is a {type(cfg).__name__}, not a DictConfig")
    got = OmegaConf.to_container(cfg, resolve=False)
    want = OmegaConf.to_container(expected, resolve=False)
    check(got == want, f"config differs:\n      got      {got}\n      expected {want}")
    OmegaConf.to_yaml(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    check(cfg.sampling_rate_ref == cfg.sample_rate, "interpolation ${sample_rate} does not resolve")
    check(OmegaConf.is_missing(cfg, "continue_from"), "continue_from is no longer ???")
    check(OmegaConf.is_struct(cfg) == OmegaConf.is_struct(expected), "struct flag changed")
    again = copy.deepcopy(cfg)
    check(OmegaConf.to_container(again, resolve=False) == got, "deepcopy of the config differs")

    def parents(node, path):
        for k in node.keys() if isinstance(node, DictConfig) else range(len(node)):
            child = node._get_node(k)
            check(child._get_parent() is node, f"{path}{k}: _parent is not its container")
            check(child._key() == k, f"{path}{k}: node key is {child._key()!r}")
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_none() \
                    and not child._is_missing() and not child._is_interpolation():
                parents(child, f"{path}{k}.")
    parents(cfg, "")


@test
def config_dictconfig_spec():
    """pickled DictConfig: the spec's three overrides; OmegaConf loads it,
    lr == 1e-05, interpolations resolve, to_yaml works, parents are right"""
    r = E.ok(chain1("config_override", SPEC_SETS), "ac")
    ck = load(r.inp)
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], spec_cfg_edit)
    out = load(r.out)
    assert_same(ck, out)
    cfg = out["xp.cfg"]
    check_dictconfig(cfg, ck["xp.cfg"])
    check(cfg.optim.lr == 1e-05 and type(cfg.optim.lr) is float, f"optim.lr = {cfg.optim.lr!r}")
    check(cfg.conditioners.style.model == "chroma", "conditioners.style.model")
    with open_dict(cfg):
        cfg.conditioners.style.extra = 1   # the new node is a live DictConfig
    check_changes(plugin_changes(r.rec), [("set", "optim.lr", 0.0001, 1e-05),
                                          ("set", "dataset.train.path", "/data/train",
                                           "/new/dataset/path"),
                                          ("added", "conditioners.style.model", None, "chroma")],
                  "op", "key", "old", "new")


VALUE_SETS = [
    ("++extra.f=1e-5", 1e-5), ("++extra.g=2.5e3", 2500.0), ("++extra.b=true", True),
    ("++extra.bf=false", False), ("++extra.n=null", None), ("++extra.s='123'", "123"),
    ('++extra.q="true"', "true"), ("++extra.l=[1, two, 3.5]", [1, "two", 3.5]),
    ("++extra.d={k: v, n: 2}", {"k": "v", "n": 2}), ("++extra.int=42", 42),
    ("++extra.neg=-3", -3), ("++extra.str=hello world", "hello world"),
    ("++extra.i=${sample_rate}", "${sample_rate}"), ("++extra.path=/a/b:c", "/a/b:c"),
]


@test
def config_value_types():
    """values typed as YAML: floats (1e-5), bools, null, quoted strings stay
    strings, flow lists and dicts, ${...} kept verbatim and resolving;
    changing existing keys to other kinds of values"""
    sets = [("set", s) for s, _ in VALUE_SETS] + [
        ("set", "optim.epochs=20"), ("set", "generate.lm.use_sampling=false"),
        ("set", "optim.adam.betas=[0.8, 0.99]"), ("set", "dataset.valid={path: /v2, n: 3}"),
        ("set", "transformer_lm=null")]
    r = E.ok(chain1("config_override", sets), "ac")
    ck = load(r.inp)

    def edit(c):
        c.extra = {}
        for s, v in VALUE_SETS:
            c.extra[s.split("=", 1)[0].split(".")[1]] = v
        c.optim.epochs = 20
        c.generate.lm.use_sampling = False
        c.optim.adam.betas = [0.8, 0.99]
        c.dataset.valid = {"path": "/v2", "n": 3}
        c.transformer_lm = None
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], edit)
    out = load(r.out)
    assert_same(ck, out)
    cfg = out["xp.cfg"]
    check_dictconfig(cfg, ck["xp.cfg"])
    bad = [f"{s}: {type(cfg.extra[s.split('=')[0][8:]]).__name__}" for s, v in VALUE_SETS
           if v is not None and not str(v).startswith("${") and type(cfg.extra[s.split("=")[0][8:]]) is not type(v)
           and not isinstance(v, (list, dict))]
    check(not bad, f"wrong types: {bad}")
    check(OmegaConf.to_container(cfg.extra, resolve=False)["i"] == "${sample_rate}",
          "extra.i is not kept verbatim")
    check(cfg.extra.i == 32000, f"extra.i resolves to {cfg.extra.i!r}")


@test
def config_remove():
    """~key removes keys and subtrees"""
    r = E.ok(chain1("config_override", [("set", "~dataset.valid"), ("set", "~optim.adam.weight_decay"),
                                        ("set", "~solver")]), "ac")
    ck = load(r.inp)

    def edit(c):
        del c.dataset["valid"]
        del c.optim.adam["weight_decay"]
        del c["solver"]
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], edit)
    out = load(r.out)
    assert_same(ck, out)
    check_dictconfig(out["xp.cfg"], ck["xp.cfg"])
    check_changes(plugin_changes(r.rec), [("removed", "dataset.valid"), ("removed",
                  "optim.adam.weight_decay"), ("removed", "solver")], "op", "key")


@test
def config_typed_nodes():
    """typed nodes convert as OmegaConf does: FloatNode gets 3 -> 3.0,
    IntegerNode an int, StringNode a str, BooleanNode a bool"""
    r = E.ok(chain1("config_override", [("config", "cfg"), ("set", "x=3"), ("set", "i=-4"),
                                        ("set", "s=12"), ("set", "b=false")]), "misc")
    cfg = load(r.out)["cfg"]
    got = {k: (cfg[k], type(cfg[k]).__name__) for k in ("x", "i", "s", "b")}
    want = {"x": (3.0, "float"), "i": (-4, "int"), "s": ("12", "str"), "b": (False, "bool")}
    check(got == want, f"got {got}, expected {want}")
    check(type(cfg._get_node("x")).__name__ == "FloatNode", "x is no longer a FloatNode")
    with open_dict(cfg):
        try:
            cfg.x = "not a float"
            raise Fail("the FloatNode accepts a string after the edit")
        except Fail:
            raise
        except Exception:
            pass


@test
def config_typed_node_interpolation():
    """an interpolation can be set into a typed node, as in OmegaConf
    (cfg.x = '${y}' on a FloatNode is allowed)"""
    r = E.ok(chain1("config_override", [("config", "cfg"), ("set", "x=${y}"),
                                        ("set", "i=${n}")]), "misc")
    cfg = load(r.out)["cfg"]
    check(cfg.x == 2.5 and cfg.i == 7, f"x = {cfg.x!r}, i = {cfg.i!r}")


@test
def config_typed_node_bad_value_fails():
    """a value a typed node refuses fails the job"""
    E.fails(chain1("config_override", [("config", "cfg"), ("set", "x=abc")]), "misc", "x=abc")


@test
def config_typo_fails():
    """key=value on a key that does not exist fails, naming it"""
    E.fails(chain1("config_override", [("set", "optim.lrr=1e-5")]), "ac", "lrr")


@test
def config_typo_parent_fails():
    """key=value below a parent that does not exist fails"""
    E.fails(chain1("config_override", [("set", "optimm.lr=1e-5")]), "ac", "optimm")


@test
def config_add_existing_fails():
    """+key=value on an existing key fails"""
    E.fails(chain1("config_override", [("set", "+optim.lr=1")]), "ac", "optim.lr")


@test
def config_remove_missing_fails():
    """~key on a missing key fails"""
    E.fails(chain1("config_override", [("set", "~optim.nosuch")]), "ac", "nosuch")


@test
def config_not_mapping_fails():
    """a path through a leaf fails"""
    E.fails(chain1("config_override", [("set", "optim.lr.sub=1")]), "ac", "optim.lr.sub")


@test
def config_missing_config_fails():
    """config = a key that is not in the checkpoint"""
    E.fails(chain1("config_override", [("config", "nosuch.cfg"), ("set", "a=1")]), "ac", "nosuch.cfg")


@test
def config_not_a_config_fails():
    """config = a string that is not a YAML mapping / a tensor"""
    E.fails(chain1("config_override", [("config", "xp.sig"), ("set", "a=1")]), "ac", "xp.sig")


def yaml_paths(d, prefix=""):
    out = []
    for k, v in d.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out += yaml_paths(v, prefix + str(k) + ".")
    return out


@test
def config_yaml_string():
    """exported package: xp.cfg stays a YAML string, key order kept, types
    kept ('0123' stays a str), interpolations and ??? kept"""
    r = E.ok(chain1("config_override", SPEC_SETS + [("set", "~dataset.valid"),
                                                    ("set", "++optim.betas=[0.9, 0.95]")]), "ex")
    ck = load(r.inp)
    src = ck["xp.cfg"]
    cfg = OmegaConf.create(src)
    OmegaConf.set_struct(cfg, True)

    def edit(c):
        spec_cfg_edit(c)
        del c.dataset["valid"]
        c.optim.betas = [0.9, 0.95]
    edit_cfg(cfg, edit)
    out = load(r.out)
    text = out["xp.cfg"]
    check(isinstance(text, str), f"xp.cfg is a {type(text).__name__}, not a str")
    got = OmegaConf.create(text)
    OmegaConf.set_struct(got, True)
    check_dictconfig(got, cfg)
    check(got.optim.lr == 1e-05 and type(got.optim.lr) is float, f"optim.lr = {got.optim.lr!r}")
    check(got.label == "0123", f"label = {got.label!r}")
    plain = yaml.safe_load(src)       # the same edit on plain dicts, which keep order
    plain["optim"]["lr"] = 1e-5
    plain["dataset"]["train"]["path"] = "/new/dataset/path"
    plain["conditioners"]["style"] = {"model": "chroma"}
    del plain["dataset"]["valid"]
    plain["optim"]["betas"] = [0.9, 0.95]
    want_order = yaml_paths(plain)
    got_order = yaml_paths(yaml.safe_load(text))
    check(got_order == want_order, f"key order:\n      got      {got_order}\n      expected {want_order}")
    ck["xp.cfg"] = text
    assert_same(ck, out)


@test
def config_yaml_file_and_interpolation():
    """YAML-string config: file = merge, ++ with an interpolation and typed
    values; OmegaConf reads the result with the right types"""
    d = E.fresh("yaml")
    p = os.path.join(d, "merge.yaml")
    with open(p, "w") as f:
        f.write("optim:\n  lr: 2.0e-4\n  warmup: 100\ndataset:\n  test: {path: /data/test}\n")
    r = E.ok(chain1("config_override", [("file", p), ("set", "++extra.i=${sample_rate}"),
                                        ("set", "++extra.s='0042'"), ("set", "++extra.f=3e-4"),
                                        ("set", "++extra.b=false"), ("set", "++extra.n=null"),
                                        ("set", "++extra.l=[a, 1]")]), "ex")
    ck = load(r.inp)
    cfg = OmegaConf.create(ck["xp.cfg"])
    cfg.optim.lr = 2e-4
    cfg.optim.warmup = 100
    cfg.dataset.test = {"path": "/data/test"}
    cfg.extra = {"i": "${sample_rate}", "s": "0042", "f": 3e-4, "b": False, "n": None, "l": ["a", 1]}
    out = load(r.out)
    check(isinstance(out["xp.cfg"], str), "xp.cfg is no longer a str")
    got = OmegaConf.create(out["xp.cfg"])
    check_dictconfig(got, cfg)
    check(got.extra.i == 32000, f"extra.i = {got.extra.i!r}")
    ck["xp.cfg"] = out["xp.cfg"]
    assert_same(ck, out)


@test
def config_plain_dict():
    """Lightning hyper_parameters, a plain dict, stays plain"""
    r = E.ok(chain1("config_override", [("config", "hyper_parameters"), ("set", "lr=1e-5"),
                                        ("set", "+optim.name=adam"), ("set", "~betas"),
                                        ("set", "model.dim=8"), ("set", "++name='007'")]), "pl")
    ck = load(r.inp)
    hp = ck["hyper_parameters"]
    hp["lr"] = 1e-5
    hp["optim"] = {"name": "adam"}
    del hp["betas"]
    hp["model"]["dim"] = 8
    hp["name"] = "007"
    out = load(r.out)
    assert_same(ck, out)
    check(type(out["hyper_parameters"]["lr"]) is float, "lr is not a float")


@test
def config_file_merge():
    """file = PATH.yaml is deep-merged first, then the set lines apply"""
    d = E.fresh("yaml")
    p = os.path.join(d, "merge.yaml")
    with open(p, "w") as f:
        f.write("optim:\n  lr: 2.0e-4\n  warmup: 100\n  adam:\n    betas: [0.5, 0.6]\n"
                "dataset:\n  batch_size: 4\n  test: {path: /data/test}\nnewtop: hello\n")
    r = E.ok(chain1("config_override", [("file", p), ("set", "optim.lr=1e-5"),
                                        ("set", "optim.warmup=200")]), "ac")
    ck = load(r.inp)

    def edit(c):
        c.optim.lr = 1e-5
        c.optim.warmup = 200
        c.optim.adam.betas = [0.5, 0.6]
        c.dataset.batch_size = 4
        c.dataset.test = {"path": "/data/test"}
        c.newtop = "hello"
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], edit)
    out = load(r.out)
    assert_same(ck, out)
    check_dictconfig(out["xp.cfg"], ck["xp.cfg"])


@test
def config_file_missing_fails():
    """file = a file that does not exist"""
    p = os.path.join(E.work, "no-such-dir", "missing.yaml")
    E.fails(chain1("config_override", [("file", p)]), "ac", "missing.yaml")


@test
def config_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("config_override", SPEC_SETS)
    real, dry = E.ok(conf, "ac"), E.ok(conf, "ac", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


# ---- config_override: ~key=value, Hydra's typing, big ints ----------------

@test
def config_delete_with_value():
    """~key=value removes key when it holds value (Python's ==: 1e-4 ==
    0.0001, 6.0 == 6, lists in order, dicts by items); the record has the
    old values"""
    sets = [("set", "~optim.lr=1e-4"), ("set", "~solver=musicgen"),
            ("set", "~optim.adam.betas=[0.9, 0.95]"), ("set", "~dataset.valid={path: /data/valid}"),
            ("set", "~generate.lm.use_sampling=true"), ("set", "~transformer_lm.dim=6.0"),
            ("set", "~sampling_rate_ref=${sample_rate}"), ("set", "~label='0123'")]
    r = E.ok(chain1("config_override", sets), "ac")
    ck = load(r.inp)

    def edit(c):
        del c.optim["lr"], c["solver"], c.optim.adam["betas"], c.dataset["valid"]
        del c.generate.lm["use_sampling"], c.transformer_lm["dim"], c["label"]
        del c["sampling_rate_ref"]
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], edit)
    out = load(r.out)
    assert_same(ck, out)
    check(not out["xp.cfg"].get("solver") and OmegaConf.is_missing(out["xp.cfg"], "continue_from"),
          "config after the removals")
    check_changes(plugin_changes(r.rec),
                  [("removed", "optim.lr", 0.0001), ("removed", "solver", "musicgen"),
                   ("removed", "optim.adam.betas", "<container>"),
                   ("removed", "dataset.valid", "<container>"),
                   ("removed", "generate.lm.use_sampling", True),
                   ("removed", "transformer_lm.dim", 6),
                   ("removed", "sampling_rate_ref", "${sample_rate}"),
                   ("removed", "label", "0123")], "op", "key", "old")


@test
def config_delete_with_value_mismatch_fails():
    """~key=value on a key holding another value fails the job, naming the
    key, its value and the expected one; nothing is written"""
    E.fails(chain1("config_override", [("set", "~optim.lr=1e-3")]), "ac",
            "'optim.lr' is 0.0001, not 0.001")
    E.fails(chain1("config_override", [("set", "~label=123")]), "ac",
            "'label' is '0123', not 123")
    E.fails(chain1("config_override", [("set", "~optim.adam.betas=[0.95, 0.9]")]), "ac",
            "is [0.9, 0.95], not [0.95, 0.9]")
    # an earlier override applied, then the check fails: still nothing written
    E.fails(chain1("config_override", [("set", "optim.lr=1e-5"), ("set", "~solver=other")]),
            "ac", "'solver' is 'musicgen', not 'other'")
    E.fails(chain1("config_override", [("config", "hyper_parameters"),
                                        ("set", "~model={dim: 4}")]), "pl",
            "'model' is {'dim': 4, 'vocab': 10}, not {'dim': 4}")
    E.fails(chain1("config_override", [("set", "~optim.lr=2e-4")]), "ex",
            "'optim.lr' is 0.0001, not 0.0002")


@test
def config_delete_with_value_yaml_and_dict():
    """~key=value in a YAML-string config and in a plain dict"""
    r = E.ok(chain1("config_override", [("set", "~optim.lr=0.0001"), ("set", "~label='0123'"),
                                        ("set", "~dataset.train={num_samples: 1000, path: /data/train}"),
                                        ("set", "~continue_from")]), "ex")
    ck = load(r.inp)
    cfg = OmegaConf.create(ck["xp.cfg"])
    del cfg.optim["lr"], cfg["label"], cfg.dataset["train"], cfg["continue_from"]
    got = OmegaConf.create(load(r.out)["xp.cfg"])
    check(OmegaConf.to_container(got) == OmegaConf.to_container(cfg),
          f"config {OmegaConf.to_container(got)}")
    r = E.ok(chain1("config_override", [("config", "hyper_parameters"), ("set", "~lr=1e-3"),
                                        ("set", "~betas=[0.9, 0.999]"), ("set", "~model.dim=4.0"),
                                        ("set", "~name=lm-small")]), "pl")
    ck = load(r.inp)
    hp = ck["hyper_parameters"]
    del hp["lr"], hp["betas"], hp["model"]["dim"], hp["name"]
    assert_same(ck, load(r.out))


# (set-line text, the Python value Hydra's override grammar gives it:
# hydra/grammar/OverrideLexer.g4 and overrides_visitor.py, by hand since
# Hydra is not installed)
HYDRA_VALUES = [
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("Off", "Off"), ("y", "y"),
    ("true", True), ("False", False), ("TRUE", True), ("null", None), ("NULL", None),
    ("inf", math.inf), ("-inf", -math.inf), ("+INF", math.inf), ("nan", math.nan),
    ("NaN", math.nan), ("1e5", 100000.0), ("1E-3", 0.001), ("1.e5", 1e5), (".5", 0.5),
    ("+.5", 0.5), (".5e3", 500.0), ("1.5_0", 1.5), ("1_0.5", 10.5), ("-3.", -3.0),
    ("1_000", 1000), ("-0", 0), ("+7", 7), ("42", 42),
    ("0x10", "0x10"), ("007", "007"), ("1__0", "1__0"), (".inf", ".inf"), (".nan", ".nan"),
    ("1:30", "1:30"), ("1e5x", "1e5x"), ("infinity", "infinity"), ("1.2.3", "1.2.3"),
    ("'yes'", "yes"), ('"1e5"', "1e5"), ("'null'", "null"), ("", ""),
    ("hello world", "hello world"), ("/a/b:c", "/a/b:c"),
    ("[yes, 1, 0x1, null, 2.5]", ["yes", 1, "0x1", None, 2.5]),
    ("{on: No, k: 1e5}", {"on": "No", "k": 1e5}),
    ("18446744073709551616", 2 ** 64), ("-9223372036854775809", -2 ** 63 - 1),
    ("9223372036854775807", 2 ** 63 - 1), ("-9223372036854775808", -2 ** 63),
    ("1" + "0" * 200, 10 ** 200),
]


def same_value(got, want):
    """== with the type (True is not 1), nan equal to nan, containers deep."""
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, (list, dict)):
        if type(got) is not type(want) or len(got) != len(want):
            return False
        if isinstance(want, list):
            return all(same_value(g, w) for g, w in zip(got, want))
        return set(got) == set(want) and all(same_value(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def typing_sets(prefix):
    return [("set", f"++{prefix}k{i}={text}") for i, (text, _) in enumerate(HYDRA_VALUES)]


def check_typing(values, where):
    bad = [f"{text!r}: got {values.get(f'k{i}', '<missing>')!r}, expected {want!r}"
           for i, (text, want) in enumerate(HYDRA_VALUES)
           if not same_value(values.get(f"k{i}", "<missing>"), want)]
    check(not bad, f"{where}: " + "; ".join(bad))


@test
def config_hydra_typing_dictconfig():
    """plain scalars of a set line are typed as Hydra's grammar types them
    (yes is a str, TRUE a bool, inf a float, 0x10 a str, 1_000 an int,
    key= the empty string, 2**64 an int); OmegaConf reads the pickled
    DictConfig back with exactly those values"""
    r = E.ok(chain1("config_override", typing_sets("extra.")), "ac")
    cfg = load(r.out)["xp.cfg"]
    check_dictconfig(cfg, cfg)
    check_typing(OmegaConf.to_container(cfg.extra, resolve=False), "DictConfig")
    check(type(cfg._get_node("extra")._get_node("k0")).__name__ == "AnyNode", "not an AnyNode")


@test
def config_hydra_typing_yaml_string():
    """the same values written into a YAML-string config read back, with
    OmegaConf's YAML loader, as Hydra typed them ('yes', '0x10', '' quoted,
    inf as .inf, big ints as digits)"""
    r = E.ok(chain1("config_override", typing_sets("extra.")), "ex")
    text = load(r.out)["xp.cfg"]
    check(isinstance(text, str), "xp.cfg is no longer a YAML string")
    cfg = OmegaConf.create(text)
    check_typing(OmegaConf.to_container(cfg.extra, resolve=False), "YAML string")
    check(yaml.safe_load(text)["extra"]["k0"] == "yes", "PyYAML reads k0 as another type")


@test
def config_hydra_typing_plain_dict():
    """the same values in a plain dict (Lightning's hyper_parameters)"""
    r = E.ok(chain1("config_override", [("config", "hyper_parameters")] + typing_sets("")), "pl")
    check_typing(load(r.out)["hyper_parameters"], "plain dict")


@test
def config_big_ints():
    """an int beyond int64 stays an int (pickled as LONG1) in a DictConfig,
    a plain dict and a YAML string; in the record it is a JSON number;
    ~key=value compares it exactly"""
    big, neg = 2 ** 100 + 1, -(2 ** 70)
    r = E.ok(chain1("config_override", [("set", f"++extra.big={big}"), ("set", f"++extra.neg={neg}"),
                                        ("set", f"++extra.l=[{big}, 1]"),
                                        ("set", f"+extra.gone={big}"),
                                        ("set", f"~extra.gone={big}")]), "ac")
    cfg = load(r.out)["xp.cfg"]
    check(cfg.extra.big == big and type(cfg.extra.big) is int, f"extra.big {cfg.extra.big!r}")
    check(cfg.extra.neg == neg and list(cfg.extra.l) == [big, 1] and "gone" not in cfg.extra,
          f"extra {OmegaConf.to_container(cfg.extra)}")
    adds = {c["key"]: c.get("new") for c in plugin_changes(r.rec) if c["op"] == "added"}
    check(adds.get("extra.big") == big and adds.get("extra.neg") == neg, f"record {adds}")
    for conf, inp, get in (
            ([("config", "hyper_parameters"), ("set", f"++big={big}"), ("set", f"lr={neg}")], "pl",
             lambda o: (o["hyper_parameters"]["big"], o["hyper_parameters"]["lr"])),
            ([("set", f"++big={big}"), ("set", f"optim.lr={neg}")], "ex",
             lambda o: (OmegaConf.create(o["xp.cfg"]).big, OmegaConf.create(o["xp.cfg"]).optim.lr))):
        got = get(load(E.ok(chain1("config_override", conf), inp).out))
        check(got == (big, neg) and all(type(x) is int for x in got), f"{inp}: {got!r}")
    E.fails(chain1("config_override", [("set", f"+extra.x={big}"), ("set", f"~extra.x={big + 1}")]),
            "ac", f"is {big}, not {big + 1}")


# (node, set-line text, what Hydra gives OmegaConf): OmegaConf itself says
# what the typed node makes of it, or that it refuses it
TYPED_CASES = [
    ("x", "7", 7), ("x", "'1.5'", "1.5"), ("x", "inf", math.inf), ("x", "'-Infinity'", "-Infinity"),
    ("x", "' 1_0.5 '", " 1_0.5 "), ("x", "yes", "yes"), ("x", "true", True),
    ("x", "18446744073709551617", 2 ** 64 + 1), ("x", "1" + "0" * 400, 10 ** 400), ("x", ".inf", ".inf"),
    ("i", "'3'", "3"), ("i", "' -1_000 '", " -1_000 "), ("i", "'007'", "007"), ("i", "2.5", 2.5),
    ("i", "true", True), ("i", "0x10", "0x10"), ("i", "-18446744073709551616", -2 ** 64),
    ("i", "[1]", [1]), ("i", "null", None), ("i", "+7", 7),
    ("b", "2", 2), ("b", "yes", "yes"), ("b", "Off", "Off"), ("b", "' 0 '", " 0 "), ("b", "2.5", 2.5),
    ("b", "maybe", "maybe"), ("b", "18446744073709551616", 2 ** 64), ("b", "N", "N"), ("b", "0", 0),
    ("b", "'1'", "1"),
    ("s", "1e5", 1e5), ("s", "1e-5", 1e-5), ("s", "1e16", 1e16), ("s", "0.1", 0.1), ("s", "true", True),
    ("s", "+7", 7), ("s", "1_000", 1000), ("s", "5e-324", 5e-324), ("s", "123.456", 123.456),
    ("s", "-0.0", -0.0), ("s", "nan", math.nan), ("s", "[1]", [1]), ("s", "2.5e-7", 2.5e-7),
    ("s", str(2 ** 80), 2 ** 80), ("s", "yes", "yes"),
]


def _typed_case_test(key, text, value):
    def t():
        cfg = load(E.inputs["misc"])["cfg"]
        try:
            cfg[key] = value
            want = cfg[key]
        except Exception:       # ValidationError, or OverflowError for float(10**400)
            want = Fail
        conf = chain1("config_override", [("config", "cfg"), ("set", f"{key}={text}")])
        if want is Fail:
            E.fails(conf, "misc", f"{key}={text}", "not a valid value")
            return
        out = load(E.ok(conf, "misc").out)["cfg"]
        check(same_value(out[key], want), f"{key}={text}: got {out[key]!r}, OmegaConf gives {want!r}")
        check(type(out._get_node(key)) is type(cfg._get_node(key)), "node class changed")
    t.__name__ = f"config_typed_node_as_omegaconf: {key}={text[:30]}"
    t.__doc__ = f"{key}={text[:30]}: what OmegaConf's typed node makes of Hydra's {value!r:.30}"
    return t


for _k, _t, _v in TYPED_CASES:
    TESTS.append(_typed_case_test(_k, _t, _v))


@test
def check_set_tilde_value():
    """set = key=~ is refused (not a value in Hydra's grammar)"""
    text, _ = bad_section("config_override", ["set = a=~"])
    check_rejects(text, None, "'~' is not a value", exact_line=False)


# ---- the chain, the examples ----------------------------------------------

SPEC_CHAIN = ini(
    ("pipeline", {"chain": "optimizer_strip prefix_select key_remap head_init config_override"}),
    ("prefix_select", {"drop": "linears."}),
    ("key_remap", {"rename": "emb. => embeddings."}),
    ("head_init", [("seed", 7)] + SPEC_ADDS),
    ("config_override", SPEC_SETS))


def spec_expected(ck):
    """The fine-tune edit of the spec, done in Python; the random head is New."""
    ck = expected_default_strip(ck)
    sd = remap(select(ck["best_state"]["model"], drop=["linears."]), [("emb.", "embeddings.")])
    sd[HEAD_W] = New(torch.float16, (16, 12))
    sd[HEAD_B] = New(torch.float16, (16,))
    ck["best_state"]["model"] = sd
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], spec_cfg_edit)
    return ck


def check_spec_output(r):
    ck = spec_expected(load(r.inp))
    out = load(r.out)
    assert_same(ck, out)
    check_dictconfig(out["xp.cfg"], ck["xp.cfg"])
    sd = out["best_state"]["model"]
    check(torch.count_nonzero(sd[HEAD_B]).item() == 0, "head bias is not zeros")
    m, s, _, _ = stats(sd[HEAD_W])
    check(abs(m) < 0.006 and 0.015 < s < 0.025, f"head weight mean {m} std {s}")
    md = list(sd._metadata)
    check("embeddings.0" in md and not any(x.startswith(("emb.", "linears")) or x == "emb"
                                           for x in md), f"_metadata {md}")
    names = [p["name"] for p in r.rec["plugins"]]
    check(names == ["optimizer_strip", "prefix_select", "key_remap", "head_init",
                    "config_override"], f"record plugins {names}")
    check(all(p["changes"] for p in r.rec["plugins"]), "a plugin reported no change")
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller than input")


@test
def chain_spec_equals_python():
    """optimizer_strip prefix_select key_remap head_init config_override, as
    in the spec, equals the same edit done in Python (but the random head)"""
    check_spec_output(E.ok(SPEC_CHAIN, "ac"))


@test
def chain_dry_run():
    """--dry-run of the whole chain reports the same changes, writes nothing"""
    real, dry = E.ok(SPEC_CHAIN, "ac"), E.ok(SPEC_CHAIN, "ac", dry=True)
    strip = [[{k: v for k, v in p.items() if k != "duration_ms"} for p in rec["plugins"]]
             for rec in (real.rec, dry.rec)]
    check(strip[0] == strip[1], f"dry-run plugins {strip[1]} != {strip[0]}")


@test
def chain_late_failure_writes_nothing():
    """a failure in the last plugin, after others changed the model: exit 1,
    nothing written"""
    conf = SPEC_CHAIN.replace("set = optim.lr=1e-5", "set = optim.lrr=1e-5")
    E.fails(conf, "ac", "lrr")


@test
def chain_labels():
    """the same plugin twice, with labels: [key_remap:a] then [key_remap:b]"""
    conf = ini(("pipeline", {"chain": "key_remap:a key_remap:b"}),
               ("key_remap:a", {"rename": "emb. => e."}),
               ("key_remap:b", {"rename": "e. => f."}))
    r = E.ok(conf, "ac")
    check([(p["name"], p["label"]) for p in r.rec["plugins"]] == [("key_remap", "a"), ("key_remap", "b")],
          f"record plugins {r.rec['plugins']}")
    ck = load(r.inp)
    ck["best_state"]["model"] = remap(ck["best_state"]["model"], [("emb.", "f.")])
    assert_same(ck, load(r.out))


@test
def chain_repeatable():
    """running the output through the same chain again is possible, and
    idempotent for a config edit"""
    conf = chain1("config_override", [("set", "optim.lr=1e-5")])
    r1 = E.ok(conf, "ac")
    r2 = E.ok(conf, r1.out)
    assert_same(load(r1.out), load(r2.out))


@test
def example_audiocraft_finetune():
    """examples/audiocraft-finetune.ini is the spec chain"""
    check_spec_output(E.ok(None, "ac", conf_path=os.path.join(EXAMPLES, "audiocraft-finetune.ini")))


@test
def example_lightning_extract():
    """examples/lightning-extract.ini: torch.load(out) IS the flat model.lm
    state dict (nothing else, only its storages); loads strictly into the
    bare LM"""
    r = E.ok(None, "pl", conf_path=os.path.join(EXAMPLES, "lightning-extract.ini"))
    ck = load(r.inp)
    out = check_root_output(r, select(ck["state_dict"], keep=["model.lm."], strip=True))
    SmallLM().load_state_dict(out, strict=True)
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller")


@test
def example_exported_lr():
    """examples/exported-lr.ini: optim.lr in an exported package's YAML xp.cfg"""
    r = E.ok(None, "ex", conf_path=os.path.join(EXAMPLES, "exported-lr.ini"))
    ck = load(r.inp)
    src = ck["xp.cfg"]
    out = load(r.out)
    text = out["xp.cfg"]
    check(isinstance(text, str), "xp.cfg is no longer a YAML string")
    cfg = OmegaConf.create(src)
    cfg.optim.lr = 1e-5
    got = OmegaConf.create(text)
    check_dictconfig(got, cfg)
    check(got.optim.lr == 1e-05, f"optim.lr {got.optim.lr!r}")
    check(yaml_paths(yaml.safe_load(text)) == yaml_paths(yaml.safe_load(src)), "key order changed")
    ck["xp.cfg"] = text
    assert_same(ck, out)


# ---- ckprep check --------------------------------------------------------

def check_ok(path):
    rc, so, se = E.cmd(["check", "-c", path])
    check(rc == 0, f"check {path}: exit {rc}; stderr {se.strip()}")


def check_rejects(text, line, *words, exact_line=True):
    """exit 2 and stderr 'FILE:LINE: message' (after an optional 'ckprep: ')
    mentioning words; LINE is the offending line when exact_line"""
    path = E.conf(text, "bad")
    rc, so, se = E.cmd(["check", "-c", path])
    check(rc == 2, f"exit {rc}, expected 2; stdout {so.strip()!r} stderr {se.strip()!r}")
    lines = se.splitlines()
    check(len(lines) == 1, f"stderr is not one line: {se!r}")
    m = re.match(r"^(?:ckprep: )?" + re.escape(path) + r":(\d+): (.+)$", lines[0])
    check(m is not None, f"stderr does not start with '{path}:LINE: ': {lines[0]!r}")
    if exact_line:
        check(int(m.group(1)) == line, f"line {m.group(1)}, expected {line} (the offending line): "
                                       f"{lines[0]!r}")
    for w in words:
        check(w in m.group(2), f"message does not mention {w!r}: {lines[0]!r}")
    # run refuses it too, before touching anything
    r = E.run(None, "ac", conf_path=path)
    check(r.rc == 2, f"run with the bad config: exit {r.rc}, expected 2")
    check(os.listdir(r.outdir) == [], f"run with the bad config wrote {os.listdir(r.outdir)}")


def bad_section(plugin, lines):
    """A config whose section [plugin] starts with a good directive; returns
    (text, line number of the last of `lines`)."""
    good = {"head_init": "seed = 7", "key_remap": "state = best_state/model",
            "prefix_select": "state = best_state/model", "optimizer_strip": "detect = yes",
            "config_override": "config = xp.cfg"}[plugin]
    text = f"[pipeline]\nchain = {plugin}\n\n[{plugin}]\n{good}\n" + "".join(l + "\n" for l in lines)
    return text, 5 + len(lines)


@test
def check_accepts_examples():
    """ckprep check accepts the three example configs and the spec chain"""
    for f in ("audiocraft-finetune.ini", "lightning-extract.ini", "exported-lr.ini"):
        check_ok(os.path.join(EXAMPLES, f))
    check_ok(E.conf(SPEC_CHAIN))


@test
def check_accepts_every_directive():
    """every directive with a valid value"""
    check_ok(E.conf(ini(
        ("pipeline", {"chain": "optimizer_strip, prefix_select key_remap head_init config_override"}),
        ("optimizer_strip", [("drop", "optimizer ema"), ("drop", "scaler"), ("detect", "no")]),
        ("prefix_select", [("state", "model"), ("keep", "a. b."), ("keep", "c."), ("drop", "a.x."),
                           ("strip", "yes")]),
        ("key_remap", [("state", "model best_state/model"), ("rename", "a. => b."),
                       ("rename", r"re:^x\.([0-9]+)\. => y.\1."), ("on_conflict", "replace"),
                       ("require_match", "yes")]),
        ("head_init", [("state", "model"), ("seed", "18446744073709551615"),
                       ("add", "a float32 4x4 normal(0,1)"), ("add", "b float16 4 uniform(-1,1)"),
                       ("add", "c bfloat16 like:a xavier_uniform"), ("add", "d float64 3x3 kaiming_uniform"),
                       ("add", "e int64 2 const(3)"), ("add", "f float32 4x4 copy(a)"),
                       ("add", "g float32 2 ones"), ("add", "h float32 2 zeros"),
                       ("on_exists", "skip")]),
        ("config_override", [("config", "cfg"), ("set", "a=1"), ("set", "+b.c=[1, 2]"),
                             ("set", "++d={e: f}"), ("set", "~g"), ("file", "/tmp/x.yaml")]))))


@test
def check_unknown_section():
    check_rejects("[pipeline]\nchain = head_init\n\n[head_init]\nseed = 1\n\n[nosuch]\nfoo = 1\n",
                  7, "nosuch")


@test
def check_unknown_directive():
    check_rejects("[pipeline]\nchain = head_init\n[head_init]\nseed = 1\nsede = 7\n", 5, "sede")


@test
def check_seed_not_a_number():
    check_rejects("[pipeline]\nchain = head_init\n[head_init]\nstate = model\nseed = abc\n", 5, "abc")


@test
def check_strip_not_a_bool():
    check_rejects("[pipeline]\nchain = prefix_select\n[prefix_select]\nkeep = a.\nstrip = maybe\n",
                  5, "maybe")


@test
def check_detect_not_a_bool():
    check_rejects("[pipeline]\nchain = optimizer_strip\n[optimizer_strip]\ndetect = 2\n", 4, "2")


@test
def check_unknown_plugin_in_chain():
    check_rejects("; comment\n[pipeline]\nchain = optimizer_strip nosuch_plugin\n", 3, "nosuch_plugin")


BAD_ADDS = [("a float16 16x12", "a float16 16x12"),                      # three words
            ("a float16 16x12 normal(0,0.02) extra", "extra"),          # five words
            ("a float17 16 zeros", "float17"),
            ("a float16 16xx12 zeros", "16xx12"),
            ("a float16 -3 zeros", "-3"),
            ("a float16 16 gaussian(0,1)", "gaussian"),
            ("a float16 16 normal(0)", "normal(0)"),
            ("a float16 16 normal(0,-1)", "normal"),
            ("a float16 16 uniform(0,1", "uniform(0,1"),
            ("a int64 16 normal(0,1)", "int64")]


def _bad_add_test(line, word):
    def t():
        text, _ = bad_section("head_init", [f"add = {line}"])
        check_rejects(text, None, word, exact_line=False)
    t.__name__ = "check_bad_add: " + line
    t.__doc__ = f"add = {line} is rejected"
    return t


for _l, _w in BAD_ADDS:
    TESTS.append(_bad_add_test(_l, _w))

BAD_RENAMES = [("a. -> b.", "a. -> b."), ("re:([a- => x", "([a-"), (" => x.", "FROM")]


def _bad_rename_test(line, word):
    def t():
        text, _ = bad_section("key_remap", [f"rename = {line}"])
        check_rejects(text, None, word, exact_line=False)
    t.__name__ = "check_bad_rename: " + line
    t.__doc__ = f"rename = {line} is rejected"
    return t


for _l, _w in BAD_RENAMES:
    TESTS.append(_bad_rename_test(_l, _w))


@test
def check_bad_on_conflict():
    text, _ = bad_section("key_remap", ["on_conflict = maybe"])
    check_rejects(text, None, "maybe", exact_line=False)


@test
def check_bad_on_exists():
    text, _ = bad_section("head_init", ["on_exists = maybe"])
    check_rejects(text, None, "maybe", exact_line=False)


@test
def check_bad_set():
    """set lines that are not overrides"""
    for line, word in (("optim.lr", "optim.lr"), ("optim..lr=1", "optim..lr"), ("=1", "=1"),
                       ("a=[1, 2", "a=[1, 2")):
        text, _ = bad_section("config_override", [f"set = {line}"])
        check_rejects(text, None, word, exact_line=False)


@test
def check_line_of_bad_add():
    """the error points at the bad add line, not at its section"""
    text, line = bad_section("head_init", ["add = a float16 4 zeros", "add = b float16 16xx12 zeros"])
    check_rejects(text, line, "16xx12")


@test
def check_line_of_bad_rename():
    """the error points at the bad rename line, not at its section"""
    text, line = bad_section("key_remap", ["rename = a. => b.", "rename = c. -> d."])
    check_rejects(text, line, "c. -> d.")


@test
def check_line_of_bad_set():
    """the error points at the bad set line, not at its section"""
    text, line = bad_section("config_override", ["set = a=1", "set = optim.lr"])
    check_rejects(text, line, "optim.lr")


# ====================================================================
# main
# ====================================================================

def make_inputs(env):
    d = os.path.join(env.work, "inputs")
    os.makedirs(d)
    for name, fn, file in (("ac", make_audiocraft, "audiocraft.th"),
                           ("pl", make_lightning, "epoch=3-step=120.ckpt"),
                           ("ex", make_export, "exported.th"),
                           ("misc", make_misc, "misc.th"),
                           ("odd", make_oddkeys, "oddkeys.th")):
        p = os.path.join(d, file)
        fn(p)
        env.inputs[name] = p


def digests(paths):
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


def main(argv=None):
    global E, EXAMPLES
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckprep", required=True, help="the ckprep binary")
    ap.add_argument("--zipcheck", required=True,
                    help="tests/tools/zipcheck: every output is read by libzip too")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("-k", dest="filter", default=None, help="run tests whose name contains this")
    ap.add_argument("--examples", default=None,
                    help=f"folder of the example configs (default: {os.path.relpath(EXAMPLES, REPO)})")
    ap.add_argument("-v", "--verbose", action="store_true", help="print passing tests too")
    args = ap.parse_args(argv)
    if args.examples:
        EXAMPLES = os.path.abspath(args.examples)
    ckprep = os.path.abspath(args.ckprep)
    compare.use_zipcheck(args.zipcheck)
    for exe in (ckprep, compare.ZIPCHECK):
        if os.access(exe, os.X_OK):
            continue
        print(f"{exe}: not executable", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    work = tempfile.mkdtemp(prefix="ckprep-plugins-")
    t0 = time.time()
    passed = failed = 0
    try:
        E = Env(ckprep, work)
        make_inputs(E)
        before = digests(E.inputs.values())
        tests = [t for t in TESTS if args.filter is None or args.filter in t.__name__]
        for t in tests:
            t1 = time.time()
            try:
                t()
                passed += 1
                if args.verbose:
                    print(f"ok    {t.__name__} ({time.time() - t1:.2f}s)")
            except Fail as e:
                failed += 1
                print(f"FAIL  {t.__name__}: {' '.join((t.__doc__ or '').split())}")
                print("      " + str(e).replace("\n", "\n      "))
            except Exception:
                failed += 1
                print(f"ERROR {t.__name__}:")
                print("      " + traceback.format_exc().strip().replace("\n", "\n      "))
        if digests(E.inputs.values()) != before:
            failed += 1
            print("FAIL  inputs_unchanged: an input checkpoint was modified")
        else:
            passed += 1
        if args.verbose:
            print(f"({time.time() - t0:.1f}s, work folder {work})")
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
