/*
 * test-probe — a static binary the tests copy into a shell to try what a sandboxed program must
 * not be able to do, and to serve on loopback (the bash image has no server of its own).
 *
 *   test-probe syscalls     prints "<name> <errno>" for each syscall the seccomp policy refuses
 *                           (errno 0 = it succeeded)
 *   test-probe serve PORT   answers "pong\n" to every TCP connection on 127.0.0.1:PORT, forever
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int try_keyctl(void) {
    /* KEYCTL_GET_KEYRING_ID of the session keyring, creating it. */
    return syscall(SYS_keyctl, 0, -3, 1) < 0 ? errno : 0;
}

static int try_bpf(void) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    int fd = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
    if (fd < 0) return errno;
    close(fd);
    return 0;
}

static int try_perf_event_open(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.exclude_kernel = 1;
    int fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    if (fd < 0) return errno;
    close(fd);
    return 0;
}

static int try_userfaultfd(void) {
    int fd = (int)syscall(SYS_userfaultfd, 0);
    if (fd < 0) return errno;
    close(fd);
    return 0;
}

static int try_unshare_user(void) {
    /* In a child, so a success does not change this process. */
    pid_t pid = fork();
    if (pid == 0) _exit(unshare(CLONE_NEWUSER) < 0 ? errno : 0);
    int status = 0;
    waitpid(pid, &status, 0);
    return WEXITSTATUS(status);
}

static int serve(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0) {
        perror("serve");
        return 1;
    }
    fprintf(stderr, "serving on 127.0.0.1:%d\n", port);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        if (write(c, "pong\n", 5) < 0) { /* client left */ }
        close(c);
        /* Log like a real server does: the exec that started us is long over by now. */
        fprintf(stderr, "answered a connection\n");
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "syscalls") == 0) {
        printf("keyctl %d\n", try_keyctl());
        printf("bpf %d\n", try_bpf());
        printf("perf_event_open %d\n", try_perf_event_open());
        printf("userfaultfd %d\n", try_userfaultfd());
        printf("unshare_user %d\n", try_unshare_user());
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
    fprintf(stderr, "usage: test-probe syscalls | serve PORT\n");
    return 2;
}
