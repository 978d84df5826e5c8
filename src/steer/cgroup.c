/* cgroup: see cgroup.h. Plain file-system work under the cgroup2 mount and
 * /proc; no BPF. */
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
    char *w = s;

    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

int fl_cgroup_mountpoint(char *buf, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char *line = NULL;
    size_t cap = 0;
    int ret = -ENOENT;

    if (!f)
        return -errno;
    while (getline(&line, &cap, f) > 0) {
        /* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
        char *sep = strstr(line, " - ");
        char *save = NULL, *tok, *mnt = NULL;
        int i = 0;

        if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0)
            continue;
        *sep = '\0';
        for (tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save), i++) {
            if (i == 4) {
                mnt = tok;
                break;
            }
        }
        if (!mnt)
            continue;
        unescape_octal(mnt);
        if (strlen(mnt) >= len) {
            ret = -ENAMETOOLONG;
            break;
        }
        strcpy(buf, mnt);
        ret = 0;
        break;
    }
    free(line);
    fclose(f);
    return ret;
}

int fl_cgroup_id(const char *path, uint64_t *id)
{
    union {
        struct file_handle fh;
        char space[sizeof(struct file_handle) + 8];
    } h;
    int mount_id;
    struct stat st;

    /* cgroup2 (kernfs) file handles are the 64-bit cgroup id. */
    h.fh.handle_bytes = 8;
    if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0) == 0 && h.fh.handle_bytes == 8) {
        memcpy(id, h.fh.f_handle, 8);
        return 0;
    }
    /* Since Linux 5.5 the inode number is the same id. */
    if (stat(path, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    *id = (uint64_t)st.st_ino;
    return 0;
}

int fl_cgroup_of_pid(int pid, char *buf, size_t len)
{
    char mnt[PATH_MAX], path[64];
    char *line = NULL;
    size_t cap = 0;
    FILE *f;
    int ret;

    ret = fl_cgroup_mountpoint(mnt, sizeof(mnt));
    if (ret)
        return ret;
    if (pid)
        snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/cgroup");
    f = fopen(path, "re");
    if (!f)
        return -errno;
    ret = -ENOENT;
    while (getline(&line, &cap, f) > 0) {
        size_t n;

        if (strncmp(line, "0::", 3) != 0)
            continue;
        n = strcspn(line + 3, "\n");
        line[3 + n] = '\0';
        if ((size_t)snprintf(buf, len, "%s%s", mnt, strcmp(line + 3, "/") ? line + 3 : "") >= len)
            ret = -ENAMETOOLONG;
        else
            ret = 0;
        break;
    }
    free(line);
    fclose(f);
    return ret;
}

/* First pid listed in dir/cgroup.procs, else in a child cgroup (depth first,
 * bounded). Returns the pid or 0. */
static int first_pid_below(const char *dir, int depth)
{
    char path[PATH_MAX];
    DIR *d;
    struct dirent *e;
    FILE *f;
    int pid = 0;

    if ((size_t)snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= sizeof(path))
        return 0;
    f = fopen(path, "re");
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    if (pid > 0 || depth <= 0)
        return pid > 0 ? pid : 0;
    d = opendir(dir);
    if (!d)
        return 0;
    while (!pid && (e = readdir(d))) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
            continue;
        pid = first_pid_below(path, depth - 1);
    }
    closedir(d);
    return pid;
}

int fl_cgroup_netns(const char *path, int *netns_fd)
{
    char p[64];
    int pid, fd;

    /* A process can exit between reading cgroup.procs and opening its ns. */
    for (int tries = 0; tries < 3; tries++) {
        pid = first_pid_below(path, 8);
        if (!pid)
            return -ESRCH;
        snprintf(p, sizeof(p), "/proc/%d/ns/net", pid);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            *netns_fd = fd;
            return 0;
        }
        if (errno != ENOENT && errno != ESRCH)
            return -errno;
    }
    return -ESRCH;
}

/* ---- the kubelet's pod cgroups ---- */

/* Where pods live, per layout: the QoS parent directories (relative to the
 * mount) and the prefix of a pod directory's name in each, before the UID
 * (cgroupfs) or the UID with '-' as '_' and ".slice" after it (systemd). */
struct pod_layout {
    const char *parent[3]; /* Guaranteed, Burstable, BestEffort */
    const char *prefix[3];
    int systemd;
};

static const struct pod_layout layouts[] = {
    {{"kubepods", "kubepods/burstable", "kubepods/besteffort"}, {"pod", "pod", "pod"}, 0},
    {{"kubepods.slice", "kubepods.slice/kubepods-burstable.slice",
      "kubepods.slice/kubepods-besteffort.slice"},
     {"kubepods-pod", "kubepods-burstable-pod", "kubepods-besteffort-pod"},
     1},
    {{"kubelet/kubepods", "kubelet/kubepods/burstable", "kubelet/kubepods/besteffort"},
     {"pod", "pod", "pod"},
     0},
    {{"kubelet.slice/kubelet-kubepods.slice",
      "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice",
      "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice"},
     {"kubelet-kubepods-pod", "kubelet-kubepods-burstable-pod", "kubelet-kubepods-besteffort-pod"},
     1},
};

int fl_cgroup_pod_dir(const char *mount, const char *uid, enum fl_cgroup_qos qos, char *buf,
                      size_t len)
{
    char us[128];
    struct stat st;
    size_t n = strlen(uid);
    if (n == 0 || n >= sizeof(us) || strchr(uid, '/') || strstr(uid, ".."))
        return -ENOENT;
    for (size_t i = 0; i <= n; i++)
        us[i] = uid[i] == '-' ? '_' : uid[i];
    for (size_t l = 0; l < sizeof(layouts) / sizeof(layouts[0]); l++) {
        const struct pod_layout *ly = &layouts[l];
        for (int q = 0; q < 3; q++) {
            if (qos != FL_CGQ_ANY && (int)qos - 1 != q)
                continue;
            snprintf(buf, len, "%s/%s/%s%s%s", mount, ly->parent[q], ly->prefix[q],
                     ly->systemd ? us : uid, ly->systemd ? ".slice" : "");
            if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode))
                return 0;
        }
    }
    return -ENOENT;
}

size_t fl_cgroup_pod_parents(const char *mount, char dirs[][4096], size_t cap)
{
    size_t n = 0;
    struct stat st;
    for (size_t l = 0; l < sizeof(layouts) / sizeof(layouts[0]); l++)
        for (int q = 0; q < 3 && n < cap; q++) {
            snprintf(dirs[n], 4096, "%s/%s", mount, layouts[l].parent[q]);
            if (stat(dirs[n], &st) == 0 && S_ISDIR(st.st_mode))
                n++;
        }
    return n;
}
