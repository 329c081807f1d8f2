#ifndef SHELLS_CONFINE_H
#define SHELLS_CONFINE_H

/* What root inside a shell may do beyond owning the shell's files (see confine.c). */
enum shells_caps {
    SHELLS_CAPS_NONE = 0,            /* no capabilities: the host sees CapEff 0 */
    SHELLS_CAPS_PACKAGE_MANAGER = 1, /* Docker's default set, for dpkg/apt */
};

/*
 * Confines the calling process for good: trims capabilities, sets no_new_privs, loads the seccomp
 * policy. Returns 0 or -errno. Call it last before execve.
 */
int shells_confine(enum shells_caps mode);

/*
 * Writes the seccomp policy shells_confine loads, as a raw BPF program (struct sock_filter[]), to
 * fd, for a jail that loads it itself (bubblewrap's --seccomp). Returns 0 or -errno.
 */
int shells_export_seccomp(int fd);

#endif
