#include "log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum fl_log_level fl_log_min_level = FL_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void fl_log_timestamp(char *buf, unsigned len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    /* strftime + the milliseconds; the year is clamped so the width is fixed. */
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n && n + 6 <= len)
        snprintf(buf + n, len - n, ".%03dZ", (int)(ts.tv_nsec / 1000000) % 1000);
}

void fl_log(enum fl_log_level lvl, const char *fmt, ...)
{
    char line[2048];
    char ts[32];
    int n;
    va_list ap;

    if (lvl < fl_log_min_level)
        return;
    fl_log_timestamp(ts, sizeof(ts));
    n = snprintf(line, sizeof(line), "%s faultline %s: ", ts, level_names[lvl]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* stderr is for rare operator messages; a short blocking write is acceptable. */
    ssize_t r = write(STDERR_FILENO, line, (size_t)n);
    (void)r;
}
