// procstat: run a command and report, as one JSON line, what the kernel counted for it.
//
//   procstat OUT -- command [args...]
//
// OUT is a file path; "%r" in it is replaced by the MPI rank taken from the environment (OMPI_COMM_WORLD_RANK,
// PMIX_RANK, PMI_RANK or SLURM_PROCID; "0" when none is set), so `mpirun -np 4 procstat dir/rank.%r.json -- cmd`
// gives one file per rank. The child is waited for with WNOWAIT first, so its /proc/PID/io (rchar: bytes
// returned by read()/pread(), page cache or not; read_bytes: bytes the block layer fetched for it) can still be
// read after it has exited; then it is reaped with wait4() for its peak resident set (ru_maxrss) and CPU times.
// The exit status of the command is procstat's exit status.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char* rank_text(void) {
    const char* names[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        const char* v = getenv(names[i]);
        if (v && *v) return v;
    }
    return "0";
}

static void expand(const char* pattern, const char* rank, char* out, size_t cap) {
    size_t n = 0;
    for (const char* p = pattern; *p && n + 1 < cap; ++p) {
        if (p[0] == '%' && p[1] == 'r') {
            for (const char* r = rank; *r && n + 1 < cap; ++r) out[n++] = *r;
            ++p;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
    if (argc < 4 || strcmp(argv[2], "--") != 0) {
        fprintf(stderr, "usage: procstat OUT -- command [args...]\n");
        return 2;
    }
    const char* rank = rank_text();
    char out_path[4096];
    expand(argv[1], rank, out_path, sizeof out_path);

    const double start = now_s();
    const pid_t pid = fork();
    if (pid < 0) {
        perror("procstat: fork");
        return 2;
    }
    if (pid == 0) {
        execvp(argv[3], argv + 3);
        fprintf(stderr, "procstat: cannot run %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }
    siginfo_t info;
    memset(&info, 0, sizeof info);
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) != 0)
        if (errno != EINTR) {
            perror("procstat: waitid");
            return 2;
        }
    const double wall = now_s() - start;

    unsigned long long rchar = 0, wchar = 0, read_bytes = 0, write_bytes = 0, value = 0;
    char path[64], key[64];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE* io = fopen(path, "r");
    if (io) {
        while (fscanf(io, "%63s %llu", key, &value) == 2) {
            if (!strcmp(key, "rchar:")) rchar = value;
            else if (!strcmp(key, "wchar:")) wchar = value;
            else if (!strcmp(key, "read_bytes:")) read_bytes = value;
            else if (!strcmp(key, "write_bytes:")) write_bytes = value;
        }
        fclose(io);
    }

    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR) {
            perror("procstat: wait4");
            return 2;
        }
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

    FILE* out = fopen(out_path, "w");
    if (!out) {
        fprintf(stderr, "procstat: cannot write %s: %s\n", out_path, strerror(errno));
    } else {
        fprintf(out,
                "{\"rank\": %s, \"rc\": %d, \"wall_s\": %.6f, \"maxrss_kib\": %ld, \"user_s\": %.6f, \"sys_s\": %.6f,"
                " \"rchar\": %llu, \"wchar\": %llu, \"read_bytes\": %llu, \"write_bytes\": %llu,"
                " \"inblock\": %ld, \"oublock\": %ld, \"io_ok\": %s}\n",
                rank, rc, wall, ru.ru_maxrss, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, rchar, wchar, read_bytes,
                write_bytes, ru.ru_inblock, ru.ru_oublock, io ? "true" : "false");
        fclose(out);
    }
    return rc;
}
