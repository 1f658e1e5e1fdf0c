#!/usr/bin/python3
"""No silent wrong output, and errors that help: each configuration that
used to give a wrong checkpoint with exit 0, checked with torch; the
places grammar over a folder of FSDP and plain checkpoints; what `ckprep
check` refuses; and `ckprep run`'s command line (-o DIR, -c -, --set, the
record on failure, warnings, the dry-run plan).

usage: test_run_cli.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import json
import os
import subprocess
import sys

import torch

import plugtest
from plugtest import (E, OD, assert_same, chain1, check, check_rejects, ini, load,
                      plugin_changes, test)


def save(obj, name):
    path = os.path.join(E.fresh("in"), name)
    torch.save(obj, path)
    return path


# ---- wrong output with exit 0, now refused or right ------------------------

@test
def strip_collision_fails_naming_both():
    """prefix_select keep = a. b. with strip = yes over a.w and b.w used to
    write {'w': ones(3)}, status ok: it fails naming both keys"""
    src = save({"best_state": {"model": OD([("a.w", torch.zeros(2)), ("b.w", torch.ones(3))])}},
               "collide.th")
    conf = chain1("prefix_select", [("keep", "a. b."), ("strip", "yes")])
    E.fails(conf, src, "'a.w' and 'b.w' would both be renamed to 'w'")


@test
def strip_collision_replace_keeps_the_later():
    """with on_conflict = replace the later key wins, as the Python dict
    comprehension would give, and the record says which was replaced"""
    sd = OD([("a.w", torch.zeros(2)), ("b.w", torch.ones(3))])
    src = save({"best_state": {"model": sd}}, "collide.th")
    r = E.ok(chain1("prefix_select", [("keep", "a. b."), ("strip", "yes"),
                                      ("on_conflict", "replace")]), src)
    want = {"best_state": {"model": OD([(k[2:], v) for k, v in sd.items()])}}
    assert_same(want, load(r.out))
    ops = [(c["op"], c["key"]) for c in plugin_changes(r.rec)]
    check(("replaced", "a.w") in ops, f"changes {ops}")


@test
def set_with_blanks_changes_the_key():
    """set = optim.lr = 1e-5 (blanks around '=', as INI files invite) sets
    optim.lr; it used to add a key 'lr ' and leave lr unchanged"""
    r = E.ok(chain1("config_override", [("set", "optim.lr = 1e-5"),
                                        ("set", "++ optim.epochs =  3")]), "ac")
    cfg = load(r.out)["xp.cfg"]
    check(cfg.optim.lr == 1e-5 and cfg.optim.epochs == 3, f"optim {dict(cfg.optim)}")
    check(not any(k.endswith(" ") or k.startswith(" ") for k in cfg.optim),
          f"keys with blanks: {list(cfg.optim)}")
    check_rejects(chain1("config_override", [("set", "optim. lr=1")]), 5, "has a blank in it")


@test
def regex_group_reference_refused():
    r"""re:^x\.(w)$ => y.\2 renamed to 'y.' before; Python refuses it, and so
    does check, at its line"""
    check_rejects(chain1("key_remap", [("rename", r"re:^x\.(w)$ => y.\2")]), 5,
                  "invalid group reference 2")


@test
def writer_refuses_duplicate_keys():
    """defence in depth: a dict that would hold one key twice is refused
    when writing, naming it, with nothing written (the check is forced
    through a plugin in tests/core/test_job.c; here the pickle itself holds
    {'w': 1, 'w': 2}, which torch.load would read as {'w': 2})"""
    import zipfile
    dup = b"\x80\x02}q\x00X\x01\x00\x00\x00sq\x01}q\x02(X\x01\x00\x00\x00wK\x01" \
          b"X\x01\x00\x00\x00wK\x02us."
    src = os.path.join(E.fresh("dupkeys"), "dup.th")
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("dup/data.pkl", dup)
        z.writestr("dup/version", "3\n")
    check(torch.load(src, weights_only=True) == {"s": {"w": 2}}, "torch reads one 'w'")
    E.fails(chain1("optimizer_strip", [("drop", "x")]), src,
            "'s' would hold the key 'w' twice")



@test
def writer_refuses_duplicate_storage_keys():
    """the same for keys that are tuples of one storage's id, once held as
    a tuple and once compact with its key as text: equal, as torch.load
    finds them (one entry), so refused (a review's case: they once compared
    unequal and the dict was written)"""
    import struct
    import zipfile

    def x(s):
        return b"X" + struct.pack("<I", len(s)) + s.encode()
    pre = (b"\x80\x02}q\x00(" + x("storage") + b"q\x01ctorch\nFloatStorage\nq\x02" +
           x("cpu") + b"q\x03K\x041")
    tuple_id = b"(h\x01h\x02" + x("0") + b"h\x03K\x04tQq\x05"
    compact_id = b"(h\x01h\x02" + x("0") + b"h\x03K\x04tq\x06Qq\x07"
    pkl = pre + b"(" + tuple_id + b"h\x05\x86K\x01" + compact_id + b"h\x07\x86K\x02u."
    base = save({"x": torch.zeros(4)}, "base.th")
    src = os.path.join(E.fresh("dupids"), "dupids.th")
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(src, "w") as z:
        for i in zin.infolist():
            z.writestr(i, pkl if i.filename.endswith("/data.pkl") else zin.read(i.filename))
    check(len(torch.load(src, weights_only=False)) == 1, "torch reads one key")
    E.fails(chain1("optimizer_strip", [("drop", "x")]), src,
            "would hold the key")

# ---- the places grammar ----------------------------------------------------

def fsdp_and_plain():
    """Two checkpoints: one with best_state/model, one with
    fsdp_best_state/model only (AudioCraft's two kinds)."""
    sd = OD([("emb.weight", torch.randn(4, 2)), ("out.weight", torch.randn(3, 2))])
    a = save({"best_state": {"model": sd}, "model": sd}, "plain.th")
    b = save({"fsdp_best_state": {"model": sd}}, "fsdp.th")
    return a, b


@test
def places_alternatives_and_lists():
    """state = best_state/model|fsdp_best_state/model renames in whichever
    the checkpoint has; a list edits both model and best_state/model; an
    optional place that is absent is skipped; a required one fails naming
    it, with a hint when '.' was written for '/'"""
    a, b = fsdp_and_plain()
    conf = chain1("key_remap", [("state", "best_state/model|fsdp_best_state/model ema/model?"),
                                ("rename", "emb. => embeddings.")])
    for path, where in ((a, "best_state"), (b, "fsdp_best_state")):
        r = E.ok(conf, path)
        out = load(r.out)
        check(list(out[where]["model"]) == ["embeddings.weight", "out.weight"],
              f"{where}: {list(out[where]['model'])}")
    r = E.ok(chain1("key_remap", [("state", "model best_state/model"),
                                  ("rename", "emb. => e.")]), a)
    out = load(r.out)
    check(list(out["model"]) == list(out["best_state"]["model"]) == ["e.weight", "out.weight"],
          "both state dicts renamed")
    E.fails(chain1("key_remap", [("state", "best_state.model"), ("rename", "emb. => e.")]), a,
            "no 'best_state.model' in the checkpoint", "did you mean 'best_state/model'")
    E.fails(chain1("head_init", [("state", "nosuch|other"), ("add", "k float32 2 zeros")]), a,
            "none of 'nosuch|other'")


@test
def places_for_configs():
    """config = xp.cfg|hyper_parameters edits an AudioCraft checkpoint's
    DictConfig and a Lightning one's hyper_parameters with one chain; a
    nested place (a/b) names a config inside a dict"""
    conf = chain1("config_override", [("config", "xp.cfg|hyper_parameters"),
                                      ("set", "++ckprep_tag=ft1")])
    check(load(E.ok(conf, "ac").out)["xp.cfg"].ckprep_tag == "ft1", "AudioCraft config")
    check(load(E.ok(conf, "pl").out)["hyper_parameters"]["ckprep_tag"] == "ft1", "Lightning")
    src = save({"meta": {"cfg": {"lr": 0.1}}, "w": torch.ones(1)}, "nested.th")
    out = load(E.ok(chain1("config_override", [("config", "meta/cfg"), ("set", "lr=0.2")]),
                    src).out)
    check(out["meta"]["cfg"] == {"lr": 0.2}, f"nested {out['meta']}")


def watch(sections, inputs, want):
    """Run `ckprep watch` with [watch] in a fresh folder over the files
    inputs (renamed in, as a training job does) until want records are in
    the audit log; returns (folder, records)."""
    import signal
    import time
    d = E.fresh("daemon")
    for sub in ("incoming", "output", "failed"):
        os.makedirs(os.path.join(d, sub))
    conf = os.path.join(d, "w.ini")
    with open(conf, "w") as f:
        f.write(ini(*sections, ("watch", {"incoming": "incoming", "output": "output",
                                          "failed": "failed", "audit_log": "audit.jsonl",
                                          "settle_ms": 100})))
    p = subprocess.Popen([E.ckprep, "watch", "-c", conf], cwd=d, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    recs = []
    try:
        for src in inputs:
            tmp = os.path.join(d, "incoming", "." + os.path.basename(src) + ".part")
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                fo.write(fi.read())
            os.rename(tmp, os.path.join(d, "incoming", os.path.basename(src)))
        log = os.path.join(d, "audit.jsonl")
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(log):
                with open(log) as f:
                    recs = [json.loads(l) for l in f if l.strip()]
                if len(recs) >= want:
                    break
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    return d, recs


@test
def places_one_daemon_config_mixed_folder():
    """one watch configuration over a folder mixing FSDP and plain
    checkpoints prepares both (the daemon used to fail every checkpoint of
    the other kind)"""
    a, b = fsdp_and_plain()
    d, recs = watch([("pipeline", {"chain": "key_remap"}),
                     ("key_remap", [("state", "best_state/model|fsdp_best_state/model"),
                                    ("rename", "emb. => embeddings.")])], (a, b), 2)
    check(len(recs) == 2 and all(r["status"] == "ok" for r in recs),
          f"records {[(r.get('input', {}).get('path'), r.get('status')) for r in recs]}")
    for name, where in (("plain.th", "best_state"), ("fsdp.th", "fsdp_best_state")):
        out = load(os.path.join(d, "output", name))
        check(list(out[where]["model"]) == ["embeddings.weight", "out.weight"], f"{name}")
    check(os.listdir(os.path.join(d, "failed")) == [], "failed/ is not empty")


@test
def daemon_expect_failure_goes_to_failed():
    """in the daemon, an input that would not load into the target model
    (expect) goes to failed/ with the explanation in NAME.error.json, and no
    output is written; one that would load is prepared"""
    a, _ = fsdp_and_plain()
    sd = load(a)["best_state"]["model"]
    manifest = os.path.join(E.fresh("manifest"), "m.json")
    with open(manifest, "w") as f:
        json.dump({"version": 1, "tensors": [
            {"key": k, "dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
            for k, v in sd.items()]}, f)
    bad = save({"best_state": {"model": OD([("emb.weight", torch.zeros(4, 2))])}}, "bad.th")
    d, recs = watch([("pipeline", {"chain": "expect"}),
                     ("expect", [("manifest", manifest), ("state", "best_state/model")])],
                    (a, bad), 2)
    status = {os.path.basename(r["input"]["path"]): r["status"] for r in recs}
    check(status == {"plain.th": "ok", "bad.th": "failed"}, f"records {status}")
    check(os.path.exists(os.path.join(d, "output", "plain.th")) and
          not os.path.exists(os.path.join(d, "output", "bad.th")), "outputs")
    failed = sorted(os.listdir(os.path.join(d, "failed")))
    check(failed == ["bad.th", "bad.th.error.json"], f"failed/ holds {failed}")
    with open(os.path.join(d, "failed", "bad.th.error.json")) as f:
        err = json.load(f)
    check("out.weight" in json.dumps(err) and "missing" in json.dumps(err),
          f"error.json does not explain: {json.dumps(err)[:300]}")


# ---- one validation: check refuses what run would --------------------------

@test
def check_refuses_section_not_in_chain():
    """[config_override] with chain = optimizer_strip was 'ok' and did
    nothing"""
    check_rejects("[pipeline]\nchain = optimizer_strip\n\n[config_override]\nset = a=1\n", 4,
                  "[config_override] is not in the chain")


@test
def check_refuses_root_before_another_plugin():
    """prefix_select's root followed by another plugin"""
    check_rejects("[pipeline]\nchain = prefix_select key_remap\n[prefix_select]\n"
                  "root = state_dict\n[key_remap]\nrename = a. => b.\n", 3,
                  "put this stage last")


@test
def check_refuses_plugins_with_nothing_to_do():
    """a chain plugin missing what it needs"""
    for plugin, word in (("key_remap", "rename"), ("head_init", "add"),
                         ("prefix_select", "keep, drop or root"), ("config_override", "set")):
        check_rejects(f"[pipeline]\nchain = {plugin}\n", 2, "nothing to do", word)


@test
def check_refuses_malformed_lines():
    """malformed add, rename and set lines, each at its line, with the part
    that is wrong named"""
    check_rejects(chain1("head_init", [("add", "k float17 2 zeros")]), 5,
                  "unsupported dtype 'float17'", "float16 (half fp16 f16)")
    check_rejects(chain1("head_init", [("add", "k fp16 2x normal(0, 1)")]), 5, "bad shape '2x'")
    check_rejects(chain1("key_remap", [("rename", "a. -> b.")]), 5, "is not FROM => TO")
    check_rejects(chain1("config_override", [("set", "a=[1, 2")]), 5, "YAML")


# ---- ckprep run's command line ---------------------------------------------

def run(args, stdin=None):
    p = subprocess.run([E.ckprep] + args, input=stdin, capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


@test
def run_failure_prints_its_record():
    """a failed run prints its record on stdout (status failed, the error),
    exit 1, one line on stderr, nothing written"""
    conf = E.conf(chain1("prefix_select", [("keep", "nosuch.")]))
    out = os.path.join(E.fresh("fail"), "o.th")
    rc, so, se = run(["run", "-c", conf, "-o", out, E.inputs["ac"]])
    check(rc == 1, f"exit {rc}")
    rec = json.loads(so)
    check(rec["status"] == "failed" and rec["error"]["code"] == "plugin" and
          "matches no key" in rec["error"]["message"], f"record {rec}")
    check(len(se.splitlines()) == 1 and not os.path.exists(out), f"stderr {se!r}")


@test
def run_warns_of_unmatched_rules():
    """a rule that matches no key: a warning on stderr and in the record,
    the job done"""
    conf = E.conf(chain1("key_remap", [("rename", r"re:^layers\.(\d+) => l.\1"),
                                       ("rename", "emb. => e.")]))
    out = os.path.join(E.fresh("warn"), "o.th")
    rc, so, se = run(["run", "-c", conf, "-o", out, E.inputs["ac"]])
    check(rc == 0, f"exit {rc}: {se}")
    check(r"warning:" in se and r"rule 're:^layers\.(\d+) => l.\1' matches no key" in se,
          f"stderr {se!r}")
    check(json.loads(so)["plugins"][0]["warnings"] ==
          [r"key_remap: rule 're:^layers\.(\d+) => l.\1' matches no key"], f"record {so[:300]}")


def zip_fingerprint(path):
    """ckprep's fingerprint of a zip, made here from the file: SHA-256 over
    its size (8 bytes, little-endian), data.pkl's bytes and the central
    directory's"""
    import hashlib
    import struct
    import zipfile
    with open(path, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(path) as z:
        pkl = [i for i in z.infolist() if i.filename.endswith("/data.pkl")]
        check(len(pkl) == 1 and pkl[0].compress_type == zipfile.ZIP_STORED,
              f"{path}: one stored data.pkl")
        pickle = z.read(pkl[0])
        cd_off = z.start_dir
    end = data.rfind(b"PK\x06\x06")       # zip64's end record, else the end
    end = end if end >= cd_off else data.rfind(b"PK\x05\x06")
    return hashlib.sha256(struct.pack("<Q", len(data)) + pickle +
                          data[cd_off:end]).hexdigest()


@test
def big_output_fingerprint_beside_its_sync():
    """an output whose pickle is past 4 MiB (60,000 tensors) has its
    fingerprint made on a second thread while the file is synced, and an
    input's is made after its parse: the record's output digest is the
    fingerprint computed here from the file, and the input digest of a run
    (of a dry run, of a failed job) reading that file, and the copy loads
    in torch equal to the source"""
    sd = OD((f"layer.{i}.w", torch.full((2,), float(i))) for i in range(60000))
    src = save({"model": sd, "note": "big pickle"}, "bigpkl.th")
    conf = E.conf(chain1("key_remap", [("state", "model"), ("rename", "layer. => l.")]))
    d = E.fresh("bigfp")
    out, again = os.path.join(d, "o.th"), os.path.join(d, "again.th")
    rc, so, se = run(["run", "-c", conf, "-o", out, src])
    check(rc == 0, f"exit {rc}: {se}")
    import zipfile
    with zipfile.ZipFile(out) as z:
        pkl = sum(i.file_size for i in z.infolist() if i.filename.endswith("/data.pkl"))
    check(pkl > 4 << 20, f"pickle of {pkl} bytes: not past 4 MiB")
    written = json.loads(so)["output"]["digest"]
    conf2 = E.conf(chain1("key_remap", [("state", "model"), ("rename", "l.0.w => l.0.w")]))
    check(written == zip_fingerprint(out),
          f"written {written}, computed here {zip_fingerprint(out)}")
    rc, so2, se2 = run(["run", "-c", conf2, "-o", again, out])
    check(rc == 0, f"exit {rc}: {se2}")
    check(json.loads(so2)["input"]["digest"] == written,
          f"written {written}, opened {json.loads(so2)['input']['digest']}")
    rc, so3, se3 = run(["run", "-c", conf2, "--dry-run", out])
    check(rc == 0 and json.loads(so3)["input"]["digest"] == written,
          f"dry run: exit {rc}, {so3[:200]} {se3[-300:]}")
    bad = E.conf(chain1("prefix_select", [("state", "model"), ("keep", "nosuch.")]))
    rc, so4, se4 = run(["run", "-c", bad, "-o", os.path.join(d, "bad.th"), out])
    rec = json.loads(so4)
    check(rc == 1 and rec["status"] == "failed" and rec["input"]["digest"] == written,
          f"a failed job's record: exit {rc}, {so4[:300]}")
    got = torch.load(out, weights_only=True)["model"]
    check(len(got) == 60000 and torch.equal(got["l.59999.w"], sd["layer.59999.w"]),
          "the copy loads as the source")


@test
def run_output_folder():
    """-o DIR (existing, or ending in '/') writes DIR/<input name>; an output
    whose folder does not exist fails before any work, exit 2"""
    conf = E.conf(chain1("key_remap", [("rename", "emb. => e.")]))
    d = E.fresh("outdir")
    for arg in (d, d + "/"):
        rc, so, se = run(["run", "-c", conf, "-o", arg, E.inputs["ac"]])
        want = os.path.join(d, os.path.basename(E.inputs["ac"]))
        check(rc == 0 and os.path.isfile(want), f"-o {arg}: exit {rc} {se}")
        check(json.loads(so)["output"]["path"].rstrip("/").endswith(os.path.basename(want)), so[:200])
        os.unlink(want)
    rc, so, se = run(["run", "-c", conf, "-o", os.path.join(d, "nosuch", "x.th"),
                      E.inputs["ac"]])
    check(rc == 2 and "its folder does not exist" in se and so == "", f"exit {rc} {se!r}")
    check(os.listdir(d) == [], f"left {os.listdir(d)}")
    # -o naming the input (its folder, or itself) never overwrites it
    src = os.path.join(d, "in.th")
    with open(E.inputs["ac"], "rb") as fi, open(src, "wb") as fo:
        fo.write(fi.read())
    before = open(src, "rb").read()
    for arg in (d, src):
        rc, so, se = run(["run", "-c", conf, "-o", arg, src])
        check(rc == 2 and "is the input" in se, f"-o {arg}: exit {rc} {se!r}")
        check(open(src, "rb").read() == before, "the input changed")


@test
def run_config_from_stdin_and_set():
    """-c - reads the configuration from stdin; --set adds directive lines,
    checked like the file's, and the record's config digest covers them"""
    text = chain1("config_override", [("set", "optim.lr=2e-5")])
    out = os.path.join(E.fresh("stdin"), "o.th")
    rc, so, se = run(["run", "-c", "-", "-o", out, "--set", "config_override.set=optim.epochs=7",
                      E.inputs["ac"]], stdin=text.encode())
    check(rc == 0, f"exit {rc}: {se}")
    cfg = load(out)["xp.cfg"]
    check(cfg.optim.lr == 2e-5 and cfg.optim.epochs == 7, f"optim {dict(cfg.optim)}")
    rec = json.loads(so)
    check(rec["config"]["path"] == "<stdin>", f"config {rec['config']}")
    conf = E.conf(text)
    rc, so2, se = run(["run", "-c", conf, "-n", E.inputs["ac"]])
    check(json.loads(so2)["config"]["digest"] != rec["config"]["digest"], "digest ignores --set")
    rc, so, se = run(["run", "-c", conf, "--set", "config_override.sett=1", "-n", E.inputs["ac"]])
    check(rc == 2 and "--set 'config_override.sett=1': unknown directive 'sett'" in se, se)
    rc, so, se = run(["check", "-c", conf, "--set", "nonsense"])
    check(rc == 2 and "not SECTION.DIRECTIVE=VALUE" in se, se)


@test
def dry_run_plan():
    """--dry-run prints a plan on stderr: one line per change, renames in
    key order, a removed config group with its content"""
    conf = E.conf(ini(("pipeline", {"chain": "key_remap config_override"}),
                      ("key_remap", {"rename": "emb. => embeddings."}),
                      ("config_override", {"set": "~optim.adam"})))
    rc, so, se = run(["run", "-c", conf, "-n", E.inputs["ac"]])
    check(rc == 0, f"exit {rc}: {se}")
    lines = se.splitlines()
    check(lines and "plan (dry run, nothing written)" in lines[0], f"stderr {se!r}")
    renames = [l for l in lines if "renamed" in l]
    sd = load(E.inputs["ac"])["best_state"]["model"]
    want = [k for k in sd if k.startswith("emb.")]
    check([l.split(" renamed ")[1].split(" -> ")[0] for l in renames] == want,
          f"renames {renames} not in key order {want}")
    removed = [l for l in lines if "removed optim.adam" in l]
    check(len(removed) == 1 and "betas" in removed[0], f"removal {removed}")


@test
def not_a_checkpoint_says_so():
    """a file that is not a checkpoint says what it is; a zip cut short says
    truncated, with its size"""
    d = E.fresh("notckpt")
    txt = os.path.join(d, "notes.th")
    with open(txt, "w") as f:
        f.write("hello world\n")
    E.fails(chain1("key_remap", [("rename", "a. => b.")]), txt,
            "not a PyTorch checkpoint", "text ('hello world')")
    cut = os.path.join(d, "cut.th")
    with open(E.inputs["ac"], "rb") as fi, open(cut, "wb") as fo:
        fo.write(fi.read()[:20000])
    E.fails(chain1("key_remap", [("rename", "a. => b.")]), cut, "truncated", "20000 bytes")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
