/* file: a whole small file read into memory (policies, kubeconfigs,
 * certificates). Blocking: call off the event loop. */
#ifndef FL_FILE_H
#define FL_FILE_H

#include <stddef.h>

#include "compiler.h"

/* Reads the file at path into *out (malloc'd, NUL-terminated; *len its
 * length, len may be NULL). Returns 0, -EFBIG when it is over max bytes, or
 * another negative errno (a directory gives -EISDIR). */
int fl_file_read(const char *path, size_t max, char **out, size_t *len) FL_WUR;

#endif
