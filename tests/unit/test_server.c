/*
 * test_server.c - trined's configuration (flags, file, validation, --help) and
 * the coordinator's frame-type peek. The running server is tested end to end
 * in tests/integration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "codec/codec.h"
#include "server/config.h"
#include "server/server_int.h"
#include "testutil.h"

static int parse(struct server_config *c, const char *const *args, int n, struct trine_err *err)
{
    char *argv[32];
    argv[0] = "trined";
    for (int i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    config_init(c);
    return config_parse_args(c, n + 1, argv, stdout, err);
}

static const char *const base_args[] = {"--id",
                                        "2",
                                        "--data-dir",
                                        "/tmp/x",
                                        "--initial-cluster",
                                        "1=127.0.0.1:7001,2=127.0.0.1:7002,3=localhost:7003",
                                        "--tls-cert",
                                        "c",
                                        "--tls-key",
                                        "k",
                                        "--tls-ca",
                                        "ca"};
#define NBASE ((int)(sizeof(base_args) / sizeof(base_args[0])))

static void test_defaults_and_flags(void **state)
{
    (void)state;
    struct server_config c;
    struct trine_err err = {0};
    assert_int_equal(parse(&c, base_args, NBASE, &err), 0);
    assert_int_equal(c.id, 2);
    assert_int_equal(c.nmembers, 3);
    assert_int_equal(c.members[2].id, 3);
    assert_string_equal(c.members[2].addr, "localhost:7003");
    assert_int_equal(c.partitions, 64);
    assert_int_equal(c.vnodes, 64);
    assert_true(c.max_frame_bytes == 16u << 20);
    assert_true(c.max_key_bytes == 4096);
    assert_true(c.max_value_bytes == 1u << 20);
    assert_true(c.fsync);
    assert_string_equal(c.listen, "127.0.0.1:7001");
    assert_null(c.http);
    config_free(&c);

    const char *more[NBASE + 6];
    memcpy(more, base_args, sizeof(base_args));
    more[NBASE] = "--max-value=2MiB";
    more[NBASE + 1] = "--fsync";
    more[NBASE + 2] = "off";
    more[NBASE + 3] = "--partitions=128";
    more[NBASE + 4] = "--log-level";
    more[NBASE + 5] = "debug";
    assert_int_equal(parse(&c, more, NBASE + 6, &err), 0);
    assert_true(c.max_value_bytes == 2u << 20);
    assert_false(c.fsync);
    assert_int_equal(c.partitions, 128);
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    config_free(&c);
}

static void expect_error(const char *const *extra, int n, const char *needle)
{
    const char *args[NBASE + 8];
    memcpy(args, base_args, sizeof(base_args));
    for (int i = 0; i < n; i++)
        args[NBASE + i] = extra[i];
    struct server_config c;
    struct trine_err err = {0};
    assert_int_equal(parse(&c, args, NBASE + n, &err), -TRINE_EINVALID);
    if (!strstr(err.msg, needle)) fail_msg("expected '%s' in '%s'", needle, err.msg);
    config_free(&c);
}

static void test_bad_flags(void **state)
{
    (void)state;
    expect_error((const char *[]){"--bogus", "1"}, 2, "unknown flag --bogus");
    expect_error((const char *[]){"--fsync", "maybe"}, 2, "on|off");
    expect_error((const char *[]){"--max-key", "4 KiB"}, 2, "not a size");
    expect_error((const char *[]){"--id", "9"}, 2, "not a member");
    expect_error((const char *[]){"--initial-cluster", "1=a:1,1=b:2"}, 2, "appears twice");
    expect_error((const char *[]){"--initial-cluster", "x=a:1"}, 2, "ID=HOST:PORT");
    expect_error((const char *[]){"--max-frame", "1MiB"}, 2, "--max-frame");
    expect_error((const char *[]){"--partitions", "0"}, 2, "--partitions");
    expect_error((const char *[]){"--tls-ca"}, 1, "needs a value");

    struct server_config c;
    struct trine_err err = {0};
    const char *none[] = {"--id", "1"};
    assert_int_equal(parse(&c, none, 2, &err), -TRINE_EINVALID);
    assert_non_null(strstr(err.msg, "--data-dir"));
    config_free(&c);
}

static void test_config_file(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("cfg");
    char path[600];
    tu_path(path, sizeof(path), dir, "trined.conf");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "# a node\nid = 3\ndata-dir = \"/var/lib/trine\"\n"
               "initial-cluster = 1=h1:1,2=h2:2,3=h3:3  # three\n"
               "tls-cert = n.pem\ntls-key = n.key\ntls-ca = ca.pem\nvnodes = 16\n");
    fclose(f);
    struct server_config c;
    struct trine_err err = {0};
    const char *args[] = {"--config", path, "--vnodes", "32"};
    assert_int_equal(parse(&c, args, 4, &err), 0);
    assert_int_equal(c.id, 3);
    assert_string_equal(c.data_dir, "/var/lib/trine");
    assert_int_equal(c.nmembers, 3);
    assert_int_equal(c.vnodes, 32); /* flags after --config win */
    config_free(&c);

    f = fopen(path, "w");
    fprintf(f, "id = 3\nnonsense\n");
    fclose(f);
    assert_int_equal(parse(&c, args, 2, &err), -TRINE_EINVALID);
    assert_non_null(strstr(err.msg, ":2: expected name = value"));
    config_free(&c);
    tu_rm_rf(dir);
}

static void test_help(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("help");
    char path[600];
    tu_path(path, sizeof(path), dir, "help.txt");
    FILE *f = fopen(path, "w+");
    struct server_config c;
    config_init(&c);
    char *argv[] = {"trined", "--help"};
    struct trine_err err = {0};
    assert_int_equal(config_parse_args(&c, 2, argv, f, &err), 1);
    rewind(f);
    char text[4096] = {0};
    assert_true(fread(text, 1, sizeof(text) - 1, f) > 0);
    fclose(f);
    assert_non_null(strstr(text, "--initial-cluster"));
    assert_non_null(strstr(text, "--fsync on|off"));
    assert_non_null(strstr(text, "(default 64)"));
    config_free(&c);
    tu_rm_rf(dir);
}

static void test_peek_type(void **state)
{
    (void)state;
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    struct buf b;
    buf_init(&b);
    static const uint8_t types[] = {CODEC_MSG_PUT_REQ, CODEC_MSG_SCAN_REPLY, CODEC_MSG_HELLO,
                                    CODEC_MSG_RAFT_BATCH, CODEC_MSG_SNAPSHOT_ACK};
    for (size_t i = 0; i < sizeof(types); i++) {
        memset(&m, 0, sizeof(m));
        m.type = types[i];
        buf_reset(&b);
        assert_int_equal(codec_encode(&b, &m, NULL, NULL), 0);
        assert_int_equal(route_peek_type(b.data + 4, b.len - 4), types[i]);
    }
    const uint8_t wide[] = {0xdc, 0x00, 0x02, 0xcd, 0x00, 0x81, 0xc0};
    assert_int_equal(route_peek_type(wide, sizeof(wide)), 129);
    const uint8_t neg[] = {0x92, 0xd0, 0xff};
    assert_int_equal(route_peek_type(neg, sizeof(neg)), -1);
    const uint8_t cut[] = {0x92, 0xcd, 0x00};
    assert_int_equal(route_peek_type(cut, sizeof(cut)), -1);
    const uint8_t notarr[] = {0x81, 0x01};
    assert_int_equal(route_peek_type(notarr, sizeof(notarr)), -1);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_flags), cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_config_file),        cmocka_unit_test(test_help),
        cmocka_unit_test(test_peek_type),
    };
    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
