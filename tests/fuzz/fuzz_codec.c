/*
 * fuzz_codec.c - libFuzzer target for the codec's bounded decoder.
 *
 * Input: arbitrary bytes, decoded as a frame body. Decoding must return 0 or
 * one of the documented errors, never crash. When it succeeds, the message
 * must re-encode, decode to an equal message, and re-encode to the very same
 * bytes (the encoder's output is canonical). The same input is also decoded
 * under tiny limits (TOO_LARGE paths) and as a whole frame (length prefix).
 * Seed corpus: tests/fuzz/corpus/codec/ (CODEC_WRITE_CORPUS=dir test_codec).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/status.h"
#include "codec/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct codec_scratch *g_s1, *g_s2;

static void check_rc(int rc, const struct trine_err *err, int allow_again)
{
    if (rc == 0 || (allow_again && rc == -TRINE_EAGAIN)) return;
    if (rc != -TRINE_EBAD_REQUEST && rc != -TRINE_EUNSUPPORTED && rc != -TRINE_ETOO_LARGE) abort();
    if (err->code != rc || err->msg[0] == '\0') abort();
}

static void round_trip(const struct codec_msg *m, const struct codec_limits *lim)
{
    struct buf b1, b2;
    struct trine_err err;
    struct codec_msg m2;
    buf_init(&b1);
    buf_init(&b2);
    int rc = codec_encode_body(&b1, m, lim, &err);
    /* Re-encoding a str-as-bin field can add a byte: only a body at the frame
     * limit may then be refused. */
    if (rc == -TRINE_ETOO_LARGE) goto out;
    if (rc != 0) abort();
    if (codec_decode(b1.data, b1.len, lim, g_s2, &m2, &err) != 0) abort();
    if (!codec_msg_equal(m, &m2)) abort();
    if (codec_encode_body(&b2, &m2, lim, &err) != 0) abort();
    if (b1.len != b2.len || memcmp(b1.data, b2.data, b1.len) != 0) abort();
out:
    buf_free(&b1);
    buf_free(&b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_s1 == NULL) {
        g_s1 = codec_scratch_new();
        g_s2 = codec_scratch_new();
        if (g_s1 == NULL || g_s2 == NULL) abort();
    }
    struct codec_limits def = codec_limits_default();
    struct codec_msg m;
    struct trine_err err;

    int rc = codec_decode(data, size, &def, g_s1, &m, &err);
    check_rc(rc, &err, 0);
    if (rc == 0) round_trip(&m, &def);

    struct codec_limits tiny = def;
    tiny.key_bytes_max = tiny.value_bytes_max = tiny.text_bytes_max = 8;
    tiny.addr_bytes_max = tiny.entry_bytes_max = tiny.chunk_bytes_max = 8;
    tiny.entries_max = tiny.scan_results_max = tiny.members_max = 2;
    tiny.partitions_max = tiny.replicas_max = tiny.batch_msgs_max = 2;
    tiny.decode_mem_bytes_max = 512;
    rc = codec_decode(data, size, &tiny, g_s1, &m, &err);
    check_rc(rc, &err, 0);
    if (rc == 0) round_trip(&m, &tiny);

    size_t used = 0;
    rc = codec_decode_frame(data, size, &def, g_s1, &m, &used, &err);
    check_rc(rc, &err, 1);
    if (rc == 0 && (used > size || used <= CODEC_FRAME_HEADER_BYTES)) abort();
    return 0;
}
