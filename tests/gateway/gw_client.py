#!/usr/bin/env python3
"""tests/gateway/gw_client.py — raw and TLS-level cases against a running
gateway (run by tests/gateway/suite.sh): the bad-input suite (malformed JSON,
wrong types, unknown fields, oversized and invalid bodies, missing or wrong
keys, header injection, a slowloris request, 1,000 connections opened and
dropped), keep-alive after a stream, a client that disconnects mid-stream,
TLS versions and suites, and client certificates.

Standard library only (socket, ssl, http.client, json). Prints
"ok   NAME" / "FAIL NAME: why" per case; exit status 1 when any failed.
Assertions are on results (status, JSON shape, headers, connection state),
never on timings.
"""
import argparse
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

A = None
failed = 0


def ok(name):
    print("ok   " + name, flush=True)


def bad(name, why):
    global failed
    failed += 1
    print("FAIL %s: %s" % (name, why), flush=True)


def case(name):
    def wrap(fn):
        def run():
            try:
                why = fn()
                if why:
                    bad(name, why)
                else:
                    ok(name)
            except Exception as e:  # a crash of the case is a failure, not of the suite
                bad(name, "%s: %s" % (type(e).__name__, e))
        run.case_name = name
        CASES.append(run)
        return fn
    return wrap


CASES = []


def ctx(cert=None, key=None, minv=None, maxv=None, ciphers=None):
    c = ssl.create_default_context(cafile=A.ca)
    if cert:
        c.load_cert_chain(cert, key)
    if ciphers:
        c.set_ciphers(ciphers)
    if minv:
        c.minimum_version = minv
    if maxv:
        c.maximum_version = maxv
    return c


def conn(cert=None, key=None, timeout=30):
    return http.client.HTTPSConnection("127.0.0.1", A.port, context=ctx(cert, key), timeout=timeout)


def req(method, path, body=None, key="user", headers=None, cert=None, ckey=None, c=None):
    """One request; returns (status, headers dict lower-case, body bytes)."""
    h = {}
    k = {"user": A.key, "admin": A.admin_key, "other": A.other_key, None: None}.get(key, key)
    if k:
        h["Authorization"] = "Bearer " + k
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    own = c is None
    c = c or conn(cert, ckey)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            c.close()


def err_of(status, body, want_status, want_param=None, want_type=None):
    """None when body is OpenAI's error object with the expected status/param."""
    if status != want_status:
        return "status %d, want %d (%s)" % (status, want_status, body[:200])
    try:
        e = json.loads(body)["error"]
    except Exception:
        return "not an error object: %r" % body[:200]
    if set(e) != {"message", "type", "param", "code"} or not e["message"]:
        return "error object fields %r" % sorted(e)
    if want_param is not None and e["param"] != want_param:
        return "param %r, want %r" % (e["param"], want_param)
    if want_type and e["type"] != want_type:
        return "type %r, want %r" % (e["type"], want_type)
    return None


def chat(**kw):
    b = {"model": A.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    b.update(kw)
    return b


def tls_socket(cert=None, key=None):
    s = socket.create_connection(("127.0.0.1", A.port), timeout=30)
    return ctx(cert, key).wrap_socket(s, server_hostname="localhost")


def read_response(s, buf=b""):
    """Reads one HTTP/1.1 response from s; returns (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed before headers")
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdr = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        hdr[k.strip().lower()] = v.strip()
    body = b""
    if hdr.get("transfer-encoding", "").lower() == "chunked":
        while True:
            while b"\r\n" not in buf:
                buf += s.recv(65536)
            size_line, buf = buf.split(b"\r\n", 1)
            n = int(size_line.split(b";")[0], 16)
            while len(buf) < n + 2:
                d = s.recv(65536)
                if not d:
                    raise EOFError("closed inside a chunk")
                buf += d
            body += buf[:n]
            buf = buf[n + 2:]
            if n == 0:
                break
    else:
        n = int(hdr.get("content-length", "0"))
        while len(buf) < n:
            d = s.recv(65536)
            if not d:
                raise EOFError("closed inside the body")
            buf += d
        body, buf = buf[:n], buf[n:]
    return status, hdr, body, buf


def http_bytes(method, path, body=b"", key=None, extra=""):
    k = key if key is not None else A.key
    h = "%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path)
    if k:
        h += "Authorization: Bearer %s\r\n" % k
    if body:
        h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    h += extra + "\r\n"
    return h.encode() + body


def metric(name):
    st, _, body = req("GET", "/metrics", key="admin")
    for ln in body.decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return None


# ---- well-formed requests that must be refused ----------------------------------------

@case("malformed JSON is 400")
def _():
    st, h, b = req("POST", "/v1/chat/completions", b'{"model": "x", "messages": [')
    return err_of(st, b, 400, None, "invalid_request_error")


@case("empty body is 400")
def _():
    st, h, b = req("POST", "/v1/chat/completions", b"")
    return err_of(st, b, 400)


@case("a JSON array body is 400")
def _():
    st, h, b = req("POST", "/v1/chat/completions", b"[1,2]")
    return err_of(st, b, 400)


@case("wrong types are 400 naming the field")
def _():
    for body, param in [
        (chat(messages="hi"), "messages"),
        (chat(temperature="hot"), "temperature"),
        (chat(max_tokens=-1), "max_tokens"),
        (chat(max_tokens=1.5), "max_tokens"),
        (chat(stream="yes"), "stream"),
        (chat(n=2), "n"),
        (chat(top_p=1.5), "top_p"),
        (chat(stop=[1]), "stop[0]"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (chat(messages=[{"role": "user"}]), "messages[0].content"),
        (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
         "messages[0].content[0]"),
        (chat(model=7), "model"),
        (chat(seed="x"), "seed"),
        (chat(logprobs=True), "logprobs"),
        (chat(tools=[{"type": "function"}]), "tools"),
        (chat(stream_options={"include_usage": True}), "stream_options"),
    ]:
        st, h, b = req("POST", "/v1/chat/completions", body)
        e = err_of(st, b, 400, param)
        if e:
            return "%s: %s" % (param, e)


@case("unknown fields are 400 naming the field")
def _():
    st, h, b = req("POST", "/v1/chat/completions", chat(frobnicate=1))
    e = err_of(st, b, 400, "frobnicate")
    if e:
        return e
    st, h, b = req("POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": "x", "mood": 1}]))
    return err_of(st, b, 400, "messages[0].mood")


@case("documented fields at their neutral value are accepted")
def _():
    st, h, b = req("POST", "/v1/chat/completions",
                   chat(logprobs=False, n=1, user="u-1", response_format={"type": "text"}, tools=[],
                        logit_bias={}, store=False, parallel_tool_calls=True, max_completion_tokens=2))
    return None if st == 200 else "status %d %s" % (st, b[:200])


@case("missing model or messages is 400")
def _():
    st, h, b = req("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    e = err_of(st, b, 400, "model")
    if e:
        return e
    st, h, b = req("POST", "/v1/completions", {"model": A.model})
    return err_of(st, b, 400, "prompt")


@case("invalid UTF-8 in the body is 400")
def _():
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "\xff\xfe bad"}]}' % A.model.encode()
    st, h, b = req("POST", "/v1/chat/completions", body)
    return err_of(st, b, 400)


@case("NUL in a string is 400")
def _():
    st, h, b = req("POST", "/v1/chat/completions",
                   b'{"model": "%s", "messages": [{"role": "user", "content": "a\\u0000b"}]}' % A.model.encode())
    return err_of(st, b, 400)


@case("deeply nested JSON is 400, not a crash")
def _():
    body = b'{"model": "x", "messages": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    st, h, b = req("POST", "/v1/chat/completions", body)
    return err_of(st, b, 400)


@case("too many messages is 400")
def _():
    st, h, b = req("POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": "x"}] * 5000))
    return err_of(st, b, 400, "messages")


@case("a 10 MB body (Content-Length) is 413")
def _():
    body = b'{"model": "x", "pad": "' + b"a" * (10 << 20) + b'"}'
    s = tls_socket()
    try:
        s.sendall(http_bytes("POST", "/v1/chat/completions", b"")[:-2] +
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        st, h, b, _ = read_response(s)
    finally:
        s.close()
    return err_of(st, b, 413)


@case("a 10 MB chunked body is 413")
def _():
    s = tls_socket()
    try:
        s.sendall(http_bytes("POST", "/v1/chat/completions", b"", extra="Transfer-Encoding: chunked\r\n"))
        chunk = b"a" * 65536
        sent = 0
        try:
            while sent < (10 << 20):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server answered and closed
        st, h, b, _ = read_response(s)
    finally:
        s.close()
    return err_of(st, b, 413)


@case("missing key is 401 with WWW-Authenticate")
def _():
    st, h, b = req("POST", "/v1/chat/completions", chat(), key=None)
    e = err_of(st, b, 401, None, "authentication_error")
    if e:
        return e
    return None if h.get("www-authenticate") == "Bearer" else "no WWW-Authenticate"


@case("wrong key, Basic auth and an empty Bearer are 401")
def _():
    for hdr in ["Bearer mg_nope", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer " + "k" * 5000]:
        st, h, b = req("GET", "/v1/models", key=None, headers={"Authorization": hdr})
        e = err_of(st, b, 401)
        if e:
            return "%s...: %s" % (hdr[:12], e)


@case("the error never echoes the key")
def _():
    st, h, b = req("GET", "/v1/models", key="mg_secret_wrong_key_zz")
    return "key echoed" if b"mg_secret_wrong_key_zz" in b else None


@case("unknown path is 404, wrong method is 405 with Allow")
def _():
    st, h, b = req("GET", "/v1/nothing")
    e = err_of(st, b, 404)
    if e:
        return e
    st, h, b = req("GET", "/v1/chat/completions")
    e = err_of(st, b, 405)
    if e:
        return e
    return None if h.get("allow") == "POST" else "Allow %r" % h.get("allow")


# ---- header injection ---------------------------------------------------------------------

@case("CR LF in the path is not reflected into headers")
def _():
    s = tls_socket()
    try:
        s.sendall(b"GET /v1/models%0d%0aSet-Cookie:%20a=b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                  A.key.encode() + b"\r\n\r\n")
        st, h, b, _ = read_response(s)
    finally:
        s.close()
    if "set-cookie" in h:
        return "Set-Cookie reflected"
    return err_of(st, b, 404)


@case("CR LF in the model name is not reflected into headers")
def _():
    st, h, b = req("POST", "/v1/chat/completions", chat(model="x\r\nSet-Cookie: a=b"))
    if "set-cookie" in h:
        return "Set-Cookie reflected"
    return err_of(st, b, 404, "model")


@case("a bare CR inside a header is refused or closed, server keeps serving")
def _():
    s = tls_socket()
    try:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\rInjected: b\r\nAuthorization: Bearer " +
                  A.key.encode() + b"\r\n\r\n")
        try:
            st, h, b, _ = read_response(s)
            if "injected" in h:
                return "header reflected"
        except (EOFError, ConnectionResetError, ssl.SSLError):
            pass
    finally:
        s.close()
    st, h, b = req("GET", "/health", key=None)
    return None if st == 200 else "health %d" % st


@case("a client x-request-id is not trusted")
def _():
    st, h, b = req("GET", "/v1/models", headers={"X-Request-Id": "evil\u0001id"})
    rid = h.get("x-request-id", "")
    return None if st == 200 and rid.startswith("req_") and "evil" not in rid else "x-request-id %r" % rid


@case("oversized headers are refused, server keeps serving")
def _():
    s = tls_socket()
    try:
        s.sendall(http_bytes("GET", "/v1/models", extra="X-Big: %s\r\n" % ("b" * 100000)))
        try:
            st, h, b, _ = read_response(s)
            if st < 400:
                return "status %d" % st
        except (EOFError, ConnectionResetError, BrokenPipeError, ssl.SSLError):
            pass
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        pass
    finally:
        s.close()
    st, h, b = req("GET", "/health", key=None)
    return None if st == 200 else "health %d" % st


# ---- connections -------------------------------------------------------------------------------

@case("slowloris: a partial request is closed after the idle timeout, others are served")
def _():
    s = tls_socket()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
    t0 = time.time()
    st, h, b = req("GET", "/health", key=None)  # served meanwhile
    if st != 200:
        return "health %d while a request hangs" % st
    s.settimeout(A.idle_timeout + 20)
    closed = False
    try:
        d = s.recv(4096)
        closed = d == b"" or b"408" in d or b"400" in d
    except (ConnectionResetError, ssl.SSLError, OSError):
        closed = True
    s.close()
    if not closed:
        return "still open"
    return None if time.time() - t0 < A.idle_timeout + 15 else "closed too late"


@case("a body that stops arriving is closed after the idle timeout")
def _():
    s = tls_socket()
    s.sendall(http_bytes("POST", "/v1/chat/completions", b"")[:-2] + b"Content-Length: 100\r\n\r\n{\"model\"")
    s.settimeout(A.idle_timeout + 20)
    try:
        d = s.recv(4096)
        while d and b"HTTP/1.1" not in d:
            d = s.recv(4096)
        closed = True
    except (ConnectionResetError, ssl.SSLError, OSError):
        closed = True
    s.close()
    return None if closed else "still open"


@case("1,000 connections opened and dropped; the server keeps serving and frees them")
def _():
    n = A.connections
    errors = []

    def wave(k):
        socks = []
        for i in range(k):
            try:
                s = socket.create_connection(("127.0.0.1", A.port), timeout=10)
                if i % 3 == 1:
                    s.sendall(b"\x16\x03\x01\x00\xa5\x01\x00")  # a TLS ClientHello cut short
                elif i % 3 == 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                socks.append(s)
            except OSError as e:
                errors.append(str(e))
        for s in socks:
            s.close()

    done = 0
    while done < n:
        k = min(50, n - done)
        wave(k)
        done += k
    st, h, b = req("GET", "/v1/models")
    if st != 200:
        return "models %d after the storm" % st
    # every dropped connection is gone within the idle timeout
    deadline = time.time() + A.idle_timeout + 20
    left = None
    while time.time() < deadline:
        left = metric("moegate_connections")
        if left is not None and left <= 1:
            return None
        time.sleep(0.5)
    return "connections still open: %s" % left


@case("keep-alive: the same socket serves a stream, then more requests")
def _():
    s = tls_socket()
    try:
        body = json.dumps(chat(stream=True, max_tokens=5)).encode()
        s.sendall(http_bytes("POST", "/v1/chat/completions", body))
        st, h, b, rest = read_response(s)
        if st != 200 or not b.rstrip().endswith(b"data: [DONE]"):
            return "stream %d %r" % (st, b[-80:])
        if h.get("connection", "").lower() == "close":
            return "stream response says Connection: close"
        s.sendall(http_bytes("GET", "/v1/models"))
        st2, h2, b2, rest = read_response(s, rest)
        if st2 != 200:
            return "second %d" % st2
        s.sendall(http_bytes("POST", "/v1/chat/completions", json.dumps(chat()).encode()))
        st3, h3, b3, rest = read_response(s, rest)
        return None if st3 == 200 else "third %d" % st3
    finally:
        s.close()


@case("SSE chunks have OpenAI's shape and end with [DONE]")
def _():
    st, h, b = req("POST", "/v1/chat/completions", chat(stream=True, max_tokens=4,
                                                         stream_options={"include_usage": True}))
    if st != 200 or not h.get("content-type", "").startswith("text/event-stream"):
        return "status %d type %s" % (st, h.get("content-type"))
    events = [e for e in b.decode().split("\n\n") if e]
    if events[-1] != "data: [DONE]":
        return "last event %r" % events[-1]
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    first, final, usage = chunks[0], chunks[-2], chunks[-1]
    if first["choices"][0]["delta"] != {"role": "assistant", "content": ""}:
        return "first delta %r" % first["choices"][0]["delta"]
    if final["choices"][0]["finish_reason"] not in ("length", "stop") or final["choices"][0]["delta"] != {}:
        return "final chunk %r" % final
    if usage["choices"] != [] or usage["usage"]["completion_tokens"] < 1:
        return "usage chunk %r" % usage
    ids = {c["id"] for c in chunks}
    if len(ids) != 1 or not ids.pop().startswith("chatcmpl-" + h["x-request-id"]):
        return "ids differ or do not carry the request id"
    for c in chunks:
        if set(c) != {"id", "object", "created", "model", "choices", "usage"} or c["object"] != "chat.completion.chunk":
            return "chunk keys %r" % sorted(c)
    return None


@case("a client that disconnects mid-stream cancels its sequence")
def _():
    s = tls_socket()
    body = json.dumps(chat(stream=True, max_tokens=A.long_tokens,
                           messages=[{"role": "user", "content": "disconnect-marker"}])).encode()
    s.sendall(http_bytes("POST", "/v1/chat/completions", body))
    got = b""
    while got.count(b"data: ") < 3:
        d = s.recv(4096)
        if not d:
            return "closed early"
        got += d
    rid = [ln.split(":", 1)[1].strip() for ln in got.decode("latin-1").split("\r\n")
           if ln.lower().startswith("x-request-id")][0]
    s.close()
    # the engine ends the sequence: running drops to 0 and the log says 499 with fewer tokens
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(A.log) as f:
            for ln in f:
                if rid in ln and '"msg":"request"' in ln:
                    rec = json.loads(ln)
                    if rec["status"] != 499:
                        return "status %s" % rec["status"]
                    if rec.get("completion_tokens", 0) >= A.long_tokens:
                        return "generated everything: %s tokens" % rec.get("completion_tokens")
                    st, h, b = req("GET", "/admin/stats", key="admin")
                    return None
        time.sleep(0.2)
    return "no log line for %s" % rid


# ---- TLS --------------------------------------------------------------------------------------

def s_client(*args):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % A.port, "-servername", "localhost",
                        "-CAfile", A.ca] + list(args), input=b"", capture_output=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode("latin-1")


def refused(out):
    """s_client output of a handshake that did not complete."""
    return "Cipher is (NONE)" in out or "New, (NONE)" in out


@case("TLS 1.0 and 1.1 are refused (openssl s_client offering them)")
def _():
    for flag in ["-tls1", "-tls1_1"]:
        rc, out = s_client(flag, "-cipher", "DEFAULT:@SECLEVEL=0")
        if "ClientHello" not in out and "CONNECTED" not in out:
            return "%s: s_client did not connect: %s" % (flag, out[-200:])
        if not refused(out):
            return "%s accepted: %s" % (flag, out[-300:])


@case("TLS 1.0 and 1.1 are refused (Python ssl)")
def _():
    for v in [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1]:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            c = ctx(minv=v, maxv=v, ciphers="DEFAULT:@SECLEVEL=0")
        try:
            s = c.wrap_socket(socket.create_connection(("127.0.0.1", A.port), timeout=10), server_hostname="localhost")
            s.close()
            return "%s handshake succeeded" % v.name
        except ssl.SSLError as e:
            # the server alerts or hangs up; NO_PROTOCOLS would mean our client never offered it
            if "NO_PROTOCOLS" in str(e).upper():
                return "%s: the client could not offer it (%s)" % (v.name, e)
        except (ConnectionResetError, EOFError):
            pass


@case("TLS 1.2 with AEAD and TLS 1.3 are accepted")
def _():
    for v in [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]:
        s = ctx(minv=v, maxv=v).wrap_socket(socket.create_connection(("127.0.0.1", A.port), timeout=10),
                                           server_hostname="localhost")
        ver, cipher = s.version(), s.cipher()[0]
        s.close()
        if ver != {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[v.name]:
            return "negotiated %s" % ver
        if not any(x in cipher for x in ("GCM", "CHACHA20")):
            return "cipher %s" % cipher


@case("TLS 1.2 CBC, SHA-1, 3DES and RSA key exchange suites are refused")
def _():
    for suite in ["ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "AES128-GCM-SHA256", "DES-CBC3-SHA",
                  "AES256-SHA"]:
        rc, out = s_client("-tls1_2", "-cipher", suite + ":@SECLEVEL=0")
        if "no cipher match" in out:
            continue  # this OpenSSL cannot even offer it
        if not refused(out):
            return "%s accepted" % suite
    rc, out = s_client("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    return None if not refused(out) else "the AEAD suite was refused too: " + out[-200:]


@case("mTLS: a mapped client certificate is its tenant without a key")
def _():
    st, h, b = req("GET", "/v1/models", key=None, cert=A.client_cert, ckey=A.client_key)
    if st != 200:
        return "status %d %s" % (st, b[:200])
    ids = [m["id"] for m in json.loads(b)["data"]]
    return None if A.model in ids else "models %r" % ids


@case("mTLS: no certificate and no key is refused")
def _():
    st, h, b = req("GET", "/v1/models", key=None)
    return err_of(st, b, 401)


@case("mTLS: a certificate from another CA is refused, even with a key")
def _():
    st, h, b = req("GET", "/v1/models", key="user", cert=A.rogue_cert, ckey=A.rogue_key)
    e = err_of(st, b, 401)
    return e or (None if b"client certificate" in b else "message %r" % b[:200])


@case("mTLS: an unmapped subject needs a key; a key of another tenant is refused")
def _():
    st, h, b = req("GET", "/v1/models", key=None, cert=A.unmapped_cert, ckey=A.unmapped_key)
    e = err_of(st, b, 401)
    if e:
        return "unmapped without key: " + e
    st, h, b = req("GET", "/v1/models", key="user", cert=A.unmapped_cert, ckey=A.unmapped_key)
    if st != 200:
        return "unmapped with key: %d" % st
    st, h, b = req("GET", "/v1/models", key="other", cert=A.client_cert, ckey=A.client_key)
    return err_of(st, b, 401)


def main():
    global A
    p = argparse.ArgumentParser()
    for k in ["ca", "key", "admin-key", "other-key", "model", "client-cert", "client-key", "rogue-cert", "rogue-key",
              "unmapped-cert", "unmapped-key", "log"]:
        p.add_argument("--" + k, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--idle-timeout", type=int, default=2)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--long-tokens", type=int, default=1500)
    p.add_argument("--only", default="")
    A = p.parse_args()
    for c in CASES:
        if A.only and A.only not in c.case_name:
            continue
        c()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
