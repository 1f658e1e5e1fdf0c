#!/usr/bin/python3
"""safetensors from its specification (github.com/huggingface/safetensors,
README "Format"), with numpy and json only: the official package is not
installed here, and a reader sharing no code with ckprep is the point.

read(path) -> (metadata, OrderedDict name -> numpy array), checking every
rule of the format strictly: the 8-byte little-endian header size, a UTF-8
JSON object without duplicate keys, __metadata__ str -> str, each tensor
{dtype, shape, data_offsets} and nothing else, the byte count of each
range matching its dtype and shape, the ranges covering the data in order
with no gap or overlap, and (what ckprep promises beyond the spec) the
header padded with spaces to a multiple of 8.

write(path, tensors, metadata=None, ...) is its counterpart for making
inputs, with knobs for breaking the rules (tests/plugins/test_safetensors.py
feeds ckprep such files).
"""
import collections
import json
import struct

import numpy as np
import torch

# spec dtype -> (numpy dtype, torch dtype); BF16 is read as int16 bits
DTYPES = {
    "BOOL": (np.bool_, torch.bool), "U8": (np.uint8, torch.uint8),
    "I8": (np.int8, torch.int8), "I16": (np.int16, torch.int16),
    "I32": (np.int32, torch.int32), "I64": (np.int64, torch.int64),
    "F16": (np.float16, torch.float16), "BF16": (np.int16, torch.bfloat16),
    "F32": (np.float32, torch.float32), "F64": (np.float64, torch.float64),
    "C64": (np.complex64, torch.complex64),
}
TORCH_TO_ST = {t: s for s, (_, t) in DTYPES.items()}


class SpecError(Exception):
    pass


def _no_dups(pairs):
    d = collections.OrderedDict()
    for k, v in pairs:
        if k in d:
            raise SpecError(f"duplicate key {k!r}")
        d[k] = v
    return d


def read(path, strict_padding=True):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise SpecError("shorter than 8 bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise SpecError(f"header size {n} past the end")
    hb = raw[8:8 + n]
    if strict_padding and (8 + n) % 8:
        raise SpecError(f"data starts at {8 + n}, not a multiple of 8")
    text = hb.decode("utf-8")
    if not text.startswith("{"):
        raise SpecError("header does not start with {")
    if text != text.rstrip(" ") and strict_padding and text.rstrip(" ")[-1] != "}":
        raise SpecError("padding is not spaces after the object")
    hdr = json.loads(text, object_pairs_hook=_no_dups)
    meta = hdr.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in meta.items()):
            raise SpecError("__metadata__ is not str -> str")
    data = raw[8 + n:]
    spans = []
    out = collections.OrderedDict()
    for name, info in hdr.items():
        if set(info) != {"dtype", "shape", "data_offsets"}:
            raise SpecError(f"{name}: keys {sorted(info)}")
        if info["dtype"] not in DTYPES:
            raise SpecError(f"{name}: dtype {info['dtype']}")
        shape = info["shape"]
        b, e = info["data_offsets"]
        if not all(isinstance(x, int) and x >= 0 for x in shape + [b, e]):
            raise SpecError(f"{name}: shape/offsets not whole numbers")
        npdt = np.dtype(DTYPES[info["dtype"]][0])
        if e - b != int(np.prod(shape, dtype=np.int64)) * npdt.itemsize:
            raise SpecError(f"{name}: {e - b} bytes for shape {shape}")
        spans.append((b, e, name))
        out[name] = np.frombuffer(data[b:e], dtype=npdt).reshape(shape).copy()
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise SpecError(f"{name}: starts at {b}, expected {pos} (gap or overlap)")
        pos = e
    if pos != len(data):
        raise SpecError(f"ranges cover {pos} of {len(data)} data bytes")
    return meta, out, hdr


def to_torch(name, arr, hdr):
    """The torch tensor of array arr (BF16 bits become bfloat16)."""
    t = torch.from_numpy(np.array(arr, copy=True, order="C"))
    if hdr[name]["dtype"] == "BF16":
        t = t.view(torch.int16).view(torch.bfloat16)
    return t


def tensor_bytes(t):
    """A tensor's elements, row-major, as bytes (any dtype)."""
    t = t.detach().contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool \
        else t.reshape(-1).numpy().tobytes()


def write(path, tensors, metadata=None, pad=True, order=None, hdr_edit=None,
          data_edit=None, raw_header=None):
    """tensors: name -> torch tensor.  hdr_edit(dict) and data_edit(bytes)
    may break the file on purpose; raw_header replaces the JSON text."""
    hdr = collections.OrderedDict()
    if metadata is not None:
        hdr["__metadata__"] = metadata
    blobs, pos = [], 0
    for name in (order or list(tensors)):
        t = tensors[name]
        b = tensor_bytes(t)
        hdr[name] = {"dtype": TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                     "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    if hdr_edit:
        hdr_edit(hdr)
    text = raw_header if raw_header is not None else \
        json.dumps(hdr, separators=(",", ":"), ensure_ascii=False)
    hb = text.encode("utf-8") if isinstance(text, str) else text
    if pad:
        hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
    data = b"".join(blobs)
    if data_edit:
        data = data_edit(data)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)
