/* raw: the protocol handler for bytes faultline does not parse (TLS, anything
 * that is not HTTP, and connections after an Upgrade or CONNECT): relayed both
 * ways unchanged, with backpressure; only connection faults apply. */
#ifndef FL_RAW_H
#define FL_RAW_H

#include "conn.h"

extern const struct fl_proto_ops fl_raw_ops;

#endif
