#!/usr/bin/python3
"""Make the seed corpora of the libFuzzer targets under tests/fuzz/corpus/.

usage: /usr/bin/python3 tests/fuzz/make_corpus.py [CORPUS_DIR]

Run with /usr/bin/python3 (Debian's python3-torch and python3-omegaconf);
the committed files were made by this script with torch 1.13.  It replaces
everything in corpus/<target>/ (never regress/, which holds inputs that once
crashed and is kept by hand):

  fuzz_ckpt/      torch.save zip files: AudioCraft-, Lightning- and
                  export-shaped checkpoints, every dtype, views, shared
                  storages, parameters, Python values, pickle protocols 2 to
                  5, a deflated and a zip64 rewrite; plus a few files of
                  ../shared/corpus/third-party (gopickle, BSD-2-Clause;
                  TorchSharp.PyBridge, MIT) when that folder is there
  fuzz_legacy/    the same objects saved with
                  _use_new_zipfile_serialization=False, and gopickle's
  fuzz_pickle/    the data.pkl of every fuzz_ckpt file, and pickles of plain
                  Python values at protocols 0 to 5, and hand-written ones
                  for the opcodes CPython 3 no longer writes, and the numpy
                  values of tests/core/make_numpy_cases.py
  fuzz_conf/      conf/ckprep.ini, conf/examples/*.ini and a few more
  fuzz_override/  override lines, each optionally followed by a YAML config
  fuzz_tar/       legacy files whose first block is also a tar header (v7
                  and ustar, the member 'storages' a harmless pickle), their
                  controls with the checksum broken, a few fuzz_legacy files
  fuzz_zipdiff/   the fuzz_ckpt zips, case-twin and duplicate-name rewrites

The published attack files of ../shared/corpus/hostile-third-party
(picklescan, modelscan, modelaudit; provenance in its README) are copied in
as h3p_<folder>_<name>: zip files to fuzz_ckpt/ and fuzz_zipdiff/, the rest
to fuzz_pickle/ and fuzz_legacy/.  The fuzz targets never execute a pickle.
`--extra` makes only fuzz_tar/, fuzz_zipdiff/ and the h3p_ files (from the
committed fuzz_ckpt/ and fuzz_legacy/ files).

Every file stays under 20 KB.  The zip files come out the same each run;
the legacy ones do not (their storage keys are object addresses).
"""
import collections
import io
import os
import pickle
import shutil
import sys
import warnings
import zipfile

import torch
from omegaconf import OmegaConf
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
THIRD = os.path.join(os.path.dirname(ROOT), 'shared', 'corpus', 'third-party')
MAX = 20 * 1024


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.ModuleList(torch.nn.Embedding(4, 3) for _ in range(2))
        self.out_norm = torch.nn.LayerNorm(3)
        self.linears = torch.nn.ModuleList(torch.nn.Linear(3, 4) for _ in range(2))


def audiocraft():
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    cfg = OmegaConf.create({
        'sample_rate': 32000,
        'optim': {'lr': 1e-4, 'optimizer': 'adamw',
                  'adam': {'betas': [0.9, 0.95], 'weight_decay': 0.1}},
        'dataset': {'batch_size': 8, 'train': {'path': '/data/train'}},
        'sampling_rate_ref': '${sample_rate}',
        'continue_from': '???',
    })
    OmegaConf.set_struct(cfg, True)
    state = model.state_dict()
    return {
        'xp.cfg': cfg,
        'xp.sig': '9f3a1c2b',
        'best_state': {'model': {k: v.detach().clone().half()
                                 for k, v in state.items()}},
        'model': state,
        'optimizer': opt.state_dict(),
        'lr_scheduler': sched.state_dict(),
        'ema': {'state': collections.defaultdict(dict, {'model': {}}),
                'count': 3.0},
    }


def typed_config():
    torch.manual_seed(1)
    cfg = OmegaConf.create({
        'sample_rate': IntegerNode(32000),
        'optim': {'lr': FloatNode(1e-4), 'ema': BooleanNode(True),
                  'name': StringNode('adamw'), 'betas': [0.9, 0.95]},
        'continue_from': StringNode(None),
        'path': '${optim.name}',
    })
    return {'xp.cfg': cfg, 'model': {'emb.0.weight': torch.randn(2, 3)}}


def exported():
    torch.manual_seed(2)
    cfg = 'sample_rate: 32000\noptim:\n  lr: 0.0001\n  betas: [0.9, 0.95]\n' \
          'dataset:\n  train: {path: /data/train}\nname: "quoted"\n'
    return {'xp.cfg': cfg, 'cfg': cfg, 'version': '1.0',
            'best_state': {'emb.0.weight': torch.randn(4, 3).half()}}


def lightning():
    torch.manual_seed(3)
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    lin(torch.randn(1, 3)).sum().backward()
    opt.step()
    sd = collections.OrderedDict(
        ('model.lm.' + k, v) for k, v in lin.state_dict().items())
    sd['model.other.weight'] = torch.zeros(2)
    return {'epoch': 3, 'global_step': 120, 'pytorch-lightning_version': '1.9.0',
            'state_dict': sd, 'optimizer_states': [opt.state_dict()],
            'lr_schedulers': [], 'hyper_parameters': {'lr': 0.1, 'name': 'x'}}


def dtypes():
    out = {}
    for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16,
               torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
               torch.bool, torch.complex64, torch.complex128):
        out[str(dt)] = torch.arange(3).to(dt)
    return out


def views():
    torch.manual_seed(4)
    base = torch.randn(4, 5)
    return {
        'base': base,
        'transposed': base.t(),
        'offset': base[1:, 2:],
        'strided': base[::2, ::3],
        'row': base[2],
        'expanded': torch.ones(1, 3).expand(4, 3),
        'scalar': torch.tensor(2.5),
        'empty': torch.empty(0, 3),
        'empty_storage': torch.empty(0),
        'param': torch.nn.Parameter(torch.randn(2)),
        'grad': torch.randn(2).requires_grad_(),
        'same': [base, base],
    }


def python_values():
    lst = [1, 2]
    lst.append(lst)
    return {
        'none': None, 'bools': (True, False), 'ints': [0, 1, 255, 256, 65535,
        65536, -1, -129, 2**31 - 1, -2**31, 2**31, 2**63 - 1, -2**63, 2**100,
        -2**100], 'floats': [0.0, -0.0, 1.5, float('inf'), float('-inf'),
        float('nan'), 1e-300], 'str': ['', 'ascii', 'caf\u00e9', '\u2603',
        '\U0001f600', 'a\nb\\c'], 'bytes': [b'', b'\x00\xff', bytearray(b'ab'),
        bytearray()], 'sets': [set(), {1, 2}, frozenset(), frozenset({'a'})],
        'tuples': [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        'nested': {'a': {'b': {'c': [[[]]]}}}, 'recursive': lst,
        'ordered': collections.OrderedDict(a=1, b=2),
        'default': collections.defaultdict(list, {'x': [1]}),
        'counter': collections.Counter('aab'),
        'complex': complex(1, 2), 'many': list(range(1100)),
        'dict1001': {i: i for i in range(1001)},
        'tensor': torch.zeros(2),
    }


def quantized():
    q = torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.1, 0, torch.qint8)
    return {'q': q}


def sparse():
    i = torch.tensor([[0, 1], [1, 0]])
    return {'s': torch.sparse_coo_tensor(i, torch.tensor([1.0, 2.0]), (2, 2))}


def numpy_values():
    """numpy arrays, scalars and dtypes as Lightning keeps them (run with
    [security] allow_numpy = yes by fuzz_ckpt)."""
    import numpy as np
    rec = np.dtype([('a', '<f4'), ('b', '<i8', (2,))])
    return {'state_dict': {'w': torch.ones(2)},
            'hyper_parameters': {
                'mean': np.arange(3.0), 'lr': np.float32(0.5),
                'dt': np.dtype('<U2'), 'rec': np.zeros(2, dtype=rec),
                'fortran': np.zeros((2, 3), dtype='>i4', order='F'),
                'when': np.datetime64('2020-01-01', 'D'), 'empty': np.zeros(0)}}


def objects():
    return [
        ('audiocraft', audiocraft),
        ('typed_config', typed_config),
        ('exported', exported),
        ('lightning', lightning),
        ('dtypes', dtypes),
        ('views', views),
        ('python_values', python_values),
        ('quantized', quantized),
        ('sparse', sparse),
        ('tensor', lambda: torch.arange(6, dtype=torch.float32).view(2, 3)),
        ('list_of_tensors', lambda: [torch.ones(2), torch.zeros(1, dtype=torch.int8)]),
        ('empty_dict', dict),
        ('numpy_values', numpy_values),
    ]


def save(obj, **kw):
    b = io.BytesIO()
    torch.save(obj, b, **kw)
    return b.getvalue()


def rezip(data, compression, force_zip64=False):
    """The same records in a new archive (Python's zipfile)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', compression) as z:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = compression
            with z.open(zi, 'w', force_zip64=force_zip64) as f:
                f.write(src.read(info.filename))
    return out.getvalue()


def data_pkl(data):
    z = zipfile.ZipFile(io.BytesIO(data))
    name = [n for n in z.namelist() if n.endswith('/data.pkl')][0]
    return z.read(name)


# Opcodes CPython 3 does not write, by hand.
HAND_PICKLES = {
    'inst_obj': b'(i__main__\nFoo\n(dp0\nS\'a\'\np1\nI1\nsb(c__main__\nBar\no.',
    'text_memo': b'(lp0\nI1\naF2.5\nag0\naL123456789012345678901L\na.',
    'string_escapes': b'S\'a\\n\\t\\x41\\101\\\'"\\\\\'\np0\n.',
    'unicode_escapes': b'Vcaf\\u00e9 \\U0001F600 \xe9\np0\n.',
    'persid_text': b'(S\'storage\'\nPstorage_0\np0\n.',
    'binpersid': b'\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\n'
                 b'X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ.',
    'set_additems': b'\x80\x04\x8f(K\x01K\x02\x90(K\x03\x91\x86.',
    'newobj_ex': b'\x80\x04\x8c\x01m\x8c\x01n\x93)}\x92\x94.',
    'bytearray8': b'\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00ab.',
    'long4': b'\x80\x02\x8b\x09\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09.',
    'dup_popmark': b'\x80\x02K\x012(K\x02K\x031\x86.',
    'recursive_tuple': b'\x80\x02]q\x00h\x00\x85q\x01a.',
    'binstring': b'T\x03\x00\x00\x00abcU\x01d\x86.',
    'binbytes': b'\x80\x03B\x02\x00\x00\x00abC\x01c\x86.',
    'frame_memoize': b'\x80\x04\x95\x09\x00\x00\x00\x00\x00\x00\x00'
                     b'\x8c\x01a\x94h\x00\x86\x94.',
    'int_bool': b'I01\nI00\n\x86.',
    'build_state': b'\x80\x02c__main__\nC\n)\x81}X\x01\x00\x00\x00aK\x01sb.',
    'long_binput': b'\x80\x02]r\x00\x01\x00\x00j\x00\x01\x00\x00\x86.',
}


def clear(d):
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))


def put(d, name, data):
    assert len(data) < MAX, (name, len(data))
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def third_party(dst_zip, dst_legacy):
    if not os.path.isdir(THIRD):
        print('note: %s not found; no third-party seeds' % THIRD)
        return []
    picks = [('gopickle', 'tensor_float32_proto2_zip.pt', dst_zip),
             ('gopickle', 'tensor_bfloat16_proto5_zip.pt', dst_zip),
             ('gopickle', 'tensor_int64_proto4_zip.pt', dst_zip),
             ('torchsharp', 'tensors.pth', dst_zip),
             ('torchsharp', 'module_load.pth', dst_zip),
             ('torchsharp', 'sgd_load.pth', dst_zip),
             ('torchsharp', 'tensors.safetensors', dst_zip),
             ('torchsharp', 'module_load.safetensors', dst_zip),
             ('gopickle', 'tensor_float32_proto1.pt', dst_legacy),
             ('gopickle', 'tensor_bool_proto2.pt', dst_legacy),
             ('gopickle', 'tensor_int64_proto4.pt', dst_legacy),
             ('gopickle', 'tensor_float16_proto5.pt', dst_legacy)]
    out = []
    for folder, name, dst in picks:
        src = os.path.join(THIRD, folder, name)
        if os.path.isfile(src) and os.path.getsize(src) < MAX:
            with open(src, 'rb') as f:
                data = f.read()
            put(dst, '%s_%s' % (folder, name), data)
            out.append(data)
    return out


CONF_EXTRA = {
    'labels.ini': '[pipeline]\nchain = key_remap key_remap:second, head_init\n'
                  '[key_remap]\nstate = model best_state/model\n'
                  'rename = emb. => embeddings.\n'
                  'rename = re:^layers\\.([0-9]+)\\. => blocks.\\1.\n'
                  'on_conflict = replace\nrequire_match = yes\n'
                  '[key_remap:second]\nstate = model\nrename = a => b\n'
                  '[head_init]\nstate = model\nseed = 18446744073709551615\n'
                  'add = h.w bfloat16 2x3x4 uniform(-1,1)\n'
                  'add = h.b float32 like:h.w const(0.5)\n'
                  'add = h.c int64 3 zeros\non_exists = skip\n',
    'security.ini': '[security]\nallow_globals = argparse.Namespace, '
                    'numpy.core.multiarray._reconstruct\n'
                    'allow_globals = numpy.dtype\nmax_pickle_bytes = 16MiB\n'
                    'max_depth = 50\nmax_memo = 100000\nmax_string_bytes = 1K\n'
                    '[pipeline]\nchain =\n',
    'override.ini': '; comment\n# comment\n[pipeline]\nchain = config_override '
                    'optimizer_strip\n[config_override]\nconfig = cfg\n'
                    'set = +a.b.c=[1, {x: y}]\nset = ++d=\'quoted\'\n'
                    'set = ~e.f\nset = g=${a.b}\nfile = /nonexistent.yaml\n'
                    '[optimizer_strip]\ndrop = optimizer, ema\ndetect = no\n',
    'transform.ini': '[pipeline]\nchain = tree cast\n[tree]\n'
                     'copy = model => best_state/model\nmove = ema? => old/ema\n'
                     'delete = optimizer?\non_exists = replace\n[cast]\n'
                     'state = best_state/model /\nto = bfloat16\nfrom = float32\n'
                     'keys = *.weight\n[output]\nformat = safetensors\n'
                     'state = best_state/model|/\ntied = dedupe\nconfig = xp.cfg\n',
    'multiline.ini': '[pipeline]\nchain = prefix_select\n  optimizer_strip\n'
                     '[prefix_select]\nstate = state_dict\nkeep = model.lm. model.x.\n'
                     'drop = model.lm.head.\nstrip = true\n',
}

OVERRIDES = {
    'set_float': 'optim.lr=1e-5',
    'set_path': 'dataset.train.path=/new/dataset/path',
    'add': '+conditioners.style.model=chroma',
    'force_list': '++optim.betas=[0.9, 0.999]',
    'force_map': '++new={a: 1, b: [true, null, ~], c: {d: .inf}}',
    'remove': '~optim.adam',
    'interp': 'sampling_rate_ref=${sample_rate}',
    'quoted': "++name='01'",
    'dquoted': '++name="a\\tb\\u00e9"',
    'int_under': 'sample_rate=48_000',
    'bool': '++flag=True',
    'null': '++x.y.z=null',
    'empty': '++empty=',
    'nan': '++f=.nan',
    'neg_inf': '++f=-.inf',
    'block': '++b=|\n  text\n',
    'deep': '++a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p=1',
    'yaml_set': 'optim.lr=2e-4\nsample_rate: 32000\noptim:\n  lr: 0.0001\n'
                '  betas: [0.9, 0.95]\ndataset:\n  train: {path: /data}\n',
    'yaml_add': '+optim.new.key=[1, 2]\noptim:\n  lr: 1\n',
    'yaml_remove': '~a.b\na:\n  b: 1\n  c: "x"\n',
    'yaml_force_deep': '++x.y={k: v}\nx: 3\n',
    'yaml_merge': '++top=1\nleft: {a: 1, b: {c: 2}}\nright: [1, {d: e}]\n'
                  "q: 'single'\nbig: 123456789012345678901234567890\n",
}


def tar_polyglot(storages_pickle, ustar=False):
    """A legacy stream whose first 512 bytes are also a tar header (see
    tests/hostile/test_differential.py, which proves torch runs it)."""
    import struct
    head = (pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) +
            pickle.dumps(1001, protocol=2) +
            b'\x80\x02}(X\x03\x00\x00\x00padB')
    start = len(head) + 4

    def header(name, size, blk=None):
        b = bytearray(512) if blk is None else bytearray(blk)
        if name is not None:
            b[0:100] = name.ljust(100, b'\0')
        for off, n, v in ((100, 8, 0o644), (108, 8, 0), (116, 8, 0),
                          (124, 12, size), (136, 12, 0)):
            b[off:off + n] = b'%0*o\0' % (n - 1, v)
        b[156:157] = b'0'
        if ustar:
            b[257:265] = b'ustar\x0000'
        b[148:156] = b' ' * 8
        b[148:156] = b'%06o\0 ' % sum(b)
        return bytes(b)
    body = storages_pickle + b'\0' * ((-len(storages_pickle)) % 512)
    tail = header(b'storages', len(storages_pickle)) + body + b'\0' * 1024
    blk = bytearray(512)
    blk[0:start] = head + struct.pack('<I', 512 + len(tail) - start)
    return (header(None, 0, blk) + tail +
            b'X\x0d\x00\x00\x00little_endian\x88u.' +
            b'\x80\x02}.' + b'\x80\x02].')


HOSTILE = os.path.join(os.path.dirname(ROOT), 'shared', 'corpus',
                       'hostile-third-party')


def hostile(corpus):
    """The published attack files as h3p_* seeds (see the docstring)."""
    for t in ('fuzz_ckpt', 'fuzz_zipdiff', 'fuzz_pickle', 'fuzz_legacy'):
        d = os.path.join(corpus, t)
        for f in os.listdir(d):
            if f.startswith('h3p_'):
                os.unlink(os.path.join(d, f))
    if not os.path.isdir(HOSTILE):
        print('no %s: no h3p_ seeds' % HOSTILE)
        return
    for sub in sorted(os.listdir(HOSTILE)):
        if not os.path.isdir(os.path.join(HOSTILE, sub)):
            continue
        for f in sorted(os.listdir(os.path.join(HOSTILE, sub))):
            if f in ('LICENSE', 'README.md'):
                continue
            data = open(os.path.join(HOSTILE, sub, f), 'rb').read()
            name = 'h3p_%s_%s' % (sub, f)
            zipped = data[:4] == b'PK\x03\x04'
            for t in (('fuzz_ckpt', 'fuzz_zipdiff') if zipped else
                      ('fuzz_pickle', 'fuzz_legacy')):
                with open(os.path.join(corpus, t, name), 'wb') as o:
                    o.write(data)


def extra(corpus):
    """fuzz_tar/, fuzz_zipdiff/ and the h3p_ seeds."""
    tar, zd = os.path.join(corpus, 'fuzz_tar'), os.path.join(corpus,
                                                            'fuzz_zipdiff')
    clear(tar)
    clear(zd)
    for ustar in (False, True):
        data = tar_polyglot(pickle.dumps(0, protocol=2), ustar)
        put(tar, 'polyglot%s.pt' % ('_ustar' if ustar else ''), data)
        bad = bytearray(data)
        bad[150] ^= 1
        put(tar, 'control%s.pt' % ('_ustar' if ustar else ''), bytes(bad))
    leg = os.path.join(corpus, 'fuzz_legacy')
    for f in sorted(os.listdir(leg))[:6]:
        put(tar, f, open(os.path.join(leg, f), 'rb').read())
    ck = os.path.join(corpus, 'fuzz_ckpt')
    for f in sorted(os.listdir(ck)):
        data = open(os.path.join(ck, f), 'rb').read()
        put(zd, f, data)
    data = open(os.path.join(ck, sorted(os.listdir(ck))[0]), 'rb').read()
    with zipfile.ZipFile(io.BytesIO(data)) as zi:
        names = zi.namelist()
        recs = [(n, zi.read(n)) for n in names]
    for tag, extra_name in (('twin', names[0].replace('data.pkl', 'Data.pkl')),
                            ('dup', names[0])):
        out = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with zipfile.ZipFile(out, 'w') as zo:
                for i, (n, b) in enumerate(recs):
                    zo.writestr(zipfile.ZipInfo(n), b)
                    if i == 0:
                        zo.writestr(zipfile.ZipInfo(extra_name), b)
        put(zd, 'rewrite_%s.pt' % tag, out.getvalue())
    hostile(corpus)


def main():
    args = [a for a in sys.argv[1:] if a != '--extra']
    corpus = args[0] if args else os.path.join(HERE, 'corpus')
    if '--extra' in sys.argv:
        extra(corpus)
        return
    dirs = {t: os.path.join(corpus, t) for t in
            ('fuzz_ckpt', 'fuzz_legacy', 'fuzz_pickle', 'fuzz_conf',
             'fuzz_override')}
    for d in dirs.values():
        clear(d)
    warnings.simplefilter('ignore')
    zips = []
    for name, make in objects():
        data = save(make())
        put(dirs['fuzz_ckpt'], name + '.pt', data)
        zips.append((name, data))
        put(dirs['fuzz_legacy'], name + '.pt',
            save(make(), _use_new_zipfile_serialization=False))
    put(dirs['fuzz_ckpt'], 'numpy_values_proto5.pt',
        save(numpy_values(), pickle_protocol=5))
    for proto in (4, 5):
        data = save(audiocraft(), pickle_protocol=proto)
        put(dirs['fuzz_ckpt'], 'audiocraft_proto%d.pt' % proto, data)
        zips.append(('audiocraft_proto%d' % proto, data))
        put(dirs['fuzz_legacy'], 'views_proto%d.pt' % proto,
            save(views(), _use_new_zipfile_serialization=False,
                 pickle_protocol=proto))
    put(dirs['fuzz_legacy'], 'tensor_proto1.pt',
        save(torch.ones(3), _use_new_zipfile_serialization=False,
             pickle_protocol=1))
    put(dirs['fuzz_ckpt'], 'dtypes_deflated.pt',
        rezip(dict(zips)['dtypes'], zipfile.ZIP_DEFLATED))
    put(dirs['fuzz_ckpt'], 'lightning_zip64.pt',
        rezip(dict(zips)['lightning'], zipfile.ZIP_STORED, force_zip64=True))
    for data in third_party(dirs['fuzz_ckpt'], dirs['fuzz_legacy']):
        if data[:4] == b'PK\x03\x04':
            zips.append(('x', data))

    seen = set()
    for name, data in zips:
        pkl = data_pkl(data)
        if pkl not in seen:
            seen.add(pkl)
            put(dirs['fuzz_pickle'], 'data_%d.pkl' % len(seen), pkl)
    plain = {k: v for k, v in python_values().items() if k != 'tensor'}
    for proto in range(6):
        put(dirs['fuzz_pickle'], 'python_proto%d.pkl' % proto,
            pickle.dumps(plain, protocol=proto))
    for name, data in HAND_PICKLES.items():
        put(dirs['fuzz_pickle'], name + '.pkl', data)
    sys.path.insert(0, os.path.join(ROOT, 'tests', 'core'))
    import make_numpy_cases  # numpy values, good and hostile
    for name, data, _, _ in make_numpy_cases.cases:
        put(dirs['fuzz_pickle'], 'numpy_%s.pkl' % name, data)

    confdir = os.path.join(ROOT, 'conf')
    put(dirs['fuzz_conf'], 'ckprep.ini',
        open(os.path.join(confdir, 'ckprep.ini'), 'rb').read())
    for f in sorted(os.listdir(os.path.join(confdir, 'examples'))):
        if f.endswith('.ini'):
            put(dirs['fuzz_conf'], 'example_' + f,
                open(os.path.join(confdir, 'examples', f), 'rb').read())
    for name, text in CONF_EXTRA.items():
        put(dirs['fuzz_conf'], name, text.encode())

    for name, text in OVERRIDES.items():
        put(dirs['fuzz_override'], name + '.txt', text.encode())

    extra(corpus)
    for t, d in sorted(dirs.items()):
        print('%-14s %3d files' % (t, len(os.listdir(d))))


if __name__ == '__main__':
    main()
