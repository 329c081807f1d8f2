/*
 * shells-sandbox — the host-side helper of the container runtime. Runs as host root; four modes:
 *
 *   start      builds one shell's walls and holds them open:
 *                keeper (host root, private mount namespace, the shell's cgroups)
 *                  └─ init (pid 1 of the shell: new user/mount/pid/net/ipc/uts/cgroup namespaces)
 *              The keeper mounts the shell's root filesystem (overlay: the base image, id-mapped to
 *              the shell's uid range, under a writable upper dir on the shell's size-limited ext4
 *              disk) and reaps init. Nothing of the host stays visible inside: init pivots into the
 *              overlay and detaches the old root. Idle, a shell is these two sleeping processes.
 *   exec       runs one command in a running shell: joins its cgroups, then all its namespaces at
 *              once (setns on a pidfd of init), becomes the shell's root, confines itself
 *              (confine.c) and forks the command. It relays output with the exec's limits, and
 *              reports how the command ended (exit code, kill reason) on fd 3.
 *   spawn      starts a long-lived process in a running shell the same way (a terminal on a pty of
 *              the shell's own devpts, or an interpreter on pipes) and relays its input, output,
 *              resizes and signals for as long as it runs.
 *   with-disk  runs a host command (tar, rm) with the shell's disk mounted at a given path in a
 *              private mount namespace, whether or not the shell is running.
 *
 * Root inside a shell is uid 0 of the shell's user namespace, mapped to an unprivileged host range
 * (--uid-base .. +65535) that no other shell shares: the host never sees uid 0 or a capability in a
 * sandbox process. The Node side (src/internal/) prepares cgroups, disk images and state files;
 * this program only does what needs raw system calls.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "confine.h"

#define UID_RANGE 65536
#define MAX_CGROUPS 8
#define STATUS_FD 3

/* ---------------------------------------------------------------------------------------------- */
/* small helpers                                                                                   */

static int report_fd = -1; /* where a fatal error is reported besides stderr (start: the ready pipe) */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int saved = errno;
    char line[1200];
    int n = snprintf(line, sizeof line, "error %s%s%s\n", msg, saved ? ": " : "", saved ? strerror(saved) : "");
    if (n > (int)sizeof line - 1) n = sizeof line - 1;
    if (report_fd >= 0 && write(report_fd, line, (size_t)n) < 0) { /* nothing more to do */ }
    if (write(2, line + 6, (size_t)n - 6) < 0) { /* nothing more to do */ }
    _exit(1);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("open %s", path);
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) die("write %s", path);
    close(fd);
}

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int sys_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* Start time of a process (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names
 * one process for good, so a recycled pid is never mistaken for the shell's init. */
static unsigned long long proc_start_time(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
    if (!p) return 0;
    p++;
    /* p is at the space before field 3; step to the space before field 22 (starttime). */
    for (int field = 3; field < 22 && p; field++) p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void join_cgroups(char **procs, int count) {
    for (int i = 0; i < count; i++) write_file(procs[i], "0");
}

static const char *arg_value(int *i, int argc, char **argv) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    return argv[++*i];
}

static void close_fds_from(int lowest) {
    if (syscall(SYS_close_range, lowest, ~0U, 0) == 0) return;
    for (int fd = lowest; fd < 1024; fd++) close(fd);
}

/* ---------------------------------------------------------------------------------------------- */
/* disk: the shell's ext4 image on a loop device                                                   */

/* A loop device already backed by `image` (the shell is running, or another helper mounted it):
 * mounting that device again shares its superblock, where a second loop device on the same file
 * would be two filesystems writing one image — corruption. */
static int find_loop_for(const char *image, char *dev, size_t devlen) {
    DIR *d = opendir("/sys/block");
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "loop", 4) != 0) continue;
        char path[PATH_MAX], backing[PATH_MAX];
        snprintf(path, sizeof path, "/sys/block/%s/loop/backing_file", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, backing, sizeof backing - 1);
        close(fd);
        if (n <= 0) continue;
        backing[n] = 0;
        if (backing[n - 1] == '\n') backing[n - 1] = 0;
        if (strcmp(backing, image) == 0) {
            snprintf(dev, devlen, "/dev/%s", e->d_name);
            found = 0;
            break;
        }
    }
    closedir(d);
    return found;
}

/* Mounts the shell's disk image at `target` in the current (private) mount namespace. The loop
 * device is attached with autoclear: it detaches itself when the last mount of it goes away, so a
 * dead keeper never leaves a loop device behind. `share_live`: mount the device already backed by
 * the image if there is one (the keeper skips the scan: the control plane starts a shell only once
 * its previous loop device is gone). */
static void mount_disk(const char *image, const char *target, int share_live, char *dev, size_t devlen) {
    int loop_fd = -1;
    if (!share_live || find_loop_for(image, dev, devlen) != 0) {
        int backing = open(image, O_RDWR | O_CLOEXEC);
        if (backing < 0) die("open disk %s", image);
        int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0) die("open /dev/loop-control");
        for (int attempt = 0;; attempt++) {
            int n = ioctl(ctl, LOOP_CTL_GET_FREE);
            if (n < 0) die("LOOP_CTL_GET_FREE");
            snprintf(dev, devlen, "/dev/loop%d", n);
            loop_fd = open(dev, O_RDWR | O_CLOEXEC);
            if (loop_fd < 0 && errno == ENOENT) { /* no devtmpfs node yet */
                if (mknod(dev, S_IFBLK | 0660, makedev(7, (unsigned)n)) < 0 && errno != EEXIST) die("mknod %s", dev);
                loop_fd = open(dev, O_RDWR | O_CLOEXEC);
            }
            if (loop_fd < 0) die("open %s", dev);
            struct loop_config config;
            memset(&config, 0, sizeof config);
            config.fd = (unsigned)backing;
            config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
            strncpy((char *)config.info.lo_file_name, image, LO_NAME_SIZE - 1);
            if (ioctl(loop_fd, LOOP_CONFIGURE, &config) == 0) break;
            /* Another process took this free device between GET_FREE and CONFIGURE: try the next. */
            if (errno != EBUSY || attempt > 64) die("LOOP_CONFIGURE %s", dev);
            close(loop_fd);
        }
        close(backing);
        close(ctl);
    }
    if (mount(dev, target, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "") < 0) die("mount %s on %s", dev, target);
    if (loop_fd >= 0) close(loop_fd);
}

/* upper/ and work/ on the disk; the upper root is the shell's `/` so it belongs to root inside. */
static void ensure_disk_layout(const char *disk, unsigned long uid_base) {
    char upper[PATH_MAX], work[PATH_MAX];
    snprintf(upper, sizeof upper, "%s/upper", disk);
    snprintf(work, sizeof work, "%s/work", disk);
    if (mkdir(upper, 0755) == 0) {
        if (chown(upper, (uid_t)uid_base, (gid_t)uid_base) < 0) die("chown %s", upper);
    } else if (errno != EEXIST) die("mkdir %s", upper);
    if (mkdir(work, 0700) < 0 && errno != EEXIST) die("mkdir %s", work);
}

/* ---------------------------------------------------------------------------------------------- */
/* start                                                                                           */

struct start_options {
    const char *shell_dir; /* holds mnt/{lower,disk,root} and receives holder.json */
    const char *image;     /* base image rootfs (read-only lower layer) */
    const char *disk;      /* ext4 image: upper + work dirs, size-limited */
    const char *network;   /* sealed | localhost */
    const char *hostname;
    unsigned long uid_base;
    unsigned long shm_mb;
    char *cgroups[MAX_CGROUPS]; /* cgroup.procs files to join */
    int cgroup_count;
};

static void mkdir_or_exists(const char *path, mode_t mode) {
    if (mkdir(path, mode) < 0 && errno != EEXIST) die("mkdir %s", path);
}

static void make_device(const char *path, unsigned major, unsigned minor, unsigned long uid_base) {
    if (mknod(path, S_IFCHR | 0666, makedev(major, minor)) < 0) die("mknod %s", path);
    if (chmod(path, 0666) < 0 || chown(path, (uid_t)uid_base, (gid_t)uid_base) < 0) die("chown %s", path);
}

/*
 * /dev of the shell: a small tmpfs with the harmless character devices, made by the keeper (host
 * root) because a user namespace cannot create device nodes. The sandbox can open these but cannot
 * make others (mknod of devices needs CAP_MKNOD in the host's user namespace).
 */
static void populate_dev(const char *root, const struct start_options *o) {
    char dev[PATH_MAX], path[PATH_MAX], opts[128];
    snprintf(dev, sizeof dev, "%s/dev", root);
    snprintf(opts, sizeof opts, "mode=0755,size=256k,nr_inodes=256,uid=%lu,gid=%lu", o->uid_base, o->uid_base);
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, opts) < 0) die("mount /dev tmpfs");
    static const struct { const char *name; unsigned major, minor; } devices[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
    };
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dev, devices[i].name);
        make_device(path, devices[i].major, devices[i].minor, o->uid_base);
    }
    static const struct { const char *name, *target; } links[] = {
        {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dev, links[i].name);
        if (symlink(links[i].target, path) < 0) die("symlink %s", path);
        if (lchown(path, (uid_t)o->uid_base, (gid_t)o->uid_base) < 0) die("lchown %s", path);
    }
    snprintf(path, sizeof path, "%s/pts", dev);
    mkdir_or_exists(path, 0755);
    snprintf(path, sizeof path, "%s/shm", dev);
    mkdir_or_exists(path, 01777);
    /* POSIX shared memory: tmpfs pages are charged to the shell's memory cgroup. */
    snprintf(opts, sizeof opts, "mode=1777,size=%lum,uid=%lu,gid=%lu", o->shm_mb, o->uid_base, o->uid_base);
    if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) die("mount /dev/shm");
}

/*
 * The base image, id-mapped into the shell's uid range: files owned by 0..65535 on disk appear as
 * owned by uid_base..uid_base+65535, i.e. by root..65535 inside the shell. One image on disk serves
 * every shell, each with its own range, without copying or chowning it. Read-only.
 */
static void mount_idmapped_lower(const char *image, const char *target, int userns_fd) {
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, image, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0) die("open_tree %s", image);
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID;
    attr.userns_fd = (uint64_t)userns_fd;
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        die("id-map base image (kernel >= 5.19 with idmapped mounts needed)");
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("move_mount lower");
    close(tree);
}

static void bring_loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die("SIOCGIFFLAGS lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die("SIOCSIFFLAGS lo");
    close(s);
}

static void write_sysctl(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return; /* best effort: the sysctl may not exist on this kernel */
    if (write(fd, value, strlen(value)) < 0) { /* best effort */ }
    close(fd);
}

/* Hides /proc files that describe the host kernel rather than the shell. */
static void mask_proc(void) {
    static const char *const masked[] = {"proc/kcore", "proc/timer_list", "proc/sched_debug",
                                         "proc/sysrq-trigger", "proc/kallsyms"};
    for (size_t i = 0; i < sizeof masked / sizeof masked[0]; i++) {
        if (access(masked[i], F_OK) < 0) continue;
        if (mount("dev/null", masked[i], NULL, MS_BIND, NULL) < 0) die("mask %s", masked[i]);
    }
    static const char *const readonly[] = {"proc/sys", "proc/irq", "proc/bus", "proc/fs"};
    for (size_t i = 0; i < sizeof readonly / sizeof readonly[0]; i++) {
        if (access(readonly[i], F_OK) < 0) continue;
        if (mount(readonly[i], readonly[i], NULL, MS_BIND | MS_REC, NULL) < 0) die("bind %s", readonly[i]);
        if (mount(NULL, readonly[i], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            die("read-only %s", readonly[i]);
    }
}

/* pid 1 of the shell. Finishes the walls from inside the new namespaces, then only reaps orphans:
 * a shell's namespaces live exactly as long as this process. Starts with its working directory on
 * the overlay root (it cannot walk the host's root-only state directory to reach it). */
static void run_init(const struct start_options *o, int maps_written, int ready_write) {
    report_fd = ready_write;
    char go;
    if (read(maps_written, &go, 1) != 1) _exit(1);
    close(maps_written);
    /* Become root of the shell (host uid_base) with no supplementary groups of the host. */
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) die("become shell root");

    /* The mounts this namespace copied from the keeper's are locked (a less privileged namespace
     * cannot unmount one to see what it hides), and pivot_root refuses a locked new root. A
     * recursive clone of the root tree, attached on top of it, is a mount of our own. */
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, ".", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0) die("clone root tree");
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, ".", MOVE_MOUNT_F_EMPTY_PATH) < 0) die("attach root tree");
    if (fchdir(tree) < 0) die("enter root tree");
    close(tree);

    /* proc and devpts are mounted from inside: they belong to the shell's pid and user namespaces. */
    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("mount proc");
    if (mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") < 0)
        die("mount devpts");
    /* Without capabilities root cannot bind ports below 1024 or open ping sockets; in a network
     * namespace of its own neither protects anything, so both are opened to every uid. */
    write_sysctl("proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
    write_sysctl("proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    mask_proc();

    /* Swap the root for the overlay and drop every host mount from this namespace. */
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root");
    if (umount2(".", MNT_DETACH) < 0) die("detach old root");
    if (chdir("/") < 0) die("chdir /");

    if (sethostname(o->hostname, strlen(o->hostname)) < 0) die("sethostname");
    /* sealed: loopback stays down — no networking at all. localhost: loopback only. */
    if (strcmp(o->network, "localhost") == 0) bring_loopback_up();

    prctl(PR_SET_NAME, "shells-init", 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (shells_confine(SHELLS_CAPS_NONE) < 0) die("confine init");
    if (write(ready_write, "1", 1) != 1) die("report ready");
    close_fds_from(0);
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
        dup2(null_fd, 0);
        dup2(null_fd, 1);
        dup2(null_fd, 2);
        if (null_fd > 2) close(null_fd);
    }

    /* Signals from inside the shell cannot reach pid 1 unless it handles them; only SIGCHLD is
     * taken, to reap whatever the shell's processes leave behind. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
        siginfo_t info;
        sigwaitinfo(&set, &info);
    }
}

static void write_uid_maps(pid_t pid, unsigned long uid_base) {
    char path[64], map[64];
    snprintf(map, sizeof map, "0 %lu %d\n", uid_base, UID_RANGE);
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    write_file(path, map);
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    write_file(path, map);
}

/* A user namespace with the shell's uid map, only to id-map the base image before the shell's own
 * namespaces exist (the mount table must be complete when they copy it). Returns its fd. */
static int make_idmap_userns(unsigned long uid_base) {
    int ready[2], release[2];
    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(release, O_CLOEXEC) < 0) die("pipe");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        char c = 'u';
        close(release[1]);
        close(ready[0]);
        if (unshare(CLONE_NEWUSER) < 0 || write(ready[1], &c, 1) != 1) _exit(1);
        if (read(release[0], &c, 1) < 0) { /* released by EOF */ }
        _exit(0);
    }
    close(ready[1]);
    close(release[0]);
    char c;
    if (read(ready[0], &c, 1) != 1) die("id-map user namespace");
    write_uid_maps(child, uid_base);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", child);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open %s", path);
    close(release[1]);
    close(ready[0]);
    waitpid(child, NULL, 0);
    return fd;
}

static void write_holder_file(const char *shell_dir, pid_t init_pid, const char *loop_dev) {
    char tmp[PATH_MAX], final[PATH_MAX], json[512];
    snprintf(tmp, sizeof tmp, "%s/holder.json.tmp", shell_dir);
    snprintf(final, sizeof final, "%s/holder.json", shell_dir);
    int n = snprintf(json, sizeof json,
                     "{\"keeperPid\":%d,\"keeperStart\":\"%llu\",\"initPid\":%d,\"initStart\":\"%llu\",\"loopDevice\":\"%s\"}\n",
                     getpid(), proc_start_time(getpid()), init_pid, proc_start_time(init_pid), loop_dev + 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, json, (size_t)n) < 0 || fsync(fd) < 0) die("write %s", tmp);
    close(fd);
    if (rename(tmp, final) < 0) die("rename %s", final);
}

static int cmd_start(int argc, char **argv) {
    struct start_options o;
    memset(&o, 0, sizeof o);
    o.network = "sealed";
    o.hostname = "shell";
    o.shm_mb = 64;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--shell-dir") == 0) o.shell_dir = arg_value(&i, argc, argv);
        else if (strcmp(a, "--image") == 0) o.image = arg_value(&i, argc, argv);
        else if (strcmp(a, "--disk") == 0) o.disk = arg_value(&i, argc, argv);
        else if (strcmp(a, "--network") == 0) o.network = arg_value(&i, argc, argv);
        else if (strcmp(a, "--hostname") == 0) o.hostname = arg_value(&i, argc, argv);
        else if (strcmp(a, "--uid-base") == 0) o.uid_base = strtoul(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--shm-mb") == 0) o.shm_mb = strtoul(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--cgroup-procs") == 0) {
            if (o.cgroup_count == MAX_CGROUPS) die("too many cgroups");
            o.cgroups[o.cgroup_count++] = (char *)arg_value(&i, argc, argv);
        } else die("start: unknown argument %s", a);
    }
    if (!o.shell_dir || !o.image || !o.disk || o.uid_base < UID_RANGE) die("start: missing arguments");
    if (strcmp(o.network, "sealed") != 0 && strcmp(o.network, "localhost") != 0) die("start: network %s", o.network);

    /* fd 3: the ready pipe to the control plane ("ok" or "error ..."). */
    report_fd = STATUS_FD;
    fcntl(report_fd, F_SETFD, FD_CLOEXEC);
    umask(022);

    /* Everything this shell ever runs is in its cgroups from the first instruction on: limits
     * apply, and killing the cgroup's members reclaims every process even after a crash. */
    join_cgroups(o.cgroups, o.cgroup_count);
    /* The keeper and init must not be the OOM killer's choice when the shell runs out of memory:
     * the command that ballooned should die, not the shell. (Processes an exec starts do not
     * descend from these two, so they keep the normal score.) Best effort: lowering the score
     * needs CAP_SYS_RESOURCE, which some hosts withhold even from root; the two are tiny anyway. */
    int oom_fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom_fd >= 0) {
        if (write(oom_fd, "-1000", 5) < 0) { /* keep the default score */ }
        close(oom_fd);
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    prctl(PR_SET_NAME, "shells-keeper", 0, 0, 0);

    char mnt[PATH_MAX];
    snprintf(mnt, sizeof mnt, "%s/mnt", o.shell_dir);
    mkdir_or_exists(mnt, 0700);
    if (chdir(mnt) < 0) die("chdir %s", mnt);
    mkdir_or_exists("lower", 0755);
    mkdir_or_exists("disk", 0755);
    mkdir_or_exists("root", 0755);

    /* A private mount namespace: the shell's mounts never appear in the host's mount table, and
     * they vanish by themselves when the last process using them is gone. */
    if (unshare(CLONE_NEWNS) < 0) die("unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");

    char loop_dev[64];
    mount_disk(o.disk, "disk", 0, loop_dev, sizeof loop_dev);
    ensure_disk_layout("disk", o.uid_base);

    int userns_fd = make_idmap_userns(o.uid_base);
    mount_idmapped_lower(o.image, "lower", userns_fd);
    close(userns_fd);
    /* Relative layer paths (we are in mnt/) keep the option string short and free of the state
     * dir's characters. No xino/index/metacopy: plain copy-up semantics. */
    if (mount("overlay", "root", "overlay", MS_NOSUID | MS_NODEV,
              "lowerdir=lower,upperdir=disk/upper,workdir=disk/work") < 0)
        die("mount overlay root");
    populate_dev("root", &o);
    if (chdir("root") < 0) die("chdir root");

    /* The shell's init: every namespace at once, copying the finished mount table (the copy's
     * mounts are locked together: the shell cannot unmount one to look under it). */
    int maps[2], init_ready[2];
    if (pipe2(maps, O_CLOEXEC) < 0 || pipe2(init_ready, O_CLOEXEC) < 0) die("pipe");
    pid_t init_pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET |
                                                   CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | SIGCHLD,
                                    NULL, NULL, NULL, NULL);
    if (init_pid < 0) die("clone shell init");
    if (init_pid == 0) {
        close(maps[1]);
        close(init_ready[0]);
        run_init(&o, maps[0], init_ready[1]);
    }
    close(maps[0]);
    close(init_ready[1]);
    write_uid_maps(init_pid, o.uid_base);
    if (write(maps[1], "g", 1) != 1) die("release shell init");
    close(maps[1]);
    char buf[256];
    ssize_t n = read(init_ready[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    if (n <= 0 || buf[0] != '1') {
        errno = 0;
        if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
        die("shell init failed: %s", n > 0 ? buf + (strncmp(buf, "error ", 6) == 0 ? 6 : 0) : "exited");
    }
    close(init_ready[0]);
    if (chdir("/") < 0) die("chdir /");

    write_holder_file(o.shell_dir, init_pid, loop_dev);
    if (write(report_fd, "ok\n", 3) != 3) { /* the control plane went away; the shell stays */ }
    close(report_fd);
    report_fd = -1;

    /* Keep the shell: reap init (and anything reparented here) until init is gone. */
    for (;;) {
        int status;
        pid_t done = waitpid(-1, &status, 0);
        if (done == init_pid) return 0;
        if (done < 0 && errno == ECHILD) return 0;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* exec                                                                                            */

/* What exec and spawn share: the shell to enter and how the command starts there. */
struct entry_options {
    pid_t init_pid;
    unsigned long long init_start;
    char *cgroups[MAX_CGROUPS];
    int cgroup_count;
    const char *oom_events; /* memory.oom_control (v1) or memory.events (v2): "oom_kill N" */
    const char *cwd;
    enum shells_caps caps;
};

/* Consumes one option exec and spawn share; returns 0 when `a` is not one of them. */
static int parse_entry_option(struct entry_options *e, const char *cmd, const char *a, int *i, int argc, char **argv) {
    if (strcmp(a, "--init-pid") == 0) e->init_pid = (pid_t)strtol(arg_value(i, argc, argv), NULL, 10);
    else if (strcmp(a, "--init-start") == 0) e->init_start = strtoull(arg_value(i, argc, argv), NULL, 10);
    else if (strcmp(a, "--oom-events") == 0) e->oom_events = arg_value(i, argc, argv);
    else if (strcmp(a, "--cwd") == 0) e->cwd = arg_value(i, argc, argv);
    else if (strcmp(a, "--root-caps") == 0) {
        const char *v = arg_value(i, argc, argv);
        if (strcmp(v, "none") == 0) e->caps = SHELLS_CAPS_NONE;
        else if (strcmp(v, "package-manager") == 0) e->caps = SHELLS_CAPS_PACKAGE_MANAGER;
        else die("%s: --root-caps %s", cmd, v);
    } else if (strcmp(a, "--cgroup-procs") == 0) {
        if (e->cgroup_count == MAX_CGROUPS) die("too many cgroups");
        e->cgroups[e->cgroup_count++] = (char *)arg_value(i, argc, argv);
    } else return 0;
    return 1;
}

static void on_abort(int sig);

/*
 * Readies the helper (status fd not inherited, SIGPIPE ignored, SIGTERM/SIGINT abort) and pins the
 * shell's init: a pidfd refers to that one process even if its pid is recycled afterwards. Returns
 * the pidfd, or -1 when init is gone (the caller reports not_running).
 */
static int pin_init(const struct entry_options *e) {
    fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abort;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int init_fd = sys_pidfd_open(e->init_pid);
    if (init_fd < 0 || proc_start_time(e->init_pid) != e->init_start) {
        if (init_fd >= 0) close(init_fd);
        return -1;
    }
    return init_fd;
}

struct exec_options {
    struct entry_options e;
    const char *pids_events; /* pids.events: "max N" */
    long long timeout_ms;
    long long max_output;
    unsigned long long disk_full_bytes; /* free space at or below this after a failure = disk limit */
    char **command;
};

static long long read_counter(int fd, const char *key) {
    if (fd < 0) return -1;
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    size_t keylen = strlen(key);
    for (char *line = buf; *line;) {
        if (strncmp(line, key, keylen) == 0 && line[keylen] == ' ') return strtoll(line + keylen + 1, NULL, 10);
        char *next = strchr(line, '\n');
        if (!next) break;
        line = next + 1;
    }
    return -1;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static volatile sig_atomic_t abort_requested = 0;
static void on_abort(int sig) {
    (void)sig;
    abort_requested = 1;
}

/* Kills every process of the exec: its process group (the command made it with setsid). A group
 * kill cannot be outrun by fork (a task with a fatal signal pending cannot fork), the repeats are
 * for stragglers that were mid-fork. */
static void kill_group(pid_t pgid) {
    for (int i = 0; i < 3; i++) {
        if (kill(-pgid, SIGKILL) < 0 && errno == ESRCH) return;
        usleep(1000);
    }
}

/*
 * Writes output to the control plane. Its pipes are non-blocking: the control plane may stop
 * reading for a while (backpressure from a slow consumer), and the wall clock and aborts must still
 * be enforced meanwhile. Returns -1 when the output cannot be delivered any more (the control plane
 * is gone, or the exec was ended while the control plane held back).
 */
static int relay(int fd, const char *buf, size_t len, long long deadline, pid_t group, const char **reason) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) return -1;
        if (**reason) return -1; /* ended: drop what the control plane did not take in time */
        long long now = now_ms();
        if (now >= deadline || abort_requested) {
            *reason = now >= deadline ? "wall_clock" : "aborted";
            kill_group(group);
            return -1;
        }
        struct pollfd writable = {fd, POLLOUT, 0};
        long long wait = deadline - now < 50 ? deadline - now : 50;
        poll(&writable, 1, (int)wait);
    }
    return 0;
}

/*
 * Joins a running shell (init pinned by `init_fd`, a pidfd): its cgroups first (their files belong to
 * host root, which we stop being below), then every namespace of the shell in one step, then becomes
 * the shell's root. Returns -1 when init is gone. Children forked afterwards are in the shell's pid
 * namespace; this process itself keeps its host pid (and sees host pids).
 */
static int enter_shell(int init_fd, char **cgroups, int cgroup_count) {
    join_cgroups(cgroups, cgroup_count);
    if (setns(init_fd, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                           CLONE_NEWCGROUP) < 0) {
        if (errno == ESRCH) return -1;
        die("setns");
    }
    close(init_fd);
    /* Root of the shell: host uid_base, no supplementary groups of the host. */
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) die("become shell root");
    /* Not dumpable: the shell's processes cannot ptrace or read /proc of this helper (it came from
     * the host) in the moment between fork and execve, nor while it relays. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    return 0;
}

/* Closes every file descriptor except the `count` ones in `keep` (-1 entries are ignored). */
static void close_all_except(const int *keep, int count) {
    int highest = -1;
    for (int k = 0; k < count; k++)
        if (keep[k] > highest) highest = keep[k];
    for (int fd = 0; fd <= highest; fd++) {
        int kept = 0;
        for (int k = 0; k < count; k++)
            if (keep[k] == fd) kept = 1;
        if (!kept) close(fd);
    }
    close_fds_from(highest + 1);
}

/*
 * Background processes of a finished command still hold its output pipes (`server &`). Keep reading
 * and discarding so they never block or see EPIPE: a drainer in the shell (its pid namespace and
 * cgroups) that exits when the last writer closes and dies with the shell. Forked twice so that its
 * parent is the shell's init, not this helper: a child of a process outside the pid namespace would
 * be reparented to the host's init when we exit, and the shell's teardown would wait for the host's
 * init to reap it. Returns in the calling helper; entries of `fds` with fd -1 are closed already.
 */
static void drain_in_shell(struct pollfd *fds, int count) {
    pid_t middle = fork();
    if (middle > 0) {
        waitpid(middle, NULL, 0);
        return;
    }
    if (middle < 0) return;
    if (fork() != 0) _exit(0);
    setsid();
    prctl(PR_SET_NAME, "shells-drain", 0, 0, 0);
    /* Keep only the pipes; hold nothing of the host, and be as confined as any other process of
     * the shell. */
    int keep[4] = {-1, -1, -1, -1}, open_pipes = 0;
    for (int k = 0; k < count && k < 4; k++) {
        keep[k] = fds[k].fd;
        if (fds[k].fd >= 0) open_pipes++;
        fds[k].events = POLLIN;
    }
    close_all_except(keep, count < 4 ? count : 4);
    if (shells_confine(SHELLS_CAPS_NONE) < 0) _exit(0);
    char buf[16384];
    while (open_pipes > 0) {
        if (poll(fds, (nfds_t)count, -1) < 0 && errno != EINTR) _exit(0);
        for (int k = 0; k < count; k++) {
            if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            fcntl(fds[k].fd, F_SETFL, 0);
            if (read(fds[k].fd, buf, sizeof buf) <= 0) {
                close(fds[k].fd);
                fds[k].fd = -1;
                open_pipes--;
            }
        }
    }
    _exit(0);
}

/*
 * The command's environment reaches the helper under a prefix that neither the dynamic loader nor
 * the C library reads (see commandEnvironment in src/internal/exec.ts). The helper runs as host root
 * until it enters the shell: LD_PRELOAD, LD_LIBRARY_PATH, GCONV_PATH or GLIBC_TUNABLES of the
 * caller's choosing in its own environment would run the caller's code as host root (e.g. a library
 * written into the shell, reached through /proc/PID/root). Unwrapped only in the command's process,
 * inside the shell, right before its execve.
 */
#define COMMAND_ENV_PREFIX "SHELLS_ENV_"

static char **command_environment(void) {
    extern char **environ;
    size_t count = 0, prefix = strlen(COMMAND_ENV_PREFIX);
    for (char **e = environ; *e; e++) count++;
    char **env = calloc(count + 1, sizeof *env);
    if (!env) _exit(126);
    size_t n = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, COMMAND_ENV_PREFIX, prefix) == 0 && strchr(*e + prefix, '=') != NULL) env[n++] = *e + prefix;
    return env;
}

/* In a freshly forked child of the helper, stdio in place: the command's process state, the
 * confinement (confine.c), then the command. Never returns. */
static void run_command(const char *cwd, enum shells_caps caps, char **command) __attribute__((noreturn));
static void run_command(const char *cwd, enum shells_caps caps, char **command) {
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask(022);
    /* No core dumps: a crash must neither write the host's core_pattern target nor eat the
     * shell's disk. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    if (chdir(cwd) < 0) {
        dprintf(2, "shells: cannot change directory to %s: %s\n", cwd, strerror(errno));
        _exit(126);
    }
    int rc = shells_confine(caps);
    if (rc < 0) {
        dprintf(2, "shells: cannot confine the command: %s\n", strerror(-rc));
        _exit(126);
    }
    extern char **environ;
    environ = command_environment(); /* execvp searches the command's own PATH */
    execvp(command[0], command);
    int e = errno;
    dprintf(2, "shells: %s: %s\n", command[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

static int cmd_exec(int argc, char **argv) {
    struct exec_options o;
    memset(&o, 0, sizeof o);
    o.e.cwd = "/workspace";
    o.timeout_ms = 60000;
    o.max_output = 10 << 20;
    o.disk_full_bytes = 1 << 20;
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (parse_entry_option(&o.e, "exec", a, &i, argc, argv)) continue;
        if (strcmp(a, "--pids-events") == 0) o.pids_events = arg_value(&i, argc, argv);
        else if (strcmp(a, "--timeout-ms") == 0) o.timeout_ms = strtoll(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--max-output") == 0) o.max_output = strtoll(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--disk-full-bytes") == 0) o.disk_full_bytes = strtoull(arg_value(&i, argc, argv), NULL, 10);
        else die("exec: unknown argument %s", a);
    }
    if (i >= argc) die("exec: no command");
    o.command = argv + i;

    int init_fd = pin_init(&o.e);
    if (init_fd < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
    }
    int oom_fd = o.e.oom_events ? open(o.e.oom_events, O_RDONLY | O_CLOEXEC) : -1;
    int pids_fd = o.pids_events ? open(o.pids_events, O_RDONLY | O_CLOEXEC) : -1;

    if (enter_shell(init_fd, o.e.cgroups, o.e.cgroup_count) < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
    }

    long long oom_before = read_counter(oom_fd, "oom_kill");
    long long pids_before = read_counter(pids_fd, "max");

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) die("pipe");
    fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK);
    fcntl(2, F_SETFL, fcntl(2, F_GETFL) | O_NONBLOCK);
    long long started = now_ms();
    pid_t child = fork();
    if (child < 0) {
        const char *reason = errno == EAGAIN ? "pids" : "";
        dprintf(STATUS_FD, "exit=126 reason=%s truncated=0\n", reason);
        dprintf(2, "shells: cannot start the command: %s\n", strerror(errno));
        return 0;
    }
    if (child == 0) {
        setsid();
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        run_command(o.e.cwd, o.e.caps, o.command);
    }
    close(out[1]);
    close(err[1]);
    int child_fd = sys_pidfd_open(child);

    const char *reason = "";
    int truncated = 0, relaying = 1, exited = 0, status = 0;
    long long relayed = 0;
    long long deadline = started + o.timeout_ms;
    struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {child_fd, POLLIN, 0}};
    int open_pipes = 2;
    char buf[65536];

    while (!exited) {
        long long now = now_ms();
        if (now >= deadline && !*reason) {
            reason = "wall_clock";
            kill_group(child);
        }
        if (abort_requested && !*reason) {
            reason = "aborted";
            kill_group(child);
        }
        /* A fork that failed for the pids limit while this exec ran: end the exec's whole process
         * group, the usual shape of a fork bomb (`f(){ f|f & }; f`). */
        if (!*reason && pids_fd >= 0 && read_counter(pids_fd, "max") > pids_before) {
            reason = "pids";
            kill_group(child);
        }
        long long wait = deadline - now;
        if (wait > 50) wait = 50;
        if (wait < 0) wait = 0;
        int ready = poll(fds, 3, (int)wait);
        if (ready < 0 && errno != EINTR) die("poll");
        for (int k = 0; k < 2 && ready > 0; k++) {
            if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = read(fds[k].fd, buf, sizeof buf);
            if (n <= 0) {
                fds[k].fd = -1;
                open_pipes--;
                continue;
            }
            if (!relaying) continue;
            long long room = o.max_output - relayed;
            size_t take = (size_t)n;
            if ((long long)take > room) take = room > 0 ? (size_t)room : 0;
            if (take > 0 && relay(k + 1, buf, take, deadline, child, &reason) < 0) relaying = 0;
            relayed += (long long)take;
            if (take < (size_t)n) {
                truncated = 1;
                relaying = 0;
                if (!*reason) reason = "output_limit";
                kill_group(child);
            }
        }
        if (fds[2].revents & POLLIN || child_fd < 0) {
            if (waitpid(child, &status, child_fd < 0 ? 0 : WNOHANG) == child) exited = 1;
        }
    }

    /* Output the command wrote just before it ended is still in the pipes: take it. Background
     * processes may hold the pipes open for a long time; they are handed to a drainer below. */
    for (int k = 0; k < 2; k++) {
        if (fds[k].fd < 0) continue;
        fcntl(fds[k].fd, F_SETFL, O_NONBLOCK);
        for (;;) {
            ssize_t n = read(fds[k].fd, buf, sizeof buf);
            if (n == 0) {
                fds[k].fd = -1;
                open_pipes--;
                break;
            }
            if (n < 0) break;
            if (!relaying) continue;
            long long room = o.max_output - relayed;
            size_t take = (size_t)n;
            if ((long long)take > room) take = room > 0 ? (size_t)room : 0;
            if (take > 0 && relay(k + 1, buf, take, deadline, child, &reason) < 0) relaying = 0;
            relayed += (long long)take;
            if (take < (size_t)n) {
                truncated = 1;
                relaying = 0;
                if (!*reason) reason = "output_limit";
            }
        }
    }

    int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (!*reason && oom_fd >= 0 && read_counter(oom_fd, "oom_kill") > oom_before) reason = "oom";
    if (!*reason && pids_fd >= 0 && read_counter(pids_fd, "max") > pids_before) {
        reason = "pids";
        kill_group(child);
    }
    if (!*reason && exit_code != 0) {
        /* The overlay reports its upper filesystem, the shell's disk: a failure with the disk
         * (nearly) full, in blocks or inodes, is a failure at the disk limit. */
        struct statvfs vfs;
        if (statvfs("/", &vfs) == 0 &&
            ((unsigned long long)vfs.f_bavail * vfs.f_frsize <= o.disk_full_bytes || vfs.f_favail == 0))
            reason = "disk";
    }
    dprintf(STATUS_FD, "exit=%d reason=%s truncated=%d\n", exit_code, reason, truncated);

    /* Background processes still hold the command's stdout/stderr (`server &`): see drain_in_shell. */
    if (open_pipes > 0) drain_in_shell(fds, 2);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* spawn                                                                                           */

/*
 * A long-lived process in a running shell (a terminal, an interpreter): entered like an exec, with
 * no wall clock or output limit of its own (its owner ends it), relaying in both directions.
 *
 *   fd 0  frames from the control plane: [type: 1 byte][payload length: 4 bytes, big-endian][payload]
 *           'd' bytes for the process's stdin (or the terminal)
 *           'e' end of input: closes the stdin pipe; on a terminal, types the EOF character (^D)
 *           'r' resize the terminal: cols, rows (2 bytes each, big-endian)
 *           's' a signal (1 byte: its number) to the terminal's foreground process group, or to the
 *               process group without a terminal
 *         EOF on fd 0 means the control plane is gone: the process is killed.
 *   fd 1  output: the terminal's, or the process's stdout;  fd 2  the process's stderr
 *   fd 3  "started\n" once the process runs (or "not_running\n"), then "exit=N reason=R truncated=0\n"
 *
 * With --pty COLSxROWS the terminal is a pseudo-terminal of the shell's own devpts instance (mounted by
 * init with newinstance): the master is opened from inside the shell's mount namespace and stays in
 * this helper, the relay; the process gets the slave as its controlling terminal, so `tty` prints
 * /dev/pts/N, the line discipline turns ^C into SIGINT for the foreground job, and closing the
 * master (when the process ends or the helper dies) hangs up whatever else still holds the terminal.
 *
 * The relay never reads more than it can hand on: output waits in one buffer per stream while the
 * control plane holds back (it blocks the process on a full pipe or terminal), input in one buffer
 * while the process does not read. Idle, it sleeps in poll().
 */

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif
#define DEVPTS_MAGIC 0x1cd1
#define RELAY_BUF 65536

struct spawn_options {
    struct entry_options e;
    int pty;
    unsigned short cols, rows;
    char **command;
};

/* One direction of output: from the process (pipe or terminal master) to the control plane. */
struct outbound {
    int src; /* -1 once it reached EOF (or EIO: no terminal slave left) */
    int dst; /* 1 or 2 */
    int dst_dead; /* the control plane stopped reading for good: output is dropped */
    size_t off, len;
    char data[RELAY_BUF];
};

/* Input for the process, with the frame parser of fd 0. */
struct inbound {
    int fd; /* the stdin pipe or the terminal master; -1 once closed */
    int is_pty;
    int eof_pending;
    size_t off, len;
    char data[RELAY_BUF];
    /* frame parser */
    unsigned char header[5];
    int header_len;
    unsigned char type;
    uint32_t remaining;
    unsigned char control[8];
    size_t control_len;
};

static void write_all_blocking(struct outbound *o);

/* Sends what a stream holds to the control plane; returns without waiting when it holds back. */
static void flush_outbound(struct outbound *o) {
    while (o->len > 0) {
        if (o->dst_dead) {
            o->len = 0;
            break;
        }
        ssize_t n = write(o->dst, o->data + o->off, o->len);
        if (n > 0) {
            o->off += (size_t)n;
            o->len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        o->dst_dead = 1;
    }
    o->off = 0;
}

/* Like flush_outbound, but waits for the control plane to take everything (the final output). */
static void write_all_blocking(struct outbound *o) {
    for (;;) {
        flush_outbound(o);
        if (o->len == 0) return;
        struct pollfd writable = {o->dst, POLLOUT, 0};
        if (poll(&writable, 1, -1) < 0 && errno != EINTR) o->dst_dead = 1;
    }
}

/* Reads one chunk from the process into an empty stream buffer. Returns 0 at EOF/EIO. */
static int fill_outbound(struct outbound *o) {
    ssize_t n = read(o->src, o->data, sizeof o->data);
    if (n > 0) {
        o->off = 0;
        o->len = (size_t)n;
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
    return 0; /* EOF; EIO on a terminal master whose slave nobody holds any more */
}

static void flush_inbound(struct inbound *in) {
    while (in->len > 0 && in->fd >= 0) {
        ssize_t n = write(in->fd, in->data + in->off, in->len);
        if (n > 0) {
            in->off += (size_t)n;
            in->len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        /* The process closed its stdin (EPIPE) or the terminal is gone (EIO): input is dropped. */
        in->len = 0;
        if (!in->is_pty) {
            close(in->fd);
            in->fd = -1;
        }
    }
    if (in->len == 0) in->off = 0;
    if (in->len == 0 && in->eof_pending && in->fd >= 0) {
        in->eof_pending = 0;
        if (in->is_pty) {
            struct termios t;
            if (tcgetattr(in->fd, &t) == 0 && (t.c_lflag & ICANON) && write(in->fd, &t.c_cc[VEOF], 1) < 0) {
                /* the terminal is gone */
            }
        } else {
            close(in->fd);
            in->fd = -1;
        }
    }
}

static void spawn_signal(int master, pid_t child, int sig) {
    switch (sig) {
    case SIGINT: case SIGTERM: case SIGKILL: case SIGHUP: case SIGQUIT: case SIGTSTP: case SIGCONT: break;
    default: return;
    }
    pid_t group = child;
    if (master >= 0) {
        /* The terminal's foreground job, as this helper's (host) pid namespace numbers it; the kernel
         * lets a foreground group only be one of the terminal's session, i.e. of the shell. */
        pid_t foreground = -1;
        if (ioctl(master, TIOCGPGRP, &foreground) == 0 && foreground > 0) group = foreground;
    }
    if (kill(-group, sig) < 0 && errno == ESRCH && group == child) kill(child, sig);
}

static void handle_frame(struct inbound *in, int master, pid_t child) {
    switch (in->type) {
    case 'e':
        in->eof_pending = 1;
        break;
    case 'r':
        if (master >= 0 && in->control_len >= 4) {
            struct winsize ws;
            memset(&ws, 0, sizeof ws);
            ws.ws_col = (unsigned short)(in->control[0] << 8 | in->control[1]);
            ws.ws_row = (unsigned short)(in->control[2] << 8 | in->control[3]);
            ioctl(master, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH to the foreground job */
        }
        break;
    case 's':
        if (in->control_len >= 1) spawn_signal(master, child, in->control[0]);
        break;
    default:
        break; /* unknown frames are skipped */
    }
}

/* Parses bytes from fd 0. The caller reads no more than the free room of the input buffer, so the
 * data they carry always fits. */
static void parse_frames(struct inbound *in, const unsigned char *p, size_t n, int master, pid_t child) {
    while (n > 0) {
        if (in->header_len < 5) {
            in->header[in->header_len++] = *p++;
            n--;
            if (in->header_len < 5) continue;
            in->type = in->header[0];
            in->remaining = (uint32_t)in->header[1] << 24 | (uint32_t)in->header[2] << 16 |
                            (uint32_t)in->header[3] << 8 | (uint32_t)in->header[4];
            in->control_len = 0;
            if (in->remaining == 0) {
                if (in->type != 'd') handle_frame(in, master, child);
                in->header_len = 0;
            }
            continue;
        }
        size_t take = n < in->remaining ? n : in->remaining;
        if (in->type == 'd') {
            if (in->off > 0 && in->off + in->len + take > sizeof in->data) {
                memmove(in->data, in->data + in->off, in->len);
                in->off = 0;
            }
            memcpy(in->data + in->off + in->len, p, take);
            in->len += take;
        } else {
            for (size_t k = 0; k < take && in->control_len < sizeof in->control; k++)
                in->control[in->control_len++] = p[k];
        }
        p += take;
        n -= take;
        in->remaining -= (uint32_t)take;
        if (in->remaining == 0) {
            if (in->type != 'd') handle_frame(in, master, child);
            in->header_len = 0;
        }
    }
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* The master of a new terminal on the shell's own devpts instance (we are in its mount namespace).
 * /dev/pts is a mount point the shell cannot rename, remove or mount over, and only devpts has a
 * ptmx node there; the checks make sure nothing else was opened all the same. */
static int open_pty_master(void) {
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (master < 0) die("open the shell's /dev/pts/ptmx");
    struct statfs fs;
    struct stat st;
    if (fstatfs(master, &fs) < 0 || fs.f_type != DEVPTS_MAGIC || fstat(master, &st) < 0 || !S_ISCHR(st.st_mode) ||
        major(st.st_rdev) != 5 || minor(st.st_rdev) != 2) {
        errno = 0;
        die("/dev/pts/ptmx of the shell is not a devpts ptmx");
    }
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0) die("unlock the terminal");
    return master;
}

static int cmd_spawn(int argc, char **argv) {
    struct spawn_options o;
    memset(&o, 0, sizeof o);
    o.e.cwd = "/workspace";
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (parse_entry_option(&o.e, "spawn", a, &i, argc, argv)) continue;
        if (strcmp(a, "--pty") == 0) {
            unsigned cols = 0, rows = 0;
            if (sscanf(arg_value(&i, argc, argv), "%ux%u", &cols, &rows) != 2 || cols == 0 || rows == 0 ||
                cols > 65535 || rows > 65535)
                die("spawn: --pty COLSxROWS");
            o.pty = 1;
            o.cols = (unsigned short)cols;
            o.rows = (unsigned short)rows;
        } else die("spawn: unknown argument %s", a);
    }
    if (i >= argc) die("spawn: no command");
    o.command = argv + i;

    int init_fd = pin_init(&o.e);
    if (init_fd < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
    }
    int oom_fd = o.e.oom_events ? open(o.e.oom_events, O_RDONLY | O_CLOEXEC) : -1;
    if (enter_shell(init_fd, o.e.cgroups, o.e.cgroup_count) < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
    }
    long long oom_before = read_counter(oom_fd, "oom_kill");

    int master = -1, slave = -1, in_pipe[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (o.pty) {
        master = open_pty_master();
        struct winsize ws;
        memset(&ws, 0, sizeof ws);
        ws.ws_col = o.cols;
        ws.ws_row = o.rows;
        if (ioctl(master, TIOCSWINSZ, &ws) < 0) die("set the terminal size");
        /* The slave straight from the master: no path lookup in the shell's /dev. */
        slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0) die("open the terminal");
    } else if (pipe2(in_pipe, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        die("pipe");
    }

    /* Closed by the child's execve (or its exit): from then on its process group and terminal are
     * in place, so a signal sent right after "started" finds them. */
    int exec_sync[2];
    if (pipe2(exec_sync, O_CLOEXEC) < 0) die("pipe");
    pid_t child = fork();
    if (child < 0) {
        const char *reason = errno == EAGAIN ? "pids" : "";
        dprintf(2, "shells: cannot start the command: %s\n", strerror(errno));
        dprintf(STATUS_FD, "started\nexit=126 reason=%s truncated=0\n", reason);
        return 0;
    }
    if (child == 0) {
        setsid();
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (o.pty) {
            /* A new session whose controlling terminal is the slave. */
            if (ioctl(slave, TIOCSCTTY, 0) < 0) _exit(126);
            dup2(slave, 0);
            dup2(slave, 1);
            dup2(slave, 2);
        } else {
            dup2(in_pipe[0], 0);
            dup2(out[1], 1);
            dup2(err[1], 2);
        }
        dup2(exec_sync[1], 3);
        fcntl(3, F_SETFD, FD_CLOEXEC);
        close_fds_from(4);
        run_command(o.e.cwd, o.e.caps, o.command);
    }
    close(exec_sync[1]);
    char sync_byte;
    while (read(exec_sync[0], &sync_byte, 1) < 0 && errno == EINTR) {}
    close(exec_sync[0]);
    /* Only the process holds its ends now: EOF/EIO here means they are closed for good. */
    if (o.pty) close(slave);
    else {
        close(in_pipe[0]);
        close(out[1]);
        close(err[1]);
        set_nonblocking(in_pipe[1]);
        set_nonblocking(out[0]);
        set_nonblocking(err[0]);
    }
    int child_fd = sys_pidfd_open(child);
    if (child_fd < 0) die("pidfd of the process");
    set_nonblocking(0);
    set_nonblocking(1);
    set_nonblocking(2);
    dprintf(STATUS_FD, "started\n");

    static struct outbound outs[2];
    static struct inbound in;
    outs[0].src = o.pty ? master : out[0];
    outs[0].dst = 1;
    outs[1].src = o.pty ? -1 : err[0];
    outs[1].dst = 2;
    in.fd = o.pty ? master : in_pipe[1];
    in.is_pty = o.pty;
    int control_open = 1, exited = 0, status = 0;

    while (!exited) {
        if (abort_requested) {
            abort_requested = 0;
            kill_group(child);
        }
        struct pollfd p[6];
        int n = 0, at_control = -1, at_input = -1, at_src[2] = {-1, -1}, at_dst[2] = {-1, -1};
        if (control_open && in.len < sizeof in.data) {
            p[n] = (struct pollfd){0, POLLIN, 0};
            at_control = n++;
        }
        if (in.fd >= 0 && in.len > 0) {
            p[n] = (struct pollfd){in.fd, POLLOUT, 0};
            at_input = n++;
        }
        for (int k = 0; k < 2; k++) {
            if (outs[k].len > 0) {
                p[n] = (struct pollfd){outs[k].dst, POLLOUT, 0};
                at_dst[k] = n++;
            } else if (outs[k].src >= 0) {
                p[n] = (struct pollfd){outs[k].src, POLLIN, 0};
                at_src[k] = n++;
            }
        }
        p[n] = (struct pollfd){child_fd, POLLIN, 0};
        int at_child = n++;
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        /* Control first: a resize or signal sent before some input takes effect before it. */
        if (at_control >= 0 && p[at_control].revents) {
            unsigned char buf[RELAY_BUF];
            size_t room = sizeof in.data - in.len;
            ssize_t got = read(0, buf, room < sizeof buf ? room : sizeof buf);
            if (got > 0) parse_frames(&in, buf, (size_t)got, master, child);
            else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* The control plane is gone: nobody owns the process any more. */
                control_open = 0;
                kill_group(child);
            }
            flush_inbound(&in);
        }
        if (at_input >= 0 && (p[at_input].revents & POLLOUT)) flush_inbound(&in);
        else if (at_input >= 0 && p[at_input].revents) {
            /* Hung up and not writable (a terminal nobody holds the slave of any more): the input
             * can never be delivered; dropping it keeps poll from reporting the hangup forever. */
            in.len = 0;
            in.off = 0;
            flush_inbound(&in); /* a pending end of input still closes the pipe */
        }
        for (int k = 0; k < 2; k++) {
            if (at_dst[k] >= 0 && p[at_dst[k]].revents) flush_outbound(&outs[k]);
            if (at_src[k] >= 0 && p[at_src[k]].revents) {
                if (!fill_outbound(&outs[k])) {
                    if (!o.pty) close(outs[k].src);
                    outs[k].src = -1;
                }
                flush_outbound(&outs[k]);
            }
        }
        if (p[at_child].revents & POLLIN && waitpid(child, &status, WNOHANG) == child) exited = 1;
    }

    /* The process ended: hand on the output it left. A pipe holds everything it wrote; a terminal
     * may still be moving the last bytes into the master, which reads EIO once nobody holds the
     * slave (a background job that keeps it gets a short grace, then the hangup). */
    long long give_up = now_ms() + 1000;
    for (int k = 0; k < 2; k++) {
        write_all_blocking(&outs[k]);
        while (outs[k].src >= 0) {
            if (o.pty) {
                struct pollfd readable = {master, POLLIN, 0};
                long long left = give_up - now_ms();
                if (left <= 0 || poll(&readable, 1, left < 50 ? (int)left : 50) <= 0) break;
            }
            ssize_t got = read(outs[k].src, outs[k].data, sizeof outs[k].data);
            if (got > 0) {
                outs[k].off = 0;
                outs[k].len = (size_t)got;
                write_all_blocking(&outs[k]);
                continue;
            }
            if (got < 0 && errno == EINTR) continue;
            if (got < 0 && errno == EAGAIN) break; /* a pipe a background process still holds */
            if (!o.pty) close(outs[k].src);
            outs[k].src = -1;
        }
    }

    int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const char *reason = "";
    if (oom_fd >= 0 && read_counter(oom_fd, "oom_kill") > oom_before && WIFSIGNALED(status) &&
        WTERMSIG(status) == SIGKILL)
        reason = "oom";
    dprintf(STATUS_FD, "exit=%d reason=%s truncated=0\n", exit_code, reason);

    if (!o.pty && (outs[0].src >= 0 || outs[1].src >= 0)) {
        struct pollfd fds[2] = {{outs[0].src, POLLIN, 0}, {outs[1].src, POLLIN, 0}};
        drain_in_shell(fds, 2);
    }
    /* Closing the master (on exit) hangs up the terminal for anything still holding it. */
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* with-disk                                                                                       */

static int cmd_with_disk(int argc, char **argv) {
    const char *disk = NULL, *mountpoint = NULL;
    unsigned long uid_base = 0;
    int i = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "--disk") == 0) disk = arg_value(&i, argc, argv);
        else if (strcmp(argv[i], "--mountpoint") == 0) mountpoint = arg_value(&i, argc, argv);
        else if (strcmp(argv[i], "--uid-base") == 0) uid_base = strtoul(arg_value(&i, argc, argv), NULL, 10);
        else die("with-disk: unknown argument %s", argv[i]);
    }
    if (!disk || !mountpoint || uid_base < UID_RANGE || i >= argc) die("with-disk: missing arguments");
    if (unshare(CLONE_NEWNS) < 0) die("unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    char loop_dev[64];
    mount_disk(disk, mountpoint, 1, loop_dev, sizeof loop_dev);
    ensure_disk_layout(mountpoint, uid_base);
    execvp(argv[i], argv + i);
    die("exec %s", argv[i]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: shells-sandbox start|exec|spawn|with-disk ...\n");
        return 2;
    }
    if (geteuid() != 0) die("must run as root");
    if (strcmp(argv[1], "start") == 0) return cmd_start(argc - 2, argv + 2);
    if (strcmp(argv[1], "exec") == 0) return cmd_exec(argc - 2, argv + 2);
    if (strcmp(argv[1], "spawn") == 0) return cmd_spawn(argc - 2, argv + 2);
    if (strcmp(argv[1], "with-disk") == 0) return cmd_with_disk(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0) {
        puts("shells-sandbox 1");
        return 0;
    }
    fprintf(stderr, "shells-sandbox: unknown mode %s\n", argv[1]);
    return 2;
}
