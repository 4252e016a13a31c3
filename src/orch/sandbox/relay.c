/*
 * orch-relay: what stands between a command and its gVisor sandbox's standard output and errors
 * (docs/trust.md, "gVisor"; src/orch/sandbox/relay.py builds it).
 *
 * gVisor hands a sandbox's stdout and stderr (the launcher's pipes) to the sandbox as the host's
 * descriptors, which its kernel (the Sentry) keeps non-blocking on the host. One large write()
 * to them then stops where the host pipe is full (64 KiB) and returns that short count, where
 * the host's kernel would block until all was written. A program that writes once and does not
 * look at the count (Python's unbuffered stdout, for one) loses the rest silently.
 *
 * This program runs under the sandbox's init and runs the command as its child, the command's
 * stdout and stderr being pipes of gVisor's own kernel, which block as the host's do. It copies
 * what comes out of them to its own stdout and stderr (the host's pipes), writing each piece to
 * its end however many short writes that takes; a full host pipe holds it (and so the command)
 * back, as it would hold the command back under runc. Standard input is the command's own.
 *
 * Every signal it gets but SIGCHLD (and SIGPIPE, which only its own writes raise) is passed on
 * to the command. Once the command has exited, it copies what the pipes hold by then (a process
 * the command left running may keep them open: not waited for) and ends as the command did: with
 * its exit status, or killed by the same signal.
 *
 * Built statically, so it runs in any image whatever its C library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static char chunk[1 << 16];

/* Write all of buf to fd; 0, or -1 once the reader is gone (or another error). */
static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, -1);
            continue;
        }
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Move one read's worth from `from` to `to`: 1 moved, 0 end (or its reader gone), -1 nothing now. */
static int move(int from, int to) {
    ssize_t r = read(from, chunk, sizeof chunk);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return -1;
    if (r <= 0)
        return 0;
    /* Its reader gone: stop reading, so that the command's next write fails as it would have. */
    return write_all(to, chunk, (size_t)r) == 0 ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        dprintf(2, "orch-relay: no command given\n");
        return 125;
    }
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        dprintf(2, "orch-relay: cannot make a pipe: %s\n", strerror(errno));
        return 125;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t child = fork();
    if (child < 0) {
        dprintf(2, "orch-relay: cannot start %s: %s\n", argv[1], strerror(errno));
        return 125;
    }
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
            _exit(125);
        execvp(argv[1], argv + 1);
        int code = errno == ENOENT ? 127 : 126;
        dprintf(2, "orch-relay: cannot run %s: %s\n", argv[1], strerror(errno));
        _exit(code);
    }
    close(out[1]);
    close(err[1]);
    close(0); /* the command's input, not this program's */
    int signals = signalfd(-1, &all, SFD_CLOEXEC);
    if (signals < 0) {
        dprintf(2, "orch-relay: no signalfd: %s\n", strerror(errno));
        kill(child, SIGKILL);
        return 125;
    }

    struct pollfd fds[3] = {
        {.fd = out[0], .events = POLLIN},
        {.fd = err[0], .events = POLLIN},
        {.fd = signals, .events = POLLIN},
    };
    const int to[2] = {1, 2};
    int status = 0;
    for (int exited = 0; !exited;) {
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd >= 0 && fds[i].revents) {
                if (move(fds[i].fd, to[i]) == 0) {
                    close(fds[i].fd);
                    fds[i].fd = -1; /* poll skips it */
                }
            }
        }
        if (fds[2].revents & POLLIN) {
            struct signalfd_siginfo info;
            if (read(signals, &info, sizeof info) != (ssize_t)sizeof info)
                continue;
            int sig = (int)info.ssi_signo;
            if (sig == SIGCHLD) {
                pid_t got;
                while ((got = waitpid(-1, &status, WNOHANG)) > 0)
                    exited |= got == child;
            } else if (sig != SIGPIPE) {
                kill(child, sig);
            }
        }
    }
    /* What the command wrote before it exited is in the pipes: copy it, not waiting for more. */
    for (int i = 0; i < 2; i++) {
        if (fds[i].fd < 0)
            continue;
        fcntl(fds[i].fd, F_SETFL, fcntl(fds[i].fd, F_GETFL) | O_NONBLOCK);
        while (move(fds[i].fd, to[i]) == 1) {
        }
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        raise(sig);
        return 128 + sig;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
