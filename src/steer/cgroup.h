/* cgroup: cgroup v2 look-ups for transparent mode (docs/architecture.md, "The steering path"):
 * where the cgroup2 hierarchy is mounted, a directory's cgroup id (what the BPF hooks see), a
 * process's cgroup, and the network namespace of a pod cgroup. Plain file-system reads; no BPF, no
 * event loop: call them off the loop (the pod scan runs on libuv's thread pool) or before it runs.
 */
#ifndef FL_CGROUP_H
#define FL_CGROUP_H

#include <stddef.h>
#include <stdint.h>

#include "compiler.h"

/* Finds the cgroup2 mount point in /proc/self/mountinfo (e.g. /sys/fs/cgroup or
 * /sys/fs/cgroup/unified on hybrid hosts). Returns 0 or -ENOENT. */
int fl_cgroup_mountpoint(char *buf, size_t len) FL_WUR;

/* The cgroup v2 id (what bpf_get_current_cgroup_id returns) of the directory
 * at path. Returns 0 or a negative errno. */
int fl_cgroup_id(const char *path, uint64_t *id) FL_WUR;

/* The cgroup v2 directory of process pid (0 = self) as an absolute path.
 * Returns 0 or a negative errno. */
int fl_cgroup_of_pid(int pid, char *buf, size_t len) FL_WUR;

/* Opens the network namespace of the first process found in the cgroup at
 * path or any cgroup below it (pods keep their processes in child cgroups).
 * On success *netns_fd is an O_CLOEXEC fd the caller closes. Returns 0,
 * -ESRCH when the cgroup has no process, or a negative errno. */
int fl_cgroup_netns(const char *path, int *netns_fd) FL_WUR;

/* QoS classes as the kubelet names its cgroups. */
enum fl_cgroup_qos { FL_CGQ_ANY, FL_CGQ_GUARANTEED, FL_CGQ_BURSTABLE, FL_CGQ_BESTEFFORT };

/* Finds the pod-level cgroup of the Kubernetes pod with this UID under the
 * cgroup2 mount, in the kubelet's layouts: cgroupfs
 * kubepods[/burstable|/besteffort]/pod<UID>, systemd
 * kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<UID_>.slice, and
 * the same nested under kubelet/ or kubelet.slice/kubelet-kubepods.slice/.
 * FL_CGQ_ANY tries every class. Returns 0 with the path in buf, or -ENOENT
 * (not there, yet). */
int fl_cgroup_pod_dir(const char *mount, const char *uid, enum fl_cgroup_qos qos, char *buf,
                      size_t len) FL_WUR;

/* The directories under the cgroup2 mount where the kubelet creates pod
 * cgroups (the QoS parents of every layout), written as absolute paths into
 * dirs (room for cap); returns how many exist now. */
size_t fl_cgroup_pod_parents(const char *mount, char dirs[][4096], size_t cap);

#endif
