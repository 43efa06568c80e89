/*
 * codec.h - msgpack encoding and bounded decoding of every Trine message.
 *
 * The messages, their fields and bounds are defined in proto/trine.schema
 * (docs/protocol.md is the reference); msgs_gen.h holds the C structs. The
 * codec does no I/O and keeps no global state.
 *
 * Frame = u32 big-endian body length + body; body = msgpack array
 * [type, field1, field2, ...]. Encoding uses msgpack-c's packer. Decoding is a
 * cursor over the body that checks every declared length and count against
 * the bytes left and the struct codec_limits BEFORE using or allocating
 * anything, so hostile input costs at most O(body length) time and bounded
 * memory (limit decode_mem), and never crashes or asserts.
 *
 * Ownership of a decoded struct codec_msg:
 *   - every struct codec_bytes (keys, values, strings, entry data) points INTO
 *     the body buffer passed to codec_decode: valid while that buffer lives and
 *     is unchanged (zero-copy);
 *   - every array (entries, scan items, members, ...) lives in the caller's
 *     struct codec_scratch: valid until the next codec_decode with the same
 *     scratch, codec_scratch_reset or codec_scratch_free.
 * Nothing in a struct codec_msg is ever freed by its user. For encoding, the
 * caller owns everything the message points to; the codec only reads it.
 */
#ifndef TRINE_CODEC_CODEC_H
#define TRINE_CODEC_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"
#include "codec/msgs_gen.h"

/* Bytes of the frame length prefix. */
#define CODEC_FRAME_HEADER_BYTES 4

/* Scratch memory for decoded arrays, reused across decodes: after warm-up a
 * decode allocates nothing. Opaque; one per decoding thread/connection. */
struct codec_scratch;

/* Returns a new scratch, or NULL when out of memory. Free with codec_scratch_free. */
struct codec_scratch *codec_scratch_new(void);
/* Forgets every decoded array (memory is kept for reuse, beyond one chunk freed). */
void codec_scratch_reset(struct codec_scratch *s);
/* Frees s and everything decoded into it. NULL is a no-op. */
void codec_scratch_free(struct codec_scratch *s);
/* Bytes of decoded arrays currently held (for tests and metrics). */
size_t codec_scratch_used(const struct codec_scratch *s);

/* Appends one frame (length prefix + body) encoding m to out.
 * lim NULL means codec_limits_default(). The encoder enforces the same limits
 * as the decoder, so a frame it writes is accepted by a peer with the same
 * limits. Errors (out unchanged, detail in err, which may be NULL):
 *   -TRINE_ETOO_LARGE  a str/bin/array over its limit, or the body over frame
 *   -TRINE_EINVALID    unknown m->type, an enum value not in the schema, or a
 *                      non-empty bytes/array with a NULL pointer (caller bugs)
 *   -TRINE_ENOMEM      out grew too large for memory */
int codec_encode(struct buf *out, const struct codec_msg *m, const struct codec_limits *lim,
                 struct trine_err *err);

/* As codec_encode, without the length prefix: appends just the msgpack body
 * (what a Raft entry's data holds for a command). */
int codec_encode_body(struct buf *out, const struct codec_msg *m, const struct codec_limits *lim,
                      struct trine_err *err);

/* Validates a frame header (the first 4 bytes) before the body is read and
 * stores the body length in *len. -TRINE_ETOO_LARGE over lim->frame_bytes_max
 * (the connection must then be closed), -TRINE_EBAD_REQUEST for 0. */
int codec_frame_length(const uint8_t hdr[CODEC_FRAME_HEADER_BYTES], const struct codec_limits *lim,
                       uint32_t *len, struct trine_err *err);

/* Decodes one body of len bytes into *out (see the ownership rules above).
 * scratch may be NULL only when the message can hold no array (a non-empty
 * array is then -TRINE_EINVALID). lim NULL means defaults. Errors, with a
 * message naming the struct and field in err (which may be NULL); *out is
 * then unspecified. An array with fewer fields than the schema declares (an
 * older sender's) decodes with the missing trailing fields zero / empty;
 * docs/protocol.md, "Compatibility between versions", has the rules.
 *   -TRINE_EBAD_REQUEST  not a msgpack array, an empty struct/message array,
 *                        wrong msgpack type, integer or enum out of range,
 *                        truncated input, bytes after the value, nesting too deep
 *   -TRINE_EUNSUPPORTED  unknown message type, or more fields than this
 *                        version knows (a newer sender's)
 *   -TRINE_ETOO_LARGE    a str/bin/array over its limit, body over frame,
 *                        or the arrays would need more than decode_mem
 *   -TRINE_ENOMEM        scratch could not grow */
int codec_decode(const uint8_t *body, size_t len, const struct codec_limits *lim,
                 struct codec_scratch *scratch, struct codec_msg *out, struct trine_err *err);

/* Decodes the first frame of p[0..n): on success *consumed = 4 + body length.
 * -TRINE_EAGAIN (err untouched, *consumed = 0) if p does not yet hold the whole
 * frame; otherwise as codec_frame_length and codec_decode. */
int codec_decode_frame(const uint8_t *p, size_t n, const struct codec_limits *lim,
                       struct codec_scratch *scratch, struct codec_msg *out, size_t *consumed,
                       struct trine_err *err);

/* Deep equality: same type and every field equal (bytes by content, arrays
 * element by element). Messages of unknown type are never equal. */
bool codec_msg_equal(const struct codec_msg *a, const struct codec_msg *b);

/* The common header of a client request / reply (every one has field `hdr`), or NULL
 * for other message types. Points into m. */
struct codec_req_header *codec_req_header(struct codec_msg *m);
struct codec_rep_header *codec_rep_header(struct codec_msg *m);

/* Schema name of a message type ("put_req"), or NULL if unknown. */
const char *codec_msg_name(unsigned type);

/* struct codec_bytes over a C string literal or any NUL-terminated string. */
struct codec_bytes codec_bytes_str(const char *s);

#endif
