/* paths: where faultline's files live by default, shared by the daemon (which
 * creates them) and faultctl (which finds them). */
#ifndef FL_PATHS_H
#define FL_PATHS_H

#include <stddef.h>

#include "compiler.h"

/* Writes the default admin socket path into buf (docs/reference.md, "Commands"):
 * /run/faultline/admin.sock for root, else $XDG_RUNTIME_DIR/faultline/admin.sock,
 * else /tmp/faultline-UID/admin.sock. Returns 0 or -ENAMETOOLONG. */
int fl_paths_admin_socket(char *buf, size_t len) FL_WUR;

#endif
