#!/usr/bin/python3
"""Shared by ckprep's plugin suites (tests/plugins/test_*.py): the
checkpoints they run (real torch.save), the comparison of loaded
checkpoints, the Env that runs ckprep, the Python versions of the edits,
head_init's documented generator, and the runner.

Each test_*.py file holds one plugin's tests (test_chain.py the whole chain,
the example configurations and `ckprep check` on whole files) and can run
alone:

    test_key_remap.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
                      [-k SUBSTR] [-v]

run_all.py runs every file in one process (`make test-plugins`).  A test is
a function decorated with @test (or appended to TESTS); it passes unless it
raises.  The checks: torch.load and OmegaConf against the same edit done in
Python -- exactly the intended keys gone / renamed / added; every other
tensor bit-identical (dtype, shape, stride, offset, every byte of its
storage) and sharing storage with exactly the same tensors as before;
`_metadata` consistent; every output read by libzip too (--zipcheck,
tests/tools/zipcheck: CRC-32 and header consistency, records as zipfile
lists them); the JSON record's changes; errors (exit 1, one stderr line
naming the input and the cause, nothing written); --dry-run; `ckprep check`.

Failures are printed with their reasons, a line per file, and the last line
is "N passed, M failed"; the exit status is 1 when M > 0.  Run with
/usr/bin/python3 (python3-torch, python3-omegaconf, numpy).
"""
import argparse
import collections
import copy
import glob
import hashlib
import importlib
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
    """What the tests run against: the binary, the work folder, the example
    configurations and the input checkpoints (name -> path).  One instance,
    E, set up by main()."""

    def __init__(self):
        self.start(None, None, EXAMPLES)

    def start(self, ckprep, work, examples):
        self.ckprep = ckprep
        self.work = work
        self.examples = examples
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
    """key_remap's rules as Python: re: is re.sub, =KEY exact, else a
    prefix."""
    for frm, to in rules:
        if frm.startswith("re:"):
            name = re.sub(frm[3:], to, name)
        elif frm.startswith("="):
            name = to if name == frm[1:] else name
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
# the registry of tests
# ====================================================================

TESTS = []   # every test function; each file's are those of its module
E = Env()    # main() gives it the binary, the work folder, the inputs


def test(fn):
    TESTS.append(fn)
    return fn


DEFAULT_STRIP = chain1("optimizer_strip", {})


# ====================================================================
# helpers several test files use
# ====================================================================

def expected_default_strip(ck):
    for k in ("optimizer", "lr_scheduler", "scaler", "ema"):
        del ck[k]
    ck["adv_losses"] = without(ck["adv_losses"], "msstftd.optimizer")
    return ck


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


SPEC_ADDS = [("add", f"{HEAD_W} float16 16x12 normal(0,0.02)"),
             ("add", f"{HEAD_B} float16 16 zeros")]


def stats(t):
    x = t.double()
    return x.mean().item(), x.std().item(), x.min().item(), x.max().item()


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


def yaml_paths(d, prefix=""):
    out = []
    for k, v in d.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out += yaml_paths(v, prefix + str(k) + ".")
    return out


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
            "config_override": "config = xp.cfg", "cast": "state = best_state/model",
            "tree": "delete = nothing?"}[plugin]
    text = f"[pipeline]\nchain = {plugin}\n\n[{plugin}]\n{good}\n" + "".join(l + "\n" for l in lines)
    return text, 5 + len(lines)


def check_rejects_line(plugin, line, word):
    """`line` in [plugin] is rejected with a message mentioning word."""
    text, _ = bad_section(plugin, [line])
    check_rejects(text, None, word, exact_line=False)


def bad_directive_tests(module, plugin, directive, cases):
    """One test per (value, word) of cases, named 'check_bad_DIRECTIVE:
    VALUE', in module's share of TESTS: `directive = value` is rejected."""
    for value, word in cases:
        def t(value=value, word=word):
            check_rejects_line(plugin, f"{directive} = {value}", word)
        t.__name__ = f"check_bad_{directive}: {value}"
        t.__doc__ = f"{directive} = {value} is rejected"
        t.__module__ = module
        TESTS.append(t)


# ====================================================================
# the runner
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


def run_tests(tests, verbose):
    """Runs tests; returns (passed, failed) and prints each failure."""
    passed = failed = 0
    for t in tests:
        t1 = time.time()
        try:
            t()
            passed += 1
            if verbose:
                print(f"ok    {t.__name__} ({time.time() - t1:.2f}s)")
        except Fail as e:
            failed += 1
            print(f"FAIL  {t.__name__}: {' '.join((t.__doc__ or '').split())}")
            print("      " + str(e).replace("\n", "\n      "))
        except Exception:
            failed += 1
            print(f"ERROR {t.__name__}:")
            print("      " + traceback.format_exc().strip().replace("\n", "\n      "))
    return passed, failed


def main(modules=None, argv=None):
    """Runs the tests of the named modules (default: every test_*.py beside
    this file, imported) on one set of inputs: a line per module, then the
    total "N passed, M failed", inputs_unchanged included."""
    ap = argparse.ArgumentParser(description="ckprep's plugin suites")
    ap.add_argument("--ckprep", required=True, help="the ckprep binary")
    ap.add_argument("--zipcheck", required=True,
                    help="tests/tools/zipcheck: every output is read by libzip too")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("-k", dest="filter", default=None, help="run tests whose name contains this")
    ap.add_argument("--examples", default=EXAMPLES,
                    help=f"folder of the example configs (default: {os.path.relpath(EXAMPLES, REPO)})")
    ap.add_argument("-v", "--verbose", action="store_true", help="print passing tests too")
    args = ap.parse_args(argv)
    if modules is None:
        modules = [os.path.basename(p)[:-3] for p in sorted(glob.glob(os.path.join(HERE, "test_*.py")))]
        for m in modules:
            importlib.import_module(m)
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
        E.start(ckprep, work, os.path.abspath(args.examples))
        make_inputs(E)
        before = digests(E.inputs.values())
        for m in modules:
            tests = [t for t in TESTS if t.__module__ == m and
                     (args.filter is None or args.filter in t.__name__)]
            p, f = run_tests(tests, args.verbose)
            name = os.path.basename(sys.modules[m].__file__)
            print(f"# {name}: {p} ok, {f} failed")
            passed, failed = passed + p, failed + f
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
