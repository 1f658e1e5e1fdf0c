#!/usr/bin/python3
"""Write a set of real torch.save checkpoints plus manifest.json into OUTDIR.

Usage: make_checkpoints.py OUTDIR

Every file is written by this interpreter's torch (1.13) with torch.save.
manifest.json:
  {"torch_version": "...", "python_version": "...",
   "files": [{"name": "checkpoint.th", "format": "zip"|"legacy",
              "protocol": 2, "top_folder": "checkpoint" | null,
              "weights_only_ok": bool, "byte_identical": bool,
              "size": bytes, "sha256": "...", "description": "..."}, ...]}
weights_only_ok is measured by actually calling torch.load(weights_only=True).
byte_identical is true exactly for zip-format files at pickle protocol 2.
"""
import collections
import hashlib
import io
import json
import os
import sys
import warnings
import zipfile

import torch
import torch.nn as nn
from omegaconf import OmegaConf

warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- models
class TinyLM(nn.Module):
    """Names like an AudioCraft LM: emb.0, transformer.layers.0.self_attn..."""

    def __init__(self, card=16, dim=8, heads=2, n_q=2):
        super().__init__()
        self.emb = nn.ModuleList([nn.Embedding(card + 1, dim) for _ in range(n_q)])
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=2 * dim,
                                       batch_first=True)
        ])
        self.linears = nn.ModuleList([nn.Linear(dim, card) for _ in range(n_q)])
        self.out_norm = nn.LayerNorm(dim)
        self.register_buffer("codebook_usage", torch.zeros(card))

    def forward(self, codes):  # codes: [B, K, T]
        x = sum(self.emb[k](codes[:, k]) for k in range(len(self.emb)))
        for layer in self.transformer.layers:
            x = layer(x)
        x = self.out_norm(x)
        return torch.stack([lin(x) for lin in self.linears], dim=1)


def trained_model_and_optim(lr=1e-4):
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    codes = torch.randint(0, 16, (2, 2, 5))
    logits = model(codes)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 16), codes.reshape(-1))
    loss.backward()
    opt.step()
    sched.step()
    return model, opt, sched


def make_cfg():
    cfg = OmegaConf.create({
        "sample_rate": 32000,
        "channels": 1,
        "device": "cpu",
        "dtype": "float16",
        "seed": 2036,
        "optim": {
            "epochs": 200,
            "updates_per_epoch": 2000,
            "lr": 1e-4,
            "optimizer": "adamw",
            "adam": {"betas": [0.9, 0.95], "weight_decay": 0.1, "eps": 1e-8},
            "ema": {"use": True, "updates": 10, "decay": 0.99},
        },
        "dataset": {
            "batch_size": 192,
            "num_workers": 10,
            "segment_duration": 30,
            "sample_rate": "${sample_rate}",
            "channels": "${channels}",
            "train": {"path": "egs/data/train", "num_samples": None},
            "valid": {"path": "egs/data/valid", "num_samples": 10000},
            "evaluate": {"path": "???"},
        },
        "conditioners": {
            "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False,
                                                  "word_dropout": 0.3}},
            "self_wav": {"model": "chroma_stem", "chroma_stem": {"sample_rate": "${sample_rate}",
                                                                 "n_chroma": 12}},
        },
        "transformer_lm": {
            "dim": 1024,
            "num_heads": 16,
            "num_layers": 24,
            "hidden_scale": 4,
            "n_q": 4,
            "card": 2048,
            "dropout": 0.0,
            "emb_lr": None,
            "weight_init": "gaussian",
            "cross_attention": True,
            "memory_efficient": True,
            "lr": "${optim.lr}",
            "name": "lm_${transformer_lm.dim}_${transformer_lm.num_layers}",
        },
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3],
                                                             "flatten_first": 0}},
        "logging": {"log_tensorboard": True, "log_updates": 10, "level": "INFO"},
        "label": "???",
        "unicode": "héllo 漢字",
    })
    OmegaConf.set_struct(cfg, True)
    return cfg


# ---------------------------------------------------------------- payloads
def audiocraft_checkpoint():
    model, opt, sched = trained_model_and_optim()
    msd = model.state_dict()
    best = {"model": {k: v.detach().clone().half() for k, v in msd.items()}}
    try:
        scaler = torch.cuda.amp.GradScaler(enabled=False).state_dict()
    except Exception:  # pragma: no cover - CPU without cuda amp
        scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                  "growth_interval": 2000, "_growth_tracker": 0}
    history = []
    for ep in range(3):
        history.append({
            "train": {"loss": 5.0 - ep * 0.5 + 1 / 3, "ce": 4.9 - ep * 0.45, "ppl": 130.25 / (ep + 1)},
            "valid": {"loss": 5.1 - ep * 0.4, "ce": 5.0 - ep * 0.41},
        })
    ema_state = collections.defaultdict(dict)
    ema_state["model"] = {k: v.detach().clone() * 0.5 for k, v in msd.items()}
    return {
        "history": history,
        "xp.cfg": make_cfg(),
        "xp.sig": "9b6e7a1f",
        "best_state": best,
        "fsdp_best_state": {},
        "model": msd,
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "scaler": scaler,
        "ema": {"state": ema_state, "count": 3.0},
    }


def exported_package():
    model = TinyLM()
    return {
        "best_state": {k: v.detach().clone().half() for k, v in model.state_dict().items()},
        "xp.cfg": OmegaConf.to_yaml(make_cfg()),
        "version": "1.0",
        "exported": True,
    }


def views_and_ties():
    base = torch.arange(24, dtype=torch.float32)
    w = torch.randn(4, 3)
    other = torch.randn(10)
    return {
        "tied_a": w,
        "tied_b": w,                      # same tensor object twice
        "base": base,
        "slice_off": base[5:11],          # storage_offset 5
        "matrix": base.view(4, 6),        # view of same storage
        "transposed": base.view(4, 6).t(),  # non-contiguous strides (1, 6)
        "strided": base[::2],             # stride 2
        "strided_off": base[1::3],        # stride 3, offset 1
        "scalar_view": base[7],           # 0-dim with offset 7
        "expanded": torch.randn(3).expand(4, 3),  # stride 0
        "other_lo": other[:5],            # two views, base not saved
        "other_hi": other[5:],
        "zeros_a": torch.zeros(3),        # equal contents, distinct storages
        "zeros_b": torch.zeros(3),
        "scalar_f": torch.tensor(3.5),
        "scalar_i": torch.tensor(7),
        "scalar_b": torch.tensor(True),
        "empty": torch.empty(0),
        "empty_2d": torch.empty(3, 0),
        "empty_i64": torch.zeros(0, dtype=torch.int64),
        "empty_view": base[4:4],          # empty view of a non-empty storage
    }


def all_dtypes():
    f = torch.tensor([0.0, -0.0, 1.0 / 3, float("nan"), float("inf"), -float("inf"), 1e-30, 65504.0])
    return {
        "float32": f.clone(),
        "float64": f.double(),
        "float16": f.half(),
        "bfloat16": f.bfloat16(),
        "complex64": torch.complex(f, -f),
        "complex128": torch.complex(f.double(), f.double().flip(0)),
        "int8": torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int8),
        "int16": torch.tensor([-32768, -1, 0, 1, 32767], dtype=torch.int16),
        "int32": torch.tensor([-2 ** 31, -1, 0, 1, 2 ** 31 - 1], dtype=torch.int32),
        "int64": torch.tensor([-2 ** 63, -1, 0, 1, 2 ** 63 - 1], dtype=torch.int64),
        "uint8": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
    }


def exotic_tensors():
    return {
        "qint8": torch.quantize_per_tensor(torch.randn(6), 0.1, 3, torch.qint8),
        "quint8_per_channel": torch.quantize_per_channel(
            torch.randn(2, 3), torch.tensor([0.1, 0.2], dtype=torch.float64),
            torch.tensor([1, 2]), 0, torch.quint8),
        "sparse_coo": torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, -1.5]]).to_sparse(),
        "plain": torch.arange(4),
    }


def small_state_dict_shared():
    lin = nn.Linear(4, 3)
    sd = lin.state_dict()
    sd["weight_tied"] = sd["weight"]
    sd["weight_row1"] = sd["weight"][1]
    sd["weight_T"] = sd["weight"].t()
    sd["counter"] = torch.tensor(5)
    return sd


def big_containers():
    od = collections.OrderedDict((f"layer.{i}.w", torch.full((2,), float(i))) for i in range(1200))
    nested = []
    cur = nested
    for i in range(40):
        nxt = [i]
        cur.append(nxt)
        cur = nxt
    return {
        "list2500": [i * 7 - 3000 for i in range(2500)],
        "dict1500": {f"key_{i:05d}": i for i in range(1500)},
        "od1200": od,
        "list1000": list(range(1000)),
        "list1001": list(range(1001)),
        "dict1000": {i: str(i) for i in range(1000)},
        "dict1001": {i: -i for i in range(1001)},
        "dict1": {"only": 1},
        "tuples": [(1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), (1, 2, 3, 4, 5)],
        "nested": nested,
        "empties": [[], {}, (), "", b""],
        "int_keys": {0: "a", 1: "b", -5: "c", 2 ** 40: "d"},
        "tuple_keys": {(1, "a"): 1, (2, "b"): 2},
    }


def scalars():
    ints = [0, 1, 255, 256, 65535, 65536, -1, -128, -129, 2 ** 31 - 1, 2 ** 31, -2 ** 31,
            -2 ** 31 - 1, 2 ** 63 - 1, -2 ** 63, 2 ** 64, 2 ** 200, -(2 ** 200)]
    floats = [0.0, float("nan"), float("inf"), -float("inf"), -0.0, 1e-308, 5e-324, 1.0 / 3,
              1.7976931348623157e308, -2.5]
    return {
        "ints": ints,
        "floats": floats,
        "strings": ["", "ascii", "é", "漢字", "🎵🤖", "x" * 300, "tab\tnew\nline", "quote'\"\\"],
        "lone_surrogate": "\ud800",
        "none": None,
        "true": True,
        "false": False,
        "bytes_empty": b"",
        "bytes": b"\x00\xffabc",
        "bytes_long": bytes(range(256)) * 2,
    }


def builtin_globals():
    """Objects pickled through globals other than tensors/containers."""
    return {
        "bytearray": bytearray(b"xyz"),
        "complex": 1.5 - 2j,
        "set": {1, 2, 3},
        "frozenset": frozenset([10, 20]),  # ints: str hashing is randomized per process
        "dtype": torch.float16,
        "device": torch.device("cpu"),
        "size": torch.Size([2, 3]),
    }


def parameters():
    p = nn.Parameter(torch.randn(3, 4))
    return {
        "param": p,
        "param_again": p,
        "param_nograd": nn.Parameter(torch.randn(2), requires_grad=False),
        "tensor_grad": torch.randn(3, requires_grad=True),
        "param_row_view": p.detach()[1],   # plain tensor sharing the parameter's storage
        "param_list": [nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(1, 1))],
    }


def lightning():
    model, opt, sched = trained_model_and_optim(lr=1e-3)
    sd = collections.OrderedDict()
    for k, v in model.state_dict().items():
        sd["model.lm." + k] = v
    sd["model.other.scale"] = torch.tensor(1.25)
    sd["model.other.table"] = torch.randn(3, 2)
    return {
        "epoch": 3,
        "global_step": 1000,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {
            "total": {"ready": 4, "completed": 3}, "current": {"ready": 4, "completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0}": {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.4375),
                "best_model_path": "/ckpt/epoch=2-step=750.ckpt",
                "current_score": torch.tensor(0.5),
                "best_k_models": {"/ckpt/epoch=2-step=750.ckpt": torch.tensor(0.4375)},
                "kth_best_model_path": "",
                "dirpath": "/ckpt",
            },
            "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                "wait_count": 0, "stopped_epoch": 0, "best_score": torch.tensor(0.4375),
                "patience": 3},
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 1e-3, "name": "x", "betas": (0.9, 0.999)},
    }


def shared_objects():
    d = {"a": 1, "lst": [1, 2]}
    lst = [1, 2, 3]
    tup = (1, "two", [3])
    cyc = ["head"]
    cyc.append(cyc)
    return {
        "first": d,
        "second": d,
        "inner": [d, d, lst],
        "lst": lst,
        "tup_a": tup,
        "tup_b": tup,
        "equal_not_same_1": {"a": 1},
        "equal_not_same_2": {"a": 1},
        "cycle": cyc,
    }


def mixed():
    """A bit of everything, used for the protocol and legacy variants."""
    out = views_and_ties()
    out.update({
        "sd": small_state_dict_shared(),
        "scalars": scalars(),
        "list1001": list(range(1001)),
        "dict1": {"k": [1, 2.5, "s", None, True]},
        "params": parameters(),
        "shared": shared_objects(),
    })
    return out


def weights_only_friendly():
    """Only opcodes/types that torch 1.13's weights_only unpickler accepts."""
    sd = collections.OrderedDict()
    sd["a"] = torch.arange(6, dtype=torch.int32).view(2, 3)
    sd["b"] = sd["a"][1]
    sd["c"] = nn.Parameter(torch.ones(2))
    sd["n"] = [1, 2, 3, "x", None, True]
    sd["t"] = (1, 2)
    return sd


# ---------------------------------------------------------------- driver
def _zip_info(path):
    if not zipfile.is_zipfile(path):
        return "legacy", None
    with zipfile.ZipFile(path) as z:
        tops = sorted({n.split("/", 1)[0] for n in z.namelist()})
    return "zip", (tops[0] if len(tops) == 1 else None)


def _weights_only_ok(path):
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


def cases():
    """(file name, payload factory, save kwargs, description, via_buffer)"""
    L = {"_use_new_zipfile_serialization": False}
    return [
        ("checkpoint.th", audiocraft_checkpoint, {}, "AudioCraft-shaped training checkpoint", False),
        ("exported_package.th", exported_package, {}, "AudioCraft exported package (yaml cfg)", False),
        ("views_and_ties.pt", views_and_ties, {}, "tied weights, views, strides, 0-dim, empty", False),
        ("storage_larger.pt", lambda: torch.arange(1000, dtype=torch.float32)[10:20], {},
         "top-level tensor whose storage is larger than the tensor", False),
        ("all_dtypes.pt", all_dtypes, {}, "one tensor per dtype", False),
        ("exotic_tensors.pt", exotic_tensors, {}, "quantized and sparse tensors", False),
        ("legacy_state_dict.pt", small_state_dict_shared, L, "legacy format, shared storage", False),
        ("legacy_mixed_proto2.pt", mixed, L, "legacy format, mixed payload", False),
        ("legacy_mixed_proto4.pt", mixed, dict(L, pickle_protocol=4), "legacy format, protocol 4", False),
        ("mixed_proto1.pt", mixed, {"pickle_protocol": 1}, "zip, pickle protocol 1", False),
        ("mixed_proto2.pt", mixed, {"pickle_protocol": 2}, "zip, pickle protocol 2", False),
        ("mixed_proto3.pt", mixed, {"pickle_protocol": 3}, "zip, pickle protocol 3", False),
        ("mixed_proto4.pt", mixed, {"pickle_protocol": 4}, "zip, pickle protocol 4", False),
        ("mixed_proto5.pt", mixed, {"pickle_protocol": 5}, "zip, pickle protocol 5", False),
        ("big_containers.pt", big_containers, {}, "containers over 1000 items, batching edges", False),
        ("scalars.pt", scalars, {}, "big/negative ints, special floats, unicode, bytes", False),
        ("builtin_globals.pt", builtin_globals, {}, "bytearray, complex, set, frozenset, dtype, device, Size",
         False),
        ("parameters.pt", parameters, {}, "nn.Parameter and requires_grad", False),
        ("lightning.ckpt", lightning, {}, "Lightning-style checkpoint", False),
        ("shared_objects.pt", shared_objects, {}, "same object referenced twice, cycle", False),
        ("no_tensors.pt", lambda: {"a": 1, "b": "two"}, {}, "no storages at all", False),
        ("weights_only_friendly.pt", weights_only_friendly, {}, "loads with weights_only=True", False),
        ("weights_only_friendly_legacy.pt", weights_only_friendly, L,
         "legacy, loads with weights_only=True", False),
        ("buffer_saved.pt", views_and_ties, {}, "saved through BytesIO: top folder 'archive'", True),
    ]


def generate(outdir):
    os.makedirs(outdir, exist_ok=True)
    files = []
    for name, factory, kwargs, desc, via_buffer in cases():
        torch.manual_seed(1234)
        obj = factory()
        path = os.path.join(outdir, name)
        if via_buffer:
            buf = io.BytesIO()
            torch.save(obj, buf, **kwargs)
            with open(path, "wb") as f:
                f.write(buf.getvalue())
        else:
            torch.save(obj, path, **kwargs)
        fmt, top = _zip_info(path)
        proto = kwargs.get("pickle_protocol", 2)
        with open(path, "rb") as f:
            data = f.read()
        files.append({
            "name": name,
            "format": fmt,
            "protocol": proto,
            "top_folder": top,
            "weights_only_ok": _weights_only_ok(path),
            "byte_identical": fmt == "zip" and proto == 2,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "description": desc,
        })
    manifest = {
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "files": files,
    }
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv):
    if len(argv) != 2:
        print("usage: make_checkpoints.py OUTDIR", file=sys.stderr)
        return 2
    m = generate(argv[1])
    for e in m["files"]:
        print(f"{e['name']:34s} {e['format']:6s} p{e['protocol']} wo={int(e['weights_only_ok'])} "
              f"bi={int(e['byte_identical'])} {e['size']:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
