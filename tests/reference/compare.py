#!/usr/bin/python3
"""Checks the engine against the float64 reference on every fixture model.

    compare.py --moegate BUILD/moegate --fixtures DIR [--only NAME...]

For each DIR/*.gguf (bench-* excluded; --only takes families such as
qwen3moe-tiny or file stems such as qwen3moe-tiny-q4_K):
  1. a deterministic 32-token prompt: ids drawn (seeded by the family name)
     from the ordinary vocabulary (token_type NORMAL: no control,
     user-defined, unknown, byte or unused ids); every variant of a family
     gets the same prompt;
  2. runs  moegate run -m MODEL --tokens ID,... -n 16 --temp 0 --threads 2
           --dump-logits ENGINE.txt
     The dump has one row per evaluated position: the position, then the
     n_vocab logits. Rows 0..31 are the prompt, then each generated token
     as it is fed back (47 or 48 rows). The generated tokens are the argmax
     of rows 31, 32, ...; a "tokens: id,id,..." line on stdout or stderr,
     when printed, must agree with them;
  3. runs the reference (ref_forward.py, in process) on prompt + generated
     tokens and compares every row:
        rel = max|engine - ref| / max|ref|   over all rows and logits
     must not exceed the tolerance of the model's weight type, and the
     argmax of each engine row from 31 on must equal the reference's.

Tolerances (by the least precise matrix type in the file):
  f32 weights          1e-4   engine and reference differ only by f32
                              rounding (measured ~3e-7)
  f16, bf16 weights    1e-3   the weights are exact in f32; what remains is
                              f32 accumulation (~3e-7 with f32 activations),
                              or f16 rounding of activations if an engine
                              converts them as llama.cpp does (1.3e-4..1.6e-4
                              in the engine simulation of test_reference.py)
  q8_0 ... q6_K        2e-2   the engine quantises activations to 8 bits
                              (q8_0 / q8_K blocks) before integer dot
                              products: 4e-3..8e-3 on these fixtures, both
                              simulated and measured on the engine

With --adapters DIR, each model is also run with every LoRA adapter of its
family in DIR (tests/fixtures/gen_adapters.py: DIR/FAMILY-*): the engine
with `--lora ADAPTER` (applied unmerged, per token; with --merge, merged into
a private copy of the weights at load: `moegate run --merge`) against the
reference on the merged weights W + scale * B A (tests/adapters/merge_ref.py, written
from the PEFT and GGUF LoRA definitions), same tolerances.

Prints one line per model, e.g. "PASS qwen3moe-tiny-q4_K rel=1.2e-03
tokens=16/16", then "reference: N passed, M failed"; exits 1 if any failed.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_forward as rf  # noqa: E402
import gguf_writer as gw  # noqa: E402  (path set up by ref_forward)

PROMPT_LEN = 32
N_GEN = 16
PROMPT_SEED = 4242
TT_NORMAL = 1

TOL_F32 = 1e-4
TOL_F16 = 1e-3      # f16 and bf16
TOL_QUANT = 2e-2


def family_of(stem):
    """qwen3moe-tiny-q4_K -> qwen3moe-tiny (the variant is the last '-' part)."""
    return stem.rsplit("-", 1)[0]


def prompt_for(family, token_type):
    ids = np.nonzero(np.asarray(token_type) == TT_NORMAL)[0]
    rng = np.random.default_rng(PROMPT_SEED + zlib.crc32(family.encode()))
    return [int(t) for t in rng.choice(ids, PROMPT_LEN, replace=False)]


def tolerance(reader):
    """Tolerance from the least precise matrix (2-D/3-D tensor) type."""
    types = {t.type for t in reader.tensors.values() if len(t.ne) >= 2}
    if types <= {gw.F32}:
        return TOL_F32, "f32"
    if types <= {gw.F32, gw.F16, gw.BF16}:
        return TOL_F16, "f16/bf16"
    return TOL_QUANT, "quantised"


def read_dump(path, n_vocab):
    """Engine logits file -> [rows, n_vocab] float64. Raises ValueError."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f):
            if not line.strip():
                continue
            # (text-mode fromstring: a C parser; stops early on bad text,
            # which the size check below catches)
            vals = np.fromstring(line, dtype=np.float64, sep=" ")
            if vals.size != n_vocab + 1:
                raise ValueError("row %d has %d values, expected position + %d logits"
                                 % (lineno, vals.size, n_vocab))
            if int(vals[0]) != len(rows):
                raise ValueError("row %d has position %g, expected %d"
                                 % (lineno, vals[0], len(rows)))
            rows.append(vals[1:])
    if not rows:
        raise ValueError("no rows")
    out = np.vstack(rows)
    if not np.all(np.isfinite(out)):
        raise ValueError("non-finite logits")
    return out


def printed_tokens(text):
    """Last 'tokens: a,b,c' line in the engine's output, or None."""
    found = None
    for m in re.finditer(r"^tokens:\s*([0-9][0-9,\s]*)$", text, re.M):
        found = [int(t) for t in re.split(r"[,\s]+", m.group(1).strip()) if t]
    return found


def run_engine(cmd, dump, n_vocab, timeout, stem):
    """(logits, completed process, seconds), or a FAIL line."""
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, universal_newlines=True, errors="replace")
    except subprocess.TimeoutExpired:
        return "FAIL %s engine timed out after %ds" % (stem, timeout)
    t_engine = time.time() - t0
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return "FAIL %s engine exit %d: %s" % (stem, p.returncode, tail)
    try:
        return read_dump(dump, n_vocab), p, t_engine
    except (OSError, ValueError) as e:
        return "FAIL %s bad logits dump: %s" % (stem, e)


def check_model(path, moegate, workdir, timeout, verbose, adapter=None, merge=False, keep=False):
    """Returns (ok, line)."""
    stem = os.path.basename(path)[:-len(".gguf")]
    if adapter:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "adapters"))
        import merge_ref  # noqa: E402
        model = merge_ref.ref_model(path, adapter)
        stem += ("*" if merge else "+") + os.path.basename(adapter.rstrip("/"))
    else:
        model = rf.RefModel(path)
    tol, tol_kind = tolerance(model.reader)
    prompt = prompt_for(family_of(stem), model.token_type)
    dump = os.path.join(workdir, stem + ".logits.txt")
    if os.path.exists(dump):
        os.unlink(dump)
    cmd = [moegate, "run", "-m", path, "--tokens", ",".join(map(str, prompt)),
           "-n", str(N_GEN), "--temp", "0", "--threads", "2", "--dump-logits", dump]
    if adapter:
        cmd += ["--lora", adapter] + (["--merge"] if merge else [])
    try:
        got = run_engine(cmd, dump, model.n_vocab, timeout, stem)
    finally:
        # a dump is 15-75 MB of text and there are ~90 runs: kept, they
        # would fill a small disk (only --keep keeps them)
        if not keep and os.path.exists(dump):
            os.unlink(dump)
    if isinstance(got, str):
        return False, got
    eng, p, t_engine = got
    n_rows = eng.shape[0]
    if not (PROMPT_LEN + N_GEN - 1 <= n_rows <= PROMPT_LEN + N_GEN):
        return False, "FAIL %s engine wrote %d rows, expected %d or %d" % (
            stem, n_rows, PROMPT_LEN + N_GEN - 1, PROMPT_LEN + N_GEN)
    gen = [int(t) for t in np.argmax(eng[PROMPT_LEN - 1:], axis=1)[:N_GEN]]
    said = printed_tokens(p.stdout + "\n" + p.stderr)
    if said is not None and said[:N_GEN] != gen:
        return False, "FAIL %s printed tokens %s differ from the argmax of its logits %s" % (
            stem, said, gen)

    seq = prompt + gen[:n_rows - PROMPT_LEN]
    stats = {}
    t0 = time.time()
    ref = model.forward(seq, stats)
    t_ref = time.time() - t0
    diff = np.abs(eng - ref)
    rel = float(diff.max() / np.abs(ref).max())
    ref_tok = [int(t) for t in np.argmax(ref[PROMPT_LEN - 1:], axis=1)[:N_GEN]]
    same = sum(int(a == b) for a, b in zip(gen, ref_tok))
    ok = rel <= tol and same == N_GEN
    line = "%s %s rel=%.1e tokens=%d/%d" % ("PASS" if ok else "FAIL", stem, rel, same, N_GEN)
    if not ok or verbose:
        gap, relgap = rf.margins(ref)
        worst = np.unravel_index(np.argmax(diff), diff.shape)
        line += ("  [tol %.0e %s; worst row %d id %d; ref margin min %.3g (%.2f of max);"
                 " router gap min %.3g; engine %.1fs, ref %.1fs]"
                 % (tol, tol_kind, worst[0], worst[1], gap.min(), relgap.min(),
                    stats.get("router_gap_min", float("nan")), t_engine, t_ref))
        if same != N_GEN:
            line += "\n    engine tokens %s\n    ref    tokens %s" % (gen, ref_tok)
    return ok, line


def main(argv=None):
    ap = argparse.ArgumentParser(description="engine vs float64 reference on the fixtures")
    ap.add_argument("--moegate", required=True, help="path of the moegate binary")
    ap.add_argument("--fixtures", required=True, help="directory of fixture .gguf files")
    ap.add_argument("--only", nargs="+", action="extend",
                    help="families or file stems to check (repeatable)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per engine run")
    ap.add_argument("--keep", help="keep the engine's logits dumps in this directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="details on PASS lines too")
    ap.add_argument("--adapters", help="also run every LoRA adapter of the model's family in this directory")
    ap.add_argument("--adapter-bases", nargs="+", action="extend",
                    help="with --adapters: only these variants (e.g. f32 q8_0) get adapter runs")
    ap.add_argument("--merge", action="store_true",
                    help="with --adapters: merge each adapter into the weights at load (moegate run --merge)")
    args = ap.parse_args(argv)

    paths = sorted(p for p in glob.glob(os.path.join(args.fixtures, "*.gguf"))
                   if not os.path.basename(p).startswith("bench-"))
    if args.only:
        want = set(args.only)
        paths = [p for p in paths
                 if os.path.basename(p)[:-5] in want or family_of(os.path.basename(p)[:-5]) in want]
    if not paths:
        print("compare: no fixture models in %s" % args.fixtures, file=sys.stderr)
        print("reference: 0 passed, 1 failed")
        return 1
    if not (os.path.isfile(args.moegate) and os.access(args.moegate, os.X_OK)):
        print("compare: %s is not an executable" % args.moegate, file=sys.stderr)
        print("reference: 0 passed, %d failed" % len(paths))
        return 1

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="moegate-compare-") as tmp:
        workdir = args.keep or tmp
        os.makedirs(workdir, exist_ok=True)
        runs = []
        for path in paths:
            runs.append((path, None))
            stem = os.path.basename(path)[:-5]
            if args.adapters and (not args.adapter_bases or stem.rsplit("-", 1)[1] in args.adapter_bases):
                for ad in sorted(glob.glob(os.path.join(args.adapters, family_of(stem) + "-*"))):
                    runs.append((path, ad))
        for path, ad in runs:
            try:
                ok, line = check_model(path, args.moegate, workdir, args.timeout, args.verbose, ad,
                                       args.merge and ad is not None, keep=bool(args.keep))
            except Exception as e:          # a broken fixture is a failure, not a crash
                ok, line = False, "FAIL %s%s %s: %s" % (os.path.basename(path), " + " + ad if ad else "",
                                                      type(e).__name__, e)
            print(line, flush=True)
            passed += ok
            failed += not ok
    print("reference: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
