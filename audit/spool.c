/* moegate — the audit spool: an fsync'd append-only file that holds
 * protected records while PostgreSQL is unreachable, replayed in order
 * when it returns.
 *
 * File layout (big-endian):
 *
 *   header, 16 bytes:  "MGSPOOL1" | u32 version = 1 | u32 reserved = 0
 *   frames, each:      u32 magic 0x4D475352 ("MGSR") | u32 len |
 *                      len bytes of record encoding |
 *                      8 bytes: SHA-256(u32 len || encoding)[0..8)
 *
 * Invariants: only the writer thread of the one process holding the
 * file's flock touches it; frames are appended with one write() per batch
 * followed by fdatasync(), and a record is reported durable only after
 * that returns. So after a crash the file is a sequence of whole frames
 * possibly followed by one torn batch (a prefix of frames, maybe zero-
 * filled by the file system). Opening truncates such a tail; a bad frame
 * that is followed by a good one cannot come from a crash and is refused
 * (MG_EFORMAT), leaving the file for the operator: we never silently drop
 * acknowledged records.
 *
 * Replay: read_off marks how far the writer has committed the spool's
 * records to PostgreSQL; once it reaches the end, the file is truncated
 * back to its header. A crash between the commit and the truncation
 * replays those records again, and the writer skips request ids already
 * in the database, so each lands exactly once.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

#define FRAME_MAGIC 0x4D475352u
#define FRAME_HEAD  8
#define FRAME_TAIL  8

static const uint8_t HEADER[AUDIT_SPOOL_HEADER_LEN] = {'M', 'G', 'S', 'P', 'O', 'O', 'L', '1',
                                                       0,   0,   0,   1,   0,   0,   0,   0};

struct audit_spool {
    int fd;
    char *path;
    size_t size;      /* file length: header + whole frames */
    size_t read_off;  /* frames before this are committed to PostgreSQL */
    uint64_t records; /* frames from read_off to size */
    bool torn;        /* open truncated a torn tail */
};

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void frame_sum(uint8_t out[FRAME_TAIL], const uint8_t lenbe[4], const uint8_t *p,
                      size_t n)
{
    uint8_t h[32];
    unsigned int hl = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL) || !EVP_DigestUpdate(c, lenbe, 4) ||
        !EVP_DigestUpdate(c, p, n) || !EVP_DigestFinal_ex(c, h, &hl))
        memset(h, 0xFF, sizeof h); /* cannot match a real sum by chance in practice */
    EVP_MD_CTX_free(c);
    memcpy(out, h, FRAME_TAIL);
}

/* Length of the valid frame at buf[0..n), or 0. */
static size_t frame_ok(const uint8_t *buf, size_t n)
{
    if (n < FRAME_HEAD + FRAME_TAIL || rd32(buf) != FRAME_MAGIC)
        return 0;
    uint32_t len = rd32(buf + 4);
    if (len == 0 || len > AUDIT_MAX_ENCODED || len > n - FRAME_HEAD - FRAME_TAIL)
        return 0;
    uint8_t sum[FRAME_TAIL];
    frame_sum(sum, buf + 4, buf + FRAME_HEAD, len);
    if (memcmp(sum, buf + FRAME_HEAD + len, FRAME_TAIL))
        return 0;
    return FRAME_HEAD + (size_t)len + FRAME_TAIL;
}

int audit_spool_scan(const uint8_t *buf, size_t len, size_t *good_len, uint64_t *n_records,
                     char *err, size_t errlen)
{
    if (len < AUDIT_SPOOL_HEADER_LEN) {
        /* a crash while the header was being written leaves a prefix of it */
        if (memcmp(buf, HEADER, len)) {
            mg_err_set(err, errlen, "audit: spool: not a spool file (bad header)");
            return MG_EFORMAT;
        }
        *good_len = 0;
        *n_records = 0;
        return 0;
    }
    if (memcmp(buf, HEADER, AUDIT_SPOOL_HEADER_LEN)) {
        mg_err_set(err, errlen, "audit: spool: not a version 1 spool file (bad header)");
        return MG_EFORMAT;
    }
    size_t pos = AUDIT_SPOOL_HEADER_LEN;
    uint64_t n = 0;
    while (pos < len) {
        size_t k = frame_ok(buf + pos, len - pos);
        if (!k)
            break;
        pos += k;
        n++;
    }
    /* A bad frame is a torn tail only when nothing valid follows it. */
    for (size_t q = pos + 1; q + FRAME_HEAD + FRAME_TAIL <= len; q++) {
        if (rd32(buf + q) == FRAME_MAGIC && frame_ok(buf + q, len - q)) {
            mg_err_set(err, errlen,
                       "audit: spool: corrupt record at offset %zu followed by a valid one at "
                       "offset %zu (not a torn write); inspect and move the file aside",
                       pos, q);
            return MG_EFORMAT;
        }
    }
    *good_len = pos;
    *n_records = n;
    return 0;
}

static int fsync_dir(const char *path)
{
    char *dup = strdup(path);
    if (!dup)
        return -1;
    int fd = open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dup);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int audit_spool_open(audit_spool **out, const char *path, char *err, size_t errlen)
{
    audit_spool *s = calloc(1, sizeof *s);
    uint8_t *buf = NULL;
    int rc = MG_EIO;
    if (!s)
        return MG_ENOMEM;
    s->fd = -1;
    if (!(s->path = strdup(path))) {
        rc = MG_ENOMEM;
        goto fail;
    }
    s->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        mg_err_set(err, errlen, "audit: spool %s: %s", path, strerror(errno));
        goto fail;
    }
    if (flock(s->fd, LOCK_EX | LOCK_NB)) {
        mg_err_set(err, errlen, "audit: spool %s is in use by another process", path);
        rc = MG_EBUSY;
        goto fail;
    }
    struct stat st;
    if (fstat(s->fd, &st) || !S_ISREG(st.st_mode)) {
        mg_err_set(err, errlen, "audit: spool %s: not a regular file", path);
        goto fail;
    }
    /* mapped, not read: a spool can be large after a long outage, and the
     * scan touches each page once */
    size_t len = (size_t)st.st_size;
    static const uint8_t empty[1];
    const uint8_t *img = empty;
    if (len) {
        buf = mmap(NULL, len, PROT_READ, MAP_PRIVATE, s->fd, 0);
        if (buf == MAP_FAILED) {
            buf = NULL;
            mg_err_set(err, errlen, "audit: spool %s: mmap failed: %s", path, strerror(errno));
            goto fail;
        }
        img = buf;
    }
    size_t good;
    uint64_t n;
    char why[256];
    rc = audit_spool_scan(img, len, &good, &n, why, sizeof why);
    if (buf)
        munmap(buf, len);
    buf = NULL;
    if (rc) {
        mg_err_set(err, errlen, "%s (file %s)", why, path);
        goto fail;
    }
    rc = MG_EIO;
    if (good < AUDIT_SPOOL_HEADER_LEN) { /* new file, or a torn header */
        if (ftruncate(s->fd, 0) || write(s->fd, HEADER, sizeof HEADER) != sizeof HEADER ||
            fdatasync(s->fd) || fsync_dir(path)) {
            mg_err_set(err, errlen, "audit: spool %s: cannot write header: %s", path,
                       strerror(errno));
            goto fail;
        }
        good = AUDIT_SPOOL_HEADER_LEN;
    } else if (good < len) {
        if (ftruncate(s->fd, (off_t)good) || fdatasync(s->fd)) {
            mg_err_set(err, errlen, "audit: spool %s: cannot truncate torn tail: %s", path,
                       strerror(errno));
            goto fail;
        }
        s->torn = true;
    }
    s->size = good;
    s->read_off = AUDIT_SPOOL_HEADER_LEN;
    s->records = n;
    *out = s;
    return 0;
fail:
    audit_spool_close(s);
    return rc;
}

void audit_spool_close(audit_spool *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd); /* releases the flock */
    free(s->path);
    free(s);
}

int audit_spool_append(audit_spool *s, const uint8_t *const *encs, const size_t *lens, int n,
                       char *err, size_t errlen)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += FRAME_HEAD + lens[i] + FRAME_TAIL;
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf) {
        mg_err_set(err, errlen, "audit: spool: out of memory for %zu bytes", total);
        return MG_ENOMEM;
    }
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        wr32(buf + pos, FRAME_MAGIC);
        wr32(buf + pos + 4, (uint32_t)lens[i]);
        memcpy(buf + pos + FRAME_HEAD, encs[i], lens[i]);
        frame_sum(buf + pos + FRAME_HEAD + lens[i], buf + pos + 4, encs[i], lens[i]);
        pos += FRAME_HEAD + lens[i] + FRAME_TAIL;
    }
    size_t done = 0;
    while (done < total) {
        ssize_t k = write(s->fd, buf + done, total - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = errno;
            free(buf);
            /* drop the partial batch so the file stays whole frames */
            if (ftruncate(s->fd, (off_t)s->size) == 0)
                (void)fdatasync(s->fd);
            mg_err_set(err, errlen, "audit: spool %s: write failed: %s", s->path,
                       k < 0 ? strerror(e) : "short write");
            return MG_EIO;
        }
        done += (size_t)k;
    }
    free(buf);
    if (fdatasync(s->fd)) {
        int e = errno;
        /* after a failed fsync the page cache state is unknown: undo */
        if (ftruncate(s->fd, (off_t)s->size) == 0)
            (void)fdatasync(s->fd);
        mg_err_set(err, errlen, "audit: spool %s: fdatasync failed: %s", s->path, strerror(e));
        return MG_EIO;
    }
    s->size += total;
    s->records += (uint64_t)n;
    return 0;
}

int audit_spool_peek(audit_spool *s, int max, uint8_t ***encs_out, size_t **lens_out, int *n_out,
                     size_t *next_off, char *err, size_t errlen)
{
    uint8_t **encs = calloc((size_t)(max > 0 ? max : 1), sizeof *encs);
    size_t *lens = calloc((size_t)(max > 0 ? max : 1), sizeof *lens);
    int n = 0, rc = MG_EIO;
    size_t off = s->read_off;
    if (!encs || !lens) {
        rc = MG_ENOMEM;
        goto fail;
    }
    while (n < max && off < s->size) {
        uint8_t head[FRAME_HEAD];
        if (pread(s->fd, head, FRAME_HEAD, (off_t)off) != FRAME_HEAD)
            goto io;
        uint32_t len = rd32(head + 4);
        if (rd32(head) != FRAME_MAGIC || len == 0 || len > AUDIT_MAX_ENCODED ||
            len > s->size - off - FRAME_HEAD - FRAME_TAIL)
            goto corrupt;
        uint8_t *p = malloc((size_t)len + FRAME_TAIL);
        if (!p) {
            rc = MG_ENOMEM;
            goto fail;
        }
        encs[n] = p;
        if (pread(s->fd, p, (size_t)len + FRAME_TAIL, (off_t)(off + FRAME_HEAD)) !=
            (ssize_t)len + FRAME_TAIL)
            goto io;
        uint8_t sum[FRAME_TAIL];
        frame_sum(sum, head + 4, p, len);
        if (memcmp(sum, p + len, FRAME_TAIL))
            goto corrupt;
        lens[n++] = len;
        off += FRAME_HEAD + (size_t)len + FRAME_TAIL;
    }
    *encs_out = encs;
    *lens_out = lens;
    *n_out = n;
    *next_off = off;
    return 0;
io:
    mg_err_set(err, errlen, "audit: spool %s: read failed at offset %zu", s->path, off);
    goto fail;
corrupt:
    /* the file changed under us since it was checked at open */
    mg_err_set(err, errlen, "audit: spool %s: record at offset %zu is corrupt", s->path, off);
    rc = MG_EFORMAT;
fail:
    if (encs)
        for (int i = 0; i <= n && i < max; i++)
            free(encs[i]);
    free(encs);
    free(lens);
    return rc;
}

int audit_spool_consume(audit_spool *s, size_t off, uint64_t n, char *err, size_t errlen)
{
    if (off < s->read_off || off > s->size || n > s->records)
        return MG_EINVAL;
    s->read_off = off;
    s->records -= n;
    if (off == s->size) {
        if (ftruncate(s->fd, AUDIT_SPOOL_HEADER_LEN) || fdatasync(s->fd)) {
            mg_err_set(err, errlen, "audit: spool %s: truncate failed: %s", s->path,
                       strerror(errno));
            return MG_EIO;
        }
        s->size = s->read_off = AUDIT_SPOOL_HEADER_LEN;
        s->records = 0;
    }
    return 0;
}

size_t audit_spool_pending_bytes(const audit_spool *s)
{
    return s->size - s->read_off;
}

uint64_t audit_spool_pending_records(const audit_spool *s)
{
    return s->records;
}

bool audit_spool_torn_tail_truncated(const audit_spool *s)
{
    return s->torn;
}
