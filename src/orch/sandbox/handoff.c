/*
 * orch-handoff: the process a warm sandbox waits in (docs/warm-sandboxes.md).
 *
 * A warm sandbox is started ahead of need, its namespaces, cgroups, root and mounts made, with
 * this program as the command under its init (catatonit). It blocks on its standard input
 * until a run is handed over: one message, then the run's own input, which the run's command
 * reads from the same pipe. The message is
 *
 *     "orch" | payload length (4 bytes, big-endian) | payload
 *     payload: ARGC \0 ARG... \0 ENV... \0        (NAME=VALUE entries, the whole environment)
 *
 * and the program then replaces itself with the command (execvp, the command found on the
 * handed PATH), with exactly that environment: what a cold sandbox's config.json would have
 * given it. Nothing of the message is left behind (it came through a pipe, never a file).
 *
 * It reads exactly the message's bytes, never more, so the run's input stays for the command.
 * End of input before any byte: the sandbox is being discarded unused; exit 0 quietly.
 *
 * Built statically (scripts/setup's compiler; src/orch/sandbox/handoff.py builds it once per
 * source), so it runs in any image whatever its C library, and under gVisor alike.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PAYLOAD (16u << 20)

extern char **environ;

/* 1: got n bytes; 0: end of input before any byte; -1: error or end of input midway. */
static int read_exact(char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(0, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return (r == 0 && got == 0) ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

static void fail(int code, const char *what, const char *detail) {
    dprintf(2, "orch-handoff: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    _exit(code);
}

int main(void) {
    unsigned char head[8];
    int got = read_exact((char *)head, sizeof head);
    if (got == 0)
        return 0;
    if (got < 0 || memcmp(head, "orch", 4) != 0)
        fail(125, "no run was handed over", NULL);
    uint32_t n = (uint32_t)head[4] << 24 | (uint32_t)head[5] << 16 | (uint32_t)head[6] << 8 | head[7];
    if (n < 2 || n > MAX_PAYLOAD)
        fail(125, "the handed-over run is malformed", "its length");
    char *buf = malloc(n);
    if (buf == NULL)
        fail(125, "out of memory", NULL);
    if (read_exact(buf, n) != 1)
        fail(125, "the handed-over run is malformed", "it ended early");
    if (buf[n - 1] != '\0')
        fail(125, "the handed-over run is malformed", "its last field");

    size_t fields = 0;
    for (uint32_t i = 0; i < n; i++)
        fields += buf[i] == '\0';
    char **items = calloc(fields + 2, sizeof *items);
    if (items == NULL)
        fail(125, "out of memory", NULL);
    char *p = buf;
    for (size_t i = 0; i < fields; i++) {
        items[i] = p;
        p += strlen(p) + 1;
    }
    char *end = NULL;
    long argc = strtol(items[0], &end, 10);
    if (end == items[0] || *end != '\0' || argc < 1 || (size_t)argc > fields - 1)
        fail(125, "the handed-over run is malformed", "its argument count");

    /* argv: items[1..argc], then NULL; the environment: the rest, then NULL. */
    char **argv = items + 1;
    char **env = calloc(fields - (size_t)argc + 2, sizeof *env);
    if (env == NULL)
        fail(125, "out of memory", NULL);
    size_t count = 0;
    int has_home = 0;
    for (size_t i = 0; i + 1 + (size_t)argc < fields; i++) {
        env[count] = items[1 + argc + i];
        has_home |= strncmp(env[count], "HOME=", 5) == 0;
        count++;
    }
    /* The runtime gives a process without HOME the user's home from the image's passwd (or /):
     * this process got it so, and the command gets it as a cold sandbox's would. */
    for (char **own = environ; !has_home && own != NULL && *own != NULL; own++) {
        if (strncmp(*own, "HOME=", 5) == 0) {
            env[count] = *own;
            has_home = 1;
        }
    }
    char *command = argv[0];
    argv[argc] = NULL;

    environ = env; /* execvp looks the command up on the handed PATH */
    execvp(command, argv);
    int code = errno == ENOENT ? 127 : 126;
    dprintf(2, "orch-handoff: cannot run %s: %s\n", command, strerror(errno));
    return code;
}
