/*
 * holder.c — `start` and `with-disk`: the shell's disk on a loop device, its root filesystem
 * (overlay over the id-mapped base image), its /dev, and the keeper/init pair that holds the
 * shell's namespaces for as long as it runs.
 */
#include "sandbox.h"

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
static void mount_disk(const char *image, const char *target, int share_live, int read_only, char *dev,
                       size_t devlen) {
    int loop_fd = -1;
    if (!share_live || find_loop_for(image, dev, devlen) != 0) {
        int backing = open(image, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
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
            config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (read_only ? LO_FLAGS_READ_ONLY : 0);
            strncpy((char *)config.info.lo_file_name, image, LO_NAME_SIZE - 1);
            if (ioctl(loop_fd, LOOP_CONFIGURE, &config) == 0) break;
            /* Another process took this free device between GET_FREE and CONFIGURE: try the next. */
            if (errno != EBUSY || attempt > 64) die("LOOP_CONFIGURE %s", dev);
            close(loop_fd);
        }
        close(backing);
        close(ctl);
    }
    if (mount(dev, target, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME | (read_only ? MS_RDONLY : 0), "") < 0)
        die("mount %s on %s", dev, target);
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

/* Shared read-only layers a shell stacks on (a fork's inherited state), top first: each an ext4
 * image whose upper/ is one overlay lower layer, with the host uid of root in its files. */
struct layer_stack {
    const char *disks[MAX_LAYERS];
    unsigned long uid_bases[MAX_LAYERS];
    int count;
};

/* `--layer IMG --layer-uid-base N` at argv[*i]: true when taken. */
static int parse_layer(struct layer_stack *stack, int *i, int argc, char **argv) {
    if (strcmp(argv[*i], "--layer") != 0) return 0;
    if (stack->count == MAX_LAYERS) die("too many layers");
    stack->disks[stack->count] = arg_value(i, argc, argv);
    if (*i + 2 >= argc || strcmp(argv[*i + 1], "--layer-uid-base") != 0) die("--layer needs --layer-uid-base");
    (*i)++;
    stack->uid_bases[stack->count++] = strtoul(arg_value(i, argc, argv), NULL, 10);
    return 1;
}

struct start_options {
    const char *shell_dir; /* holds mnt/{lower,disk,root} and receives holder.json */
    const char *image;     /* base image rootfs (read-only lower layer) */
    const char *disk;      /* ext4 image: upper + work dirs, size-limited */
    const char *network;   /* sealed | localhost | internet */
    const char *egress_socket; /* the egress proxy's unix socket on the host (internet, or bindings) */
    int egress_port;           /* where the forwarder listens on the shell's loopback */
    const char *hostname;
    unsigned long uid_base;
    unsigned long disk_uid_base; /* host uid of root in the files on the disk (a fork's parent's) */
    unsigned long shm_mb;
    char *cgroups[MAX_CGROUPS]; /* cgroup.procs files to join */
    int cgroup_count;
    struct layer_stack stack;
};

static void mkdir_or_exists(const char *path, mode_t mode) {
    if (mkdir(path, mode) < 0 && errno != EEXIST) die("mkdir %s", path);
}

static void make_device(const char *path, unsigned major, unsigned minor, unsigned long uid_base) {
    if (mknod(path, S_IFCHR | 0666, makedev(major, minor)) < 0) die("mknod %s", path);
    if (chmod(path, 0666) < 0 || chown(path, (uid_t)uid_base, (gid_t)uid_base) < 0) die("chown %s", path);
}

/*
 * An `internet` shell resolves names through its egress forwarder's DNS listener (egress.c), which
 * asks the egress proxy: /etc/resolv.conf is a read-only bind of a file the keeper writes, so the
 * shell's resolver points there whatever the image held. (Queries sent to any other address on
 * port 53 are steered to the same listener by the shell's nftables rules.)
 */
static void point_resolver_at_egress(const char *shell_dir, const char *root) {
    char source[PATH_MAX], target[PATH_MAX];
    snprintf(source, sizeof source, "%s/resolv.conf", shell_dir);
    snprintf(target, sizeof target, "%s/etc/resolv.conf", root);
    int fd = open(source, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    static const char conf[] = "nameserver 127.0.0.53\n";
    if (fd < 0 || write(fd, conf, sizeof conf - 1) != (ssize_t)(sizeof conf - 1)) die("write %s", source);
    close(fd);
    struct stat st;
    if (lstat(target, &st) < 0 || !S_ISREG(st.st_mode)) return; /* no file to cover: steering still applies */
    if (mount(source, target, NULL, MS_BIND, NULL) < 0 ||
        mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        die("bind %s", target);
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

static int make_idmap_userns(const char *map);

/*
 * A forked shell's disk holds its parent's files, owned by the parent's uid range on disk. Its
 * upper and work dirs are used through an id-mapped view of the disk that shows the parent's range
 * as this shell's (and writes this shell's back as the parent's), so the copy needs no chown of
 * every file. Host root stays root: overlayfs creates its work files with the mounter's identity.
 * Mounted at `target` (relative to the keeper's mnt dir).
 */
static void mount_idmapped_disk(const char *disk, const char *target, unsigned long disk_uid_base,
                                unsigned long uid_base, int read_only) {
    char map[96];
    snprintf(map, sizeof map, "0 0 1\n%lu %lu %d\n", disk_uid_base, uid_base, UID_RANGE);
    int userns_fd = make_idmap_userns(map);
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, disk, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0) die("open_tree %s", disk);
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | (read_only ? MOUNT_ATTR_RDONLY : 0);
    attr.userns_fd = (uint64_t)userns_fd;
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) die("id-map the forked disk");
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("move_mount disk view");
    close(tree);
    close(userns_fd);
}

void bring_loopback_up(void) {
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
    /* sealed: loopback stays down — no networking at all. localhost: loopback only. internet:
     * loopback only as well; the egress forwarder listens on it (egress.c). A sealed shell with an
     * egress proxy (service bindings) needs loopback up for the forwarder's listener, and the
     * forwarder's wall refuses everything that is not local. */
    if (strcmp(o->network, "sealed") != 0 || o->egress_socket) bring_loopback_up();

    /* The shell sees pid 1's command line: show a neutral name, not the keeper's arguments (the
     * state dir, the image's path). Nothing reads the options after this. */
    scrub_command_line("shells-init");
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

static void write_id_maps(pid_t pid, const char *map) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    write_file(path, map);
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    write_file(path, map);
}

static void write_uid_maps(pid_t pid, unsigned long uid_base) {
    char map[64];
    snprintf(map, sizeof map, "0 %lu %d\n", uid_base, UID_RANGE);
    write_id_maps(pid, map);
}

/* A user namespace with uid and gid map `map`, only to id-map a mount before the shell's own
 * namespaces exist (the mount table must be complete when they copy it). Returns its fd. */
static int make_idmap_userns(const char *map) {
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
    write_id_maps(child, map);
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

/*
 * The shared layers a fork stacks on: each layer image is loop-mounted read-only (its own loop
 * device, so no shell can write a layer another shell reads) at `layerN`, and its upper dir shown
 * through an id-mapped, read-only view (`layerNv`) that maps the uid range of the shell that wrote
 * it onto this shell's. Overlay honours the whiteouts and opaque dirs of a lower layer, so what the
 * parent deleted stays deleted. Writes `lowerdir` entries (top first, each ending in ':').
 */
static void stack_layers(const struct layer_stack *stack, unsigned long uid_base, char *lowerdirs, size_t size) {
    size_t used = 0;
    lowerdirs[0] = 0;
    for (int i = 0; i < stack->count; i++) {
        if (stack->uid_bases[i] < UID_RANGE) die("--layer-uid-base");
        char mountpoint[32], view[32], upper[48], dev[64];
        snprintf(mountpoint, sizeof mountpoint, "layer%d", i);
        snprintf(view, sizeof view, "layer%dv", i);
        snprintf(upper, sizeof upper, "%s/upper", mountpoint);
        mkdir_or_exists(mountpoint, 0755);
        mkdir_or_exists(view, 0755);
        mount_disk(stack->disks[i], mountpoint, 0, 1, dev, sizeof dev);
        const char *lower = upper;
        if (stack->uid_bases[i] != uid_base) {
            mount_idmapped_disk(upper, view, stack->uid_bases[i], uid_base, 1);
            lower = view;
        }
        int n = snprintf(lowerdirs + used, size - used, "%s:", lower);
        if (n < 0 || (size_t)n >= size - used) die("too many layers");
        used += (size_t)n;
    }
}

int cmd_start(int argc, char **argv) {
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
        else if (strcmp(a, "--egress-socket") == 0) o.egress_socket = arg_value(&i, argc, argv);
        else if (strcmp(a, "--egress-port") == 0) o.egress_port = atoi(arg_value(&i, argc, argv));
        else if (strcmp(a, "--hostname") == 0) o.hostname = arg_value(&i, argc, argv);
        else if (strcmp(a, "--uid-base") == 0) o.uid_base = strtoul(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--disk-uid-base") == 0) o.disk_uid_base = strtoul(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--shm-mb") == 0) o.shm_mb = strtoul(arg_value(&i, argc, argv), NULL, 10);
        else if (parse_layer(&o.stack, &i, argc, argv)) continue;
        else if (strcmp(a, "--cgroup-procs") == 0) {
            if (o.cgroup_count == MAX_CGROUPS) die("too many cgroups");
            o.cgroups[o.cgroup_count++] = (char *)arg_value(&i, argc, argv);
        } else die("start: unknown argument %s", a);
    }
    if (!o.shell_dir || !o.image || !o.disk || o.uid_base < UID_RANGE) die("start: missing arguments");
    if (o.disk_uid_base == 0) o.disk_uid_base = o.uid_base;
    if (o.disk_uid_base < UID_RANGE) die("start: --disk-uid-base");
    int internet = strcmp(o.network, "internet") == 0;
    if (strcmp(o.network, "sealed") != 0 && strcmp(o.network, "localhost") != 0 && !internet)
        die("start: network %s", o.network);
    /* internet needs the egress proxy; the other modes may have it (service bindings). */
    int forwarded = o.egress_socket != NULL;
    if (internet && !forwarded) die("start: internet needs --egress-socket and --egress-port");
    if (forwarded && (o.egress_socket[0] != '/' ||
                      strlen(o.egress_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path) ||
                      o.egress_port < 1 || o.egress_port > 65535))
        die("start: --egress-socket must be absolute and short, with --egress-port");

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
    mkdir_or_exists("diskview", 0755);
    mkdir_or_exists("root", 0755);

    /* The host's mount namespace, for the egress forwarder to return to (it must not hold the
     * shell's mounts). */
    int host_mnt_fd = forwarded ? open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC) : -1;
    if (forwarded && host_mnt_fd < 0) die("open /proc/self/ns/mnt");

    /* A private mount namespace: the shell's mounts never appear in the host's mount table, and
     * they vanish by themselves when the last process using them is gone. */
    if (unshare(CLONE_NEWNS) < 0) die("unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");

    char loop_dev[64];
    mount_disk(o.disk, "disk", 0, 0, loop_dev, sizeof loop_dev);
    ensure_disk_layout("disk", o.disk_uid_base);
    int forked = o.disk_uid_base != o.uid_base;
    if (forked) mount_idmapped_disk("disk", "diskview", o.disk_uid_base, o.uid_base, 0);
    char lowerdirs[64 * (MAX_LAYERS + 1)];
    stack_layers(&o.stack, o.uid_base, lowerdirs, sizeof lowerdirs);

    char lower_map[64];
    snprintf(lower_map, sizeof lower_map, "0 %lu %d\n", o.uid_base, UID_RANGE);
    int userns_fd = make_idmap_userns(lower_map);
    mount_idmapped_lower(o.image, "lower", userns_fd);
    close(userns_fd);
    /* Relative layer paths (we are in mnt/) keep the option string short and free of the state
     * dir's characters. No xino/index/metacopy: plain copy-up semantics. */
    char overlay_opts[sizeof lowerdirs + 128];
    snprintf(overlay_opts, sizeof overlay_opts, "lowerdir=%slower,%s", lowerdirs,
             forked ? "upperdir=diskview/upper,workdir=diskview/work" : "upperdir=disk/upper,workdir=disk/work");
    if (mount("overlay", "root", "overlay", MS_NOSUID | MS_NODEV, overlay_opts) < 0) die("mount overlay root");
    populate_dev("root", &o);
    if (internet) point_resolver_at_egress(o.shell_dir, "root");
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
    if (forwarded) {
        start_egress_forwarder(init_pid, host_mnt_fd, o.egress_socket, o.egress_port);
        close(host_mnt_fd);
    }

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
/* with-disk                                                                                       */

int cmd_with_disk(int argc, char **argv) {
    /* The command (tar, rm) is work of the control plane that started it: should that process die,
     * the command dies too, instead of running on with the shell's disk on a loop device while the
     * next control plane recovers the shell. Its half-done work is never committed (archives and
     * disks are written beside and renamed, or recorded as intents and redone). */
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
        die("with-disk: the control plane that started it is gone");
    const char *disk = NULL, *mountpoint = NULL, *layers_dir = NULL;
    unsigned long uid_base = 0;
    struct layer_stack stack;
    memset(&stack, 0, sizeof stack);
    int i = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "--disk") == 0) disk = arg_value(&i, argc, argv);
        else if (strcmp(argv[i], "--mountpoint") == 0) mountpoint = arg_value(&i, argc, argv);
        else if (strcmp(argv[i], "--uid-base") == 0) uid_base = strtoul(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(argv[i], "--layers-dir") == 0) layers_dir = arg_value(&i, argc, argv);
        else if (parse_layer(&stack, &i, argc, argv)) continue;
        else die("with-disk: unknown argument %s", argv[i]);
    }
    if (!disk || !mountpoint || uid_base < UID_RANGE || i >= argc) die("with-disk: missing arguments");
    if (unshare(CLONE_NEWNS) < 0) die("unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    char loop_dev[64];
    mount_disk(disk, mountpoint, 1, 0, loop_dev, sizeof loop_dev);
    ensure_disk_layout(mountpoint, uid_base);
    if (stack.count > 0) {
        /* The disk's upper over the shell's layers, read-only at `<layers-dir>/merged`, owned as
         * the disk's files are: what the shell sees of its own state, less the base image. */
        if (!layers_dir || mountpoint[0] != '/') die("with-disk: layers need --layers-dir and an absolute mountpoint");
        if (chdir(layers_dir) < 0) die("chdir %s", layers_dir);
        mkdir_or_exists("merged", 0755);
        char lowerdirs[64 * (MAX_LAYERS + 1)];
        stack_layers(&stack, uid_base, lowerdirs, sizeof lowerdirs);
        lowerdirs[strlen(lowerdirs) - 1] = 0; /* the trailing ':' */
        char opts[PATH_MAX + sizeof lowerdirs + 32];
        snprintf(opts, sizeof opts, "lowerdir=%s/upper:%s", mountpoint, lowerdirs);
        if (mount("overlay", "merged", "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, opts) < 0)
            die("mount merged layers");
    }
    execvp(argv[i], argv + i);
    die("exec %s", argv[i]);
}
