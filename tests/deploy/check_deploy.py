#!/usr/bin/env python3
"""Checks deploy/systemd and deploy/kubernetes against what the issue asks
and against the real moegate binary (see suite.sh)."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSD = os.path.join(ROOT, "deploy", "systemd")
K8S = os.path.join(ROOT, "deploy", "kubernetes")

passed = failed = skipped = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    return cond


def skip(name, why):
    global skipped
    skipped += 1
    print(f"skip {name}: {why}")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


# ---- moegate policy check in a tree holding the files a policy names ------------


def materialise(policy_text, prefixes, tmp, secret_keys):
    """Writes the policy with every absolute path under one of `prefixes`
    moved below tmp, creates the files and folders it names (empty files,
    secrets mode 0600) and returns the policy's path."""
    root = os.path.join(tmp, "root")
    text = policy_text
    for p in prefixes:
        text = text.replace(p, root + p)
    doc = yaml.safe_load(text)
    pol_dir = os.path.join(root, "etc", "moegate")
    os.makedirs(pol_dir, exist_ok=True)

    def path_of(v):
        return v if os.path.isabs(v) else os.path.join(pol_dir, v)

    def touch(v, secret=False):
        p = path_of(v)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w"):
            pass
        os.chmod(p, 0o600 if secret else 0o644)

    def mkdir(v):
        os.makedirs(path_of(v), exist_ok=True)

    srv = doc.get("server", {})
    for k in ("tls_cert", "tls_client_ca"):
        if k in srv:
            touch(srv[k])
    if "tls_key" in srv:
        touch(srv["tls_key"], True)
    touch(doc["model"]["path"])
    for a in doc.get("adapters", []):
        touch(a["path"])
    for d in doc["domains"]:
        # the shipped pack of that name: policy check validates packs too
        shutil.copytree(os.path.join(ROOT, "domains", os.path.basename(d["pack"].rstrip("/"))),
                        path_of(d["pack"]))
    au = doc["audit"]
    for k in secret_keys:
        if k in au:
            touch(au[k], True)
    if "spool_dir" in au:
        mkdir(au["spool_dir"])
    out = doc.get("logging", {}).get("output", "stderr")
    if out not in ("stderr", "stdout"):
        mkdir(os.path.dirname(path_of(out)))
    path = os.path.join(pol_dir, "policy.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path, doc


def policy_check(moegate, path, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    r = run([moegate, "policy", "check", path], env=env)
    return r.returncode, r.stdout + r.stderr


# ---- systemd ---------------------------------------------------------------------------


def parse_unit(path):
    """{section: [(key, value), ...]} (a key may repeat)."""
    sec, out = None, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            m = re.fullmatch(r"\[(\w+)\]", line)
            if m:
                sec = m.group(1)
                out.setdefault(sec, [])
                continue
            k, _, v = line.partition("=")
            out[sec].append((k.strip(), v.strip()))
    return out


def systemd_checks(moegate):
    unit_path = os.path.join(SYSD, "moegate.service")
    unit = parse_unit(unit_path)
    svc = unit.get("Service", [])
    vals = {}
    for k, v in svc:
        vals.setdefault(k, []).append(v)

    def one(k):
        v = vals.get(k, [])
        return v[-1] if v else None

    want = {
        "Type": "exec",
        "User": "moegate",
        "Group": "moegate",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallFilter": "@system-service",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for k, v in want.items():
        check(f"unit {k}={v}", one(k) == v, f"got {one(k)!r}")
    check("unit AmbientCapabilities empty (port 8443 needs none)", one("AmbientCapabilities") in (None, ""))
    check(
        "unit RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        sorted((one("RestrictAddressFamilies") or "").split()) == ["AF_INET", "AF_INET6", "AF_UNIX"],
        one("RestrictAddressFamilies"),
    )
    rw = " ".join(vals.get("ReadWritePaths", [])).split()
    check("unit ReadWritePaths = spool and logs only",
          sorted(rw) == ["/var/lib/moegate/spool", "/var/log/moegate"], repr(rw))
    nofile = one("LimitNOFILE") or ""
    check("unit LimitNOFILE >= 4096", nofile.isdigit() and int(nofile) >= 4096, nofile)
    m = re.fullmatch(r"(\d+)s?", one("TimeoutStopSec") or "")
    # the gateway's drain on SIGTERM takes up to about 45 s (gateway_close)
    check("unit TimeoutStopSec >= 60s", bool(m) and int(m.group(1)) >= 60, one("TimeoutStopSec"))

    exec_start = (one("ExecStart") or "").split()
    check("unit ExecStart is `moegate serve --policy FILE`",
          len(exec_start) == 4 and exec_start[0].endswith("/moegate") and exec_start[1:3] == ["serve", "--policy"],
          repr(exec_start))
    policy_path = exec_start[3] if len(exec_start) == 4 else "/nonexistent"

    # systemd's own parser: any message about the unit is a failure (a bad
    # value is only "ignored" with exit status 0). The binary's path is
    # pointed at the build, since verify checks that it exists.
    sa = shutil.which("systemd-analyze")
    if not sa:
        skip("systemd-analyze verify", "systemd-analyze is not installed")
    else:
        with tempfile.TemporaryDirectory() as t:
            text = open(unit_path).read().replace(exec_start[0], os.path.abspath(moegate))
            p = os.path.join(t, "moegate.service")
            with open(p, "w") as f:
                f.write(text)
            r = run([sa, "verify", p])
            msg = (r.stdout + r.stderr).strip()
            if r.returncode != 0 and "System has not been booted with systemd" in msg:
                skip("systemd-analyze verify", msg)
            else:
                check("systemd-analyze verify: no messages, exit 0", r.returncode == 0 and not msg, msg)

    # sysusers + tmpfiles applied to an empty root: the user exists, the
    # folders have the owners and modes the unit relies on
    su, tf = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    tmpf = os.path.join(SYSD, "moegate.tmpfiles.conf")
    if not (su and tf):
        skip("sysusers/tmpfiles", "systemd-sysusers or systemd-tmpfiles is not installed")
    else:
        with tempfile.TemporaryDirectory() as t:
            os.makedirs(os.path.join(t, "etc"))
            r1 = run([su, f"--root={t}", os.path.join(SYSD, "moegate.sysusers.conf")])
            r2 = run([tf, f"--root={t}", "--create", tmpf])
            check("sysusers and tmpfiles apply to an empty root", r1.returncode == 0 and r2.returncode == 0,
                  (r1.stderr + r2.stderr).strip())
            uid = None
            try:
                for line in open(os.path.join(t, "etc", "passwd")):
                    f = line.split(":")
                    if f[0] == "moegate":
                        uid = int(f[2])
                        check("user moegate: system uid, no login shell",
                              uid < 1000 and f[6].strip().endswith("nologin"), line.strip())
            except OSError:
                pass
            check("sysusers creates user moegate", uid is not None)
            for d, mode, owner in (("/var/lib/moegate/spool", 0o700, uid), ("/var/log/moegate", 0o750, uid),
                                   ("/etc/moegate", 0o750, 0)):
                p = t + d
                ok = os.path.isdir(p)
                st = os.stat(p) if ok else None
                check(f"tmpfiles: {d} mode {mode:o} owner {owner}",
                      ok and (st.st_mode & 0o7777) == mode and st.st_uid == owner,
                      f"mode {st.st_mode & 0o7777:o} uid {st.st_uid}" if st else "missing")
    # ExecStart's policy lies in a folder tmpfiles creates, and the README's
    # install steps put it there
    tmp_dirs = [l.split()[1] for l in open(tmpf) if l.strip() and not l.startswith("#") and l.split()[0] == "d"]
    check("ExecStart's policy folder is created by tmpfiles", os.path.dirname(policy_path) in tmp_dirs,
          f"{policy_path} vs {tmp_dirs}")
    readme = open(os.path.join(ROOT, "deploy", "README.md")).read()
    check("deploy/README.md installs the policy at ExecStart's path", policy_path in readme)
    for d in rw:
        check(f"ReadWritePaths {d} is created by tmpfiles", d in tmp_dirs)

    # the shipped policy passes the real `moegate policy check`
    with tempfile.TemporaryDirectory() as t:
        text = open(os.path.join(SYSD, "policy.yaml")).read()
        path, doc = materialise(text, ["/var/lib/moegate/", "/var/log/moegate/", "/etc/moegate/"], t,
                                ["connection_file", "encryption_key_file", "checkpoint_key"])
        rc, out = policy_check(moegate, path)
        check("systemd policy.yaml: moegate policy check exits 0 without warnings",
              rc == 0 and "warning" not in out, out.strip())
        au = doc["audit"]
        spool = au.get("spool_dir", "").replace(os.path.join(t, "root"), "")
        check("systemd policy's spool_dir is a ReadWritePaths entry", spool.rstrip("/") in rw, spool)


# ---- Kubernetes --------------------------------------------------------------------------


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def k8s_checks(moegate):
    kz = load_docs(os.path.join(K8S, "kustomization.yaml"))[0]
    objs = []
    for res in kz["resources"]:
        for d in load_docs(os.path.join(K8S, res)):
            check(f"{res}: {d.get('kind')} has apiVersion, kind, metadata.name",
                  all(k in d for k in ("apiVersion", "kind")) and d.get("metadata", {}).get("name"))
            objs.append(d)

    def kind(k):
        return [o for o in objs if o["kind"] == k]

    deps = kind("Deployment")
    if not check("one Deployment", len(deps) == 1):
        return
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check("Deployment replicas >= 2", spec.get("replicas", 1) >= 2, spec.get("replicas"))
    check("Deployment selector matches its pod labels",
          all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()))
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    check("rolling update keeps capacity (maxUnavailable 0)", ru.get("maxUnavailable") == 0, ru)
    c = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}

    def probe(name, path):
        p = c.get(name, {}).get("httpGet", {})
        check(f"{name}: GET {path} over HTTPS on the container port",
              p.get("path") == path and p.get("scheme") == "HTTPS" and
              (p.get("port") in ports or p.get("port") in ports.values()), p)

    probe("readinessProbe", "/ready")
    probe("livenessProbe", "/health")
    check("args: serve --policy FILE", c["args"][:2] == ["serve", "--policy"], c["args"])
    policy_file = c["args"][2]

    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    pm = [m for m in c["volumeMounts"] if policy_file.startswith(m["mountPath"].rstrip("/") + "/")]
    gen_names = [g["name"] for g in kz.get("configMapGenerator", [])]
    cm_ok = False
    if pm:
        v = vols[pm[0]["name"]]
        key = os.path.relpath(policy_file, pm[0]["mountPath"])
        gen = [g for g in kz.get("configMapGenerator", []) if g["name"] == v.get("configMap", {}).get("name")]
        cm_ok = bool(gen) and any(os.path.basename(f.split("=")[-1]) == key or f.split("=")[0] == key
                                  for f in gen[0].get("files", []))
    check("the policy file comes from a ConfigMap volume (kustomize configMapGenerator)", cm_ok, policy_file)

    sec_names = {v["name"]: v["secret"]["secretName"] for v in vols.values() if "secret" in v}
    tmpl = load_docs(os.path.join(K8S, "secrets.template.yaml"))
    tmpl_names = {d["metadata"]["name"]: d for d in tmpl}
    env_secrets = [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e]
    job = kind("Job")
    for j in job:
        for jc in j["spec"]["template"]["spec"]["containers"]:
            env_secrets += [e["valueFrom"]["secretKeyRef"]["name"] for e in jc.get("env", []) if "valueFrom" in e]
    for n in list(sec_names.values()) + env_secrets:
        check(f"Secret {n} is described in secrets.template.yaml", n in tmpl_names)
    for d in tmpl:
        check(f"secrets.template.yaml {d['metadata']['name']}: placeholders only, no base64 data",
              "data" not in d and all(str(v).startswith("REPLACE") for v in d.get("stringData", {}).values()))
    check("secrets.template.yaml is not applied by kustomize", "secrets.template.yaml" not in kz["resources"])
    for f in os.listdir(K8S):
        check(f"{f}: no private key material",
              not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", open(os.path.join(K8S, f)).read()))

    # security
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check("pod runAsNonRoot", psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot", True) is True)
    check("seccompProfile RuntimeDefault",
          psc.get("seccompProfile", {}).get("type") == "RuntimeDefault" or
          csc.get("seccompProfile", {}).get("type") == "RuntimeDefault")
    check("readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True)
    check("allowPrivilegeEscalation false", csc.get("allowPrivilegeEscalation") is False)
    check("capabilities drop ALL, add none",
          csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"))
    check("automountServiceAccountToken false", pod.get("automountServiceAccountToken") is False)
    for sa in kind("ServiceAccount"):
        check("ServiceAccount automountServiceAccountToken false", sa.get("automountServiceAccountToken") is False)
    res = c.get("resources", {})
    check("resources: requests = limits (cpu, memory)",
          all(res.get("requests", {}).get(k) and res["requests"][k] == res.get("limits", {}).get(k)
              for k in ("cpu", "memory")), res)
    tg = pod.get("terminationGracePeriodSeconds", 30)
    pre = c.get("lifecycle", {}).get("preStop", {})
    pre_s = int(pre.get("sleep", {}).get("seconds", 0) or (pre.get("exec", {}).get("command", ["", "0"])[-1]))
    check("terminationGracePeriodSeconds covers preStop + the 45 s drain", tg >= pre_s + 45, f"{tg} vs {pre_s}")
    tsc = pod.get("topologySpreadConstraints", [])
    check("replicas spread across nodes",
          any(t["topologyKey"] == "kubernetes.io/hostname" and
              all(labels.get(k) == v for k, v in t["labelSelector"]["matchLabels"].items()) for t in tsc))

    mv = vols.get(mounts.get("/var/lib/moegate/data", {}).get("name"), {})
    check("model data from a read-only PVC",
          mv.get("persistentVolumeClaim", {}).get("readOnly") is True and
          mounts["/var/lib/moegate/data"].get("readOnly") is True)
    pvcs = {p["metadata"]["name"]: p for p in kind("PersistentVolumeClaim")}
    claim = mv.get("persistentVolumeClaim", {}).get("claimName")
    check("the PVC exists and is shareable (ReadOnlyMany/ReadWriteMany)",
          claim in pvcs and set(pvcs[claim]["spec"]["accessModes"]) & {"ReadOnlyMany", "ReadWriteMany"})

    # Service and PDB
    for s in kind("Service"):
        check("Service selects the Deployment's pods",
              all(labels.get(k) == v for k, v in s["spec"]["selector"].items()) and s["spec"]["selector"])
        for p in s["spec"]["ports"]:
            check("Service targets the container port",
                  p["targetPort"] in ports or p["targetPort"] in ports.values(), p)
    check("one Service", len(kind("Service")) == 1)
    pdbs = kind("PodDisruptionBudget")
    check("one PodDisruptionBudget", len(pdbs) == 1)
    for pdb in pdbs:
        sel = pdb["spec"]["selector"]["matchLabels"]
        check("PDB selector matches the pods", all(labels.get(k) == v for k, v in sel.items()))
        ma = pdb["spec"].get("minAvailable")
        check("PDB minAvailable in 1..replicas-1 (capacity kept, drains possible)",
              isinstance(ma, int) and 1 <= ma < spec["replicas"], ma)

    # NetworkPolicy for the gateway pods: ingress on 8443 only; egress 5432 and 53 only
    gw_np = [n for n in kind("NetworkPolicy")
             if all(labels.get(k) == v for k, v in n["spec"]["podSelector"].get("matchLabels", {}).items())]
    check("a NetworkPolicy selects the gateway pods", len(gw_np) == 1)
    for n in gw_np:
        check("NetworkPolicy governs Ingress and Egress", set(n["spec"]["policyTypes"]) == {"Ingress", "Egress"})
        ing = {p["port"] for r in n["spec"].get("ingress", []) for p in r.get("ports", [])}
        check("ingress only on the gateway port", ing == {ports["https"]} or ing == {"https"}, ing)
        eg = {(p["port"], p.get("protocol", "TCP")) for r in n["spec"].get("egress", []) for p in r.get("ports", [])}
        check("egress only to PostgreSQL and DNS", eg == {(5432, "TCP"), (53, "UDP"), (53, "TCP")}, eg)
        check("every egress rule names its peer", all(r.get("to") for r in n["spec"].get("egress", [])))
    for j in job:
        jc = j["spec"]["template"]["spec"]["containers"][0]
        check("migration Job runs `moegate db migrate --db-env VAR`",
              jc["args"][:3] == ["db", "migrate", "--db-env"] and
              any(e["name"] == jc["args"][3] for e in jc.get("env", [])), jc["args"])
        jl = j["spec"]["template"]["metadata"]["labels"]
        check("the migration Job has its own NetworkPolicy",
              any(all(jl.get(k) == v for k, v in n["spec"]["podSelector"]["matchLabels"].items())
                  for n in kind("NetworkPolicy") if n not in gw_np))

    # the policy itself, with the real binary
    text = open(os.path.join(K8S, "policy.yaml")).read()
    pol = yaml.safe_load(text)
    check("policy lists /ready as public (probes carry no key)",
          "ready" in pol["server"].get("public_endpoints", []))
    check("policy listens on the container port",
          pol["server"]["listen"].rsplit(":", 1)[-1] == str(ports["https"]), pol["server"]["listen"])
    check("policy names no writer_id (each pod: gw-<pod name>)", "writer_id" not in pol["audit"])
    check("policy model.threads = the CPU limit", str(pol["model"].get("threads")) == str(res["limits"]["cpu"]))
    env_names = [e["name"] for e in c.get("env", [])]
    check("policy's connection_env is set from a Secret",
          pol["audit"].get("connection_env") in env_names and "connection_file" not in pol["audit"])

    def under_mount(p, ro):
        return any(p.startswith(m.rstrip("/") + "/") and bool(mounts[m].get("readOnly")) == ro for m in mounts)

    paths = [pol["server"]["tls_cert"], pol["server"]["tls_key"], pol["model"]["path"]]
    paths += [a["path"] for a in pol.get("adapters", [])] + [d["pack"] for d in pol["domains"]]
    paths += [pol["audit"][k] for k in ("checkpoint_key", "encryption_key_file") if k in pol["audit"]]
    for p in paths:
        check(f"policy path {p} lies on a read-only volume", under_mount(p, True))
    sp = pol["audit"]["spool_dir"]
    check("spool_dir is a writable volume", sp in mounts and not mounts[sp].get("readOnly") and
          "emptyDir" in vols[mounts[sp]["name"]], sp)
    tls_mount = [m for m in mounts if pol["server"]["tls_key"].startswith(m + "/")]
    check("TLS certificate and key come from a Secret",
          bool(tls_mount) and "secret" in vols[mounts[tls_mount[0]]["name"]])
    with tempfile.TemporaryDirectory() as t:
        path, _ = materialise(text, ["/etc/moegate/", "/var/lib/moegate/"], t,
                              ["connection_file", "encryption_key_file", "checkpoint_key"])
        rc, out = policy_check(moegate, path, {pol["audit"]["connection_env"]: "host=placeholder"})
        # secret volumes are group-readable (fsGroup): mode warnings are expected, nothing else
        other = [l for l in out.splitlines() if "warning" in l and "readable" not in l]
        check("kubernetes policy.yaml: moegate policy check exits 0", rc == 0 and not other, out.strip())

    kubectl = shutil.which("kubectl")
    if not kubectl:
        skip("kubectl kustomize", "kubectl is not installed")
    else:
        r = run([kubectl, "kustomize", K8S])
        if r.returncode != 0:
            check("kubectl kustomize renders", False, r.stderr.strip())
        else:
            out = [d for d in yaml.safe_load_all(r.stdout) if d]
            cms = [d["metadata"]["name"] for d in out if d["kind"] == "ConfigMap"]
            d = [d for d in out if d["kind"] == "Deployment"][0]
            vnames = [v.get("configMap", {}).get("name") for v in d["spec"]["template"]["spec"]["volumes"]]
            check("kustomize: the Deployment mounts the generated policy ConfigMap",
                  len(cms) == 1 and cms[0] in vnames, f"{cms} {vnames}")
            check("kustomize: every object lands in one namespace",
                  len({o["metadata"].get("namespace") for o in out if o["kind"] != "Namespace"}) == 1)
            imgs = {c["image"] for o in out if o["kind"] in ("Deployment", "Job")
                    for c in o["spec"]["template"]["spec"]["containers"]}
            check("kustomize: one image, set in kustomization.yaml", len(imgs) == 1 and "moegate" != imgs.pop())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moegate", required=True)
    a = ap.parse_args()
    moegate = os.path.abspath(a.moegate)
    if not os.access(moegate, os.X_OK):
        print(f"FAIL {moegate} not built (make)")
        return 1
    for name, fn in (("systemd", systemd_checks), ("kubernetes", k8s_checks)):
        try:
            fn(moegate)
        except Exception as e:  # a missing key or file is a failure, not a crash
            check(f"{name} checks ran to the end", False, f"{type(e).__name__}: {e}")
    print(f"deploy: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
