#!/usr/bin/env python3
"""Time to first token through the gateway per domain and language: the
pack's system prompt evaluated (first request), then found in the prefix
cache (new questions); auto routing; the base model. See bench/domains.sh."""
import argparse
import http.client
import json
import ssl
import statistics
import time
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--ca", required=True)
ap.add_argument("--key-file", required=True)
ap.add_argument("--base", required=True)
ap.add_argument("--reps", type=int, default=5)
a = ap.parse_args()
u = urllib.parse.urlsplit(a.url)
ctx = ssl.create_default_context(cafile=a.ca)
key = open(a.key_file).read().strip()
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=600)


def ttft(model, text):
    """Seconds to the first content chunk, and the prompt's token count."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1,
                       "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = conn.getresponse()
    first, usage = None, None
    for line in r:
        line = line.decode().strip()
        if not line.startswith("data: {"):
            continue
        ev = json.loads(line[6:])
        if ev.get("usage"):
            usage = ev["usage"]
        ch = ev.get("choices") or []
        if first is None and ch and ch[0]["delta"].get("content"):
            first = time.perf_counter() - t0
    assert r.status == 200, r.status
    return first, usage["prompt_tokens"]


Q = {
    ("finance", "en"): ["Summarise the cash flow statement of {} for the research desk.",
                        "What drives the gross margin of {} this year?"],
    ("finance", "zh"): ["请概括{}年报中的现金流量表。", "{}今年的毛利率主要受什么影响？"],
    ("medical", "en"): ["Draft the discharge summary for patient {} after pneumonia treatment.",
                        "Suggest ICD-10 codes for patient {} with type 2 diabetes."],
    ("medical", "zh"): ["请为{}号患者起草肺炎治疗后的出院小结。", "为{}号患者的2型糖尿病推荐ICD-10编码。"],
    ("telecom", "en"): ["Why is the bill of account {} higher than the plan price?",
                        "Account {} has no signal at home since yesterday, what can I do?"],
    ("telecom", "zh"): ["账户{}这个月的话费为什么比套餐价格高？", "账户{}家里从昨天起没有信号，怎么办？"],
}
print("| domain | lang | prompt tokens | first request (system prompt evaluated) | new question, cached system prompt "
      "(median of %d) | speed-up |" % a.reps)
print("|---|---|---:|---:|---:|---:|")
warm_all = {}
for (dom, lang), qs in Q.items():
    cold, n = ttft(dom, qs[0].format(1000))
    warm = [ttft(dom, qs[i % 2].format(2000 + i))[0] for i in range(a.reps)]
    w = statistics.median(warm)
    warm_all[(dom, lang)] = w
    print("| %s | %s | %d | %.0f ms | %.0f ms | %.1fx |" % (dom, lang, n, cold * 1000, w * 1000, cold / w))
# auto against the named domain, and the base model (no system prompt), warm
auto = [ttft("auto", Q[("finance", "en")][i % 2].format(3000 + i))[0] for i in range(a.reps)]
named = [ttft("finance", Q[("finance", "en")][i % 2].format(4000 + i))[0] for i in range(a.reps)]
base = [ttft(a.base, Q[("finance", "en")][i % 2].format(5000 + i))[0] for i in range(a.reps)]
print()
print("| request (finance question, en) | time to first token (median of %d) |" % a.reps)
print("|---|---:|")
print("| model: finance | %.0f ms |" % (statistics.median(named) * 1000))
print("| model: auto (routed to finance) | %.0f ms |" % (statistics.median(auto) * 1000))
print("| base model, no system prompt | %.0f ms |" % (statistics.median(base) * 1000))
