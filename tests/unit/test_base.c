/*
 * test_base.c - status table, error buffers, byte buffers, CRC-32C, rng, log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/hist.h"
#include "base/log.h"
#include "base/rand.h"
#include "base/status.h"
#include "testutil.h"

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(status_name(0), "OK");
    assert_string_equal(status_name(-TRINE_ENOT_FOUND), "NOT_FOUND");
    assert_string_equal(status_name(TRINE_ECAS_FAILED), "CAS_FAILED");
    assert_string_equal(status_name(-999), "UNKNOWN");
    assert_true(status_is_wire(-TRINE_ETIMEOUT));
    assert_false(status_is_wire(-TRINE_ECORRUPT));
    assert_int_equal(status_from_errno(ENOSPC), -TRINE_ENOSPACE);
    assert_int_equal(status_from_errno(EBADF), -TRINE_EIO);
}

static void test_err_set(void **state)
{
    (void)state;
    struct trine_err e;
    err_clear(&e);
    assert_int_equal(err_set(&e, -TRINE_EIO, "open %s: %d", "x", 5), -TRINE_EIO);
    assert_int_equal(e.code, -TRINE_EIO);
    assert_string_equal(e.msg, "open x: 5");
    char big[600];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    err_set(&e, -TRINE_EIO, "%s", big);
    assert_int_equal(strlen(e.msg), TRINE_ERR_MSG_MAX - 1);
    assert_int_equal(err_set(NULL, -TRINE_EINVALID, "ignored"), -TRINE_EINVALID);
}

static void test_buf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 1000; i++) {
        uint8_t x = (uint8_t)i;
        assert_int_equal(buf_append(&b, &x, 1), 0);
    }
    assert_int_equal(b.len, 1000);
    buf_consume(&b, 990);
    assert_int_equal(b.len, 10);
    assert_int_equal(b.data[0], (uint8_t)990);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -TRINE_ENOMEM);
    assert_int_equal(b.len, 10);
    buf_free(&b);

    uint8_t p[8];
    put_u64be(p, 0x0102030405060708u);
    assert_int_equal(p[0], 1);
    assert_int_equal(p[7], 8);
    assert_true(get_u64be(p) == 0x0102030405060708u);
    put_u16be(p, 0xabcd);
    assert_int_equal(get_u16be(p), 0xabcd);
}

static void test_crc32c(void **state)
{
    (void)state;
    /* RFC 3720 check value, and the iSCSI test vectors of 32 zero and 0xff bytes. */
    assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t z[32] = {0}, f[32];
    memset(f, 0xff, sizeof(f));
    assert_int_equal(crc32c(0, z, 32), 0x8A9136AAu);
    assert_int_equal(crc32c(0, f, 32), 0x62A8AB43u);
    /* Chaining equals the CRC of the concatenation. */
    assert_int_equal(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    assert_int_equal(crc32c(0, NULL, 0), 0);
}

static void test_rng(void **state)
{
    (void)state;
    struct rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        assert_true(rng_next(&a) == rng_next(&b));
    uint64_t seed = rng_test_seed("test_base.rng");
    rng_seed(&a, seed);
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++)
        hist[rng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++)
        assert_in_range(hist[i], 9000, 11000);
}

static void test_log_json(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("log");
    char path[600];
    tu_path(path, sizeof(path), dir, "log");
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    assert_true(fd >= 0);
    log_set_fd(fd);
    log_set_node(3);
    log_part(LOG_LEVEL_WARN, "wal", 7, "quote \" and\nnewline");
    log_debug("wal", "hidden at info level");
    log_set_fd(2);
    char line[1024] = {0};
    assert_true(pread(fd, line, sizeof(line) - 1, 0) > 0);
    close(fd);
    assert_non_null(strstr(line, "\"level\":\"warn\",\"node\":3,\"mod\":\"wal\",\"part\":7"));
    assert_non_null(strstr(line, "\"msg\":\"quote \\\" and\\nnewline\"}\n"));
    assert_null(strstr(line, "hidden"));
    enum log_level lv;
    assert_int_equal(log_parse_level("DEBUG", &lv), 0);
    assert_int_equal(lv, LOG_LEVEL_DEBUG);
    assert_int_equal(log_parse_level("loud", &lv), -TRINE_EINVALID);
    tu_rm_rf(dir);
}

static void test_hist(void **state)
{
    (void)state;
    struct hist h, g;
    hist_init(&h);
    assert_int_equal(hist_quantile(&h, 0.5), 0);
    for (uint64_t v = 1; v <= 10000; v++)
        hist_record(&h, v);
    assert_int_equal(h.count, 10000);
    assert_int_equal(h.min, 1);
    assert_int_equal(h.max, 10000);
    /* Log-linear buckets: within 1/16 above the exact percentile. */
    uint64_t p50 = hist_quantile(&h, 0.5), p99 = hist_quantile(&h, 0.99);
    assert_in_range(p50, 5000, 5000 + 5000 / 16 + 1);
    assert_in_range(p99, 9900, 10000);
    assert_int_equal(hist_quantile(&h, 1.0), 10000);
    hist_init(&g);
    hist_record(&g, UINT64_MAX);
    hist_record(&g, 0);
    hist_merge(&h, &g);
    assert_int_equal(h.count, 10002);
    assert_int_equal(h.min, 0);
    assert_true(hist_quantile(&h, 1.0) == UINT64_MAX);
    /* Small values are exact. */
    hist_init(&g);
    for (int i = 0; i < 10; i++)
        hist_record(&g, 7);
    assert_int_equal(hist_quantile(&g, 0.5), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names), cmocka_unit_test(test_err_set),
        cmocka_unit_test(test_buf),          cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_rng),          cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_hist),
    };
    return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}
