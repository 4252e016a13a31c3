/*
 * orch-handoff: the process a warm sandbox waits in (docs/warm-sandboxes.md).
 *
 * A warm sandbox is started ahead of need, its namespaces, cgroups, root and mounts made, with
 * this program as the command under its init (catatonit). It blocks on its standard input
 * until a run is handed over: one message, then the run's own input, which the run's command
 * reads from the same pipe. The message is
 *
 *     "orch" | payload length (4 bytes, big-endian) | payload
 *     payload: FROM \0 TO \0 ARGC \0 ARG... \0 ENV... \0   (ENV: NAME=VALUE, the whole environment)
 *
 * With FROM and TO (both empty: nothing to copy), it first copies what the directory FROM holds
 * into the directory TO, as `cp -R FROM/. TO/` run by this process would: directories, regular
 * files and symbolic links (not followed), each made by this process (its owner, its umask),
 * modes without set-id or sticky bits, contents copied. A run's sandbox gets its bundle so
 * (sandbox/spec.py): in a gVisor sandbox, `cp` is an exec of its own that costs tens of ms.
 * A failed copy says what could not be copied and exits 1, as `cp ... && exec` does.
 *
 * It then replaces itself with the command (execvp, the command found on the handed PATH), with
 * exactly that environment: what a cold sandbox's config.json would have given it. Nothing of
 * the message is left behind (it came through a pipe, never a file).
 *
 * It reads exactly the message's bytes, never more, so the run's input stays for the command.
 * End of input before any byte: the sandbox is being discarded unused; exit 0 quietly.
 *
 * Built statically (scripts/setup's compiler; src/orch/sandbox/handoff.py builds it once per
 * source), so it runs in any image whatever its C library, and under gVisor alike.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static void cannot_copy(const char *path) {
    dprintf(2, "orch-handoff: cannot copy %s: %s\n", path, strerror(errno));
    _exit(1);
}

static void copy_file(int from, int to, const char *path) {
    static char chunk[1 << 16];
    for (;;) {
        ssize_t r = read(from, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            cannot_copy(path);
        if (r == 0)
            return;
        for (ssize_t done = 0; done < r;) {
            ssize_t w = write(to, chunk + done, (size_t)(r - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                cannot_copy(path);
            done += w;
        }
    }
}

/* What directory `from` holds, into directory `to` (both open); `path`: `from`'s, for errors. */
static void copy_tree(int from, int to, const char *path) {
    int listed = dup(from);
    DIR *dir = listed < 0 ? NULL : fdopendir(listed);
    if (dir == NULL)
        cannot_copy(path);
    struct dirent *entry;
    char inner[4096];
    while ((errno = 0, entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        snprintf(inner, sizeof inner, "%s/%s", path, name);
        struct stat st;
        if (fstatat(from, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            cannot_copy(inner);
        mode_t mode = st.st_mode & 0777;
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(to, name, mode | S_IRWXU) != 0 && errno != EEXIST)
                cannot_copy(inner);
            int sub_from = openat(from, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int sub_to = openat(to, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub_from < 0 || sub_to < 0)
                cannot_copy(inner);
            copy_tree(sub_from, sub_to, inner);
            /* Its own mode once filled (made writable for that), as cp leaves it. */
            mode_t mask = umask(0);
            umask(mask);
            if (fchmod(sub_to, mode & ~mask) != 0)
                cannot_copy(inner);
            close(sub_from);
            close(sub_to);
        } else if (S_ISREG(st.st_mode)) {
            int in = openat(from, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (in < 0)
                cannot_copy(inner);
            int out = openat(to, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
            if (out < 0)
                cannot_copy(inner);
            copy_file(in, out, inner);
            if (close(out) != 0)
                cannot_copy(inner);
            close(in);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlinkat(from, name, target, sizeof target - 1);
            if (n < 0)
                cannot_copy(inner);
            target[n] = '\0';
            if (symlinkat(target, to, name) != 0)
                cannot_copy(inner);
        } else {
            errno = EINVAL; /* no bundle holds devices, pipes or sockets */
            cannot_copy(inner);
        }
    }
    if (errno != 0)
        cannot_copy(path);
    closedir(dir);
}

static void copy(const char *from, const char *to) {
    int src = open(from, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src < 0)
        cannot_copy(from);
    int dst = open(to, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dst < 0)
        cannot_copy(to);
    copy_tree(src, dst, from);
    close(src);
    close(dst);
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
    if (fields < 4)
        fail(125, "the handed-over run is malformed", "too few fields");
    char *end = NULL;
    long argc = strtol(items[2], &end, 10);
    if (end == items[2] || *end != '\0' || argc < 1 || (size_t)argc > fields - 3)
        fail(125, "the handed-over run is malformed", "its argument count");

    /* argv: items[3..argc+2], then NULL; the environment: the rest, then NULL. */
    char **argv = items + 3;
    char **env = calloc(fields - (size_t)argc + 2, sizeof *env);
    if (env == NULL)
        fail(125, "out of memory", NULL);
    size_t count = 0;
    int has_home = 0;
    for (size_t i = 0; i + 3 + (size_t)argc < fields; i++) {
        env[count] = items[3 + argc + i];
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
    if (items[0][0] != '\0' || items[1][0] != '\0')
        copy(items[0], items[1]);

    environ = env; /* execvp looks the command up on the handed PATH */
    execvp(command, argv);
    int code = errno == ENOENT ? 127 : 126;
    dprintf(2, "orch-handoff: cannot run %s: %s\n", command, strerror(errno));
    return code;
}
