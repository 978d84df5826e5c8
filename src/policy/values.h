/* values: parsers for the scalar values of a policy (durations, percents, gRPC
 * status codes, host:port addresses, HTTP methods). Pure functions, no YAML:
 * the policy loader, the admin API and faultctl share them. */
#ifndef FL_VALUES_H
#define FL_VALUES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "compiler.h"

#define FL_PPM_MAX 1000000u /* percent 100 == 1,000,000 parts per million */

/* HTTP methods a rule can name; bit i of fl_match.methods is method i. */
enum fl_method {
    FL_M_GET,
    FL_M_HEAD,
    FL_M_POST,
    FL_M_PUT,
    FL_M_DELETE,
    FL_M_CONNECT,
    FL_M_OPTIONS,
    FL_M_TRACE,
    FL_M_PATCH,
    FL_M_OTHER, /* any method not listed above; never named by a policy */
    FL_M__COUNT
};

/* Returns the enum for a method name (case-sensitive, as on the wire), or FL_M_OTHER. */
enum fl_method fl_values_parse_method(const char *s, size_t len);
const char *fl_values_method_name(enum fl_method m);

/* Parses "250ms", "2s", "5m", "1h" (also "500us") into milliseconds, fractions
 * of a millisecond dropped. Returns 0 or -EINVAL. */
int fl_values_parse_duration(const char *s, uint64_t *ms) FL_WUR;
/* The same into microseconds. */
int fl_values_parse_duration_us(const char *s, uint64_t *us) FL_WUR;

/* Parses a size "64", "512B", "1.5KiB", "4MiB", "1GiB" into bytes (at most
 * 2^50). Returns 0 or -EINVAL. */
int fl_values_parse_size(const char *s, uint64_t *bytes) FL_WUR;
/* Parses a rate, a size per second ("64KiB/s"), into bytes per second
 * (at least 1). Returns 0 or -EINVAL. */
int fl_values_parse_rate(const char *s, uint64_t *bytes_per_s) FL_WUR;

/* Parses a percent "12.5" (0-100, at most 4 decimals) into ppm. Returns 0 or -EINVAL. */
int fl_values_parse_percent(const char *s, uint32_t *ppm) FL_WUR;

/* Parses a gRPC status name ("UNAVAILABLE") or number ("14"). Returns 0-16 or -EINVAL. */
int fl_values_parse_grpc_status(const char *s);
const char *fl_values_grpc_status_name(int code);

/* Parses "host:port" / "[v6]:port" into addrs (up to 2, see fl_listener_spec).
 * for_listen allows "*:P" and ":P". Returns the count (>0) or -EINVAL. */
int fl_values_parse_hostport(const char *s, int for_listen, struct sockaddr_storage addrs[2]);

#endif
