/*
 * confine.c — the process-level walls every sandboxed process gets: capabilities, no_new_privs and
 * the seccomp policy.
 *
 * SECURITY BOUNDARY. Keep this file short enough to review in one sitting: it is the smallest file of
 * the helper that holds a wall (shells-sandbox.c is dispatch only). It runs in the exec
 * helper's child (after it joined the shell's namespaces as root-of-the-shell, before execve) and in
 * the shell's init. The namespace and cgroup walls are set up in holder.c and enter.c.
 *
 * Capabilities. Root inside a shell is uid 0 of the shell's user namespace only (its uid maps to an
 * unprivileged host range), so no capability it could hold reaches a host object. By default it
 * holds none at all (SHELLS_CAPS_NONE): securebits make uid 0 gain nothing on execve, so the host
 * sees CapEff 0 on every sandbox process, and the kernel code reachable only with namespace-local
 * capabilities (mount, netfilter, raw sockets: a long history of privilege-escalation bugs) stays
 * out of reach. Root still owns every file of the shell, so writing anywhere (pip, editing /etc)
 * works; what needs capabilities is changing files to other owners (some dpkg packages) and
 * switching users. SHELLS_CAPS_PACKAGE_MANAGER keeps Docker's default set for that.
 *
 * seccomp: everything not listed is allowed; what is listed is kernel attack surface a sandboxed
 * program has no business touching, or a way around one of the other walls. Calls for a foreign
 * architecture (i386 `int 0x80`, x32) kill the process, because the filter describes native system
 * call numbers only and a foreign ABI would bypass it.
 *
 * The same policy is exported as a BPF program (shells_export_seccomp) for sandboxes this helper
 * does not start itself: the wasm backend's interpreter workers, whose jail (bubblewrap) loads it
 * after building its namespaces, just before it runs the worker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "confine.h"

/* SHELLS_CAPS_PACKAGE_MANAGER: Docker's default set, enough for dpkg/apt (chown, setuid to _apt). */
static const int package_manager_capabilities[] = {
    CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FOWNER,           CAP_FSETID,      CAP_KILL,
    CAP_SETGID, CAP_SETUID,       CAP_SETPCAP,          CAP_SETFCAP,     CAP_MKNOD,
    CAP_NET_RAW, CAP_SYS_CHROOT,  CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE,
};

/* Refused outright with EPERM. */
static const char *const denied_syscalls[] = {
    /* Kernel keyrings: shared kernel state, long CVE history, and a cross-sandbox channel. */
    "keyctl", "add_key", "request_key",
    /* eBPF programs and perf events: kernel code paths and side channels. */
    "bpf", "perf_event_open",
    /* userfaultfd turns kernel races into reliable exploits. */
    "userfaultfd",
    /* Replacing the running kernel, or loading code into it. */
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    /* File handles bypass path-based access checks (the "shocker" escape). */
    "open_by_handle_at", "name_to_handle_at",
    /* Mount API: a shell never mounts (CAP_SYS_ADMIN is dropped too; this is belt and braces). */
    "mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr",
    /* io_uring: a second syscall surface that seccomp cannot see into. */
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    /* Host-wide knobs and hardware access. */
    "iopl", "ioperm", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "lookup_dcookie", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
};

/* Drops every capability not kept from the bounding, ambient and current sets. */
static int drop_capabilities(enum shells_caps mode) {
    uint64_t keep = 0;
    if (mode == SHELLS_CAPS_PACKAGE_MANAGER) {
        for (size_t i = 0; i < sizeof package_manager_capabilities / sizeof package_manager_capabilities[0]; i++)
            keep |= 1ULL << package_manager_capabilities[i];
    } else {
        /* uid 0 gains no capabilities on execve and none on setuid transitions; locked so that
         * nothing later can undo it. Needs CAP_SETPCAP, so it comes before the drop below. */
        if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                         SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED,
                  0, 0, 0) < 0)
            return -errno;
    }
    for (int cap = 0; cap < 64; cap++) {
        if (keep & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) return -errno;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return -errno;
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0}};
    data[0].effective = data[0].permitted = (uint32_t)keep;
    data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
    if (syscall(SYS_capset, &header, data) < 0) return -errno;
    return 0;
}

/* Builds the seccomp policy into a new filter context, or NULL. */
static scmp_filter_ctx build_seccomp(void) {
    /* Default: allow. Foreign architectures: kill (see header comment). */
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return NULL;
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (rc < 0) goto fail;

    for (size_t i = 0; i < sizeof denied_syscalls / sizeof denied_syscalls[0]; i++) {
        int nr = seccomp_syscall_resolve_name(denied_syscalls[i]);
        if (nr == __NR_SCMP_ERROR) continue; /* not on this architecture */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc < 0) goto fail;
    }

    /*
     * No nested user namespaces: inside a new user namespace a process regains every capability
     * over the namespaces it creates, which re-opens the mount/netfilter/etc. attack surface that
     * dropping capabilities closed.
     */
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    if (rc < 0) goto fail;
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    if (rc < 0) goto fail;
    /*
     * clone3 passes its flags in a struct seccomp cannot read, so it is refused as "not
     * implemented"; the C library then falls back to clone, whose flags the rule above checks.
     */
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc < 0) goto fail;
    return ctx;
fail:
    seccomp_release(ctx);
    return NULL;
}

static int load_seccomp(void) {
    scmp_filter_ctx ctx = build_seccomp();
    if (!ctx) return -EINVAL;
    int rc = seccomp_load(ctx);
    seccomp_release(ctx);
    return rc;
}

int shells_export_seccomp(int fd) {
    scmp_filter_ctx ctx = build_seccomp();
    if (!ctx) return -EINVAL;
    int rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    return rc;
}

int shells_confine(enum shells_caps mode) {
    int rc = drop_capabilities(mode);
    if (rc < 0) return rc;
    /* no_new_privs: setuid/file-capability binaries cannot raise privileges again after this. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return -errno;
    return load_seccomp();
}
