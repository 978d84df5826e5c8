#include "paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int fl_paths_admin_socket(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (geteuid() == 0)
        n = snprintf(buf, len, "/run/faultline/admin.sock");
    else if (xdg && *xdg)
        n = snprintf(buf, len, "%s/faultline/admin.sock", xdg);
    else
        n = snprintf(buf, len, "/tmp/faultline-%u/admin.sock", (unsigned)geteuid());
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
