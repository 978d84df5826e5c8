/* libFuzzer target: what an HTTP/1.1 client sends to faultline.
 *
 * Input: one byte choosing how the rest is cut into writes (see fz_pieces in
 * harness.c: 0 one write, 1 single bytes, ...), then the bytes the client
 * sends. The connection is served by a real worker from fl_http1_ops on (so
 * the sniffing into h2 and raw is fuzzed too) under the policy of harness.c;
 * the upstream answers every request head with a small 200. After the bytes
 * the client sends FIN; faultline must then free the connection and leave
 * nothing behind (harness.h). Build and run with test/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t frag;
    fz_begin(FZ_UP_HTTP1, &data, &size, &frag, 1);
    fz_client_send(data, size, frag);
    fz_end();
    return 0;
}
