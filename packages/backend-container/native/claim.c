/*
 * claim.c — `claim`: gives a pooled sandbox the identity of the shell that claims it: its hostname
 * and, for a `localhost` shell, its loopback brought up.
 *
 * The helper pins the shell's init and joins only its UTS namespace (and, for the loopback, its
 * network namespace), then makes the two system calls itself: no program of the host or of the
 * shell runs, and the helper never enters the shell's mount, pid or user namespace. Host root holds
 * the capabilities both calls need over namespaces a shell's user namespace owns.
 */
#include "sandbox.h"

int cmd_claim(int argc, char **argv) {
    struct entry_options e;
    memset(&e, 0, sizeof e);
    const char *hostname = NULL;
    int up = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--hostname") == 0) hostname = arg_value(&i, argc, argv);
        else if (strcmp(a, "--loopback-up") == 0) up = 1;
        else if (!parse_entry_option(&e, "claim", a, &i, argc, argv)) die("claim: unknown argument %s", a);
    }
    if (e.init_pid <= 0 || hostname == NULL) die("claim: missing arguments");
    size_t length = strlen(hostname);
    if (length == 0 || length > 63) die("claim: a hostname has 1 to 63 characters");
    int init_fd = pin_init(&e);
    if (init_fd < 0) die("claim: the sandbox's init is gone");
    if (setns(init_fd, CLONE_NEWUTS | (up ? CLONE_NEWNET : 0)) < 0) die("claim: setns");
    close(init_fd);
    if (sethostname(hostname, length) < 0) die("sethostname");
    if (up) bring_loopback_up();
    return 0;
}
