/*
 * route.c - the cached partition map: key -> partition (ring_key_hash, the
 * same XXH3 range split every node uses) -> primary's node id -> endpoint.
 *
 * The cache is a hint, never a correctness input: any node accepts any
 * request and forwards it, so a stale or missing entry only costs a hop.
 * It is filled from partition_map_reply (on open, and again when a
 * NOT_LEADER came without a hint), and corrected one partition at a time by
 * the leader hints replies carry. A partition whose leader is unknown is
 * sent to its preferred primary (first replica) if the map named one.
 */
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "client/client_int.h"
#include "ring/ring.h"

uint32_t client_route_partition(uint32_t partitions, const void *key, size_t len)
{
    return ring_partition_of_hash(partitions, ring_key_hash(key, len));
}

/* Endpoint of node id (caller holds c->mu); NULL if no address is known. */
static struct client_endpoint *route_node(struct trine_client *c, uint64_t node_id)
{
    if (node_id == 0) return NULL;
    for (size_t i = 0; i < c->n_eps; i++) {
        if (c->eps[i]->node_id == node_id) return c->eps[i];
    }
    return NULL;
}

/* Records that addr belongs to node_id (caller holds c->mu). */
static struct client_endpoint *route_learn(struct trine_client *c, uint64_t node_id,
                                           const struct codec_bytes *addr)
{
    if (node_id == 0 || addr->len == 0) return NULL;
    struct client_endpoint *ep = client_endpoint_intern(c, (const char *)addr->data, addr->len);
    if (ep == NULL) return NULL;
    if (ep->node_id != node_id) {
        /* A node that moved: no other endpoint may keep claiming its id. */
        for (size_t i = 0; i < c->n_eps; i++) {
            if (c->eps[i]->node_id == node_id) c->eps[i]->node_id = 0;
        }
        ep->node_id = node_id;
    }
    return ep;
}

struct client_endpoint *client_route_leader(struct trine_client *c, const void *key, size_t len,
                                            uint32_t *replicas, uint64_t *leader,
                                            uint32_t *partition)
{
    *replicas = 0;
    *leader = 0;
    if (partition != NULL) *partition = 0;
    pthread_mutex_lock(&c->mu);
    struct client_endpoint *ep = NULL;
    if (c->route.partitions > 0) {
        uint32_t p = client_route_partition(c->route.partitions, key, len);
        if (partition != NULL) *partition = p;
        *replicas = c->route.n_replicas[p];
        *leader = c->route.leader[p];
        ep = route_node(c, *leader);
        if (ep != NULL && ep->down_until_ns > clock_mono_ns()) ep = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return ep;
}

struct client_endpoint *client_route_hint(struct trine_client *c, const void *key, size_t len,
                                          const struct codec_leader_hint *hint)
{
    if (hint->node_id == 0) return NULL;
    pthread_mutex_lock(&c->mu);
    struct client_endpoint *ep = route_learn(c, hint->node_id, &hint->address);
    if (ep == NULL) ep = route_node(c, hint->node_id);
    if (key != NULL && c->route.partitions > 0)
        c->route.leader[client_route_partition(c->route.partitions, key, len)] = hint->node_id;
    pthread_mutex_unlock(&c->mu);
    return ep;
}

void client_route_invalidate(struct trine_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->route.stale = true;
    pthread_mutex_unlock(&c->mu);
}

void client_route_free(struct client_route *r)
{
    free(r->leader);
    free(r->n_replicas);
    r->leader = NULL;
    r->n_replicas = NULL;
    r->partitions = 0;
}

int client_route_install(struct trine_client *c, const struct codec_partition_map_reply *m,
                         struct trine_err *err)
{
    uint32_t p = m->partition_count;
    if (p == 0 || p > c->limits.partitions_max)
        return err_set(err, -TRINE_EBAD_REQUEST, "partition map with %u partitions", p);
    struct client_route nr = {.partitions = p, .epoch = m->epoch};
    nr.leader = calloc(p, sizeof(*nr.leader));
    nr.n_replicas = calloc(p, sizeof(*nr.n_replicas));
    if (nr.leader == NULL || nr.n_replicas == NULL) {
        client_route_free(&nr);
        return err_set(err, -TRINE_ENOMEM, "partition map: out of memory");
    }
    for (uint32_t i = 0; i < m->n_partitions; i++) {
        const struct codec_partition_info *pi = &m->partitions[i];
        if (pi->partition >= p) continue; /* a node's bug; ignore the entry, not the map */
        nr.leader[pi->partition] = pi->leader != 0      ? pi->leader
                                   : pi->n_replicas > 0 ? pi->replicas[0]
                                                        : 0;
        nr.n_replicas[pi->partition] = (uint8_t)pi->n_replicas;
    }
    pthread_mutex_lock(&c->mu);
    /* An older epoch than the one we hold is a lagging node: keep ours. */
    bool take = c->route.partitions == 0 || m->epoch >= c->route.epoch;
    if (take) {
        for (uint32_t i = 0; i < m->n_members; i++)
            route_learn(c, m->members[i].node_id, &m->members[i].address);
        struct client_route old = c->route;
        nr.refreshing = old.refreshing;
        nr.refreshed_ns = clock_mono_ns();
        c->route = nr;
        nr = old;
    }
    pthread_mutex_unlock(&c->mu);
    client_route_free(&nr);
    return 0;
}

/* One partition_map_req to ep; installs the answer. */
static int route_fetch(struct trine_client *c, struct client_endpoint *ep, uint64_t deadline_ns,
                       struct trine_err *err)
{
    struct client_conn *conn;
    bool reused;
    int rc = client_pool_get(c, ep, deadline_ns, &conn, &reused, err);
    if (rc != 0) return rc;
    struct codec_msg req = {.type = CODEC_MSG_PARTITION_MAP_REQ};
    req.partition_map_req.hdr.req_id = __atomic_add_fetch(&c->next_req_id, 1, __ATOMIC_RELAXED);
    req.partition_map_req.hdr.client_id = c->client_id;
    req.partition_map_req.hdr.consistency = CODEC_CONSISTENCY_FAST;
    struct buf out;
    buf_init(&out);
    rc = codec_encode(&out, &req, &c->limits, err);
    if (rc == 0) rc = client_conn_send(conn, out.data, out.len, deadline_ns, err);
    buf_free(&out);
    struct codec_msg rep;
    if (rc == 0) rc = client_conn_recv(conn, &c->limits, deadline_ns, &rep, err);
    if (rc == 0) {
        const struct codec_rep_header *h = codec_rep_header(&rep);
        if (h == NULL || h->req_id != req.partition_map_req.hdr.req_id)
            rc = err_set(err, -TRINE_EBAD_REQUEST, "%s: unexpected reply to partition_map_req",
                         ep->addr);
        else if (h->status != 0)
            rc = err_set(err, client_status_from_wire(h->status), "%s: partition map: %.*s",
                         ep->addr, (int)h->message.len, (const char *)h->message.data);
        else if (rep.type != CODEC_MSG_PARTITION_MAP_REPLY)
            rc = err_set(err, -TRINE_EBAD_REQUEST, "%s: unexpected reply type %u", ep->addr,
                         rep.type);
        else
            rc = client_route_install(c, &rep.partition_map_reply, err);
        client_pool_put(c, conn, true);
    } else {
        client_pool_put(c, conn, false);
        if (rc != -TRINE_EUNAUTHENTICATED) client_endpoint_down(c, ep);
    }
    return rc;
}

void client_route_refresh(struct trine_client *c, uint64_t deadline_ns, bool force)
{
    pthread_mutex_lock(&c->mu);
    uint64_t now = clock_mono_ns();
    bool needed = force || c->route.partitions == 0 || c->route.stale;
    bool recent = c->route.refreshed_ns != 0 &&
                  now - c->route.refreshed_ns < (uint64_t)CLIENT_REFRESH_GAP_MS * 1000000u;
    if (!needed || c->route.refreshing || (recent && !force)) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->route.refreshing = true;
    size_t tries = c->n_eps;
    pthread_mutex_unlock(&c->mu);

    for (size_t i = 0; i < tries && clock_mono_ns() < deadline_ns; i++) {
        struct trine_err err = {0};
        int rc = route_fetch(c, client_endpoint_any(c), deadline_ns, &err);
        if (rc == 0 || rc == -TRINE_EUNAUTHENTICATED) break;
    }
    pthread_mutex_lock(&c->mu);
    c->route.refreshing = false;
    c->route.stale = false;
    c->route.refreshed_ns = clock_mono_ns();
    pthread_mutex_unlock(&c->mu);
}
