#!/usr/bin/python3
"""config_override: DictConfig, YAML string, plain dict and file configs,
Hydra's typing of set values, typed nodes, ~key, big ints, and its
`ckprep check` errors.

usage: test_config_override.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import math
import os
import sys

import torch
import yaml
from omegaconf import OmegaConf, open_dict

import plugtest
from plugtest import (E, Fail, SPEC_SETS, TESTS, assert_same, bad_section, chain1, check,
                      check_changes, check_dictconfig, check_rejects, check_rejects_line,
                      edit_cfg, load, plugin_changes, spec_cfg_edit, test, yaml_paths)


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
        ("set", "optim.adam.betas=[0.8, 0.99]"), ("set", "++dataset.valid={path: /v2, n: 3}"),
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
        OmegaConf.update(c, "dataset.valid", {"path": "/v2", "n": 3}, merge=True, force_add=True)
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


def hydra_apply(cfg, line, value):
    """Hydra's _apply_overrides_to_config for one override of a mapping or
    list value (hydra/_internal/config_loader_impl.py): None, or the
    exception Hydra would raise"""
    op = "++" if line.startswith("++") else "+" if line.startswith("+") else ""
    key = line[len(op):].split("=", 1)[0]
    try:
        if op == "":
            OmegaConf.update(cfg, key, value, merge=True)
        elif op == "++" or OmegaConf.select(cfg, key, throw_on_missing=False) is None \
                or isinstance(value, (dict, list)):
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        else:
            raise KeyError(f"{key} exists")
    except Exception as e:  # noqa: BLE001 -- Hydra wraps every one
        return e
    return None


MERGES = [  # (override, its value as Hydra parses it, a word of ckprep's refusal)
    ("dataset.train={path: /t2}", {"path": "/t2"}, None),
    ("dataset={train: {num_samples: 5}, batch_size: 4}",
     {"train": {"num_samples": 5}, "batch_size": 4}, None),
    ("dataset.valid={path: /v2, n: 3}", {"path": "/v2", "n": 3}, "no key 'n'"),
    ("++dataset.valid={n: 3}", {"n": 3}, None),
    ("+dataset.valid={n: 3}", {"n": 3}, None),
    ("++optim.adam={betas: [0.1, 0.2], eps: 1e-8}", {"betas": [0.1, 0.2], "eps": 1e-8}, None),
    ("optim.adam.betas={a: 1}", {"a": 1}, "cannot be merged"),
    ("dataset.valid=[1, 2]", [1, 2], "cannot be merged"),
    ("optim={adam: [1]}", {"adam": [1]}, "cannot be merged"),
    ("optim.adam.betas=[0.5]", [0.5], None),
    ("optim.lr={x: 1}", {"x": 1}, None),
]


@test
def config_set_mapping_as_hydra():
    """a mapping or list onto an existing node does what Hydra does with the
    override (OmegaConf.update(..., merge=True)): a mapping merges into a
    mapping, keeping the keys it does not name, and in xp.cfg's struct mode
    refuses keys the node lacks unless + or ++; a mapping and a list never
    merge; the rest replaces.  Each case asks OmegaConf first."""
    for line, value, word in MERGES:
        conf = chain1("config_override", [("set", line)])
        cfg = load(E.inputs["ac"])["xp.cfg"]
        err = hydra_apply(cfg, line, value)
        check((err is None) == (word is None),
              f"{line}: Hydra {'raises ' + repr(err) if err else 'accepts it'}; the case says otherwise")
        if err is not None:
            E.fails(conf, "ac", word)
            continue
        out = load(E.ok(conf, "ac").out)["xp.cfg"]
        check(OmegaConf.to_container(out, resolve=False) == OmegaConf.to_container(cfg, resolve=False),
              f"{line}: {OmegaConf.to_container(out, resolve=False)} != Hydra's "
              f"{OmegaConf.to_container(cfg, resolve=False)}")
        check_dictconfig(out, cfg)


def as_hydra(case, cfg, conf, inp):
    """One (override, value, refusal word) case on cfg, asked of Hydra first:
    None when both refuse it; else ckprep's output config, checked equal to
    Hydra's (cfg, changed)."""
    line, value, word = case
    err = hydra_apply(cfg, line, value)
    check((err is None) == (word is None),
          f"{line}: Hydra {'raises ' + repr(err) if err else 'accepts it'}; the case says otherwise")
    if err is not None:
        E.fails(conf, inp, word)
        return None
    out = load(E.ok(conf, inp).out)["xp.cfg"]
    check(OmegaConf.to_container(out, resolve=False) == OmegaConf.to_container(cfg, resolve=False),
          f"{line}: {OmegaConf.to_container(out, resolve=False)} != Hydra's "
          f"{OmegaConf.to_container(cfg, resolve=False)}")
    return out


def typed_ro_cfg():
    """A DictConfig with typed containers (Dict[str, int], List[int]), a
    read-only part and a free one, in struct mode."""
    from omegaconf import DictConfig, ListConfig
    c = OmegaConf.create({"opt": DictConfig({"a": 1}, element_type=int),
                          "l": ListConfig([1, 2], element_type=int),
                          "ro": {"x": 1, "sub": {"y": 2}}, "free": {"z": 1}})
    OmegaConf.set_readonly(c.ro, True)
    OmegaConf.set_struct(c, True)
    return c


TYPED_RO = [  # (override, its value as Hydra parses it, a word of ckprep's refusal)
    ("opt.a=5", 5, None),
    ("opt.a=x", "x", "not a valid value"),
    ("++opt.b=3", 3, None),
    ("++opt.b='7'", "7", None),
    ("+opt.b=${free.z}", "${free.z}", None),
    ("++opt.c=x", "x", "not a valid value"),
    ("++opt.c=1.5", 1.5, "not a valid value"),
    ("++opt.c=null", None, "not a valid value"),
    ("++opt.c={d: 1}", {"d": 1}, "typed container"),
    ("l=[3, '4']", [3, "4"], None),
    ("l=[]", [], None),
    ("l=[3, x]", [3, "x"], "not a valid value"),
    ("ro.x=2", 2, "read-only"),
    ("ro.sub.y=3", 3, "read-only"),
    ("++ro.new=1", 1, "read-only"),
    ("ro={x: 5}", {"x": 5}, "read-only"),
    ("ro={}", {}, None),
    ("ro=5", 5, None),
    ("++free.q=1", 1, None),
    ("free.z=[1, 2]", [1, 2], None),
    ("opt=5", 5, None),
]


@test
def config_readonly_and_typed_containers():
    """what OmegaConf refuses is refused, never done silently: a change in a
    read-only part (ReadonlyConfigError, ~key too), a value a typed
    container's element type refuses (ValidationError); a new key of a
    Dict[str, int] and the items of a list onto a List[int] get OmegaConf's
    IntegerNodes.  The rest is what Hydra gives."""
    inp = os.path.join(E.fresh("typed"), "typed.th")
    torch.save({"xp.cfg": typed_ro_cfg(), "model": {"w": torch.ones(2)}}, inp)
    for case in TYPED_RO:
        line, cfg = case[0], typed_ro_cfg()
        out = as_hydra(case, cfg, chain1("config_override", [("set", line)]), inp)
        if out is None:
            continue
        if line != "ro=5":  # (replaced in a writable root, as OmegaConf does)
            check(OmegaConf.is_readonly(out.ro), f"{line}: ro is no longer read-only")
        if line != "opt=5":
            check(out.opt._metadata.element_type is int, f"{line}: opt lost its element type")
            for k in cfg.opt.keys():  # typed nodes as OmegaConf makes them
                got, want = out.opt._get_node(k), cfg.opt._get_node(k)
                check(type(got) is type(want) and got._metadata == want._metadata,
                      f"{line}: opt.{k} is {type(got).__name__} {got._metadata}, "
                      f"OmegaConf's {type(want).__name__} {want._metadata}")
                check(got._get_parent() is out.opt, f"{line}: opt.{k}'s _parent")
            check(out.l._metadata == cfg.l._metadata, f"{line}: l's metadata {out.l._metadata}")
            for k in range(len(cfg.l)):
                got, want = out.l._get_node(k), cfg.l._get_node(k)
                check(type(got) is type(want) and got._metadata == want._metadata
                      and got._get_parent() is out.l,
                      f"{line}: l[{k}] is {type(got).__name__} {got._metadata}, "
                      f"OmegaConf's {type(want).__name__} {want._metadata}")
    cfg = typed_ro_cfg()
    try:
        del cfg.ro["x"]
        raise Fail("OmegaConf removed a key of a read-only config")
    except Fail:
        raise
    except Exception:  # noqa: BLE001 -- ReadonlyConfigError
        pass
    E.fails(chain1("config_override", [("set", "~ro.x")]), inp, "read-only")
    # a read-only container removed from a writable one: OmegaConf lets it
    cfg = typed_ro_cfg()
    with open_dict(cfg):
        del cfg["ro"]
    out = load(E.ok(chain1("config_override", [("set", "~ro")]), inp).out)["xp.cfg"]
    check(OmegaConf.to_container(out) == OmegaConf.to_container(cfg),
          f"~ro: {OmegaConf.to_container(out)} != OmegaConf's {OmegaConf.to_container(cfg)}")
    # OmegaConf 2.2 takes a container as an item of List[int] (unchecked);
    # ckprep refuses it rather than guess at the node to make
    cfg = typed_ro_cfg()
    check(hydra_apply(cfg, "l=[[1]]", [[1]]) is None, "Hydra now refuses l=[[1]]")
    E.fails(chain1("config_override", [("set", "l=[[1]]")]), inp, "typed container")


SCHEMA = """
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class Sub:
    y: int = 2


@dataclass
class Schema:
    l: List[int] = field(default_factory=lambda: [1, 2])
    d: Dict[str, int] = field(default_factory=lambda: {"a": 1})
    ol: Optional[List[int]] = None
    sub: Sub = field(default_factory=Sub)
    x: int = 3
"""

STRUCTURED = [  # (override, its value as Hydra parses it, a word of ckprep's refusal)
    ("l=5", 5, "structured container"),
    ("d=5", 5, "structured container"),
    ("sub=5", 5, "structured container"),
    ("sub=null", None, "structured container"),
    ("d=null", None, "structured container"),
    ("ol=5", 5, "structured container"),
    ("ol=null", None, None),
    ("l=${x}", "${x}", None),
    ("d=???", "???", None),
    ("x=7", 7, None),
    ("l=[3, '4']", [3, "4"], None),
    ("sub.y=9", 9, None),
    ("++d.b=2", 2, None),
]


@test
def config_structured_containers():
    """a config made from a dataclass schema (OmegaConf.structured): a
    scalar onto a typed field's container goes into the node as OmegaConf's
    _set_value puts it (null when Optional, ???, an interpolation: the node
    and its metadata kept), and anything else is refused as OmegaConf
    refuses it; each case asks OmegaConf first"""
    d = E.fresh("structured")
    with open(os.path.join(d, "ckprep_schema.py"), "w") as f:
        f.write(SCHEMA)
    sys.path.insert(0, d)
    import ckprep_schema
    inp = os.path.join(d, "structured.th")
    torch.save({"xp.cfg": OmegaConf.structured(ckprep_schema.Schema),
                "model": {"w": torch.ones(2)}}, inp)
    sec = ("security", [("allow_globals", "ckprep_schema.Schema ckprep_schema.Sub")])
    for case in STRUCTURED:
        line, cfg = case[0], OmegaConf.structured(ckprep_schema.Schema)
        conf = plugtest.ini(("pipeline", {"chain": "config_override"}),
                            ("config_override", [("set", line)]), sec)
        out = as_hydra(case, cfg, conf, inp)
        if out is None:
            continue
        for k in ("l", "d", "ol", "sub"):
            got, want = out._get_node(k), cfg._get_node(k)
            check(type(got) is type(want) and got._metadata == want._metadata,
                  f"{line}: {k} is {type(got).__name__} {got._metadata}, "
                  f"OmegaConf's {type(want).__name__} {want._metadata}")


@test
def config_yaml_hydra_differences():
    """values YAML and Hydra's grammar read differently fail the job at
    configuration (the text after ' #' was dropped before); quoted, each is
    the string written; a URL's ':' and a {k: v} mapping are as before"""
    check_rejects_line("config_override", "set = dataset.name=run #3", "a '#'")
    check_rejects_line("config_override", "set = dataset.name=foo: bar",
                       "': ' outside {}")
    r = E.ok(chain1("config_override", [("set", "+dataset.name='run #3'"),
                                        ("set", "+dataset.url=http://h:80/a"),
                                        ("set", "+dataset.pair=\"foo: bar\"")]),
             "ac")
    ck = load(r.inp)

    def edit(c):
        c.dataset.name = "run #3"
        c.dataset.url = "http://h:80/a"
        c.dataset.pair = "foo: bar"
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], edit)
    out = load(r.out)
    assert_same(ck, out)
    check_dictconfig(out["xp.cfg"], ck["xp.cfg"])


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
def config_non_optional_null_fails():
    """null on a typed node made with is_optional=False fails the job, as
    OmegaConf raises ValidationError; on an optional one it is None"""
    from omegaconf.nodes import IntegerNode
    cfg = OmegaConf.create({"steps": IntegerNode(3, is_optional=False),
                            "opt": IntegerNode(5)})
    try:
        cfg.steps = None
        check(False, "OmegaConf took null for a non-optional node")
    except Exception:
        pass
    inp = os.path.join(E.fresh("nonopt"), "nonopt.th")
    torch.save({"cfg": OmegaConf.create({"steps": IntegerNode(3, is_optional=False),
                                         "opt": IntegerNode(5)}),
                "model": {"w": torch.ones(2)}}, inp)
    E.fails(chain1("config_override", [("config", "cfg"), ("set", "steps=null")]),
            inp, "steps=null", "not optional")
    r = E.ok(chain1("config_override", [("config", "cfg"), ("set", "opt=null")]), inp)
    check(load(r.out)["cfg"].opt is None, "opt=null did not give None")


@test
def config_yaml_tags_fail():
    """a YAML-string config with tags (!!str 123) fails the job: re-emitted
    without them, untouched keys would change type ('123' -> 123)"""
    inp = os.path.join(E.fresh("tags"), "tags.th")
    torch.save({"cfg": "run_id: !!str 123\nlr: 1e-4\n",
                "model": {"w": torch.ones(2)}}, inp)
    E.fails(chain1("config_override", [("config", "cfg"), ("set", "lr=1e-5")]),
            inp, "YAML tags")


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
    """file = a file that does not exist: refused at load (check, run)"""
    p = os.path.join(E.work, "no-such-dir", "missing.yaml")
    check_rejects(chain1("config_override", [("file", p)]), 5, "missing.yaml",
                  "No such file")


@test
def config_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("config_override", SPEC_SETS)
    real, dry = E.ok(conf, "ac"), E.ok(conf, "ac", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


# ---- ~key=value, Hydra's typing, big ints ---------------------------------

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
    cfg0 = load(r.inp)["xp.cfg"]
    # a removed group is reported with its content, as OmegaConf holds it
    check_changes(plugin_changes(r.rec),
                  [("removed", "optim.lr", 0.0001), ("removed", "solver", "musicgen"),
                   ("removed", "optim.adam.betas", OmegaConf.to_container(cfg0.optim.adam.betas)),
                   ("removed", "dataset.valid", OmegaConf.to_container(cfg0.dataset.valid)),
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
    a plain dict and a YAML string; in the record it is a JSON string of its
    digits (JSON readers, the daemon's included, refuse bigger numbers);
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
    check(adds.get("extra.big") == str(big) and adds.get("extra.neg") == str(neg),
          f"record {adds}")
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
    check_rejects_line("config_override", "set = a=~", "'~' is not a value")


@test
def check_bad_set():
    """set lines that are not overrides"""
    for line, word in (("optim.lr", "optim.lr"), ("optim..lr=1", "optim..lr"), ("=1", "=1"),
                       ("a=[1, 2", "a=[1, 2")):
        check_rejects_line("config_override", f"set = {line}", word)


@test
def check_line_of_bad_set():
    """the error points at the bad set line, not at its section"""
    text, line = bad_section("config_override", ["set = a=1", "set = optim.lr"])
    check_rejects(text, line, "optim.lr")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
