/* libFuzzer target: what an HTTP/2 upstream answers through faultline.
 *
 * Input: a scenario byte, a byte choosing how the answer is cut into writes
 * (as in fuzz_http1_request.c), then everything the upstream sends after it
 * has read faultline's client preface, starting with its own SETTINGS. The
 * scenario:
 *   bits 0-1  the client's request (requests[] below: a GET; a POST with
 *             DATA; a gRPC call with DATA; two GETs on streams 1 and 3)
 *   bits 2-3  how the upstream ends: 0 and 3 FIN and wait for faultline's
 *             FIN, 1 FIN and close at once, 2 RST
 * The client sends a fixed valid request; faultline's client session toward
 * the upstream parses the input. Then the client sends FIN; faultline must
 * free the connection and leave nothing behind (harness.h). Build and run
 * with test/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

/* Frame header: length (24 bits), type, flags, stream id (31 bits). */
#define FRAME(len, type, flags, sid) \
    0, 0, (len), (type), (flags), 0, 0, 0, (sid)
#define PREFACE 'P', 'R', 'I', ' ', '*', ' ', 'H', 'T', 'T', 'P', '/', '2', '.', '0', '\r', '\n', \
                '\r', '\n', 'S', 'M', '\r', '\n', '\r', '\n'
#define SETTINGS FRAME(0, 4, 0, 0)
/* HPACK: indexed fields from the static table (0x80 | index) and literal
 * fields without indexing (0x0N: name from static index N; 0x00: new name),
 * lengths without Huffman coding. */
#define AUTHORITY 0x01, 9, 'f', 'u', 'z', 'z', '.', 't', 'e', 's', 't'
#define GET_BLOCK 0x82, 0x86, 0x84, AUTHORITY
#define POST_BLOCK 0x83, 0x86, 0x04, 5, '/', 'f', 'o', 'r', 'm', AUTHORITY
/* :method POST, :scheme http, :path /fuzz.Echo/Call, :authority,
 * content-type: application/grpc (static 31), te: trailers */
#define GRPC_BLOCK                                                                                 \
    0x83, 0x86, 0x04, 15, '/', 'f', 'u', 'z', 'z', '.', 'E', 'c', 'h', 'o', '/', 'C', 'a', 'l',   \
        'l', AUTHORITY, 0x0f, 0x10, 16, 'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n',    \
        '/', 'g', 'r', 'p', 'c', 0x00, 2, 't', 'e', 8, 't', 'r', 'a', 'i', 'l', 'e', 'r', 's'
#define LEN(...) ((uint8_t)sizeof((const uint8_t[]){__VA_ARGS__}))

static const uint8_t req_get[] = {PREFACE, SETTINGS, FRAME(LEN(GET_BLOCK), 1, 5, 1), GET_BLOCK};

static const uint8_t req_post[] = {
    PREFACE, SETTINGS, FRAME(LEN(POST_BLOCK), 1, 4, 1), POST_BLOCK,
    FRAME(5, 0, 1, 1), 'h', 'e', 'l', 'l', 'o',
};

static const uint8_t req_grpc[] = {
    PREFACE, SETTINGS, FRAME(LEN(GRPC_BLOCK), 1, 4, 1), GRPC_BLOCK,
    /* one message: not compressed, 3 bytes */
    FRAME(8, 0, 1, 1), 0, 0, 0, 0, 3, 'a', 'b', 'c',
};

static const uint8_t req_two[] = {
    PREFACE,   SETTINGS, FRAME(LEN(GET_BLOCK), 1, 5, 1), GET_BLOCK,
    FRAME(LEN(GET_BLOCK), 1, 5, 3), GET_BLOCK,
};

static const struct {
    const uint8_t *p;
    size_t n;
} requests[4] = {
    {req_get, sizeof(req_get)},
    {req_post, sizeof(req_post)},
    {req_grpc, sizeof(req_grpc)},
    {req_two, sizeof(req_two)},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t ctl[2]; /* scenario, frag */
    fz_begin_scripted(FZ_UP_H2, &data, &size, ctl, 2);
    fz_client_send(requests[ctl[0] & 3].p, requests[ctl[0] & 3].n, 0);
    /* The answer starts once faultline's client preface (24 bytes) is in. */
    fz_upstream_answer(24, data, size, ctl[1], fz_close_style_of(ctl[0] >> 2));
    fz_end();
    return 0;
}
