/* raw: TCP passthrough. Used for connections whose first bytes are not HTTP,
 * and after an HTTP Upgrade or CONNECT. Bytes are forwarded unchanged, FIN is
 * carried across (half-close), and the connection closes when both sides are done. */
#include <stdlib.h>

#include "raw.h"

#include "conn.h"

static int raw_init(struct fl_conn *c)
{
    c->s[FL_CLIENT].want_read = 1;
    if (c->s[FL_UPSTREAM].connected)
        c->s[FL_UPSTREAM].want_read = 1;
    if (fl_conn_connect_upstream(c) < 0)
        return -1;
    fl_conn_update_reading(c);
    return 0;
}

static void maybe_finish(struct fl_conn *c)
{
    if (c->s[FL_CLIENT].eof && c->s[FL_UPSTREAM].eof && fl_conn_queued(c, FL_CLIENT) == 0 &&
        fl_conn_queued(c, FL_UPSTREAM) == 0)
        fl_conn_close(c, 0);
}

static void raw_data(struct fl_conn *c, int side, struct fl_chunk *ch, size_t off, size_t len)
{
    fl_conn_write(c, !side, ch, ch->data + off, len);
}

static void raw_eof(struct fl_conn *c, int side)
{
    fl_conn_shutdown(c, !side);
    maybe_finish(c);
}

static void raw_upstream_error(struct fl_conn *c, int err)
{
    (void)err;
    /* Mirror an upstream failure as a reset, as a direct connection would see. */
    fl_conn_close(c, 1);
}

static void raw_drained(struct fl_conn *c, int side)
{
    (void)side;
    maybe_finish(c);
}

static int raw_idle(struct fl_conn *c)
{
    (void)c;
    return 0;
}

const struct fl_proto_ops fl_raw_ops = {
    .name = "tcp",
    .init = raw_init,
    .data = raw_data,
    .eof = raw_eof,
    .upstream_error = raw_upstream_error,
    .drained = raw_drained,
    .idle = raw_idle,
    .destroy = NULL,
};
