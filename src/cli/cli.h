/* cli: the client side of the admin API, shared by faultctl and the experiment
 * runner: a small blocking HTTP/1.1 client
 * (unix or TCP socket, llhttp for the response) with a deadline.
 *
 * Everything here blocks the calling thread; it must never run on the
 * daemon's event loop; the daemon links none of it. The default socket path is
 * fl_paths_admin_socket() (paths.h).
 */
#ifndef FL_CLI_H
#define FL_CLI_H

#include "compiler.h"

#include <stddef.h>


/* Called with each piece of the response body as it arrives (chunked framing
 * already removed). Return non-zero to stop reading. */
typedef int (*fl_cli_body_cb)(const char *p, size_t len, void *arg);

struct fl_cli_resp {
    int status;
    char *body; /* NUL-terminated, malloc'd; NULL when a body callback was used */
    size_t len;
};

void fl_cli_resp_free(struct fl_cli_resp *r);

/* Connects to a unix socket. Returns an fd or a negative errno. */
int fl_cli_connect_unix(const char *path) FL_WUR;

/* Connects to host:port within timeout_ms. Returns an fd or a negative errno. */
int fl_cli_connect_tcp(const char *host, const char *port, int timeout_ms) FL_WUR;

/* Sends one request on fd (which it closes) and reads the response until the
 * server closes or the message ends. extra_hdrs is NULL or "Name: value\r\n"
 * lines. With cb, the body is streamed to it and resp->body stays NULL; with
 * timeout_ms < 0 there is no deadline (event streams). Returns 0 (any HTTP
 * status), -ETIMEDOUT, -EPROTO for a malformed response, -EINTR when a signal
 * interrupted the wait, or another negative errno. */
int fl_cli_http(int fd, const char *method, const char *target, const char *host,
                const char *extra_hdrs, const char *body, size_t body_len, int timeout_ms,
                fl_cli_body_cb cb, void *arg, struct fl_cli_resp *resp) FL_WUR;

/* Milliseconds of CLOCK_MONOTONIC. */
long long fl_cli_now_ms(void);

#endif
