/*
 * test_fault_apply.c - regression tests for anomalies the fault harness found
 * (docs/testing.md, "Anomalies found").
 *
 * Anomaly 1: a replica applied a committed entry it could not decode as a
 * no-op, so its state silently diverged from replicas that could decode it
 * (two binary versions in one cluster during a 1-hour fault run). The replica
 * must stop instead. Each case runs cmd_to_store_op in a child process and
 * checks how the child ended: a decodable command is translated (also one an
 * older encoder wrote without the fields appended since: they read as zero),
 * an undecodable one (garbage, or a command with a field more than this
 * version knows, as a newer encoder writes it) makes the process exit with 70
 * (trine_fatal).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "replica/replica_int.h"

static struct replica *new_replica(void)
{
    struct replica *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->lim = codec_limits_default();
    return r;
}

/* A put of k=v encoded as the current binary encodes it. */
static void encode_put(struct replica *r, struct buf *out)
{
    struct cmd c = {.op = CODEC_CMD_OP_PUT,
                    .key = (const uint8_t *)"k",
                    .key_len = 1,
                    .value = (const uint8_t *)"v",
                    .value_len = 1,
                    .client_id = 7,
                    .seq = 1,
                    .now_ms = 1000};
    buf_init(out);
    assert_int_equal(cmd_encode(r, &c, out), 0);
}

/* Runs cmd_to_store_op on data in a child; returns its exit status (or 128 + signal). */
static int apply_in_child(const uint8_t *data, uint32_t len, int *op_type)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct replica *r = new_replica();
        struct raft_entry e = {
            .index = 42, .term = 3, .type = RAFT_ENTRY_NORMAL, .data = data, .len = len};
        struct store_op op;
        cmd_to_store_op(r, &e, &op);
        int t = (int)op.type;
        if (write(fds[1], &t, sizeof(t)) != (ssize_t)sizeof(t)) _exit(3);
        _exit(0);
    }
    close(fds[1]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    *op_type = -1;
    if (read(fds[0], op_type, sizeof(*op_type)) != (ssize_t)sizeof(*op_type)) *op_type = -1;
    close(fds[0]);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_decodable_command_is_applied(void **state)
{
    (void)state;
    struct replica *r = new_replica();
    struct buf b;
    encode_put(r, &b);
    int type;
    assert_int_equal(apply_in_child(b.data, (uint32_t)b.len, &type), 0);
    assert_int_equal(type, STORE_OP_PUT);
    buf_free(&b);
    free(r);
}

static void test_garbage_entry_stops_the_node(void **state)
{
    (void)state;
    static const uint8_t junk[] = {0xc1, 0xff, 0x00, 0x13, 0x37};
    int type;
    assert_int_equal(apply_in_child(junk, sizeof(junk), &type), 70);
    assert_int_equal(type, -1); /* it never reported an op: nothing was skipped */
}

static void test_older_command_is_applied(void **state)
{
    (void)state;
    /* An older encoder wrote one field fewer (before command.fast): the codec
     * reads the missing field as false, and the entry is applied. */
    struct replica *r = new_replica();
    struct buf b;
    encode_put(r, &b);
    /* Body: the fixarray [192, op, ..., now_ms, fast], its last element the
     * one-byte bool `fast`. */
    assert_int_equal(b.data[0] & 0xf0, 0x90);
    assert_true(b.data[b.len - 1] == 0xc2 || b.data[b.len - 1] == 0xc3);
    uint8_t *old = malloc(b.len);
    assert_non_null(old);
    memcpy(old, b.data, b.len - 1); /* drop the trailing bool */
    old[0] = (uint8_t)(b.data[0] - 1);
    int type;
    assert_int_equal(apply_in_child(old, (uint32_t)(b.len - 1), &type), 0);
    assert_int_equal(type, STORE_OP_PUT);
    free(old);
    buf_free(&b);
    free(r);
}

static void test_newer_command_stops_the_node(void **state)
{
    (void)state;
    /* A newer encoder appended a field this version does not know: applying
     * the entry without it could differ from the replicas that know it, so the
     * node stops rather than skip the field or the entry. */
    struct replica *r = new_replica();
    struct buf b;
    encode_put(r, &b);
    assert_true((b.data[0] & 0x0f) < 15);
    uint8_t *newer = malloc(b.len + 1);
    assert_non_null(newer);
    memcpy(newer, b.data, b.len);
    newer[0] = (uint8_t)(b.data[0] + 1);
    newer[b.len] = 0x01; /* the unknown field: fixint 1 */
    int type;
    assert_int_equal(apply_in_child(newer, (uint32_t)(b.len + 1), &type), 70);
    assert_int_equal(type, -1);
    free(newer);
    buf_free(&b);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodable_command_is_applied),
        cmocka_unit_test(test_garbage_entry_stops_the_node),
        cmocka_unit_test(test_older_command_is_applied),
        cmocka_unit_test(test_newer_command_stops_the_node),
    };
    return cmocka_run_group_tests_name("fault_apply", tests, NULL, NULL);
}
