/*
 * trined - the Trine server daemon: parses flags (and --config FILE), then
 * runs the node until SIGTERM/SIGINT. See `trined --help` and
 * docs/operations.md.
 */
#include <stdio.h>

#include "base/log.h"
#include "server/config.h"
#include "server/server.h"

int main(int argc, char **argv)
{
    static struct server_config cfg;
    struct trine_err err = {0};
    config_init(&cfg);
    int rc = config_parse_args(&cfg, argc, argv, stdout, &err);
    if (rc == 1) return 0; /* --help */
    if (rc) {
        fprintf(stderr, "trined: %s\n", err.msg);
        config_free(&cfg);
        return 2;
    }
    struct server *s;
    rc = server_create(&cfg, &s, &err);
    if (rc) {
        const char *hint = rc == -TRINE_ECORRUPT
                               ? " (keep a copy of the data dir, then start once with --repair to "
                                 "cut the log there; see docs/operations.md)"
                               : "";
        log_error("server", "cannot start: %s%s", err.msg, hint);
        fprintf(stderr, "trined: cannot start: %s%s\n", err.msg, hint);
        config_free(&cfg);
        return 1;
    }
    rc = server_run(s);
    server_destroy(s);
    config_free(&cfg);
    log_info("server", "stopped%s", rc ? " after a failure" : "");
    return rc ? 1 : 0;
}
