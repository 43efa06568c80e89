/*
 * kv.c - the public calls: put, get, del, cas, scan and cluster status.
 * Each checks its arguments (sizes against the codec limits, so an oversize
 * key fails here with TOO_LARGE and nothing is sent), builds the request,
 * runs it through client_call, and copies what the caller keeps out of the
 * reply before its connection is reused. Everything handed back is malloc'd
 * and freed by the caller with the trine_*_free named in trine.h.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

int client_kv_check(trine_client_t *c, const void *key, size_t key_len, const void *value,
                    size_t value_len, bool key_required, struct trine_err *err)
{
    if (c == NULL) return err_set(err, -TRINE_EINVALID, "NULL client");
    if ((key == NULL && key_len > 0) || (value == NULL && value_len > 0))
        return err_set(err, -TRINE_EINVALID, "NULL key or value with a length");
    if (key_required && key_len == 0) return err_set(err, -TRINE_EBAD_REQUEST, "empty key");
    if (key_len > c->limits.key_bytes_max)
        return err_set(err, -TRINE_ETOO_LARGE, "key is %zu bytes, the limit is %u", key_len,
                       c->limits.key_bytes_max);
    if (value_len > c->limits.value_bytes_max)
        return err_set(err, -TRINE_ETOO_LARGE, "value is %zu bytes, the limit is %u", value_len,
                       c->limits.value_bytes_max);
    return 0;
}

static struct codec_bytes kv_bytes(const void *p, size_t n)
{
    return (struct codec_bytes){.data = p, .len = (uint32_t)n};
}

/* Runs the call and turns its outcome into the public convention. */
static int kv_run(trine_client_t *c, struct client_req *req, struct trine_result *res,
                  struct trine_err *err)
{
    struct trine_result local;
    int rc = client_call(c, req, res != NULL ? res : &local, err);
    if (rc != 0) return client_fail(c, err);
    client_ok(c);
    return 0;
}

/* The shared tail of put and cas: route by key as a write (res gets the
 * reply's version, client_reply_result). */
static int kv_write(trine_client_t *c, struct codec_msg *m, const void *key, size_t key_len,
                    const struct trine_opts *opts, struct trine_result *res, struct trine_err *err)
{
    struct client_req req = {.msg = m, .key = key, .key_len = key_len, .write = true, .opts = opts};
    return kv_run(c, &req, res, err);
}

int trine_kv_put(trine_client_t *c, const void *key, size_t key_len, const void *value,
                 size_t value_len, const struct trine_opts *opts, struct trine_result *res)
{
    struct trine_err err = {0};
    struct trine_result local;
    if (res == NULL) res = &local;
    memset(res, 0, sizeof(*res));
    if (client_kv_check(c, key, key_len, value, value_len, true, &err) != 0)
        return client_fail(c, &err);
    struct codec_msg m = {.type = CODEC_MSG_PUT_REQ};
    m.put_req.key = kv_bytes(key, key_len);
    m.put_req.value = kv_bytes(value, value_len);
    m.put_req.ttl_ms = opts != NULL ? opts->ttl_ms : 0;
    return kv_write(c, &m, key, key_len, opts, res, &err);
}

struct kv_get_out {
    void *value;
    size_t len;
};

static int kv_get_copy(void *arg, const struct codec_msg *m)
{
    struct kv_get_out *o = arg;
    if (m->type != CODEC_MSG_GET_REPLY || m->get_reply.hdr.status != 0) return 0;
    const struct codec_get_reply *g = &m->get_reply;
    o->value = malloc((size_t)g->value.len + 1);
    if (o->value == NULL) return -TRINE_ENOMEM;
    if (g->value.len > 0) memcpy(o->value, g->value.data, g->value.len);
    ((char *)o->value)[g->value.len] = '\0';
    o->len = g->value.len; /* the metadata went to res: client_reply_result */
    return 0;
}

int trine_kv_get(trine_client_t *c, const void *key, size_t key_len, const struct trine_opts *opts,
                 void **value, size_t *value_len, struct trine_result *res)
{
    struct trine_err err = {0};
    struct trine_result local;
    if (res == NULL) res = &local;
    memset(res, 0, sizeof(*res));
    if (value != NULL) *value = NULL;
    if (value_len != NULL) *value_len = 0;
    if (value == NULL) {
        err_set(&err, -TRINE_EINVALID, "NULL value pointer");
        return c != NULL ? client_fail(c, &err) : err.code;
    }
    if (client_kv_check(c, key, key_len, NULL, 0, true, &err) != 0) return client_fail(c, &err);
    struct codec_msg m = {.type = CODEC_MSG_GET_REQ};
    m.get_req.key = kv_bytes(key, key_len);
    m.get_req.min_revision = opts != NULL ? opts->min_revision : 0;
    struct kv_get_out o = {0};
    struct client_req req = {.msg = &m,
                             .key = key,
                             .key_len = key_len,
                             .opts = opts,
                             .on_reply = kv_get_copy,
                             .arg = &o};
    int rc = kv_run(c, &req, res, &err);
    if (rc != 0) {
        free(o.value);
        return rc;
    }
    *value = o.value;
    if (value_len != NULL) *value_len = o.len;
    return 0;
}

int trine_kv_del(trine_client_t *c, const void *key, size_t key_len, const struct trine_opts *opts,
                 struct trine_result *res)
{
    struct trine_err err = {0};
    struct trine_result local;
    if (res == NULL) res = &local;
    memset(res, 0, sizeof(*res));
    if (client_kv_check(c, key, key_len, NULL, 0, true, &err) != 0) return client_fail(c, &err);
    struct codec_msg m = {.type = CODEC_MSG_DELETE_REQ};
    m.delete_req.key = kv_bytes(key, key_len);
    struct client_req req = {
        .msg = &m, .key = key, .key_len = key_len, .write = true, .opts = opts};
    return kv_run(c, &req, res, &err);
}

int trine_kv_cas(trine_client_t *c, const void *key, size_t key_len, uint64_t expected_version,
                 const void *value, size_t value_len, const struct trine_opts *opts,
                 struct trine_result *res)
{
    struct trine_err err = {0};
    struct trine_result local;
    if (res == NULL) res = &local;
    memset(res, 0, sizeof(*res));
    if (client_kv_check(c, key, key_len, value, value_len, true, &err) != 0)
        return client_fail(c, &err);
    struct codec_msg m = {.type = CODEC_MSG_CAS_REQ};
    m.cas_req.key = kv_bytes(key, key_len);
    m.cas_req.expected_version = expected_version;
    m.cas_req.value = kv_bytes(value, value_len);
    m.cas_req.ttl_ms = opts != NULL ? opts->ttl_ms : 0;
    return kv_write(c, &m, key, key_len, opts, res, &err);
}

/* ---- scan ---- */

struct kv_scan_out {
    struct trine_kvs *kvs;
    size_t cap;
    size_t want; /* items still wanted, SIZE_MAX = all */
    bool more;   /* the node said more keys match */
};

static void *kv_dup(const struct codec_bytes *b)
{
    char *p = malloc((size_t)b->len + 1);
    if (p == NULL) return NULL;
    if (b->len > 0) memcpy(p, b->data, b->len);
    p[b->len] = '\0';
    return p;
}

static int kv_scan_copy(void *arg, const struct codec_msg *m)
{
    struct kv_scan_out *o = arg;
    if (m->type != CODEC_MSG_SCAN_REPLY) return 0;
    const struct codec_scan_reply *r = &m->scan_reply;
    size_t take = r->n_items < o->want ? r->n_items : o->want;
    struct trine_kvs *kvs = o->kvs;
    if (kvs->n + take > o->cap) {
        size_t cap = o->cap ? o->cap : 16;
        while (cap < kvs->n + take)
            cap *= 2;
        struct trine_kv *items = realloc(kvs->items, cap * sizeof(*items));
        if (items == NULL) return -TRINE_ENOMEM;
        kvs->items = items;
        o->cap = cap;
    }
    for (size_t i = 0; i < take; i++) {
        const struct codec_kv_item *it = &r->items[i];
        struct trine_kv *kv = &kvs->items[kvs->n];
        memset(kv, 0, sizeof(*kv));
        kv->key = kv_dup(&it->key);
        kv->value = kv_dup(&it->value);
        if (kv->key == NULL || kv->value == NULL) {
            free(kv->key);
            free(kv->value);
            return -TRINE_ENOMEM;
        }
        kv->key_len = it->key.len;
        kv->value_len = it->value.len;
        kv->version = it->version;
        kv->create_revision = it->create_revision;
        kv->mod_revision = it->mod_revision;
        kv->expire_at_ms = it->expire_at_ms;
        kvs->n++;
    }
    if (o->want != SIZE_MAX) o->want -= take;
    o->more = r->more || take < r->n_items;
    return 0;
}

int trine_kv_scan(trine_client_t *c, const void *prefix, size_t prefix_len, const void *start_after,
                  size_t start_after_len, uint32_t limit, const struct trine_opts *opts,
                  struct trine_kvs **out, struct trine_result *res)
{
    struct trine_err err = {0};
    struct trine_result local;
    if (res == NULL) res = &local;
    memset(res, 0, sizeof(*res));
    if (out == NULL) {
        err_set(&err, -TRINE_EINVALID, "NULL out");
        return c != NULL ? client_fail(c, &err) : err.code;
    }
    *out = NULL;
    if (client_kv_check(c, prefix, prefix_len, start_after, 0, false, &err) != 0 ||
        client_kv_check(c, start_after, start_after_len, NULL, 0, false, &err) != 0)
        return client_fail(c, &err);
    struct kv_scan_out o = {.kvs = calloc(1, sizeof(struct trine_kvs)),
                            .want = limit == 0 ? SIZE_MAX : limit};
    if (o.kvs == NULL) {
        err_set(&err, -TRINE_ENOMEM, "out of memory");
        return client_fail(c, &err);
    }
    struct codec_bytes after = kv_bytes(start_after, start_after_len);
    int rc = 0;
    /* The node merges every partition in key order and stops a page at
     * `limit` items or the frame size; `more` says where to resume. Each page
     * is one call with its own timeout; the cursor is the last key we kept. */
    for (;;) {
        struct codec_msg m = {.type = CODEC_MSG_SCAN_REQ};
        m.scan_req.prefix = kv_bytes(prefix, prefix_len);
        m.scan_req.start_after = after;
        m.scan_req.min_revision = opts != NULL ? opts->min_revision : 0;
        m.scan_req.limit =
            o.want > c->limits.scan_results_max ? c->limits.scan_results_max : (uint32_t)o.want;
        size_t before = o.kvs->n;
        o.more = false;
        struct client_req req = {.msg = &m, .opts = opts, .on_reply = kv_scan_copy, .arg = &o};
        rc = client_call(c, &req, res, &err);
        if (rc != 0) break;
        if (!o.more || o.want == 0) break;
        if (o.kvs->n == before) { /* more, yet nothing: a node bug; do not spin */
            rc = err_set(&err, -TRINE_EINTERNAL, "scan page with more=true and no items");
            break;
        }
        const struct trine_kv *last = &o.kvs->items[o.kvs->n - 1];
        after = kv_bytes(last->key, last->key_len);
    }
    if (rc != 0) {
        trine_kvs_free(o.kvs);
        return client_fail(c, &err);
    }
    o.kvs->more = o.more;
    *out = o.kvs;
    client_ok(c);
    return 0;
}

void trine_kvs_free(struct trine_kvs *kvs)
{
    if (kvs == NULL) return;
    for (size_t i = 0; i < kvs->n; i++) {
        free(kvs->items[i].key);
        free(kvs->items[i].value);
    }
    free(kvs->items);
    free(kvs);
}

/* ---- cluster status ---- */

static int kv_cluster_copy(void *arg, const struct codec_msg *m)
{
    struct trine_cluster **out = arg;
    if (m->type != CODEC_MSG_CLUSTER_STATUS_REPLY) return 0;
    const struct codec_cluster_status_reply *r = &m->cluster_status_reply;
    struct trine_cluster *cl = calloc(1, sizeof(*cl) + (size_t)r->n_members * sizeof(*cl->members));
    if (cl == NULL) return -TRINE_ENOMEM;
    cl->epoch = r->epoch;
    cl->served_by = r->hdr.served_by;
    cl->n_members = r->n_members;
    cl->members = (struct trine_member *)(cl + 1);
    for (uint32_t i = 0; i < r->n_members; i++) {
        const struct codec_member_status *s = &r->members[i];
        struct trine_member *d = &cl->members[i];
        d->node_id = s->node_id;
        size_t n = s->address.len < TRINE_ADDR_MAX - 1 ? s->address.len : TRINE_ADDR_MAX - 1;
        if (n > 0) memcpy(d->address, s->address.data, n);
        d->address[n] = '\0';
        d->healthy = s->healthy;
        d->partitions = s->partitions;
        d->primaries = s->primaries;
        d->lag = s->lag;
        d->lag_ms = s->lag_ms;
    }
    *out = cl;
    return 0;
}

int trine_cluster_status(trine_client_t *c, const struct trine_opts *opts,
                         struct trine_cluster **out)
{
    struct trine_err err = {0};
    if (c == NULL || out == NULL) return -TRINE_EINVALID;
    *out = NULL;
    struct codec_msg m = {.type = CODEC_MSG_CLUSTER_STATUS_REQ};
    struct client_req req = {.msg = &m, .opts = opts, .on_reply = kv_cluster_copy, .arg = out};
    struct trine_result res;
    int rc = kv_run(c, &req, &res, &err);
    if (rc == 0 && *out == NULL) { /* an OK error_reply: nothing to show */
        err_set(&err, -TRINE_EINTERNAL, "cluster status: empty reply");
        return client_fail(c, &err);
    }
    return rc;
}

void trine_cluster_free(struct trine_cluster *cl)
{
    free(cl);
}
