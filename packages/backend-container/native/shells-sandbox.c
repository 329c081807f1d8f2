/*
 * shells-sandbox — the host-side helper of the container runtime. Runs as host root; six modes:
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
 *   connect    connects to a port on a running shell's own loopback from inside its network
 *              namespace only, and relays the connection on stdin/stdout (exposed ports).
 *   seccomp-bpf writes the seccomp policy (confine.c) as a BPF program to stdout, for the wasm
 *              backend's worker jail, which loads it with bubblewrap's --seccomp.
 *
 * Root inside a shell is uid 0 of the shell's user namespace, mapped to an unprivileged host range
 * (--uid-base .. +65535) that no other shell shares: the host never sees uid 0 or a capability in a
 * sandbox process. The Node side (src/internal/) prepares cgroups, disk images and state files;
 * this program only does what needs raw system calls. Files by role: see sandbox.h.
 */
#include "sandbox.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: shells-sandbox start|exec|spawn|with-disk|connect|seccomp-bpf ...\n");
        return 2;
    }
    if (geteuid() != 0) die("must run as root");
    /* Nothing the parent left open goes further than this line: each mode keeps stdio and, except
     * with-disk (which runs a host tool), its status pipe on fd 3; a ready exec helper its request
     * on fd 4 (exec.c). */
    int ready = strcmp(argv[1], "exec") == 0 && argc > 2 && strcmp(argv[2], "--wait-request") == 0;
    close_fds_from(strcmp(argv[1], "with-disk") == 0 ? 3 : ready ? STATUS_FD + 2 : STATUS_FD + 1);
    remember_command_line(argc, argv);
    if (strcmp(argv[1], "start") == 0) return cmd_start(argc - 2, argv + 2);
    if (strcmp(argv[1], "exec") == 0) return cmd_exec(argc - 2, argv + 2);
    if (strcmp(argv[1], "spawn") == 0) return cmd_spawn(argc - 2, argv + 2);
    if (strcmp(argv[1], "with-disk") == 0) return cmd_with_disk(argc - 2, argv + 2);
    if (strcmp(argv[1], "connect") == 0) return cmd_connect(argc - 2, argv + 2);
    if (strcmp(argv[1], "seccomp-bpf") == 0) {
        int rc = shells_export_seccomp(1);
        if (rc < 0) die("seccomp-bpf: %s", strerror(-rc));
        return 0;
    }
    if (strcmp(argv[1], "version") == 0) {
        puts("shells-sandbox 1");
        return 0;
    }
    fprintf(stderr, "shells-sandbox: unknown mode %s\n", argv[1]);
    return 2;
}
