#!/usr/bin/env python3
"""Derives deliberately broken models from a good fixture, one defect each,
for the CLI's error-message tests:

  make_broken.py GOOD.gguf OUTDIR

Writes OUTDIR/<case>.gguf for every case in CASES and prints
"<case> <expected substring of the error>" per line.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import gguf_writer as gw  # noqa: E402


def copy(reader, skip_keys=(), set_keys=None, skip_tensors=(), edit_tensor=None):
    w = gw.GGUFWriter(alignment=reader.alignment)
    set_keys = dict(set_keys or {})
    for key, value in reader.kv.items():
        if key in skip_keys:
            continue
        vtype, etype = reader.kv_types[key]
        if key in set_keys:
            vtype, value = set_keys.pop(key)
        if vtype == gw.ARRAY:
            w.add(key, vtype, (etype, value))
        else:
            w.add(key, vtype, value)
    for key, (vtype, value) in set_keys.items():
        w.add(key, vtype, value)
    for name, t in reader.tensors.items():
        if name in skip_tensors:
            continue
        ne, ttype, data = list(t.ne), t.type, bytes(t.data)
        if edit_tensor and name == edit_tensor[0]:
            ne, ttype, data = edit_tensor[1](ne, ttype, data)
        w.add_tensor(name, ne, ttype, data)
    return w


def half_rows(ne, ttype, data):
    return [ne[0], ne[1] // 2], ttype, data[: len(data) // 2]


IQ2_XXS = 16  # ggml type id; 66 bytes per block of 256


def as_iq2_xxs(ne, ttype, data):
    gw.BLOCK.setdefault(IQ2_XXS, (256, 66))
    return ne, IQ2_XXS, b"\0" * gw.tensor_nbytes(ne, IQ2_XXS)


CASES = {
    "arch-gpt2": (dict(set_keys={"general.architecture": (gw.STRING, "gpt2")}),
                  "architecture 'gpt2' is not supported"),
    "missing-tensor": (dict(skip_tensors=("blk.1.ffn_up_exps.weight",)),
                       "tensor 'blk.1.ffn_up_exps.weight' is missing"),
    "bad-shape": (dict(edit_tensor=("blk.0.attn_q.weight", half_rows)),
                  "tensor 'blk.0.attn_q.weight' has shape"),
    "bad-type": (dict(edit_tensor=("blk.0.attn_k.weight", as_iq2_xxs)),
                 "has type iq2_xxs, which moegate cannot compute"),
    "missing-key": (dict(skip_keys=("llama.block_count",)),
                    "required metadata key 'llama.block_count' is missing"),
    "dense": (dict(set_keys={"llama.expert_count": (gw.UINT32, 0)}),
              "dense models are not supported"),
    "too-many-used": (dict(set_keys={"llama.expert_used_count": (gw.UINT32, 99)}),
                      "inconsistent hyper-parameters"),
    # regression: head_count * key_length wrapped around 2^64 to 0, and zero-row
    # attention tensors then bound, leading to writes far outside the buffers
    "huge-heads": (dict(set_keys={"llama.attention.head_count": (gw.UINT32, 1 << 24),
                                  "llama.attention.head_count_kv": (gw.UINT32, 1 << 24),
                                  "llama.attention.key_length": (gw.UINT64, 1 << 40),
                                  "llama.rope.dimension_count": (gw.UINT32, 2)}),
                   "hyper-parameters out of range"),
}


def main():
    good, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    reader = gw.GGUFReader(good)
    for case, (kwargs, expect) in CASES.items():
        copy(reader, **kwargs).write(os.path.join(out, case + ".gguf"))
        print(case, expect)


if __name__ == "__main__":
    main()
