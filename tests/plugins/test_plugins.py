#!/usr/bin/python3
"""Oracle tests for ckprep's plugins: optimizer_strip, prefix_select,
key_remap, head_init, config_override, their chain, and `ckprep check`.

usage: test_plugins.py --ckprep PATH [--keep] [-k SUBSTR]

Makes real checkpoints with torch.save in a temporary folder (an
AudioCraft-shaped training checkpoint, a PyTorch Lightning checkpoint, an
exported AudioCraft package whose xp.cfg is a YAML string, and a small one
with edge cases), runs `ckprep run` over them, and checks the result with
torch.load and OmegaConf against the same edit done in Python: exactly the
intended keys gone / renamed / added; every other tensor bit-identical
(dtype, shape, stride, offset, every byte of its storage) and sharing
storage with exactly the same tensors as before; `_metadata` consistent;
the JSON record's changes; errors (exit 1, one stderr line naming the input
and the cause, nothing written); --dry-run; `ckprep check`.

The example configurations in examples/ are run and checked too.

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
EXAMPLES = os.path.join(HERE, "examples")
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
