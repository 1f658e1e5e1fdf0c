#!/usr/bin/python3
"""Make the benchmark's checkpoints with real torch.save, cached.

usage: make_bench.py [--dir DIR] CASE     prints the checkpoint's path

Cases (see CASES):
  lm      an AudioCraft MusicGen training checkpoint of about 3 GiB: a
          transformer LM state dict in `model` (fp32, an OrderedDict with
          _metadata) and in `best_state/model` (fp16), an AdamW optimizer with
          step/exp_avg/exp_avg_sq per parameter, a pickled OmegaConf `xp.cfg`,
          history, xp.sig, lr_scheduler, scaler, ema = None
  large   the same over 4 GiB (zip64 offsets in the input)
  many-N  the same layout with N tiny tensors per state dict and 2N in the
          optimizer (4N storages): small on disk, many keys
  small   the same layout, a few hundred KiB (the daemon's many-files test)
  bigrec  {'w': one uint8 record over 4 GiB, 'b': a small tensor} (zip64
          sizes); its sha256 sits beside it in <file>.sha256

A file is cached in DIR (default build/bench) under a name keyed by the case's
parameters and this script's text, so changing either makes a new one; older
files of the same case are removed.  Generation needs about the checkpoint's
size in RAM.
"""
import argparse
import collections
import hashlib
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20

CASES = {
    # dim 1024, 17 layers: 231.5M parameters, 14 bytes each (fp32 model,
    # fp16 best state, two fp32 Adam moments) = 3.02 GiB
    "lm": dict(kind="lm", dim=1024, layers=17, card=2048, n_q=4, seed=1),
    # 24 layers: 319.7M parameters = 4.17 GiB
    "large": dict(kind="lm", dim=1024, layers=24, card=2048, n_q=4, seed=2),
    "small": dict(kind="lm", dim=32, layers=2, card=32, n_q=4, seed=3, t5=32),
    "bigrec": dict(kind="bigrec", mib=4097, seed=4),
}


def case_params(name):
    if name in CASES:
        return dict(CASES[name])
    if name.startswith("many-") and name[5:].isdigit():
        return dict(kind="many", n=int(name[5:]), seed=5)
    raise SystemExit(f"make_bench.py: unknown case {name!r}")


def cache_path(bench_dir, name):
    with open(os.path.abspath(__file__), "rb") as f:
        src = f.read()
    key = hashlib.sha256(src + json.dumps(case_params(name), sort_keys=True).encode())
    return os.path.join(bench_dir, f"{name}-{key.hexdigest()[:12]}.th")


# ---- the AudioCraft layout ---------------------------------------------


def xp_cfg(dim, layers):
    """A Dora/Hydra-composed MusicGen config, pickled as a DictConfig."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({
        "solver": "musicgen",
        "device": "cuda",
        "dtype": "float32",
        "autocast": True,
        "autocast_dtype": "float16",
        "seed": 2036,
        "sample_rate": 32000,
        "channels": 1,
        "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
        "tokens": {"padding_with_special_token": False},
        "dataset": {
            "batch_size": 192,
            "num_workers": 10,
            "segment_duration": 30,
            "sample_on_weight": False,
            "sample_on_duration": False,
            "train": {"path": "egs/train", "num_samples": 1000000,
                      "shuffle": True},
            "valid": {"path": "egs/valid", "num_samples": 10000},
            "evaluate": {"path": "egs/evaluate", "num_samples": 10000},
            "generate": {"path": "egs/generate", "num_samples": 50},
        },
        "optim": {
            "epochs": 500,
            "updates_per_epoch": 2000,
            "lr": 1e-4,
            "optimizer": "adamw",
            "adam": {"betas": [0.9, 0.95], "weight_decay": 0.1, "eps": 1e-8},
            "ema": {"use": False, "updates": 10, "device": "cuda",
                    "decay": 0.99},
            "max_norm": 1.0,
            "eager_sync": True,
        },
        "schedule": {
            "lr_scheduler": "cosine",
            "cosine": {"warmup": 4000, "lr_min_ratio": 0.0, "cycle_length": 1.0},
        },
        "transformer_lm": {
            "dim": dim, "num_heads": dim // 64, "num_layers": layers,
            "hidden_scale": 4, "n_q": 4, "card": 2048, "dropout": 0.0,
            "norm": "layer_norm", "norm_first": True, "bias_ff": False,
            "bias_attn": False, "causal": True, "past_context": None,
            "positional_embedding": "sin", "max_period": 10000,
        },
        "codebooks_pattern": {"modeling": "delay",
                              "delay": {"delays": [0, 1, 2, 3]}},
        "conditioners": {"description": {"model": "t5",
                                         "t5": {"name": "t5-base",
                                                "finetune": False}}},
        "checkpoint": {"save_last": True, "save_every": 50, "keep_last": 10,
                       "keep_every_states": None},
        "logging": {"log_updates": 10, "log_tensorboard": True},
        "fsdp": {"use": False, "param_dtype": "float16"},
        "label": None,
    })
    OmegaConf.set_struct(cfg, True)
    return cfg


def lm_shapes(dim, layers, card, n_q, t5=768):
    """(key, shape, module) of a MusicGen LM state dict, in module order."""
    out = []
    out.append(("condition_provider.conditioners.description.output_proj.weight",
                (dim, t5), "condition_provider.conditioners.description.output_proj"))
    out.append(("condition_provider.conditioners.description.output_proj.bias",
                (dim,), "condition_provider.conditioners.description.output_proj"))
    for k in range(n_q):
        out.append((f"emb.{k}.weight", (card + 1, dim), f"emb.{k}"))
    for i in range(layers):
        p = f"transformer.layers.{i}"
        out += [
            (f"{p}.self_attn.in_proj_weight", (3 * dim, dim), f"{p}.self_attn"),
            (f"{p}.self_attn.out_proj.weight", (dim, dim), f"{p}.self_attn.out_proj"),
            (f"{p}.linear1.weight", (4 * dim, dim), f"{p}.linear1"),
            (f"{p}.linear2.weight", (dim, 4 * dim), f"{p}.linear2"),
            (f"{p}.norm1.weight", (dim,), f"{p}.norm1"),
            (f"{p}.norm1.bias", (dim,), f"{p}.norm1"),
            (f"{p}.norm2.weight", (dim,), f"{p}.norm2"),
            (f"{p}.norm2.bias", (dim,), f"{p}.norm2"),
        ]
    out.append(("out_norm.weight", (dim,), "out_norm"))
    out.append(("out_norm.bias", (dim,), "out_norm"))
    for k in range(n_q):
        out.append((f"linears.{k}.weight", (card, dim), f"linears.{k}"))
    return out


def many_shapes(n):
    """n tiny parameters named like an LM's, a quarter of them emb/linears."""
    out = []
    for i in range(n):
        r = i % 8
        if r == 0:
            key, mod = f"emb.{i}.weight", f"emb.{i}"
        elif r == 1:
            key, mod = f"linears.{i}.weight", f"linears.{i}"
        else:
            mod = f"transformer.layers.{i // 8}.block{r}"
            key = f"{mod}.weight"
        out.append((key, (4,), mod))
    return out


def training_checkpoint(shapes, cfg, seed, big):
    import torch

    g = torch.Generator().manual_seed(seed)
    model = collections.OrderedDict()
    meta = collections.OrderedDict()
    meta[""] = {"version": 1}
    for key, shape, mod in shapes:
        if big:
            t = torch.randn(shape, generator=g).mul_(0.02)
        else:
            t = torch.arange(int(torch.Size(shape).numel()), dtype=torch.float32)
            t = t.reshape(shape).add_(float(len(model) % 1000))
        model[key] = t
        meta.setdefault(mod, {"version": 1})
    model._metadata = meta
    best = {k: v.half() for k, v in model.items()}
    state = {}
    for i, (k, v) in enumerate(model.items()):
        if big:
            ea = torch.randn(v.shape, generator=g).mul_(1e-3)
            eq = torch.rand(v.shape, generator=g).mul_(1e-6)
            state[i] = {"step": torch.tensor(100000.0), "exp_avg": ea, "exp_avg_sq": eq}
        else:
            state[i] = {"step": 100000.0, "exp_avg": v * 1e-3, "exp_avg_sq": v * 1e-6}
    optimizer = {
        "state": state,
        "param_groups": [{
            "lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1,
            "amsgrad": False, "foreach": None, "maximize": False,
            "capturable": False, "differentiable": False, "fused": None,
            "initial_lr": 1e-4, "params": list(range(len(model))),
        }],
    }
    history = [{"train": {"ce": 5.0 - e * 0.01, "ppl": 150.0 - e, "lr": 1e-4,
                          "grad_norm": 0.5},
                "valid": {"ce": 5.1 - e * 0.01, "ppl": 160.0 - e}}
               for e in range(50)]
    return {
        "history": history,
        "xp.cfg": cfg,
        "xp.sig": "9b3f2c1a",
        "best_state": {"model": best},
        "fsdp_best_state": {},
        "model": model,
        "optimizer": optimizer,
        "lr_scheduler": {"warmup_steps": 4000, "total_steps": 1000000,
                         "lr_min_ratio": 0.0, "cycle_length": 1.0,
                         "base_lrs": [1e-4], "last_epoch": 100000,
                         "_step_count": 100001, "verbose": False,
                         "_get_lr_called_within_step": False,
                         "_last_lr": [9.5e-5]},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 1234},
        "ema": None,
    }


def make_bigrec(path, mib, seed):
    """One record over 4 GiB: a repeated random 1 MiB pattern, digest beside."""
    import torch

    g = torch.Generator().manual_seed(seed)
    pat = torch.randint(0, 256, (MiB,), dtype=torch.uint8, generator=g)
    w = torch.empty(mib * MiB, dtype=torch.uint8)
    w.view(mib, MiB).copy_(pat.expand(mib, MiB))
    h = hashlib.sha256(memoryview(w.numpy())).hexdigest()
    b = torch.arange(10, dtype=torch.float32)
    torch.save({"w": w, "b": b, "note": "zip64 sizes"}, path)
    return h


def generate(name, path):
    import torch

    torch.set_num_threads(2)
    p = case_params(name)
    if p["kind"] == "bigrec":
        digest = make_bigrec(path + ".part", p["mib"], p["seed"])
        with open(path + ".sha256", "w") as f:
            f.write(digest + "\n")
    else:
        if p["kind"] == "lm":
            shapes = lm_shapes(p["dim"], p["layers"], p["card"], p["n_q"],
                               p.get("t5", 768))
            cfg = xp_cfg(p["dim"], p["layers"])
            big = p["dim"] >= 256
        else:
            shapes = many_shapes(p["n"])
            cfg = xp_cfg(64, 2)
            big = False
        obj = training_checkpoint(shapes, cfg, p["seed"], big)
        torch.save(obj, path + ".part")
    os.rename(path + ".part", path)


def ensure(bench_dir, name):
    """The cached checkpoint of case name, made when missing."""
    os.makedirs(bench_dir, exist_ok=True)
    path = cache_path(bench_dir, name)
    if os.path.exists(path):
        return path
    for f in os.listdir(bench_dir):
        if f.startswith(name + "-") and ".th" in f:
            os.unlink(os.path.join(bench_dir, f))
    t0 = time.time()
    generate(name, path)
    print(f"# generated {name}: {os.path.getsize(path) / MiB:.0f} MiB in "
          f"{time.time() - t0:.0f}s -> {path}", file=sys.stderr, flush=True)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR") or
                    os.path.join(os.path.dirname(HERE), "build", "bench"))
    ap.add_argument("case")
    a = ap.parse_args(argv)
    print(ensure(a.dir, a.case))
    return 0


if __name__ == "__main__":
    sys.exit(main())
