/* libFuzzer target: the frames an HTTP/2 client sends to faultline.
 *
 * Input: one byte choosing how the rest is cut into writes (as in
 * fuzz_http1_request.c), then what follows the client connection preface,
 * which the harness sends first: SETTINGS, HEADERS, DATA, ... The connection
 * starts in fl_http1_ops like any other and switches to fl_h2_ops on the
 * preface, so faultline's server session parses the input. The upstream is an
 * HTTP/2 peer that sends SETTINGS, acknowledges SETTINGS and answers each new
 * stream with ":status 200" and END_STREAM. After the input the client sends
 * FIN; faultline must then free the connection and leave nothing behind
 * (harness.h). Build and run with test/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t frag;
    fz_begin(FZ_UP_H2, &data, &size, &frag, 1);
    fz_client_send(preface, sizeof(preface) - 1, 0);
    fz_client_send(data, size, frag);
    fz_end();
    return 0;
}
