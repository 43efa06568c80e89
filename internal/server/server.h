/*
 * server.h - trined: the wiring of one Trine node.
 *
 * One event loop thread runs everything: the TLS transport (clients and
 * peers), the coordinator (routing each request to the partition's replica,
 * here or on the primary), the replica (every hosted Raft group), timers, the
 * admin HTTP endpoint and signals. The WAL's sync thread wakes the loop when an
 * fsync completes.
 *
 * Life cycle: server_create (opens the data dir, binds the listeners; errors
 * are reported with a reason and nothing is left running), server_run (until
 * SIGTERM/SIGINT or server_stop: leadership is handed off, the WAL synced),
 * server_destroy.
 */
#ifndef TRINE_SERVER_SERVER_H
#define TRINE_SERVER_SERVER_H

#include "base/status.h"
#include "server/config.h"

struct server;

/* cfg must outlive the server. */
int server_create(const struct server_config *cfg, struct server **out, struct trine_err *err);
/* Runs the event loop until stopped. Returns 0 after a graceful stop, or a
 * negative status if the node had to stop (e.g. the WAL failed). */
int server_run(struct server *s);
/* Asks the loop to stop gracefully (thread-safe, async-signal-safe). */
void server_stop(struct server *s);
void server_destroy(struct server *s);

#endif
