/* log: diagnostics for operators, on stderr. Not the fault log (faultlog.h). */
#ifndef FL_LOG_H
#define FL_LOG_H

#include "addr.h"

enum fl_log_level { FL_LOG_DEBUG, FL_LOG_INFO, FL_LOG_WARN, FL_LOG_ERROR };

extern enum fl_log_level fl_log_min_level;

/* Writes "2026-11-28T10:00:00.123Z faultline LEVEL: message\n" to stderr as one
 * write(2), so lines from several workers never interleave. */
void fl_log(enum fl_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fl_debug(...) fl_log(FL_LOG_DEBUG, __VA_ARGS__)
#define fl_info(...) fl_log(FL_LOG_INFO, __VA_ARGS__)
#define fl_warn(...) fl_log(FL_LOG_WARN, __VA_ARGS__)
#define fl_error(...) fl_log(FL_LOG_ERROR, __VA_ARGS__)

/* Formats the current UTC time as ISO 8601 with milliseconds into buf (>= 25 bytes). */
void fl_log_timestamp(char *buf, unsigned len);


#endif
