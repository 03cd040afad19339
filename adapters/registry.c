/* moegate — the adapter registry: named LoRA adapters for one base model,
 * loaded and unloaded while the server runs (API in adapters/lora.h).
 *
 * The table is a small array in load order guarded by one mutex. Loading
 * (file reading, copying) runs outside the lock so that acquire never waits
 * for a disk; the name is checked before loading (to fail early) and again
 * when inserting (another thread may have taken it meanwhile, in which case
 * the fresh copy is released). The registry holds one reference to each
 * adapter it lists; acquire hands out another, under the lock, so an
 * adapter cannot be freed between being found and being retained. unload
 * removes the entry and drops the registry's reference outside the lock:
 * the adapter lives on until its last user's model_lora_release.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "core/errors.h"

typedef struct reg_entry {
    char name[LORA_NAME_MAX];
    char path[1024];
    float scale;
    model_lora *l; /* one reference held by the registry */
} reg_entry;

struct lora_registry {
    const model *m;
    pthread_mutex_t mu; /* guards e, n, cap */
    reg_entry *e;
    int n, cap;
};

static bool valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= LORA_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int find(const lora_registry *r, const char *name)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->e[i].name, name))
            return i;
    return -1;
}

int lora_registry_create(lora_registry **out, const model *m, char *err, size_t errlen)
{
    if (!out || !m) {
        mg_err_set(err, errlen, "lora registry: NULL argument");
        return MG_EINVAL;
    }
    lora_registry *r = calloc(1, sizeof *r);
    if (!r) {
        mg_err_set(err, errlen, "lora registry: out of memory");
        return MG_ENOMEM;
    }
    r->m = m;
    if (pthread_mutex_init(&r->mu, NULL)) {
        free(r);
        mg_err_set(err, errlen, "lora registry: cannot create its mutex");
        return MG_ENOMEM;
    }
    *out = r;
    return MG_OK;
}

void lora_registry_free(lora_registry *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++)
        model_lora_release(r->e[i].l);
    free(r->e);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int lora_registry_load(lora_registry *r, const char *name, const char *path, float scale, char *err,
                       size_t errlen)
{
    if (!r || !path) {
        mg_err_set(err, errlen, "lora registry: NULL argument");
        return MG_EINVAL;
    }
    if (!valid_name(name)) {
        mg_err_set(err, errlen, "lora registry: adapter name '%.80s' is not 1..%d characters of A-Z a-z 0-9 . _ -",
                   name ? name : "", LORA_NAME_MAX - 1);
        return MG_EINVAL;
    }
    pthread_mutex_lock(&r->mu);
    int taken = find(r, name) >= 0;
    pthread_mutex_unlock(&r->mu);
    if (taken) {
        mg_err_set(err, errlen, "lora registry: an adapter named '%s' is already loaded", name);
        return MG_EBUSY;
    }
    model_lora *l;
    int rc = lora_load(&l, r->m, path, scale, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&r->mu);
    if (find(r, name) >= 0) {
        rc = MG_EBUSY;
        mg_err_set(err, errlen, "lora registry: an adapter named '%s' is already loaded", name);
    } else if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 8;
        reg_entry *e = realloc(r->e, sizeof *e * (size_t)cap);
        if (!e) {
            rc = MG_ENOMEM;
            mg_err_set(err, errlen, "lora registry: out of memory");
        } else {
            r->e = e;
            r->cap = cap;
        }
    }
    if (rc == MG_OK) {
        reg_entry *e = &r->e[r->n++];
        memset(e, 0, sizeof *e);
        strcpy(e->name, name); /* valid_name bounded it */
        size_t pl = strlen(path);
        if (pl >= sizeof e->path)
            pl = sizeof e->path - 1;
        memcpy(e->path, path, pl);
        e->scale = scale;
        e->l = l;
    }
    pthread_mutex_unlock(&r->mu);
    if (rc)
        model_lora_release(l);
    return rc;
}

int lora_registry_unload(lora_registry *r, const char *name)
{
    if (!r || !name)
        return MG_EINVAL;
    pthread_mutex_lock(&r->mu);
    int i = find(r, name);
    model_lora *l = NULL;
    if (i >= 0) {
        l = r->e[i].l;
        memmove(&r->e[i], &r->e[i + 1], sizeof *r->e * (size_t)(r->n - i - 1));
        r->n--;
    }
    pthread_mutex_unlock(&r->mu);
    if (!l)
        return MG_ENOTFOUND;
    model_lora_release(l);
    return MG_OK;
}

model_lora *lora_registry_acquire(lora_registry *r, const char *name)
{
    if (!r || !name)
        return NULL;
    pthread_mutex_lock(&r->mu);
    int i = find(r, name);
    model_lora *l = i >= 0 ? model_lora_retain(r->e[i].l) : NULL;
    pthread_mutex_unlock(&r->mu);
    return l;
}

int lora_registry_list(lora_registry *r, lora_registry_entry *out, int cap)
{
    if (!r)
        return 0;
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    for (int i = 0; i < n && i < cap && out; i++) {
        const reg_entry *e = &r->e[i];
        lora_registry_entry *o = &out[i];
        memset(o, 0, sizeof *o);
        memcpy(o->name, e->name, sizeof o->name);
        memcpy(o->path, e->path, sizeof o->path);
        o->scale = e->scale;
        o->id = e->l->id;
        o->bytes = lora_bytes(e->l);
        o->refs = atomic_load_explicit(&e->l->refs, memory_order_relaxed);
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}
