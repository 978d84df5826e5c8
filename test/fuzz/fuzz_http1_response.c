/* libFuzzer target: what an HTTP/1.1 upstream answers through faultline.
 *
 * Input: a scenario byte, a byte choosing how the answer is cut into writes
 * (as in fuzz_http1_request.c), then the upstream's answer. The scenario:
 *   bits 0-3  the client's request (requests[] below: GET, HEAD, POST with a
 *             body, chunked POST, pipelined GETs, Upgrade, CONNECT, a
 *             delayed request whose response gets the injected marker, ...)
 *   bits 4-5  how the upstream ends: 0 and 3 FIN and wait for faultline's
 *             FIN, 1 FIN and close at once, 2 RST
 *   bit 6     the client sends FIN right after its request (else only once
 *             the upstream is gone)
 * The client's request reaches the upstream unchanged, the upstream writes
 * the input and closes; faultline must then free the connection and leave
 * nothing behind (harness.h). Build and run with test/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"

#define H "host: fuzz.test\r\n"

static const char *const requests[16] = {
    /* 0 */ "GET / HTTP/1.1\r\n" H "\r\n",
    /* 1 */ "HEAD /index.html HTTP/1.1\r\n" H "\r\n",
    /* 2 */ "POST /submit HTTP/1.1\r\n" H "content-type: text/plain\r\ncontent-length: 11\r\n\r\n"
            "hello world",
    /* 3 */ "POST /chunked HTTP/1.1\r\n" H "transfer-encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
    /* 4 */ "GET /one HTTP/1.1\r\n" H "\r\nGET /two HTTP/1.1\r\n" H "\r\n",
    /* 5 */ "GET /chat HTTP/1.1\r\n" H "upgrade: websocket\r\nconnection: upgrade\r\n"
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
    /* 6 */ "CONNECT fuzz.test:443 HTTP/1.1\r\n" H "\r\n",
    /* 7 */ "GET /delay/1 HTTP/1.1\r\n" H "\r\n",
    /* 8 */ "GET /close HTTP/1.1\r\n" H "connection: close\r\n\r\n",
    /* 9 */ "GET /old HTTP/1.0\r\n\r\n",
    /* 10 */ "GET /a HTTP/1.1\r\n" H "\r\nHEAD /b HTTP/1.1\r\n" H "\r\n",
    /* 11 */ "HEAD /delay/head HTTP/1.1\r\n" H "\r\n",
    /* 12 */ "POST /upload HTTP/1.1\r\n" H "expect: 100-continue\r\ncontent-length: 4\r\n\r\nbody",
    /* 13 */ "OPTIONS * HTTP/1.1\r\n" H "\r\n",
    /* 14 */ "GET /p1 HTTP/1.1\r\n" H "\r\nPOST /p2 HTTP/1.1\r\n" H "content-length: 3\r\n\r\nabc"
             "GET /delay/p3 HTTP/1.1\r\n" H "\r\n",
    /* 15 */ "DELETE /item/7 HTTP/1.1\r\n" H "content-length: 0\r\n"
             "cookie: "
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t ctl[2]; /* scenario, frag */
    fz_begin_scripted(FZ_UP_HTTP1, &data, &size, ctl, 2);
    const char *req = requests[ctl[0] & 15];
    size_t req_len = strlen(req);
    fz_client_send(req, req_len, 0);
    if (ctl[0] & 0x40)
        fz_client_shutdown();
    /* The answer starts once the request has reached the upstream whole. */
    fz_upstream_answer(req_len, data, size, ctl[1], fz_close_style_of(ctl[0] >> 4));
    fz_end();
    return 0;
}
