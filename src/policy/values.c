/* values: the scalar parsers shared by the policy loader, the admin API and
 * faultctl. No YAML here, so faultctl links this without the loader. */
#include "values.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const method_names[FL_M__COUNT] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"};

enum fl_method fl_values_parse_method(const char *s, size_t len)
{
    for (int i = 0; i < FL_M_OTHER; i++)
        if (strlen(method_names[i]) == len && memcmp(method_names[i], s, len) == 0)
            return (enum fl_method)i;
    return FL_M_OTHER;
}

const char *fl_values_method_name(enum fl_method m)
{
    return (unsigned)m < FL_M__COUNT ? method_names[m] : "OTHER";
}

static const char *const grpc_names[17] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

int fl_values_parse_grpc_status(const char *s)
{
    char *end;
    if (isdigit((unsigned char)s[0])) {
        long v = strtol(s, &end, 10);
        return (*end == 0 && v >= 0 && v <= 16) ? (int)v : -EINVAL;
    }
    for (int i = 0; i < 17; i++)
        if (strcasecmp(s, grpc_names[i]) == 0)
            return i;
    return -EINVAL;
}

const char *fl_values_grpc_status_name(int code)
{
    return code >= 0 && code <= 16 ? grpc_names[code] : "UNKNOWN";
}

/* Parses a decimal number with up to `scale` decimals into value * 10^scale. */
static int parse_fixed(const char *s, int scale, uint64_t *out, int *decimals_out)
{
    uint64_t v = 0;
    int dec = -1, digits = 0;
    if (!*s)
        return -EINVAL;
    for (; *s; s++) {
        if (*s == '.') {
            if (dec >= 0)
                return -EINVAL;
            dec = 0;
            continue;
        }
        if (!isdigit((unsigned char)*s))
            break;
        digits++;
        if (dec >= 0 && ++dec > scale)
            return -ERANGE;
        if (v > UINT64_MAX / 10 - 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    /* "." alone would otherwise read as 0. */
    if (*s || !digits)
        return -EINVAL;
    for (int d = dec < 0 ? 0 : dec; d < scale; d++)
        v *= 10;
    *out = v;
    if (decimals_out)
        *decimals_out = dec < 0 ? 0 : dec;
    return 0;
}

/* A number with up to 3 decimals and a unit, in thousandths of the unit
 * times mult: the shared core of durations and sizes. */
static int number_unit(const char *s, const char *const *units, const uint64_t *mults, uint64_t *out)
{
    char num[64];
    size_t i = 0;
    while (s[i] && (isdigit((unsigned char)s[i]) || s[i] == '.') && i < sizeof(num) - 1) {
        num[i] = s[i];
        i++;
    }
    num[i] = 0;
    const char *unit = s + i;
    if (i == 0)
        return -EINVAL;
    size_t u = 0;
    while (units[u] && strcmp(unit, units[u]) != 0)
        u++;
    if (!units[u])
        return -EINVAL;
    uint64_t v;
    if (parse_fixed(num, 3, &v, NULL) < 0 || (v && mults[u] > UINT64_MAX / v))
        return -EINVAL;
    *out = v * mults[u] / 1000; /* v is thousandths */
    return 0;
}

static const char *const dur_units[] = {"us", "ms", "s", "m", "h", NULL};

int fl_values_parse_duration_us(const char *s, uint64_t *us)
{
    static const uint64_t m[] = {1, 1000, 1000000, 60000000, 3600000000ull};
    return number_unit(s, dur_units, m, us);
}

int fl_values_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t us;
    if (fl_values_parse_duration_us(s, &us) < 0)
        return -EINVAL;
    *ms = us / 1000;
    return 0;
}

int fl_values_parse_size(const char *s, uint64_t *bytes)
{
    static const char *const u[] = {"", "B", "KiB", "MiB", "GiB", NULL};
    static const uint64_t m[] = {1, 1, 1024, 1024 * 1024, 1024 * 1024 * 1024};
    uint64_t v;
    if (number_unit(s, u, m, &v) < 0 || v > (1ull << 50))
        return -EINVAL;
    *bytes = v;
    return 0;
}

int fl_values_parse_rate(const char *s, uint64_t *bytes_per_s)
{
    size_t n = strlen(s);
    char buf[64];
    if (n < 3 || n >= sizeof(buf) || strcmp(s + n - 2, "/s") != 0)
        return -EINVAL;
    memcpy(buf, s, n - 2);
    buf[n - 2] = 0;
    if (fl_values_parse_size(buf, bytes_per_s) < 0 || *bytes_per_s == 0)
        return -EINVAL;
    return 0;
}

int fl_values_parse_percent(const char *s, uint32_t *ppm)
{
    uint64_t v;
    int r = parse_fixed(s, 4, &v, NULL);
    if (r < 0 || v > FL_PPM_MAX)
        return -EINVAL;
    *ppm = (uint32_t)v;
    return 0;
}

int fl_values_parse_hostport(const char *s, int for_listen, struct sockaddr_storage addrs[2])
{
    char host[256];
    const char *colon;
    memset(addrs, 0, 2 * sizeof(addrs[0]));
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
            return -EINVAL;
        memcpy(host, s + 1, (size_t)(rb - s - 1));
        host[rb - s - 1] = 0;
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host))
            return -EINVAL;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
        if (strchr(host, ':'))
            return -EINVAL; /* bare IPv6 needs brackets */
    }
    char *end;
    /* strtol would also take "+80" and " 80"; a port is digits only. */
    if (!isdigit((unsigned char)colon[1]))
        return -EINVAL;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return -EINVAL;

    struct sockaddr_in *a4 = (struct sockaddr_in *)&addrs[0];
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addrs[0];
    if (host[0] == 0 || strcmp(host, "*") == 0) {
        if (!for_listen)
            return -EINVAL;
        a6->sin6_family = AF_INET6;
        a6->sin6_addr = in6addr_any;
        a6->sin6_port = htons((uint16_t)port);
        return 1;
    }
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        return 1;
    }
    if (strcmp(host, "localhost") == 0) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (!for_listen)
            return 1;
        struct sockaddr_in6 *b6 = (struct sockaddr_in6 *)&addrs[1];
        b6->sin6_family = AF_INET6;
        b6->sin6_port = htons((uint16_t)port);
        b6->sin6_addr = in6addr_loopback;
        return 2;
    }
    if (for_listen)
        return -EINVAL;
    /* An upstream host name: resolved once, at load time (off the event loop). */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -ENOENT;
    memcpy(&addrs[0], res->ai_addr, res->ai_addrlen);
    if (res->ai_family == AF_INET)
        ((struct sockaddr_in *)&addrs[0])->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&addrs[0])->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 1;
}
