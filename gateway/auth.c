/* moegate gateway — who is asking: API keys and client certificates.
 *
 * A request names its tenant with `Authorization: Bearer KEY` (looked up by
 * policy_find_key: SHA-256 of the key compared with every stored hash in
 * constant time), or, when the policy has server.tls_client_ca, with a
 * client certificate: libmicrohttpd's GnuTLS session requests one and holds
 * the CA as its trust list; we verify the chain (gnutls_certificate_verify_
 * peers2), then read the leaf's subject with OpenSSL in RFC 2253 form (what
 * `openssl x509 -subject -nameopt RFC2253` prints, the policy's format) and
 * look it up with policy_find_subject. The result is cached per connection
 * (a TLS session's peer does not change).
 *
 * Rules: a certificate that is presented but does not verify is refused
 * (401) even when a key is given; a key that matches nothing is refused; a
 * key and a certificate of different tenants are refused; otherwise the
 * tenant is the certificate's or the key's. A verified certificate whose
 * subject no tenant lists is as good as none (the key decides).
 *
 * Nothing here logs or returns a key or a header value.
 */
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <openssl/bio.h>
#include <openssl/x509.h>

#include "gateway/gateway_internal.h"

#define MAX_KEY_BYTES 1024

static void peer_cert(gw_req *r)
{
    gw_conn *cx = r->cx;
    if (!cx || cx->cert_checked)
        return;
    cx->cert_checked = true;
    cx->cert_state = 0;
    if (!r->g->client_ca)
        return;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return;
    gnutls_session_t s = (gnutls_session_t)ci->tls_session;
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || n == 0)
        return;
    unsigned status = 0;
    if (gnutls_certificate_verify_peers2(s, &status) < 0 || status != 0) {
        cx->cert_state = -1;
        return;
    }
    const unsigned char *der = certs[0].data;
    X509 *x = d2i_X509(NULL, &der, (long)certs[0].size);
    if (!x) {
        cx->cert_state = -1;
        return;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    int ok = bio && X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0;
    if (ok) {
        char *p;
        long len = BIO_get_mem_data(bio, &p);
        if (len > 0 && (size_t)len < sizeof cx->subject) {
            memcpy(cx->subject, p, (size_t)len);
            cx->subject[len] = 0;
            cx->cert_state = 1;
        } else
            cx->cert_state = -1; /* an absurd subject: refuse rather than cut it */
    } else
        cx->cert_state = -1;
    BIO_free(bio);
    X509_free(x);
}

bool gw_auth(gw_req *r)
{
    peer_cert(r);
    const policy_tenant *tc = NULL;
    if (r->cx && r->cx->cert_state < 0) {
        gw_req_error(r, 401, "invalid_client_certificate", NULL,
                     "the client certificate is not signed by the configured client CA");
        return false;
    }
    if (r->cx && r->cx->cert_state > 0)
        tc = policy_find_subject(r->pol, r->cx->subject);
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const policy_api_key *k = NULL;
    if (h) {
        if (strncasecmp(h, "Bearer ", 7)) {
            gw_req_error(r, 401, "invalid_api_key", NULL,
                         "the Authorization header must be 'Bearer' followed by an API key");
            return false;
        }
        const char *key = h + 7;
        while (*key == ' ')
            key++;
        size_t n = strlen(key);
        while (n && key[n - 1] == ' ')
            n--;
        if (n == 0 || n > MAX_KEY_BYTES || !(k = policy_find_key(r->pol, key, n))) {
            gw_req_error(r, 401, "invalid_api_key", NULL, "incorrect API key provided");
            return false;
        }
    }
    if (k && tc && k->tenant != tc) {
        gw_req_error(r, 401, "invalid_api_key", NULL,
                     "the API key and the client certificate belong to different tenants");
        return false;
    }
    r->key = k;
    r->tenant = tc ? tc : k ? k->tenant : NULL;
    if (!r->tenant) {
        gw_req_error(r, 401, "missing_api_key", NULL,
                     r->cx && r->cx->cert_state > 0
                         ? "the client certificate's subject belongs to no tenant, and no API key was given"
                         : "no API key provided: send 'Authorization: Bearer KEY'");
        return false;
    }
    return true;
}

bool gw_auth_role(gw_req *r, unsigned role, const char *what)
{
    if (r->tenant->roles & role)
        return true;
    gw_req_error(r, 403, "insufficient_role", NULL, "tenant '%s' may not use %s", r->tenant->id, what);
    return false;
}
